//! `[[build.test]]` end to end on OCI images: the artifact started fresh
//! in a runc container (read-only root, no network), checks against a
//! Debian minbase image (scripts/hardening/debian-rootfs.sh) and the
//! busybox fixture, the signed test-result attestation checked by the
//! in-toto attestation bindings and securesystemslib/sigstore-js, the
//! failing test that registers and publishes nothing, and SIGKILL during
//! the test phase followed by `kiln cleanup`. Needs root, runc, a
//! registry, skopeo and the checkers (installed by scripts/test.sh).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::checkers;
use crate::oci::{assert_nothing_left, busybox_rootfs, Registry};
use crate::sign::{blob_path, skopeo_fetch};
use crate::{assert_exit, text, Scratch};

fn ready() -> bool {
    crate::oci::ready()
}

/// The `[[build.test]]` entries of the Debian image: they pass only on
/// what the provisioner made, in the artifact.
const DEBIAN_TESTS: &str = r#"
[[build.test]]
type = "file"
path = "/etc/motd"
mode = "0640"
owner = "root"
group = "adm"
contains = ["baked by kiln"]
sha256 = "MOTD_SHA"

[[build.test]]
type = "file"
path = "/etc/build-host-only"
exists = false

[[build.test]]
type = "package"
name = "coreutils"
version = "COREUTILS_VERSION"

[[build.test]]
type = "package"
name = "nginx"
installed = false

[[build.test]]
type = "user"
name = "app"
uid = 1500
home = "/home/app"
shell = "/bin/sh"
groups = ["app", "adm"]

[[build.test]]
type = "group"
name = "app"
gid = 1500

[[build.test]]
type = "command"
run = "id -u app"
stdout_matches = "^1500$"

[[build.test]]
type = "command"
run = "touch /probe-write"
exit_status = 1
stderr_contains = ["Read-only file system"]

[[build.test]]
type = "port"
port = 22
listening = false

[[build.test]]
type = "shell"
inline = ["test \"$(grep -c : /proc/net/dev)\" = 1", "grep -q '^ID=debian' /etc/os-release"]
"#;

/// A Debian image whose tests pass: exit 0, registered and promoted, the
/// report in the manifest with observed values, and the test attestation
/// beside the layout, in the registry's `.att` and beside the manifest,
/// each verifying with the independent checkers.
#[test]
fn debian_image_tests_pass_and_the_attestation_verifies() {
    if !ready() || !checkers::ready() || !crate::require("Debian tests", &["mmdebstrap"], true) {
        return;
    }
    let rootfs = crate::hardening::debian_flavour("minbase");
    let s = Scratch::new();
    std::fs::copy(&rootfs, s.path().join("base.tar")).unwrap();
    s.keygen("cosign", "pw");
    s.keygen("other", "x");
    let reg = Registry::start();
    let motd = "baked by kiln\n";
    let motd_sha = hex_sha256(motd.as_bytes());
    let coreutils = dpkg_version_in_tar(&rootfs, "coreutils");
    let image = format!("{}/t/deb:1", reg.addr);
    let tests = DEBIAN_TESTS
        .replace("MOTD_SHA", &motd_sha)
        .replace("COREUTILS_VERSION", &coreutils);
    let t = s.write(
        "t.toml",
        &format!(
            "[image]\nname = \"deb\"\nversion = \"1.0.0\"\n\n[source.oci.img]\nfrom = \"rootfs:base.tar\"\nto = [\"registry:{image}\", \"oci-layout:out/img:1\"]\n\n[[build]]\nname = \"b\"\nsources = [\"oci.img\"]\n\n[[build.provisioner]]\ntype = \"shell\"\ninline = [\"printf 'baked by kiln\\\\n' > /etc/motd\", \"chgrp adm /etc/motd\", \"chmod 0640 /etc/motd\", \"groupadd -g 1500 app\", \"useradd -u 1500 -g app -G adm -d /home/app -s /bin/sh app\"]\n{tests}\n[build.sign]\nkey = \"cosign.key\"\n\n[build.register]\nchannels = [\"dev\"]\n"
        ),
    );
    let o = s
        .kiln()
        .args(["build", "--json"])
        .arg(&t)
        .env("KILN_PASSWORD", "pw")
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert_exit(&o, 0);
    assert!(out.contains("\"step\":\"test\""), "a test step ran: {out}");
    assert!(
        out.contains("testing `registry:") && out.contains("in a fresh instance"),
        "{out}"
    );
    let summary = crate::json_summary(&o);
    let artifacts = summary["jobs"][0]["artifacts"].as_array().unwrap();
    let digest = artifacts[0]["digest"].as_str().unwrap().to_string();

    // The manifest records every test with what it observed.
    let manifest_file = PathBuf::from(artifacts[0]["manifest"].as_str().unwrap());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_file).unwrap()).unwrap();
    let report = &manifest["tests"];
    assert_eq!(report["digest"], digest.as_str(), "{report}");
    let tests = report["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 10, "{report}");
    for t in tests {
        assert_eq!(t["outcome"], "pass", "{t}\n{err}");
    }
    let motd_checks = &tests[0]["checks"];
    assert!(
        motd_checks
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["property"] == "mode" && c["observed"] == "0640"),
        "{motd_checks}"
    );
    assert_eq!(tests[0]["name"], "file /etc/motd");
    assert!(
        tests[0]["at"].as_str().unwrap().contains("t.toml:"),
        "{}",
        tests[0]
    );
    assert_eq!(report["attestation"]["result"], "PASSED");

    // The attestation beside the manifest, and beside the layout: signed
    // with the build's key, a strict in-toto test-result statement.
    let (public, wrong) = (s.path().join("cosign.pub"), s.path().join("other.pub"));
    let work = s.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let beside_manifest = PathBuf::from(report["attestation"]["file"].as_str().unwrap());
    let beside_layout = s.path().join("out/img.tests.intoto.json");
    for envelope in [&beside_manifest, &beside_layout] {
        let payload = checkers::assert_envelope(
            &public,
            &wrong,
            envelope,
            "application/vnd.in-toto+json",
            &work,
        );
        let st = checkers::assert_statement(&payload, &work);
        assert_test_statement(&st, &digest, 10);
    }

    // The registry's `.att` holds it beside the provenance.
    let tag = digest.replace(':', "-");
    let att_dir = s.path().join("att");
    let m = skopeo_fetch(&format!("{}/t/deb:{tag}.att", reg.addr), &att_dir);
    let kinds: Vec<String> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let env = blob_path(&att_dir, l["digest"].as_str().unwrap());
            let payload = checkers::assert_envelope(
                &public,
                &wrong,
                &env,
                "application/vnd.in-toto+json",
                &work,
            );
            let st = checkers::assert_statement(&payload, &work);
            st["predicateType"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(
        kinds.contains(&"https://in-toto.io/attestation/test-result/v0.1".to_string())
            && kinds.contains(&"https://slsa.dev/provenance/v1".to_string()),
        "{kinds:?}"
    );

    // `kiln verify --require-tests` accepts the registry image, the layout
    // and the build manifest with the build's key, and refuses them with
    // another key.
    let layout = format!("oci-layout:{}:1", s.path().join("out/img").display());
    let manifest_arg = manifest_file.display().to_string();
    for artifact in [format!("registry:{image}"), layout.clone(), manifest_arg] {
        let o = s
            .kiln()
            .args(["verify", "--require-tests", "--key", "cosign.pub"])
            .arg(&artifact)
            .output()
            .unwrap();
        assert_exit(&o, 0);
        assert!(text(&o).0.contains("PASSED"), "{artifact}: {}", text(&o).0);
        let o = s
            .kiln()
            .args(["verify", "--require-tests", "--key", "other.pub"])
            .arg(&artifact)
            .output()
            .unwrap();
        assert_exit(&o, 1);
    }

    // Registered and promoted: the tests passed.
    let o = s
        .kiln()
        .args(["images", "list", "--json"])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert!(text(&o).0.contains("\"deb\""), "{}", text(&o).0);
    let o = s.kiln().arg("audit").output().unwrap();
    assert_exit(&o, 0);
    assert!(
        text(&o)
            .0
            .contains("tests: PASSED (10 passed, 0 warned, 0 failed)"),
        "{}",
        text(&o).0
    );

    // `kiln test` re-tests the pushed image by its tag, and signs the
    // result with the template's key like a build (nightly evidence).
    let o = s
        .kiln()
        .arg("test")
        .arg(&t)
        .args(["--artifact", &format!("registry:{image}")])
        .env("KILN_PASSWORD", "pw")
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert!(
        text(&o).0.contains(&format!("PASSED ({digest})")),
        "{}",
        text(&o).0
    );
    assert!(
        text(&o).1.contains("test attestation attached: `"),
        "{}",
        text(&o).1
    );
    let o = s
        .kiln()
        .arg("test")
        .arg(&t)
        .args(["--json", "--artifact", &format!("registry:{image}")])
        .env("KILN_PASSWORD", "pw")
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let report: serde_json::Value = serde_json::from_str(text(&o).0.trim()).unwrap();
    let file = report["attestation"][0].as_str().unwrap().to_string();
    assert!(
        file.contains("/manifests/test-") && file.ends_with(".tests.intoto.json"),
        "{report}"
    );
    // Checked by the independent verifiers, like the build's.
    let payload = checkers::assert_envelope(
        &public,
        &wrong,
        Path::new(&file),
        "application/vnd.in-toto+json",
        &work,
    );
    let st = checkers::assert_statement(&payload, &work);
    assert_test_statement(&st, &digest, 10);
    assert!(st["predicate"]["url"]
        .as_str()
        .unwrap()
        .starts_with("kiln:build/test-"));
    let o = s
        .kiln()
        .args(["verify", "--key", "cosign.pub", "--require-tests", &file])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert_nothing_left(&s);
}

fn assert_test_statement(st: &serde_json::Value, digest: &str, passed: usize) {
    assert_eq!(
        st["predicateType"],
        "https://in-toto.io/attestation/test-result/v0.1"
    );
    assert_eq!(
        format!(
            "sha256:{}",
            st["subject"][0]["digest"]["sha256"].as_str().unwrap()
        ),
        digest
    );
    let p = &st["predicate"];
    assert_eq!(p["result"], "PASSED", "{st}");
    assert_eq!(p["passedTests"].as_array().unwrap().len(), passed, "{st}");
    assert!(p["failedTests"].as_array().unwrap().is_empty(), "{st}");
    assert!(
        p["configuration"][0]["uri"]
            .as_str()
            .unwrap()
            .ends_with("t.toml"),
        "{st}"
    );
}

/// A busybox template pushing to `registry` with channel `stable` and these tests.
fn busybox_template(s: &Scratch, image: &str, tests: &str) -> PathBuf {
    s.write(
        "t.toml",
        &format!(
            "[image]\nname = \"bb\"\nversion = \"1.0.0\"\n\n[source.oci.img]\nfrom = \"rootfs:base.tar\"\nto = [\"registry:{image}\"]\n\n[[build]]\nname = \"b\"\nsources = [\"oci.img\"]\n\n[[build.provisioner]]\ntype = \"shell\"\ninline = [\"echo hello > /etc/motd\"]\n{tests}\n[build.register]\nchannels = [\"stable\"]\n"
        ),
    )
}

const FAILING: &str = "[[build.test]]\ntype = \"file\"\npath = \"/etc/motd\"\nmode = \"0600\"\ncontains = [\"hello\"]\n\n[[build.test]]\ntype = \"command\"\nrun = \"cat /etc/motd\"\nstdout_contains = [\"hello\"]\n";

/// A failing test fails the build (exit 1) with the observed value named;
/// nothing is registered, the channel tag is not pushed, and nothing is
/// left. With `--keep-on-failure` the test instance stays, journaled,
/// until `kiln cleanup`.
#[test]
fn failing_test_fails_the_build_and_nothing_is_registered_or_published() {
    if !ready() {
        return;
    }
    let s = Scratch::new();
    busybox_rootfs(&s, &[]);
    let reg = Registry::start();
    let image = format!("{}/t/bb:1", reg.addr);
    let t = busybox_template(&s, &image, FAILING);
    let o = s.kiln().args(["build", "--json"]).arg(&t).output().unwrap();
    let out = text(&o).0;
    assert_exit(&o, 1);
    let summary = crate::json_summary(&o);
    let error = summary["jobs"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("test failed")
            && error.contains("1 of 2 tests")
            && error.contains("file /etc/motd"),
        "{error}"
    );
    assert!(
        out.contains("mode: expected 0600, observed 0644"),
        "the observed value is reported: {out}"
    );
    assert!(summary["jobs"][0]["artifacts"]
        .as_array()
        .unwrap()
        .is_empty());
    // Not registered, no channel tag.
    let o = s
        .kiln()
        .args(["images", "list", "--json"])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert!(!text(&o).0.contains("\"bb\""), "{}", text(&o).0);
    assert_eq!(tags(&format!("{}/t/bb", reg.addr)), vec!["1".to_string()]);
    assert_nothing_left(&s);

    // `kiln test` of the pushed (untested) image fails the same way.
    let o = s
        .kiln()
        .arg("test")
        .arg(&t)
        .args(["--artifact", &format!("registry:{image}"), "--json"])
        .output()
        .unwrap();
    assert_exit(&o, 1);
    let report: serde_json::Value = serde_json::from_str(text(&o).0.trim()).unwrap();
    assert_eq!(report["result"], "FAILED");
    assert_eq!(report["tests"][0]["outcome"], "fail");
    assert_eq!(report["tests"][1]["outcome"], "pass");
    assert!(report["digest"].as_str().unwrap().starts_with("sha256:"));
    assert_nothing_left(&s);

    // --keep-on-failure: the test instance stays for inspection, journaled.
    let o = s
        .kiln()
        .args(["build", "--json", "--keep-on-failure"])
        .arg(&t)
        .output()
        .unwrap();
    assert_exit(&o, 1);
    assert!(
        text(&o).0.contains("kept the failed test instance"),
        "{}",
        text(&o).0
    );
    let kept = kiln::job::Journal::new(&s.state()).entries().unwrap();
    assert!(
        !kept.is_empty() && kept.iter().all(|(_, e)| e.job.ends_with(".test")),
        "only the test instance is kept: {:?}",
        kept.iter().map(|(_, e)| &e.description).collect::<Vec<_>>()
    );
    let rootfs = kept
        .iter()
        .find(|(_, e)| e.description == "unpacked image")
        .map(|(_, e)| match &e.resource {
            kiln::job::Resource::TempDir { path } => path.join("rootfs/etc/motd"),
            r => panic!("{r:?}"),
        })
        .unwrap();
    assert_eq!(std::fs::read_to_string(&rootfs).unwrap(), "hello\n");
    let o = s.kiln().arg("cleanup").output().unwrap();
    assert_exit(&o, 0);
    assert_nothing_left(&s);

    // A signed image that was never tested: `kiln verify` accepts its
    // signature, `--require-tests` refuses it.
    s.keygen("cosign", "pw");
    let untested = format!("{}/t/untested:1", reg.addr);
    let t = s.write(
        "u.toml",
        &format!("[image]\nname = \"u\"\nversion = \"1.0.0\"\n[source.oci.img]\nfrom = \"rootfs:base.tar\"\nto = [\"registry:{untested}\"]\n[[build]]\nsources = [\"oci.img\"]\n[build.sign]\nkey = \"cosign.key\"\n"),
    );
    let o = s
        .kiln()
        .args(["build", "--json"])
        .arg(&t)
        .env("KILN_PASSWORD", "pw")
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let verify = |extra: &[&str]| {
        s.kiln()
            .args(["verify", "--key", "cosign.pub"])
            .args(extra)
            .arg(format!("registry:{untested}"))
            .output()
            .unwrap()
    };
    assert_exit(&verify(&[]), 0);
    let o = verify(&["--require-tests"]);
    assert_exit(&o, 1);
    assert!(
        text(&o).1.contains("no passing test attestation"),
        "{}",
        text(&o).1
    );
}

/// SIGKILL while a test command runs in the test container, then
/// `kiln cleanup`: no container, folder or journal entry is left.
#[test]
fn sigkill_during_the_test_phase_then_cleanup_leaves_nothing() {
    if !ready() {
        return;
    }
    let s = Scratch::new();
    busybox_rootfs(&s, &[]);
    let reg = Registry::start();
    let image = format!("{}/t/bb:1", reg.addr);
    let t = busybox_template(
        &s,
        &image,
        "[[build.test]]\ntype = \"command\"\nrun = \"sleep 300\"\ntimeout = \"10m\"\n",
    );
    let mut child = s
        .kiln()
        .args(["build", "--json"])
        .arg(&t)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        if line.unwrap().contains("in a fresh instance") {
            break;
        }
    }
    // Wait until the test command's container exists (journaled first).
    let start = std::time::Instant::now();
    loop {
        let entries = kiln::job::Journal::new(&s.state()).entries().unwrap();
        let running = entries
            .iter()
            .any(|(_, e)| e.job.ends_with(".test") && e.description.contains("container"));
        if running && runc_containers(&s) > 0 {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "no test container appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(runc_containers(&s) > 0, "the test container outlived kiln");
    let o = s.kiln().arg("cleanup").output().unwrap();
    assert_exit(&o, 0);
    assert!(text(&o).0.contains("unpacked image"), "{}", text(&o).0);
    assert_nothing_left(&s);
}

/// A template whose tests are on a source that cannot be tested yet is
/// refused before anything runs, naming where the test is declared.
#[test]
fn tests_on_a_backend_without_them_are_refused_up_front() {
    let s = Scratch::new();
    let t = s.write(
        "t.toml",
        "[image]\nname = \"n\"\nversion = \"1.0.0\"\n[source.null.x]\n[[build]]\nsources = [\"null.x\"]\n[[build.test]]\ntype = \"file\"\npath = \"/etc/passwd\"\n",
    );
    let o = s.kiln().args(["build", "--json"]).arg(&t).output().unwrap();
    assert_exit(&o, 1);
    let summary = crate::json_summary(&o);
    let error = summary["jobs"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("not supported yet") && error.contains("t.toml:8:1"),
        "{error}"
    );
    // And a misspelt field is an input error with its place.
    let t = s.write(
        "t.toml",
        "[image]\nname = \"n\"\nversion = \"1.0.0\"\n[source.null.x]\n[[build]]\nsources = [\"null.x\"]\n[[build.test]]\ntype = \"file\"\npth = \"/etc/passwd\"\n",
    );
    let o = s.kiln().arg("validate").arg(&t).output().unwrap();
    assert_exit(&o, 2);
    let err = text(&o).1;
    assert!(err.contains("t.toml:9:1") && err.contains("`pth`"), "{err}");
}

fn runc_containers(s: &Scratch) -> usize {
    let root = s.state().join("oci/runtime");
    if !root.exists() {
        return 0;
    }
    let o = Command::new("runc")
        .arg("--root")
        .arg(&root)
        .args(["list", "-q"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).lines().count()
}

fn tags(repo: &str) -> Vec<String> {
    let o = Command::new("skopeo")
        .args(["list-tags", "--tls-verify=false"])
        .arg(format!("docker://{repo}"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut t: Vec<String> = v["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .filter(|t| !t.starts_with("sha256-"))
        .collect();
    t.sort();
    t
}

fn hex_sha256(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// The installed version of `package` in a rootfs tar's dpkg status,
/// read here with tar and the file's own format, not kiln's parser.
fn dpkg_version_in_tar(tar_file: &Path, package: &str) -> String {
    let o = Command::new("tar")
        .args(["-xOf"])
        .arg(tar_file)
        .arg("./var/lib/dpkg/status")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let status = String::from_utf8_lossy(&o.stdout);
    let para = status
        .split("\n\n")
        .find(|p| p.lines().any(|l| l == format!("Package: {package}")))
        .unwrap_or_else(|| panic!("{package} not in the base"));
    para.lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .unwrap()
        .to_string()
}

/// Stands in for goss, which no package registry reachable here ships
/// (the real one runs in `goss_adapter_with_a_real_goss_binary`): it
/// checks the arguments kiln gives it, reads the artifact's `/etc/motd`
/// in the test container and prints goss v0.4's JSON report shape.
const FAKE_GOSS: &str = r#"#!/bin/sh
[ "$1" = "--gossfile" ] && [ "$3" = "--vars" ] && [ "$5" = "validate" ] && [ "$6" = "--format" ] && [ "$7" = "json" ] || { echo "unexpected arguments: $*" >&2; exit 9; }
grep -q '^file:' "$2" || { echo "not the goss file" >&2; exit 9; }
grep -q 'port: 80' "$4" || { echo "not the vars file" >&2; exit 9; }
motd=$(cat /etc/motd)
printf '{"results":[{"resource-type":"File","resource-id":"/etc/motd","property":"contains","result":0,"matcher-result":{"expected":["hello"],"actual":"%s"}},{"resource-type":"Service","resource-id":"nginx","property":"running","result":1,"matcher-result":{"expected":true,"actual":false}}],"summary":{"test-count":2,"failed-count":1}}\n' "$motd"
exit 1
"#;

/// `type = "goss"`: the binary and the files go into the test container
/// (read-only root: they are placed in its rootfs), goss's JSON becomes
/// kiln's checks with the values observed in the artifact, a failing goss
/// result fails the build; a missing `goss_binary` is an input error.
#[test]
fn goss_tests_run_the_given_binary_in_the_artifact_and_report_each_result() {
    if !ready() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new();
    busybox_rootfs(&s, &[]);
    let reg = Registry::start();
    s.write("goss.yaml", "file:\n  /etc/motd:\n    exists: true\n    contents: [hello]\nservice:\n  nginx:\n    running: true\n");
    s.write("vars.yaml", "port: 80\n");
    let fake = s.write("bin/goss", FAKE_GOSS);
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let tests = "[[build.test]]\ntype = \"goss\"\nfile = \"goss.yaml\"\nvars = \"vars.yaml\"\ngoss_binary = \"bin/goss\"\n";
    let t = busybox_template(&s, &format!("{}/t/bb:1", reg.addr), tests);
    let o = s.kiln().args(["build", "--json"]).arg(&t).output().unwrap();
    assert_exit(&o, 1);
    let out = text(&o).0;
    assert!(
        out.contains("Service nginx: running: expected true, observed false"),
        "goss's failing result, with its values: {out}"
    );
    let summary = crate::json_summary(&o);
    let error = summary["jobs"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("1 of 1 tests") && error.contains("goss.yaml (") && error.contains("goss /"),
        "{error}"
    );
    assert_nothing_left(&s);
    // The passing result carried what the container's /etc/motd holds:
    // goss ran in the artifact (the shell provisioner wrote it).
    let passing = FAKE_GOSS
        .replace("\"result\":1", "\"result\":0")
        .replace("exit 1", "exit 0");
    s.write("bin/goss", &passing);
    let o = s.kiln().args(["build", "--json"]).arg(&t).output().unwrap();
    assert_exit(&o, 0);
    let events = text(&o).0;
    assert!(
        events.contains("test pass: goss /") && events.contains("goss.yaml ("),
        "{events}"
    );
    assert_nothing_left(&s);

    let t = busybox_template(
        &s,
        &format!("{}/t/bb:2", reg.addr),
        &tests.replace("bin/goss", "bin/missing-goss"),
    );
    let o = s.kiln().arg("validate").arg(&t).output().unwrap();
    assert_exit(&o, 2);
    let err = text(&o).1;
    assert!(
        err.contains("`goss_binary`: the file `")
            && err.contains("bin/missing-goss` does not exist")
            && err.contains("t.toml:20:15"),
        "{err}"
    );
}

/// The adapter against the real goss: needs a goss binary, which no
/// package registry reachable from here ships; run with
/// `KILN_GOSS=/path/to/goss cargo test --test it -- --ignored goss_adapter`.
#[test]
#[ignore = "needs the goss binary (KILN_GOSS=/path/to/goss); not installable from the registries here"]
fn goss_adapter_with_a_real_goss_binary() {
    let goss = std::env::var("KILN_GOSS").expect("KILN_GOSS=/path/to/goss");
    assert!(ready(), "needs root, runc and a registry");
    let s = Scratch::new();
    busybox_rootfs(&s, &[]);
    let reg = Registry::start();
    s.write("goss.yaml", "file:\n  /etc/motd:\n    exists: true\n    contents: [hello]\n  /etc/build-host-only:\n    exists: false\nuser:\n  root:\n    exists: true\n    uid: 0\n");
    let tests = format!(
        "[[build.test]]\ntype = \"goss\"\nfile = \"goss.yaml\"\ngoss_binary = \"{goss}\"\n"
    );
    let t = busybox_template(&s, &format!("{}/t/bb:1", reg.addr), &tests);
    let o = s.kiln().args(["build", "--json"]).arg(&t).output().unwrap();
    assert_exit(&o, 0);
    assert!(text(&o).0.contains("test pass: goss /"), "{}", text(&o).0);
    assert_nothing_left(&s);
}
