//! The OCI builder end to end, against real components: runc, the Debian
//! `docker-registry` on a free loopback port, and `skopeo` and `umoci` as
//! independent checkers. Needs root. Missing pieces fail the test in CI
//! (`CI=true`) and skip it, loudly, elsewhere.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{assert_exit, text, Scratch};

pub(crate) const SECRET: &str = "oci-test-secret-4711";

/// True when everything the OCI tests need is here.
pub(crate) fn ready() -> bool {
    crate::require(
        "OCI",
        &[
            "runc",
            "docker-registry",
            "skopeo",
            "umoci",
            "busybox",
            "htpasswd",
        ],
        true,
    )
}

/// A `docker-registry` on a free loopback port, stopped on drop.
pub struct Registry {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        Self::start_with(None)
    }

    /// With `Some((user, password))`, the registry wants basic auth.
    pub fn start_with(user: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let addr = crate::free_addr();
        let cfg = dir.path().join("config.yml");
        let mut config = format!("version: 0.1\nlog:\n  level: error\nstorage:\n  delete:\n    enabled: true\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n", dir.path().join("data").display());
        if let Some((u, p)) = user {
            let o = Command::new("htpasswd")
                .args(["-Bbn", u, p])
                .output()
                .expect("htpasswd (apache2-utils)");
            std::fs::write(dir.path().join("htpasswd"), &o.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            ));
        }
        std::fs::write(&cfg, config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        crate::wait_listening(&addr, "docker-registry");
        Registry {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal busybox root filesystem as a tar file.
pub fn busybox_rootfs(s: &Scratch, extra: &[(&str, &str)]) -> PathBuf {
    let extra: Vec<(&str, &[u8])> = extra.iter().map(|(n, c)| (*n, c.as_bytes())).collect();
    busybox_rootfs_bytes(s, &extra)
}

/// [`busybox_rootfs`] with files of any content.
pub fn busybox_rootfs_bytes(s: &Scratch, extra: &[(&str, &[u8])]) -> PathBuf {
    let busybox = std::fs::read("/usr/bin/busybox")
        .or_else(|_| std::fs::read("/bin/busybox"))
        .unwrap();
    let path = s.path().join("base.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
    let mut add = |name: &str, data: &[u8], mode: u32, kind: tar::EntryType, link: Option<&str>| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        b.append_data(&mut h, name, data).unwrap();
    };
    for d in ["bin", "etc", "tmp", "root"] {
        add(d, b"", 0o755, tar::EntryType::Directory, None);
    }
    add(
        "bin/busybox",
        &busybox,
        0o755,
        tar::EntryType::Regular,
        None,
    );
    for applet in [
        "sh", "cat", "echo", "rm", "mkdir", "chmod", "sleep", "ls", "id", "stat", "head", "base64",
    ] {
        add(
            &format!("bin/{applet}"),
            b"",
            0o777,
            tar::EntryType::Symlink,
            Some("busybox"),
        );
    }
    add(
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\n",
        0o644,
        tar::EntryType::Regular,
        None,
    );
    for (name, content) in extra {
        add(name, content, 0o644, tar::EntryType::Regular, None);
    }
    b.into_inner().unwrap().flush().unwrap();
    path
}

/// Runs `kiln build --json` and returns (exit code, summary event, stdout).
pub(crate) fn build(s: &Scratch, template: &Path) -> (i32, serde_json::Value, String) {
    let o = s
        .kiln()
        .args(["build", "--json"])
        .arg(template)
        .env("KILN_OCI_TEST_TOKEN", SECRET)
        .output()
        .unwrap();
    let summary = crate::json_summary(&o);
    (o.status.code().unwrap_or(-1), summary, text(&o).0)
}

fn skopeo_layers(reference: &str) -> Vec<String> {
    let o = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "skopeo inspect {reference}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect()
}

/// Nothing of a build is left: mounts, containers, work and tmpfs folders, journal.
pub(crate) fn assert_nothing_left(s: &Scratch) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let state = s.state().display().to_string();
    assert!(!mounts.contains(&state), "a mount is left under {state}");
    let runtime_root = s.state().join("oci/runtime");
    if runtime_root.exists() {
        let o = Command::new("runc")
            .arg("--root")
            .arg(&runtime_root)
            .args(["list", "-q"])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&o.stdout).trim().is_empty(),
            "containers left: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    let work = s.state().join("work");
    assert!(
        !work.exists() || std::fs::read_dir(&work).unwrap().next().is_none(),
        "work directories left"
    );
    assert!(
        kiln::job::Journal::new(&s.state())
            .entries()
            .unwrap()
            .is_empty(),
        "journal not empty"
    );
}

pub(crate) fn template(from: &str, to: &str, provisioners: &str) -> String {
    format!(
        "[image]\nname = \"web\"\nversion = \"1.2.3\"\n\n[source.oci.img]\nfrom = \"{from}\"\nto = [{to}]\n\n[source.oci.img.config]\ncmd = [\"/bin/sh\"]\n\n[[build]]\nname = \"b\"\nsources = [\"oci.img\"]\n{provisioners}\n"
    )
}

#[test]
fn bakes_a_registry_base_and_is_reproducible() {
    if !ready() {
        return;
    }
    let reg = Registry::start();
    let s = Scratch::new();
    busybox_rootfs(&s, &[("etc/old.txt", "old\n"), ("etc/gone.txt", "bye\n")]);
    // The base image, built by kiln from a rootfs tarball and pushed.
    let base = format!("{}/base/busybox:1", reg.addr);
    let t = s.write(
        "base.toml",
        &template("rootfs:base.tar", &format!("\"registry:{base}\""), ""),
    );
    let (code, summary, _) = build(&s, &t);
    assert_eq!(code, 0, "{summary}");
    let base_layers = skopeo_layers(&base);

    s.write("files/app.conf", "listen 80\n");
    let provisioners = r#"
[[build.provisioner]]
type = "shell"
inline = ["echo new > /etc/new.txt", "echo changed > /etc/old.txt", "chmod 0600 /etc/old.txt", "rm /etc/gone.txt", "test -n \"$TOKEN\"", "echo secret is $TOKEN"]
env = { TOKEN = "${secret.token}" }

[[build.provisioner]]
type = "file"
source = "files/app.conf"
destination = "/etc/app/app.conf"
mode = "0640"

[secrets.token]
env = "KILN_OCI_TEST_TOKEN"
"#;
    let golden = format!("{}/golden/web:1.2.3", reg.addr);
    let t = s.write(
        "web.toml",
        &template(
            &format!("registry:{base}"),
            &format!("\"registry:{golden}\", \"oci-layout:out/web:1.2.3\""),
            provisioners,
        ),
    );
    let (code, first, out) = build(&s, &t);
    assert_eq!(code, 0, "{first}\n{out}");
    let digest = first["jobs"][0]["artifacts"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        first["jobs"][0]["artifacts"][1]["digest"],
        digest.as_str(),
        "registry and layout hold the same image"
    );

    // skopeo sees exactly one new layer on top of the base.
    let layers = skopeo_layers(&golden);
    assert_eq!(layers.len(), base_layers.len() + 1);
    assert_eq!(&layers[..base_layers.len()], &base_layers[..]);

    // History pairs with layers (buildah and docker refuse images where it does not).
    let o = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--config"])
        .arg(format!("docker://{golden}"))
        .output()
        .unwrap();
    let config: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let non_empty = config["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["empty_layer"] != true)
        .count();
    assert_eq!(non_empty, layers.len(), "{config}");

    // umoci sees the changes.
    let bundle = s.path().join("bundle");
    let o = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:1.2.3", s.path().join("out/web").display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "umoci: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let root = bundle.join("rootfs");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/new.txt")).unwrap(),
        "new\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/old.txt")).unwrap(),
        "changed\n"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(root.join("etc/old.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(root.join("etc/app/app.conf"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o640
    );
    assert!(
        !root.join("etc/gone.txt").exists(),
        "deleted files are gone"
    );
    assert!(!root
        .join("proc")
        .read_dir()
        .is_ok_and(|mut d| d.next().is_some()));
    assert_nothing_left(&s);

    // The secret reached the provisioner, but no output and no blob.
    assert!(out.contains("secret is <redacted>"), "{out}");
    assert!(!out.contains(SECRET));
    for blob in std::fs::read_dir(s.path().join("out/web/blobs/sha256"))
        .unwrap()
        .flatten()
    {
        let mut bytes = vec![];
        let mut r = kiln::builder::oci::unpack::open_layer(&blob.path()).unwrap();
        std::io::Read::read_to_end(&mut r, &mut bytes).unwrap();
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "secret in blob {:?}",
            blob.path()
        );
    }
    let build_id = first["build_id"].as_str().unwrap();
    let shm_left = std::fs::read_dir("/dev/shm").unwrap().flatten().any(|e| {
        e.file_name()
            .to_string_lossy()
            .starts_with(&format!("kiln-{build_id}"))
    });
    assert!(
        !shm_left,
        "runtime configs (with the environment) are removed from the tmpfs"
    );

    // The build manifest records inputs and outputs, and no secret.
    let manifest_path = first["jobs"][0]["artifacts"][0]["manifest"]
        .as_str()
        .expect("a manifest per artifact");
    let manifest_text = std::fs::read_to_string(manifest_path).unwrap();
    assert!(!manifest_text.contains(SECRET));
    let m: serde_json::Value = serde_json::from_str(&manifest_text).unwrap();
    assert_eq!(m["artifact"]["digest"], digest.as_str());
    assert!(
        m["base"]
            .as_str()
            .unwrap()
            .starts_with(&format!("registry:{base}@sha256:")),
        "{m}"
    );
    assert_eq!(m["provisioners"].as_array().unwrap().len(), 2);
    assert!(m["provisioners"][1]["files"]
        .as_object()
        .unwrap()
        .values()
        .all(|d| d.as_str().unwrap().starts_with("sha256:")));
    assert!(m["template"]["digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));

    // Built again later: the very same manifest.
    std::thread::sleep(Duration::from_millis(1100));
    let (code, second, _) = build(&s, &t);
    assert_eq!(code, 0);
    assert_eq!(
        second["jobs"][0]["artifacts"][0]["digest"],
        digest.as_str(),
        "reproducible manifest digest"
    );
    let m2: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            second["jobs"][0]["artifacts"][0]["manifest"]
                .as_str()
                .unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        m2["fingerprint"], m["fingerprint"],
        "same inputs, same fingerprint"
    );
}

#[test]
fn failing_provisioner_fails_with_its_exit_code_and_leaves_nothing() {
    if !ready() {
        return;
    }
    let s = Scratch::new();
    busybox_rootfs(&s, &[]);
    let t = s.write(
        "t.toml",
        &template(
            "rootfs:base.tar",
            "\"oci-layout:out/x\"",
            "[[build.provisioner]]\ntype = \"shell\"\ninline = [\"echo doomed\", \"exit 5\"]\n",
        ),
    );
    let (code, summary, out) = build(&s, &t);
    assert_eq!(code, 1);
    assert!(
        summary["jobs"][0]["error"]
            .as_str()
            .unwrap()
            .contains("exited with code 5"),
        "{summary}"
    );
    assert!(
        out.contains("\"line\":\"doomed\""),
        "the output is streamed: {out}"
    );
    assert!(!s.path().join("out/x").exists(), "no artifact");
    assert_nothing_left(&s);
}

#[test]
fn sigkill_then_cleanup_reaps_container_mount_and_directories() {
    if !ready() {
        return;
    }
    let s = Scratch::new();
    busybox_rootfs(&s, &[]);
    let t = s.write(
        "t.toml",
        &template(
            "rootfs:base.tar",
            "",
            "[[build.provisioner]]\ntype = \"shell\"\ninline = [\"echo ready\", \"sleep 300\"]\n",
        ),
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
        if line.unwrap().contains("\"line\":\"ready\"") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        mounts.contains(&s.state().display().to_string()),
        "the overlay is still mounted after SIGKILL"
    );
    let o = s.kiln().arg("cleanup").output().unwrap();
    assert_exit(&o, 0);
    let out = text(&o).0;
    assert!(
        out.contains("overlay mount") && out.contains("provisioner container"),
        "{out}"
    );
    assert_nothing_left(&s);
}

#[test]
fn base_layers_that_escape_the_root_are_refused() {
    if !ready() {
        return;
    }
    for (name, kind, link) in [
        ("../evil", tar::EntryType::Regular, None),
        (
            "etc/link",
            tar::EntryType::Symlink,
            Some("../../../../etc/shadow"),
        ),
    ] {
        let s = Scratch::new();
        let path = s.path().join("base.tar");
        let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(0);
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        let raw = &mut h.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, std::io::empty()).unwrap();
        b.into_inner().unwrap().flush().unwrap();
        let t = s.write("t.toml", &template("rootfs:base.tar", "", ""));
        let (code, summary, _) = build(&s, &t);
        assert_eq!(code, 1);
        let err = summary["jobs"][0]["error"].as_str().unwrap();
        assert!(err.contains("unsafe layer"), "{name}: {err}");
        assert!(!s.path().parent().unwrap().join("evil").exists());
        assert_nothing_left(&s);
    }
}

#[test]
fn without_overlayfs_the_copy_fallback_gives_the_same_image() {
    if !ready() {
        return;
    }
    let s = Scratch::new();
    busybox_rootfs(&s, &[("etc/old.txt", "old\n"), ("etc/gone.txt", "bye\n")]);
    let provisioners = "[[build.provisioner]]\ntype = \"shell\"\ninline = [\"echo new > /etc/new.txt\", \"echo changed > /etc/old.txt\", \"rm /etc/gone.txt\", \"mkdir -p /opt/a/b\"]\n";
    let t = s.write(
        "t.toml",
        &template("rootfs:base.tar", "\"oci-layout:out/img:1\"", provisioners),
    );
    let (code, overlay, _) = build(&s, &t);
    assert_eq!(code, 0, "{overlay}");
    let o = s
        .kiln()
        .args(["build", "--json"])
        .arg(&t)
        .env("KILN_OCI_NO_OVERLAY", "1")
        .output()
        .unwrap();
    let out = text(&o).0;
    assert_exit(&o, 0);
    assert!(
        out.contains("overlayfs not used"),
        "the fallback says so: {out}"
    );
    let summary: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(
        summary["jobs"][0]["artifacts"][0]["digest"], overlay["jobs"][0]["artifacts"][0]["digest"],
        "same layer either way"
    );
    assert_nothing_left(&s);
}

#[test]
fn basic_auth_registry_uses_docker_config_credentials() {
    if !ready() {
        return;
    }
    let reg = Registry::start_with(Some(("kiln", "pa55-word")));
    let s = Scratch::new();
    busybox_rootfs(&s, &[]);
    let base = format!("{}/auth/base:1", reg.addr);
    let t = s.write(
        "base.toml",
        &template("rootfs:base.tar", &format!("\"registry:{base}\""), ""),
    );
    // Without credentials: a clear refusal with a hint.
    let o = s
        .kiln()
        .args(["build", "--json"])
        .arg(&t)
        .env("DOCKER_CONFIG", s.path().join("none"))
        .env_remove("REGISTRY_AUTH_FILE")
        .output()
        .unwrap();
    assert_exit(&o, 1);
    assert!(
        text(&o).0.contains("credentials come from"),
        "{}",
        text(&o).0
    );
    // With a docker config.json: push, then pull it back as a base.
    let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "kiln:pa55-word");
    s.write(
        "docker/config.json",
        &format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.addr),
    );
    let with_creds = |tpl: &Path| {
        s.kiln()
            .args(["build", "--json"])
            .arg(tpl)
            .env("DOCKER_CONFIG", s.path().join("docker"))
            .env_remove("REGISTRY_AUTH_FILE")
            .output()
            .unwrap()
    };
    assert_exit(&with_creds(&t), 0);
    let t2 = s.write(
        "child.toml",
        &template(
            &format!("registry:{base}"),
            "\"oci-layout:out/child\"",
            "[[build.provisioner]]\ntype = \"shell\"\ninline = [\"echo child > /etc/child\"]\n",
        ),
    );
    let o = with_creds(&t2);
    assert_exit(&o, 0);
    assert!(s.path().join("out/child/index.json").is_file());
}

#[test]
fn script_files_run_from_a_file_that_never_reaches_the_image() {
    if !ready() {
        return;
    }
    let s = Scratch::new();
    busybox_rootfs(&s, &[]);
    // `read` would swallow the rest of a script fed on stdin.
    s.write(
        "setup.sh",
        "#!/bin/sh -e\nread line || true\necho after-read\necho ran > /etc/ran\n",
    );
    let t = s.write(
        "t.toml",
        &template(
            "rootfs:base.tar",
            "\"oci-layout:out/s:1\"",
            "[[build.provisioner]]\ntype = \"shell\"\nscript = \"setup.sh\"\n",
        ),
    );
    let (code, summary, out) = build(&s, &t);
    assert_eq!(code, 0, "{summary}");
    assert!(out.contains("\"line\":\"after-read\""), "{out}");
    let bundle = s.path().join("bundle");
    let o = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:1", s.path().join("out/s").display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "umoci: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/etc/ran")).unwrap(),
        "ran\n"
    );
    assert!(
        !bundle.join("rootfs/dev/.kiln-script").exists(),
        "the script file is not in the image"
    );
    assert_nothing_left(&s);
}

/// Every registry of `from` and `to` is checked, with its credentials,
/// before anything runs, and the error names the cause.
#[test]
fn registry_problems_are_named_before_any_provisioner_runs() {
    if !ready() {
        return;
    }
    let s = Scratch::new();
    busybox_rootfs(&s, &[]);
    let dead = crate::free_addr();
    let authed = Registry::start_with(Some(("kiln", "right-password")));
    let run = |to: &str, auth: Option<&str>| {
        let t = s.write(
            "r.toml",
            &format!("[image]\nname = \"r\"\nversion = \"1.0.0\"\n[source.oci.a]\nfrom = \"rootfs:base.tar\"\nto = [\"oci-layout:out/r:1\", \"registry:{to}/r:1\"]\n[[build]]\nsources = [\"oci.a\"]\n[[build.provisioner]]\ntype = \"shell\"\ninline = [\"echo provisioned-here\"]\n"),
        );
        let auth_file = s.path().join("auth.json");
        let _ = std::fs::remove_file(&auth_file);
        if let Some(user_pw) = auth {
            use base64::Engine as _;
            let b = base64::engine::general_purpose::STANDARD.encode(user_pw);
            std::fs::write(
                &auth_file,
                format!("{{\"auths\": {{\"{to}\": {{\"auth\": \"{b}\"}}}}}}"),
            )
            .unwrap();
        }
        let o = s
            .kiln()
            .args(["build", "--json"])
            .arg(&t)
            .env("REGISTRY_AUTH_FILE", &auth_file)
            .env("DOCKER_CONFIG", s.path().join("no-docker-config"))
            .env("HOME", s.path())
            .output()
            .unwrap();
        let summary = crate::json_summary(&o);
        (o, summary)
    };
    let check = |o: &std::process::Output, summary: &serde_json::Value, want: &[&str]| {
        assert_exit(o, 1);
        let err = summary["jobs"][0]["error"].as_str().unwrap_or_default();
        for w in want {
            assert!(err.contains(w), "want {w:?} in: {err}");
        }
        let out = text(o).0;
        assert!(
            !out.contains("provisioned-here") && !out.contains("\"step\":\"provision 1"),
            "a provisioner ran: {out}"
        );
    };
    let (o, sum) = run(&dead, None);
    check(
        &o,
        &sum,
        &[
            &format!("registry `{dead}` of `to` entry"),
            &format!("connection refused: nothing listens on `{dead}`"),
        ],
    );
    let (o, sum) = run(&authed.addr, None);
    check(
        &o,
        &sum,
        &[
            "401 Unauthorized",
            "wants credentials (realm \"kiln-test\") and none are configured",
            "REGISTRY_AUTH_FILE",
        ],
    );
    let (o, sum) = run(&authed.addr, Some("kiln:wrong-password"));
    check(
        &o,
        &sum,
        &[
            "401 Unauthorized",
            "refused the credentials configured for it (realm \"kiln-test\")",
        ],
    );
    // With the right credentials it builds and pushes.
    let (o, sum) = run(&authed.addr, Some("kiln:right-password"));
    assert_exit(&o, 0);
    assert_eq!(sum["jobs"][0]["status"], "succeeded", "{sum}");
}

/// `--on-error=abort` after a failed provisioner keeps the container and
/// prints the command that enters it: run without a terminal, it sees
/// what the provisioner left; `kiln cleanup` then removes it with the
/// rest, and the command no longer enters anything.
#[test]
fn on_error_abort_prints_a_command_that_enters_the_kept_container() {
    if !ready() {
        return;
    }
    let s = Scratch::new();
    busybox_rootfs(&s, &[]);
    let provisioners = "[[build.provisioner]]\ntype = \"shell\"\ninline = [\"echo left-by-the-provisioner > /root/marker\", \"exit 3\"]\n";
    let t = s.write(
        "t.toml",
        &template("rootfs:base.tar", "\"oci-layout:out/img:1\"", provisioners),
    );
    let o = s
        .kiln()
        .args(["build", "--on-error=abort"])
        .arg(&t)
        .output()
        .unwrap();
    assert_exit(&o, 1);
    let err = text(&o).1;
    let how = err
        .lines()
        .find_map(|l| l.split("enter it with: ").nth(1))
        .unwrap_or_else(|| panic!("no way in printed: {err}"))
        .trim()
        .to_string();
    // Interactive as printed (`exec -t … /bin/sh`); the test has no
    // terminal, so it runs one command instead of the shell.
    let once = how
        .strip_suffix(" /bin/sh")
        .unwrap_or_else(|| panic!("{how}"))
        .replace(" -t ", " ");
    let inside = |what: &str| {
        Command::new("sh")
            .args(["-c", &format!("{once} {what}")])
            .output()
            .unwrap()
    };
    let seen = inside("cat /root/marker");
    assert_eq!(
        String::from_utf8_lossy(&seen.stdout),
        "left-by-the-provisioner\n",
        "{how}: {}",
        String::from_utf8_lossy(&seen.stderr)
    );
    let o = s.kiln().arg("cleanup").output().unwrap();
    assert_exit(&o, 0);
    assert!(!inside("true").status.success(), "the container is gone");
    assert_nothing_left(&s);
}
