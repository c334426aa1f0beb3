//! The policy gate end to end: busybox OCI builds judged by a Rego policy
//! ("no failed high hardening rule, tests passed, no critical
//! vulnerability without VEX, signed") at a build's `[build.register]
//! channels` and at `kiln images promote`; every decision (allow, deny,
//! override) a signed entry that `kiln audit` shows and verifies; a
//! malformed policy named by file:line:col; and the same policies and
//! inputs evaluated by the real OPA engine (PyPI
//! opa-golib-python-bindings), which must decide the same.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::oci::busybox_rootfs;
use crate::{assert_exit, text, Scratch};

fn ready() -> bool {
    crate::require("policy", &["runc", "busybox"], true)
}

/// The policy of the issue: no failed high hardening rule, tests passed,
/// no critical vulnerability without VEX (here on planted inputs; the
/// findings of real logged rescans are gated in tests/it/rescan.rs), and
/// a signed build.
const GATE: &str = r#"package kiln.promote

deny_failed_hardening contains msg if {
	some report in input.hardening
	some rule in report.rules
	rule.severity == "high"
	rule.result == "fail"
	msg := sprintf("high-severity hardening rule %s/%s failed", [report.profile, rule.id])
}

deny_tests contains "no [[build.test]] ran on the artifact" if {
	not input.tests.ran
}

deny_tests contains msg if {
	input.tests.result == "FAILED"
	msg := sprintf("%d of %d test(s) failed", [input.tests.failed, count(input.tests.tests)])
}

deny_vulnerable contains msg if {
	some f in input.vulnerabilities.findings
	f.severity == "critical"
	not f.vex
	msg := sprintf("critical %s in %s without a VEX statement", [f.id, f.package])
}

deny_unsigned contains "the build was not signed" if {
	input.signer.key_id == null
}

warn_no_sbom contains "no SBOM recorded" if {
	not input.sbom.present
}
"#;

/// A busybox build with a high-severity hardening rule that passes only
/// when the shell provisioner made `/etc/<marker>`, a passing
/// `[[build.test]]`, the gate above and channel `dev`.
fn template(s: &Scratch) -> PathBuf {
    s.write("gate.rego", GATE);
    s.write(
        "p.toml",
        "description = \"policy test rules\"\n\n[[rule]]\nid = \"root-login\"\ntitle = \"no root login\"\nrationale = \"test\"\nseverity = \"high\"\ndistros = [\"kilntest\"]\napply = \"echo applying\"\ncheck = '''test -e /etc/ok || { echo PermitRootLogin yes; exit 1; }'''\n",
    );
    s.write(
        "t.toml",
        "[image]\nname = \"gated\"\nversion = \"1.0.0\"\n\n[variables.marker]\ntype = \"string\"\ndefault = \"nothing\"\n\n[source.oci.img]\nfrom = \"rootfs:base.tar\"\nto = [\"oci-layout:out/img:1.0.0\"]\nnetwork = \"none\"\n\n[[build]]\nname = \"b\"\nsources = [\"oci.img\"]\n\n[[build.provisioner]]\ntype = \"shell\"\ninline = [\"echo hello > /etc/motd\", \"touch /etc/${var.marker}\"]\n\n[[build.provisioner]]\ntype = \"hardening\"\nprofile = \"p.toml\"\nfail_on = \"none\"\n\n[[build.test]]\ntype = \"command\"\nrun = \"cat /etc/motd\"\nstdout_contains = [\"hello\"]\n\n[build.sign]\nkey = \"cosign.key\"\n\n[build.policy]\nfiles = [\"gate.rego\"]\n\n[build.register]\nchannels = [\"dev\"]\n",
    )
}

fn build(s: &Scratch, t: &Path, marker: &str) -> (i32, String) {
    let o = s
        .kiln()
        .args(["build", "--var", &format!("marker={marker}")])
        .arg(t)
        .env("KILN_PASSWORD", "pw")
        .output()
        .unwrap();
    let (out, err) = text(&o);
    (o.status.code().unwrap_or(-1), out + &err)
}

fn audit(s: &Scratch) -> serde_json::Value {
    let o = s.kiln().args(["audit", "--json"]).output().unwrap();
    assert_exit(&o, 0);
    serde_json::from_str(text(&o).0.trim()).unwrap()
}

/// The policy entries of the log: (decision, version, channel, rules).
fn decisions(audit: &serde_json::Value) -> Vec<(String, String, String, Vec<String>)> {
    let entries = audit["log"]
        .as_array()
        .unwrap_or_else(|| panic!("no entries in {audit:#}"));
    entries
        .iter()
        .map(|e| &e["change"])
        .filter(|c| c["action"] == "policy")
        .map(|c| {
            (
                c["decision"].as_str().unwrap().to_string(),
                c["version"].as_str().unwrap().to_string(),
                c["channel"].as_str().unwrap().to_string(),
                c["denials"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d["rule"].as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

fn channel_target(s: &Scratch, channel: &str) -> Option<String> {
    let o = s
        .kiln()
        .args(["images", "show", "gated", channel, "--json"])
        .output()
        .unwrap();
    if o.status.code() != Some(0) {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(text(&o).0.trim()).unwrap();
    v["version"].as_str().map(String::from)
}

#[test]
fn policy_gates_build_channels_and_promotion_and_every_decision_is_logged() {
    if !ready() {
        return;
    }
    let s = Scratch::new();
    busybox_rootfs(&s, &[("etc/os-release", "ID=kilntest\n")]);
    s.keygen("cosign", "pw");
    let t = template(&s);

    // 1: the high rule fails (recorded, `fail_on = "none"`): registered,
    // but the gate keeps `dev` from it and the build fails, naming the
    // rule and its message.
    let (code, log) = build(&s, &t, "nothing");
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains("not promoted to `dev`: denied by policy")
            && log.contains(
                "deny_failed_hardening: high-severity hardening rule p/root-login failed"
            ),
        "{log}"
    );
    assert_eq!(channel_target(&s, "dev"), None, "dev must not move");

    // 1 again, with `--override-policy`: `canary` moves, the override and
    // its reason are logged (a blank reason is refused).
    let o = s
        .kiln()
        .args(["build", "--override-policy", " ", "--var", "marker=nothing"])
        .arg(&t)
        .env("KILN_PASSWORD", "pw")
        .output()
        .unwrap();
    assert_exit(&o, 2);
    std::fs::write(
        &t,
        std::fs::read_to_string(&t)
            .unwrap()
            .replace("[\"dev\"]", "[\"canary\"]"),
    )
    .unwrap();
    let o = s
        .kiln()
        .args([
            "build",
            "--override-policy",
            "canary only",
            "--var",
            "marker=nothing",
        ])
        .arg(&t)
        .env("KILN_PASSWORD", "pw")
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert!(
        text(&o)
            .1
            .contains("moves against the policy (override: canary only)"),
        "{:?}",
        text(&o)
    );
    std::fs::write(
        &t,
        std::fs::read_to_string(&t)
            .unwrap()
            .replace("[\"canary\"]", "[\"dev\"]"),
    )
    .unwrap();

    // 2: the rule passes: allowed, and `dev` moves.
    let (code, log) = build(&s, &t, "ok");
    assert_eq!(code, 0, "{log}");
    assert_eq!(channel_target(&s, "dev").as_deref(), Some("1.0.0+3"));

    // promote: version 1 is refused for `prod` (exit 1, rule named), then
    // promoted with an override whose reason is logged; version 2 passes.
    let promote = |v: &str, extra: &[&str]| {
        s.kiln()
            .args(["images", "promote", "gated", v, "prod"])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = promote("1.0.0+1", &[]);
    assert_exit(&o, 1);
    let err = text(&o).1;
    assert!(
        err.contains("denied by policy") && err.contains("deny_failed_hardening"),
        "{err}"
    );
    assert_eq!(channel_target(&s, "prod"), None);
    let o = promote("1.0.0+1", &["--override-policy", "   "]);
    assert_exit(&o, 2);
    let o = promote(
        "1.0.0+1",
        &["--override-policy", "CVE fix needed now; ticket SEC-42"],
    );
    assert_exit(&o, 0);
    assert!(
        text(&o).1.contains("promoting against the policy"),
        "{:?}",
        text(&o)
    );
    assert_eq!(channel_target(&s, "prod").as_deref(), Some("1.0.0+1"));
    let o = promote("1.0.0+3", &[]);
    assert_exit(&o, 0);
    assert!(text(&o).0.contains("policy allow"), "{:?}", text(&o));
    assert_eq!(channel_target(&s, "prod").as_deref(), Some("1.0.0+3"));

    // The log holds every decision, signed, in order, and verifies.
    let a = audit(&s);
    let rule = vec!["deny_failed_hardening".to_string()];
    assert_eq!(
        decisions(&a),
        vec![
            ("deny".into(), "1.0.0+1".into(), "dev".into(), rule.clone()),
            (
                "override".into(),
                "1.0.0+2".into(),
                "canary".into(),
                rule.clone()
            ),
            ("allow".into(), "1.0.0+3".into(), "dev".into(), vec![]),
            ("deny".into(), "1.0.0+1".into(), "prod".into(), rule.clone()),
            ("override".into(), "1.0.0+1".into(), "prod".into(), rule),
            ("allow".into(), "1.0.0+3".into(), "prod".into(), vec![]),
        ],
        "{a:#}"
    );
    let human = s.kiln().arg("audit").output().unwrap();
    assert_exit(&human, 0);
    let out = text(&human).0;
    assert!(
        out.contains("policy override gated 1.0.0+1 to prod")
            && out.contains("override reason: CVE fix needed now; ticket SEC-42"),
        "{out}"
    );
    // Each decision records the policy file's digest and the inputs'.
    let entry = a["log"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["change"]["action"] == "policy")
        .unwrap();
    let digest = format!(
        "sha256:{}",
        crate::sha256_hex(&std::fs::read(s.path().join("gate.rego")).unwrap())
    );
    assert_eq!(entry["change"]["policies"][0]["digest"], digest.as_str());
    assert_eq!(entry["change"]["inputs"].as_array().unwrap().len(), 1);

    // `kiln images register MANIFEST --channel` (a build made without a
    // catalog) is gated the same way: into another catalog, version 1's
    // manifest is registered but `dev` is refused, and logged there.
    let m1 = manifest_of(&s, "1.0.0+1");
    let other = s.path().join("other-catalog");
    let o = s
        .kiln()
        .arg("--catalog")
        .arg(&other)
        .args(["images", "register"])
        .arg(&m1)
        .args(["--channel", "dev"])
        .output()
        .unwrap();
    assert_exit(&o, 1);
    assert!(
        text(&o)
            .1
            .contains("not promoted to `dev`: denied by policy")
            && text(&o).1.contains("deny_failed_hardening"),
        "{:?}",
        text(&o)
    );
    let o = s
        .kiln()
        .arg("--catalog")
        .arg(&other)
        .args(["audit", "--json"])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let other_log: serde_json::Value = serde_json::from_str(text(&o).0.trim()).unwrap();
    assert_eq!(
        decisions(&other_log),
        vec![(
            "deny".into(),
            "1.0.0+1".into(),
            "dev".into(),
            vec!["deny_failed_hardening".to_string()]
        )]
    );

    // An edited log no longer verifies: the decision is signed.
    let log_dir = s.state().join("catalog");
    let tampered = tamper_first_decision(&log_dir);
    assert!(
        tampered,
        "a policy entry was found in {}",
        log_dir.display()
    );
    let o = s.kiln().args(["audit"]).output().unwrap();
    assert_exit(&o, 1);
}

/// The build manifest of a catalog version.
fn manifest_of(s: &Scratch, version: &str) -> PathBuf {
    let manifests = crate::files_under(&s.state().join("manifests"));
    manifests
        .iter()
        .find(|p| {
            let name = p.to_string_lossy();
            name.ends_with(".json")
                && !name.ends_with(".dsse.json")
                && !name.contains("intoto")
                && serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(p).unwrap())
                    .unwrap()["catalog"]["version"]
                    == version
        })
        .cloned()
        .unwrap_or_else(|| panic!("a manifest of {version} in {manifests:?}"))
}

/// Turns the first `deny` decision into an `allow` in the on-disk log.
fn tamper_first_decision(dir: &Path) -> bool {
    let mut files: Vec<PathBuf> = crate::files_under(dir);
    files.sort();
    for f in files {
        let Ok(t) = std::fs::read_to_string(&f) else {
            continue;
        };
        if t.contains("\"action\":\"policy\"") && t.contains("\"decision\":\"deny\"") {
            std::fs::write(
                &f,
                t.replacen("\"decision\":\"deny\"", "\"decision\":\"allow\"", 1),
            )
            .unwrap();
            return true;
        }
    }
    false
}

/// The same policy on the same input documents — the real ones `kiln
/// images promote --print-input` prints for both builds, and variants the
/// test plants (failed tests, no tests, a critical vulnerability with and
/// without VEX, unsigned) — gives the same denials, rule by rule and
/// message by message, under regorus (kiln) and OPA.
#[test]
fn opa_decides_the_same_as_kiln_on_the_same_policies_and_inputs() {
    if !ready() || !opa_ready() {
        return;
    }
    let s = Scratch::new();
    busybox_rootfs(&s, &[("etc/os-release", "ID=kilntest\n")]);
    s.keygen("cosign", "pw");
    let t = template(&s);
    assert_eq!(build(&s, &t, "nothing").0, 1);
    assert_eq!(build(&s, &t, "ok").0, 0);
    let input_of = |v: &str| -> serde_json::Value {
        let o = s
            .kiln()
            .args(["images", "promote", "gated", v, "prod", "--print-input"])
            .output()
            .unwrap();
        assert_exit(&o, 0);
        serde_json::from_str(text(&o).0.lines().next().unwrap()).unwrap()
    };
    let failing = input_of("1.0.0+1");
    let passing = input_of("1.0.0+2");
    // The documents are what the build recorded.
    assert_eq!(failing["kiln_input"], "kiln.policy-input/v1");
    assert_eq!(failing["channel"], "prod");
    assert_eq!(failing["tests"]["result"], "PASSED");
    assert_eq!(failing["vulnerabilities"]["scanned"], false);
    assert!(failing["signer"]["key_id"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));

    let mut planted = vec![];
    let mut v = passing.clone();
    v["tests"]["result"] = "FAILED".into();
    v["tests"]["failed"] = 1.into();
    planted.push(v);
    let mut v = passing.clone();
    v["tests"] = serde_json::json!({ "ran": false, "result": null, "tests": [] });
    planted.push(v);
    let mut v = passing.clone();
    v["vulnerabilities"] = serde_json::json!({ "scanned": true, "findings": [
        { "id": "CVE-2026-0001", "package": "busybox", "severity": "critical" },
        { "id": "CVE-2026-0002", "package": "busybox", "severity": "critical", "vex": { "status": "not_affected" } },
        { "id": "CVE-2026-0003", "package": "busybox", "severity": "high" },
    ]});
    planted.push(v);
    let mut v = passing.clone();
    v["signer"]["key_id"] = serde_json::Value::Null;
    planted.push(v);

    let inputs: Vec<serde_json::Value> = [failing.clone(), passing.clone()]
        .into_iter()
        .chain(planted)
        .collect();
    let rego = s.path().join("gate.rego");
    let policy =
        kiln::policy::Policy::load(std::slice::from_ref(&rego), "data.kiln.promote").unwrap();
    let ours: Vec<kiln::policy::Verdict> =
        inputs.iter().map(|i| policy.evaluate(i).unwrap()).collect();
    let theirs: Vec<kiln::policy::Verdict> = opa_eval("kiln.promote", &[&rego], &inputs)
        .iter()
        .map(kiln::policy::verdict_of)
        .collect();
    assert_eq!(ours, theirs, "regorus and OPA disagree");

    // And the decisions are the ones the policy means.
    let rules = |v: &kiln::policy::Verdict| -> Vec<String> {
        v.denials
            .iter()
            .map(|d| format!("{}: {}", d.rule, d.message))
            .collect()
    };
    assert_eq!(
        rules(&ours[0]),
        ["deny_failed_hardening: high-severity hardening rule p/root-login failed"]
    );
    assert!(ours[1].allowed(), "{:?}", ours[1]);
    assert_eq!(rules(&ours[2]), ["deny_tests: 1 of 1 test(s) failed"]);
    assert_eq!(
        rules(&ours[3]),
        ["deny_tests: no [[build.test]] ran on the artifact"]
    );
    assert_eq!(
        rules(&ours[4]),
        ["deny_vulnerable: critical CVE-2026-0001 in busybox without a VEX statement"]
    );
    assert_eq!(rules(&ours[5]), ["deny_unsigned: the build was not signed"]);
    assert_eq!(
        ours[1]
            .warnings
            .iter()
            .map(|w| w.rule.as_str())
            .collect::<Vec<_>>(),
        ["warn_no_sbom"]
    );

    // `kiln verify --policy` on the signed manifest decides as promote
    // does (no channel: the policy sees `channel: null`).
    for (version, code) in [("1.0.0+1", 1), ("1.0.0+2", 0)] {
        let m = manifest_of(&s, version);
        let o = s
            .kiln()
            .args(["verify", "--key", "cosign.pub", "--policy"])
            .arg(&rego)
            .arg(&m)
            .output()
            .unwrap();
        assert_exit(&o, code);
        if code == 1 {
            assert!(
                text(&o).1.contains("deny_failed_hardening"),
                "{:?}",
                text(&o)
            );
        }
    }
}

/// A Rego syntax error is named by file:line:col at `kiln validate` and
/// refused by `kiln build` before anything runs (exit 2); so is an
/// entrypoint that names no package of the files, and a package without
/// a deny rule (which could never refuse).
#[test]
fn a_malformed_policy_is_named_by_file_line_and_column() {
    let s = Scratch::new();
    s.write("base.tar", "");
    let t = s.write(
        "t.toml",
        "[image]\nname = \"p\"\nversion = \"1.0.0\"\n\n[source.oci.img]\nfrom = \"rootfs:base.tar\"\nto = [\"oci-layout:out/img:1\"]\n\n[[build]]\nname = \"b\"\nsources = [\"oci.img\"]\n\n[build.policy]\nfiles = [\"bad.rego\"]\n",
    );
    s.write(
        "bad.rego",
        "package kiln.promote\n\ndeny contains msg if {\n\tmsg := \"x\" +\n}\n",
    );
    for cmd in ["validate", "build"] {
        let o = s.kiln().arg(cmd).arg(&t).output().unwrap();
        assert_exit(&o, 2);
        let (out, err) = text(&o);
        let all = out + &err;
        assert!(
            all.contains("bad.rego:5:1") || all.contains("bad.rego:4:"),
            "{cmd}: {all}"
        );
        assert!(
            all.contains("[build.policy]") && all.contains("t.toml:13:"),
            "{cmd}: {all}"
        );
    }
    s.write(
        "bad.rego",
        "package kiln.other\n\ndeny contains \"x\" if { true }\n",
    );
    let o = s.kiln().arg("validate").arg(&t).output().unwrap();
    assert_exit(&o, 2);
    assert!(
        text(&o).1.contains("`data.kiln.promote` is not a package")
            && text(&o).1.contains("data.kiln.other"),
        "{:?}",
        text(&o)
    );
    s.write("bad.rego", "package kiln.promote\n\nallow if { true }\n");
    let o = s.kiln().arg("validate").arg(&t).output().unwrap();
    assert_exit(&o, 2);
    assert!(text(&o).1.contains("declares no `deny`"), "{:?}", text(&o));
    // A missing file is the template's error, at its line.
    std::fs::remove_file(s.path().join("bad.rego")).unwrap();
    let o = s.kiln().arg("validate").arg(&t).output().unwrap();
    assert_exit(&o, 2);
    assert!(text(&o).1.contains("t.toml:14:"), "{:?}", text(&o));
}

pub fn opa_ready() -> bool {
    if !crate::require("OPA cross-check", &["python3"], false) {
        return false;
    }
    let ok = Command::new("python3")
        .args(["-c", "import opa_bindings"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let msg = "the OPA cross-check needs the python module opa_bindings (pip install --ignore-requires-python opa-golib-python-bindings; installed by scripts/ci/install-deps.sh)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
    }
    ok
}

/// Each input's package document under OPA (tests/checkers/opa_eval.py).
pub fn opa_eval(
    package: &str,
    files: &[&Path],
    inputs: &[serde_json::Value],
) -> Vec<serde_json::Value> {
    let mut child = Command::new("python3")
        .arg(crate::repo().join("tests/checkers/opa_eval.py"))
        .arg(package)
        .args(files)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for i in inputs {
            writeln!(stdin, "{i}").unwrap();
        }
    }
    let o = child.wait_with_output().unwrap();
    assert_exit(&o, 0);
    text(&o)
        .0
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The SBOM reaches the policy: a `[build.sbom]` build of a busybox image
/// with a planted apk database (a "banned" musl version) is denied by a
/// rule over `input.sbom.packages`; the input names the packages with
/// their purls; and an SBOM edited after the build is refused, not read.
#[test]
fn sbom_packages_reach_the_policy_and_an_edited_sbom_is_refused() {
    if !ready() {
        return;
    }
    let s = Scratch::new();
    busybox_rootfs(
        &s,
        &[
            ("etc/os-release", crate::rescan::ALPINE_OS_RELEASE),
            ("lib/apk/db/installed", crate::rescan::APK_INSTALLED),
        ],
    );
    s.write(
        "sbom.rego",
        "package gate.sbom\n\ndeny_banned contains msg if {\n\tsome p in input.sbom.packages\n\tp.name == \"musl\"\n\tstartswith(p.version, \"1.2.4\")\n\tmsg := sprintf(\"banned %s\", [p.purl])\n}\n\ndeny_no_sbom contains \"no SBOM\" if {\n\tnot input.sbom.present\n}\n",
    );
    let t = s.write(
        "t.toml",
        "[image]\nname = \"gated\"\nversion = \"1.0.0\"\n\n[variables.marker]\ntype = \"string\"\n\n[source.oci.img]\nfrom = \"rootfs:base.tar\"\nto = [\"oci-layout:out/img:1\"]\nnetwork = \"none\"\n\n[[build]]\nsources = [\"oci.img\"]\n\n[[build.provisioner]]\ntype = \"shell\"\ninline = [\"echo hi > /etc/motd\"]\n\n[build.sbom]\nenabled = true\n\n[build.policy]\nfiles = [\"sbom.rego\"]\nentrypoint = \"gate.sbom\"\n\n[build.register]\nchannels = [\"dev\"]\n",
    );
    let (code, log) = build(&s, &t, "x");
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains("deny_banned: banned pkg:apk/alpine/musl@1.2.4_git20230717-r4"),
        "{log}"
    );
    let o = s
        .kiln()
        .args([
            "images",
            "promote",
            "gated",
            "1.0.0+1",
            "prod",
            "--print-input",
        ])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let input: serde_json::Value = serde_json::from_str(text(&o).0.trim()).unwrap();
    assert_eq!(input["sbom"]["package_count"], 2, "{input:#}");
    let names: Vec<&str> = input["sbom"]["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        names.contains(&"musl") && names.contains(&"busybox-binsh"),
        "{names:?}"
    );
    assert_eq!(input["signer"]["key_id"], serde_json::Value::Null);

    // Edit the recorded CycloneDX document: the gate refuses to read it.
    let cdx = crate::files_under(&s.state().join("manifests"))
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".cdx.json"))
        .unwrap();
    let text_of = std::fs::read_to_string(&cdx).unwrap();
    std::fs::write(&cdx, text_of.replace("1.2.4_git20230717-r4", "9.9.9")).unwrap();
    let o = s
        .kiln()
        .args(["images", "promote", "gated", "1.0.0+1", "prod"])
        .output()
        .unwrap();
    assert_exit(&o, 1);
    assert!(
        text(&o).1.contains("is not the one the manifest recorded"),
        "{:?}",
        text(&o)
    );
}
