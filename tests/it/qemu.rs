//! The QEMU builder end to end: real `qemu-system-x86_64` under TCG, a
//! real Debian guest (built and cached by `scripts/qemu/debian-image.sh`),
//! real sshd and cloud-init. The guest is booted twice in all: once to
//! build, once from the exported image. The failure paths use a disk with
//! no OS, which never boots. Needs root; missing tools fail the tests in
//! CI (`CI=true`) and skip them, loudly, elsewhere.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{assert_exit, repo, text, Scratch};

const SECRET: &str = "qemu-test-secret-0815";

fn ready() -> bool {
    crate::require(
        "QEMU",
        &[
            "qemu-system-x86_64",
            "qemu-img",
            "mmdebstrap",
            "mkfs.ext4",
            "sha256sum",
        ],
        true,
    )
}

/// The cached test image: `disk.qcow2`, `vmlinuz`, `initrd.img`.
fn debian_image() -> PathBuf {
    let o = Command::new(repo().join("scripts/qemu/debian-image.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/qemu/debian-image.sh");
    assert!(o.status.success(), "building the Debian test image failed");
    PathBuf::from(String::from_utf8(o.stdout).unwrap().trim())
}

fn sha256(path: &Path) -> String {
    let o = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(o.stdout).unwrap()[..64].to_string()
}

/// A private folder on tmpfs for the build's sockets and seed
/// (`KILN_TMPFS`), so the test can see that it is emptied.
struct TmpfsDir(PathBuf);

impl TmpfsDir {
    fn new() -> TmpfsDir {
        let p = PathBuf::from(format!(
            "/dev/shm/kiln-it-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir(&p).unwrap();
        TmpfsDir(p)
    }

    fn is_empty(&self) -> bool {
        std::fs::read_dir(&self.0).unwrap().next().is_none()
    }
}

impl Drop for TmpfsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `kiln build --json`: (exit code, summary event, stdout).
fn build(s: &Scratch, tmpfs: &TmpfsDir, template: &Path) -> (i32, serde_json::Value, String) {
    let o = s
        .kiln()
        .args(["build", "--json"])
        .arg(template)
        .env("KILN_TMPFS", &tmpfs.0)
        .env("KILN_QEMU_TEST_TOKEN", SECRET)
        .output()
        .unwrap();
    let summary = crate::json_summary(&o);
    (o.status.code().unwrap_or(-1), summary, text(&o).0)
}

/// QEMU processes whose command line mentions `needle`.
fn qemu_processes(needle: &str) -> Vec<String> {
    let mut found = vec![];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.starts_with("qemu-system") && cmdline.contains(needle) {
            found.push(cmdline);
        }
    }
    found
}

/// No QEMU, overlay, seed, socket or journal entry of this scratch is left.
fn assert_nothing_left(s: &Scratch, tmpfs: &TmpfsDir) {
    let state = s.state().display().to_string();
    let procs = qemu_processes(&state);
    assert!(procs.is_empty(), "QEMU still running: {procs:?}");
    let work = s.state().join("work");
    assert!(
        !work.exists() || std::fs::read_dir(&work).unwrap().next().is_none(),
        "work directories (overlays) left"
    );
    assert!(tmpfs.is_empty(), "seed or sockets left on tmpfs");
    assert!(
        kiln::job::Journal::new(&s.state())
            .entries()
            .unwrap()
            .is_empty(),
        "journal not empty"
    );
}

fn template(source: &str, provisioners: &str) -> String {
    format!(
        "[image]\nname = \"deb\"\nversion = \"1.0.0\"\n\n[secrets.token]\nenv = \"KILN_QEMU_TEST_TOKEN\"\n\n[source.qemu.vm]\naccelerator = \"auto\"\nmemory = \"1GiB\"\n{source}\n[[build]]\nname = \"b\"\nsources = [\"qemu.vm\"]\n{provisioners}\n"
    )
}

fn boot_source(img: &Path, disk: &Path, checksum: &str, output: &str) -> String {
    format!(
        "disk = \"{}\"\ndisk_checksum = \"sha256:{checksum}\"\nkernel = \"{}\"\ninitrd = \"{}\"\nappend = \"root=/dev/vda console=ttyS0\"\nssh_timeout = \"8m\"\noutput = \"{output}\"\n",
        disk.display(),
        img.join("vmlinuz").display(),
        img.join("initrd.img").display(),
    )
}

#[test]
fn qemu_builds_exports_and_the_exported_image_boots_with_the_changes() {
    if !ready() {
        return;
    }
    let img = debian_image();
    let base = img.join("disk.qcow2");
    let base_mtime = std::fs::metadata(&base).unwrap().modified().unwrap();
    let s = Scratch::new();
    let tmpfs = TmpfsDir::new();
    s.write("files/motd", "baked by kiln\n");
    let provisioners = r#"
[[build.provisioner]]
type = "shell"
inline = ["echo provisioned > /etc/kiln-proof", "echo token has $${#TOKEN} chars"]
env = { TOKEN = "${secret.token}" }

[[build.provisioner]]
type = "file"
source = "files/motd"
destination = "/etc/kiln/motd"
mode = "0640"
"#;
    let t = s.write(
        "build.toml",
        &template(
            &boot_source(&img, &base, &sha256(&base), "out/deb.qcow2"),
            provisioners,
        ),
    );
    let (code, summary, out) = build(&s, &tmpfs, &t);
    assert_eq!(code, 0, "{summary}\n{out}");
    assert!(
        out.contains("token has 21 chars"),
        "output is streamed: {out}"
    );
    assert!(out.contains("SSH ready after"), "{out}");
    assert!(
        out.contains("console: "),
        "the serial console is in the log"
    );
    assert!(!out.contains(SECRET), "the secret is redacted from the log");
    let artifact = &summary["jobs"][0]["artifacts"][0];
    assert_eq!(artifact["kind"], "qcow2", "{summary}");
    let exported = s.path().join("out/deb.qcow2");
    let digest = sha256(&exported);
    assert_eq!(artifact["digest"], format!("sha256:{digest}"), "{summary}");
    assert_eq!(
        std::fs::metadata(&base).unwrap().modified().unwrap(),
        base_mtime,
        "the base image was written to"
    );
    let info = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&exported)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert!(
        info.get("backing-filename").is_none(),
        "the export is standalone: {info}"
    );
    assert_nothing_left(&s, &tmpfs);

    // Boot the exported image: the changes are in it. The last provisioner
    // fails, which must leave nothing behind either.
    let check = r#"
[[build.provisioner]]
type = "shell"
inline = ["echo proof: $(cat /etc/kiln-proof)", "echo motd: $(cat /etc/kiln/motd) $(stat -c %a /etc/kiln/motd)"]

[[build.provisioner]]
type = "shell"
inline = ["echo doomed", "exit 7"]
"#;
    let t = s.write(
        "check.toml",
        &template(
            &boot_source(&img, &exported, &digest, "out/never.qcow2"),
            check,
        ),
    );
    let (code, summary, out) = build(&s, &tmpfs, &t);
    assert_eq!(code, 1, "{summary}\n{out}");
    assert!(out.contains("proof: provisioned"), "{out}");
    assert!(out.contains("motd: baked by kiln 640"), "{out}");
    assert!(
        summary["jobs"][0]["error"]
            .as_str()
            .unwrap()
            .contains("exited with code 7"),
        "{summary}"
    );
    assert!(!s.path().join("out/never.qcow2").exists(), "no artifact");
    assert_nothing_left(&s, &tmpfs);
}

/// A disk with no OS: QEMU runs, SSH never comes.
fn no_os_source(s: &Scratch, ssh_timeout: &str) -> String {
    let disk = s.path().join("empty.qcow2");
    let o = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg("16M")
        .output()
        .unwrap();
    assert!(o.status.success());
    format!(
        "disk = \"empty.qcow2\"\ninsecure_skip_checksum = true\nssh_timeout = \"{ssh_timeout}\"\noutput = \"out/x.qcow2\"\n"
    )
}

#[test]
fn qemu_ssh_timeout_fails_and_leaves_nothing() {
    if !ready() {
        return;
    }
    let s = Scratch::new();
    let tmpfs = TmpfsDir::new();
    let t = s.write("t.toml", &template(&no_os_source(&s, "4s"), ""));
    let started = std::time::Instant::now();
    let (code, summary, out) = build(&s, &tmpfs, &t);
    assert_eq!(code, 1, "{summary}\n{out}");
    let error = summary["jobs"][0]["error"].as_str().unwrap();
    assert!(error.contains("was not ready within 4s"), "{error}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "the SSH wait is bounded"
    );
    assert_nothing_left(&s, &tmpfs);
}

#[test]
fn qemu_sigkill_then_cleanup_reaps_the_vm_and_its_files() {
    if !ready() {
        return;
    }
    let s = Scratch::new();
    let tmpfs = TmpfsDir::new();
    let t = s.write("t.toml", &template(&no_os_source(&s, "10m"), ""));
    let mut child = s
        .kiln()
        .args(["build", "--json"])
        .arg(&t)
        .env("KILN_TMPFS", &tmpfs.0)
        .env("KILN_QEMU_TEST_TOKEN", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kept open until kiln is dead: a closed pipe would end it gracefully.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let booting = lines
        .by_ref()
        .any(|l| l.unwrap().contains("SSH on 127.0.0.1:"));
    assert!(booting, "kiln ended before booting the VM");
    child.kill().unwrap();
    child.wait().unwrap();
    drop(lines);
    let state = s.state().display().to_string();
    assert_eq!(
        qemu_processes(&state).len(),
        1,
        "QEMU outlives a SIGKILLed kiln until `kiln cleanup`"
    );
    assert!(
        !tmpfs.is_empty(),
        "the seed and socket folder is still there"
    );
    let o = s.kiln().arg("cleanup").output().unwrap();
    assert_exit(&o, 0);
    let out = text(&o).0;
    assert!(out.contains("qemu process"), "{out}");
    // SIGKILL is asynchronous: give the kernel a moment to reap it.
    let start = std::time::Instant::now();
    while !qemu_processes(&state).is_empty() && start.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_nothing_left(&s, &tmpfs);
}

#[test]
fn qemu_base_with_a_wrong_checksum_is_refused_before_anything_runs() {
    if !ready() {
        return;
    }
    let s = Scratch::new();
    let tmpfs = TmpfsDir::new();
    let source = no_os_source(&s, "4s").replace(
        "insecure_skip_checksum = true",
        &format!("disk_checksum = \"sha256:{}\"", "0".repeat(64)),
    );
    let t = s.write("t.toml", &template(&source, ""));
    let (code, summary, out) = build(&s, &tmpfs, &t);
    assert_eq!(code, 1, "{summary}\n{out}");
    let error = summary["jobs"][0]["error"].as_str().unwrap();
    let actual = sha256(&s.path().join("empty.qcow2"));
    assert!(
        error.contains(&format!("has sha256:{actual}")) && error.contains("nothing was launched"),
        "{error}"
    );
    assert!(!out.contains("booting"), "{out}");
    assert_nothing_left(&s, &tmpfs);
}
