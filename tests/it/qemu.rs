//! The QEMU builder end to end: real `qemu-system-x86_64` under TCG, a
//! real Debian guest (built and cached by `scripts/qemu/debian-image.sh`),
//! real sshd and cloud-init. The guest is booted twice in all: once to
//! build, once from the exported image. The failure paths use a disk with
//! no OS, which never boots. Needs root; missing tools fail the tests in
//! CI (`CI=true`) and skip them, loudly, elsewhere.

use std::io::{BufRead, BufReader, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{assert_exit, repo, text, Scratch};

const SECRET: &str = "qemu-test-secret-0815";

pub(crate) fn ready() -> bool {
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
pub(crate) fn debian_image() -> PathBuf {
    let o = Command::new(repo().join("scripts/qemu/debian-image.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/qemu/debian-image.sh");
    assert!(o.status.success(), "building the Debian test image failed");
    PathBuf::from(String::from_utf8(o.stdout).unwrap().trim())
}

pub(crate) fn sha256(path: &Path) -> String {
    let o = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(o.stdout).unwrap()[..64].to_string()
}

/// A private folder on tmpfs for the build's sockets and seed
/// (`KILN_TMPFS`), so the test can see that it is emptied.
pub(crate) struct TmpfsDir(pub(crate) PathBuf);

impl TmpfsDir {
    pub(crate) fn new() -> TmpfsDir {
        let p = PathBuf::from(format!(
            "/dev/shm/kiln-it-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir(&p).unwrap();
        TmpfsDir(p)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
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
pub(crate) fn build(
    s: &Scratch,
    tmpfs: &TmpfsDir,
    template: &Path,
) -> (i32, serde_json::Value, String) {
    let o = s
        .kiln()
        .args(["build", "--json"])
        .arg(template)
        .env("KILN_TMPFS", &tmpfs.0)
        .env("KILN_QEMU_TEST_TOKEN", SECRET)
        .env("KILN_PASSWORD", "test-pw")
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
pub(crate) fn assert_nothing_left(s: &Scratch, tmpfs: &TmpfsDir) {
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

pub(crate) fn template(source: &str, provisioners: &str) -> String {
    format!(
        "[image]\nname = \"deb\"\nversion = \"1.0.0\"\n\n[secrets.token]\nenv = \"KILN_QEMU_TEST_TOKEN\"\n\n[source.qemu.vm]\naccelerator = \"auto\"\nmemory = \"1GiB\"\n{source}\n[[build]]\nname = \"b\"\nsources = [\"qemu.vm\"]\n{provisioners}\n"
    )
}

pub(crate) fn boot_source(img: &Path, disk: &Path, checksum: &str, output: &str) -> String {
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
        out.contains("guest powered off from inside (`poweroff`)"),
        "no shutdown_command: powered off from inside, not by ACPI: {out}"
    );
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
    let t = s.write("t.toml", &template(&no_os_source(&s, "25s"), ""));
    let started = std::time::Instant::now();
    let (code, summary, out) = build(&s, &tmpfs, &t);
    assert_eq!(code, 1, "{summary}\n{out}");
    let error = summary["jobs"][0]["error"].as_str().unwrap();
    assert!(error.contains("was not ready within 25s"), "{error}");
    // The wait says how it goes, and the timeout what usually causes it.
    assert!(out.contains("waiting for SSH on 127.0.0.1:"), "{out}");
    assert!(
        error.contains("likely causes: the guest got no network address"),
        "{error}"
    );
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

/// A signed QEMU build: the qcow2 gets a `cosign sign-blob` signature and
/// DSSE provenance beside it. `kiln verify FILE` accepts it, refuses it
/// when one byte of the disk changes, and once the version is revoked;
/// openssl and sigstore-js verify the signature, securesystemslib and
/// in-toto-attestation the provenance; the channel pointer file is signed.
#[test]
fn qemu_signed_disk_image_verifies_anywhere_and_not_once_changed_or_revoked() {
    if !ready() || !crate::checkers::ready() {
        return;
    }
    use crate::checkers;
    let img = debian_image();
    let base = img.join("disk.qcow2");
    let s = Scratch::new();
    let tmpfs = TmpfsDir::new();
    s.keygen("cosign", "test-pw");
    s.keygen("other", "x");
    let provisioners = "[[build.provisioner]]\ntype = \"shell\"\ninline = [\"echo signed > /etc/kiln-signed\"]\n\n[build.sign]\nkey = \"cosign.key\"\n";
    let t = s.write(
        "build.toml",
        &template(
            &boot_source(&img, &base, &sha256(&base), "out/deb.qcow2"),
            provisioners,
        ),
    );
    let o = s
        .kiln()
        .args(["build", "--json"])
        .arg(&t)
        .env("KILN_TMPFS", &tmpfs.0)
        .env("KILN_QEMU_TEST_TOKEN", SECRET)
        .env("KILN_PASSWORD", "test-pw")
        .output()
        .unwrap();
    let summary = crate::json_summary(&o);
    assert_exit(&o, 0);
    let disk = s.path().join("out/deb.qcow2");
    let sig = s.path().join("out/deb.qcow2.sig");
    let provenance = s.path().join("out/deb.qcow2.intoto.json");
    let artifact = &summary["jobs"][0]["artifacts"][0];
    assert_eq!(
        artifact["signatures"][0],
        format!("file:{}", sig.display()),
        "{summary}"
    );
    let (public, wrong) = (s.path().join("cosign.pub"), s.path().join("other.pub"));
    let work = s.path().join("work-checks");
    std::fs::create_dir_all(&work).unwrap();

    let verify = |key: &Path, target: &Path| {
        s.kiln()
            .args(["verify", "--key"])
            .arg(key)
            .arg(target)
            .output()
            .unwrap()
    };
    let o = verify(&public, &disk);
    assert_exit(&o, 0);
    assert!(
        text(&o).0.contains("verified disk image")
            && text(&o).0.contains("catalog: deb 1.0.0+1 (active)"),
        "{}",
        text(&o).0
    );
    assert_exit(&verify(&wrong, &disk), 1);

    // Independent: openssl and sigstore-js on the blob signature (and both
    // refuse a wrong key and a flipped byte); securesystemslib and
    // sigstore-js on the provenance envelope, in-toto-attestation on its
    // statement, whose subject is the file's sha256.
    checkers::assert_blob(&public, &wrong, &disk, &sig, &work);
    let payload = checkers::assert_envelope(
        &public,
        &wrong,
        &provenance,
        "application/vnd.in-toto+json",
        &work,
    );
    let st = checkers::assert_statement(&payload, &work);
    assert_eq!(st["subject"][0]["digest"]["sha256"], sha256(&disk));

    // One byte of the disk changed: refused, naming the signature.
    let at = std::fs::metadata(&disk).unwrap().len() / 3;
    checkers::flip_in_place(&disk, at);
    let o = verify(&public, &disk);
    checkers::flip_in_place(&disk, at);
    assert_exit(&o, 1);
    assert!(text(&o).1.contains("does not verify"), "{}", text(&o).1);
    assert_exit(&verify(&public, &disk), 0);

    // The channel pointer beside the disk is signed (by the key that
    // signed the change: kiln's catalog key for a command-line promote).
    let o = s
        .kiln()
        .args(["images", "promote", "deb", "1.0.0+1", "dev"])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let pointer = s.path().join("out/deb.dev.json");
    let catalog_pub = s.state().join("keys/catalog-signer.pub");
    checkers::assert_blob(
        &catalog_pub,
        &wrong,
        &pointer,
        &s.path().join("out/deb.dev.json.sig"),
        &work,
    );
    let o = verify(&catalog_pub, &pointer);
    assert_exit(&o, 0);
    assert!(
        text(&o).0.contains("verified channel pointer"),
        "{}",
        text(&o).0
    );

    // Revoked: refused whatever its signatures.
    let o = s
        .kiln()
        .args([
            "images",
            "revoke",
            "deb",
            "1.0.0+1",
            "--reason",
            "CVE-2026-7",
        ])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let o = verify(&public, &disk);
    assert_exit(&o, 1);
    assert!(
        text(&o).1.contains("was revoked") && text(&o).1.contains("CVE-2026-7"),
        "{}",
        text(&o).1
    );
    assert_nothing_left(&s, &tmpfs);
}

/// The Debian test image booted on a non-default machine: virtio-scsi
/// disk, a vmxnet3 NIC (Debian's cloud kernel has no e1000), a QEMU CPU model with 2 sockets × 1 core, unsafe
/// caching with zero detection, and a virtio RNG from `qemuargs`. The
/// guest sees each of them, and the NIC is `eth0` (kiln's network config).
#[test]
fn qemu_machine_settings_reach_the_guest() {
    if !ready() {
        return;
    }
    let img = debian_image();
    let base = img.join("disk.qcow2");
    let s = Scratch::new();
    let tmpfs = TmpfsDir::new();
    let source = boot_source(&img, &base, &sha256(&base), "out/m.qcow2")
        .replace("root=/dev/vda", "root=LABEL=root")
        + r#"machine_type = "q35"
cpu_model = "qemu64"
sockets = 2
cores = 1
disk_interface = "virtio-scsi"
disk_cache = "unsafe"
disk_detect_zeroes = "unmap"
net_device = "vmxnet3"
qemuargs = [["-device", "virtio-rng-pci"]]
cd_files = ["answers/conf", "answers/scripts/", "extra/*.sh"]
"#;
    // `cd_files` by Packer's rule: a folder keeps its name and structure,
    // a trailing `/` puts its contents at the root, a glob adds each match.
    let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    for (f, text) in [
        ("answers/conf/a.cfg", format!("a-{id}")),
        ("answers/conf/sub/b.cfg", format!("b-{id}")),
        ("answers/scripts/setup.sh", format!("setup-{id}")),
        ("extra/one.sh", format!("one-{id}")),
        ("extra/two.sh", format!("two-{id}")),
        ("extra/skip.txt", "not matched".into()),
    ] {
        s.write(f, &text);
    }
    std::fs::create_dir_all(s.path().join("answers/conf/empty")).unwrap();
    let check = r#"
[[build.provisioner]]
type = "shell"
inline = [
  "echo disks: $(ls /sys/block | grep -v loop | tr '\n' ' ')",
  "echo root: $(findmnt -n -o SOURCE /)",
  "echo nic: $(basename $(readlink /sys/class/net/$(ls /sys/class/net | grep -v lo | head -1)/device/driver))",
  "echo cpus: $(nproc) sockets: $(grep 'physical id' /proc/cpuinfo | sort -u | wc -l)",
  "echo cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)",
  "echo rng: $(cat /sys/class/misc/hw_random/rng_available)",
  "echo ifaces: $(ls /sys/class/net | tr '\n' ' ')",
  "mkdir -p /mnt/seed && mount -o ro LABEL=CIDATA /mnt/seed",
  "cd /mnt/seed && for f in $(find . -path ./meta-data -o -path ./user-data -o -path ./network-config -o -print | sort); do if [ -d $f ]; then echo \"seedfile: $f/\"; else echo \"seedfile: $f $(cat $f)\"; fi; done",
  "cd / && umount /mnt/seed",
]
"#;
    let t = s.write("m.toml", &template(&source, check));
    let (code, summary, out) = build(&s, &tmpfs, &t);
    assert_eq!(code, 0, "{summary}\n{out}");
    assert!(
        out.contains("disks: sda sdb"),
        "virtio-scsi disk and seed: {out}"
    );
    assert!(!out.contains("vda"), "{out}");
    // The SCSI bus names the build disk and the seed in probe order, which
    // varies from boot to boot: the root is on one of them (by label).
    assert!(
        out.contains("root: /dev/sda") || out.contains("root: /dev/sdb"),
        "{out}"
    );
    assert!(out.contains("nic: vmxnet3"), "{out}");
    assert!(out.contains("cpus: 2 sockets: 2"), "{out}");
    assert!(out.contains("cpu: QEMU Virtual CPU"), "{out}");
    assert!(out.contains("rng: virtio_rng"), "{out}");
    // kiln's network config named the vmxnet3 NIC by its MAC.
    assert!(out.contains("ifaces: eth0 lo"), "{out}");
    // The seed volume, read by the guest's own vfat driver: exactly
    // these, with their structure (the empty folder too).
    let cd: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_once("seedfile: "))
        .filter_map(|(_, r)| r.split('"').next())
        .filter(|r| r.starts_with("./"))
        .collect();
    assert_eq!(
        cd,
        [
            "./".to_string(),
            "./conf/".into(),
            "./conf/a.cfg a-{id}".replace("{id}", id),
            "./conf/empty/".into(),
            "./conf/sub/".into(),
            "./conf/sub/b.cfg b-{id}".replace("{id}", id),
            "./one.sh one-{id}".replace("{id}", id),
            "./setup.sh setup-{id}".replace("{id}", id),
            "./two.sh two-{id}".replace("{id}", id),
        ],
        "{out}"
    );
    assert!(
        out.contains("seed volume `cidata`: 5 file(s) from `cd_files`/`cd_content`"),
        "{out}"
    );
    assert!(s.path().join("out/m.qcow2").exists());
    assert_nothing_left(&s, &tmpfs);
}

/// A bad machine setting and a `qemuargs` entry that would break kiln's
/// network fail before anything is created, naming the offender.
#[test]
fn qemu_bad_machine_settings_are_refused_before_launch() {
    if !ready() {
        return;
    }
    let s = Scratch::new();
    let tmpfs = TmpfsDir::new();
    // A `cd_files` folder with a link out of it to a host file.
    s.write("cd/ks.cfg", "text\n");
    s.write("secret.txt", "host secret\n");
    std::fs::create_dir_all(s.path().join("linked")).unwrap();
    std::os::unix::fs::symlink(s.path().join("secret.txt"), s.path().join("linked/escape"))
        .unwrap();
    for (extra, want) in [
        (
            "qemuargs = [[\"-netdev\", \"user,id=n0\"]]\n",
            "`-netdev` is not allowed",
        ),
        (
            "net_device = \"virtio-nett\"\n",
            "`net_device = \"virtio-nett\"`",
        ),
        (
            "cpus = 8\nsockets = 1\ncores = 4\n",
            "`cpus = 8` does not fit",
        ),
        (
            "cd_files = [\"cd/*.iso\"]\n",
            "`cd_files[0]` (`cd/*.iso`) matches nothing in",
        ),
        (
            "cd_files = [\"cd/\", \"cd/ks.cfg\"]\n",
            "`cd_files[0]` (`cd/`) and `cd_files[1]` (`cd/ks.cfg`) both put `ks.cfg` on the volume",
        ),
        (
            "cd_files = [\"linked\"]\n",
            "/linked/escape` is a link; kiln does not follow links",
        ),
    ] {
        let t = s.write("t.toml", &template(&(no_os_source(&s, "4s") + extra), ""));
        let (code, summary, out) = build(&s, &tmpfs, &t);
        assert_ne!(code, 0, "{summary}\n{out}");
        let error = summary["jobs"][0]["error"].as_str().unwrap_or_default();
        assert!(error.contains(want), "{want} not in {error}");
        assert!(!out.contains("booting"), "{out}");
        assert_nothing_left(&s, &tmpfs);
    }
}

/// A `cd_files` entry that is not a glob pattern is refused before
/// anything runs (as bad input, exit 2), at its character in the template.
#[test]
fn qemu_cd_files_bad_glob_is_refused_at_its_column() {
    let s = Scratch::new();
    let source = "disk = \"d.qcow2\"\ninsecure_skip_checksum = true\noutput = \"out/x.qcow2\"\ncd_files = [\"ks.cfg\", \"conf/[z-a\"]\n";
    let t = s.write("build.toml", &template(source, ""));
    let o = s.kiln().args(["validate"]).arg(&t).output().unwrap();
    let (stdout, stderr) = crate::text(&o);
    let all = format!("{stdout}{stderr}");
    assert_eq!(o.status.code(), Some(2), "{all}");
    assert!(
        all.contains("build.toml:14:29: `source.qemu.vm`: `cd_files[1]` is not a glob pattern: invalid range pattern"),
        "{all}"
    );
}

/// What the UEFI tests need beyond `ready()`: OVMF and the tools of
/// `scripts/qemu/debian-uefi-image.sh`.
fn uefi_ready() -> bool {
    if !ready()
        || !crate::require(
            "QEMU UEFI",
            &["sfdisk", "mkfs.vfat", "mcopy", "mmd", "objcopy"],
            true,
        )
    {
        return false;
    }
    let missing: Vec<&str> = [
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
        "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.ms.fd",
        "/usr/lib/systemd/boot/efi/linuxx64.efi.stub",
    ]
    .into_iter()
    .filter(|f| !Path::new(f).is_file())
    .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "QEMU UEFI tests need {} (ovmf and systemd-boot-efi, installed by .ci/run)",
        missing.join(", ")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

/// The cached UEFI test image (`disk.qcow2`: ESP with a unified kernel
/// image, ext4 root).
fn debian_uefi_image() -> PathBuf {
    let o = Command::new(repo().join("scripts/qemu/debian-uefi-image.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/qemu/debian-uefi-image.sh");
    assert!(o.status.success(), "building the UEFI test image failed");
    PathBuf::from(String::from_utf8(o.stdout).unwrap().trim())
}

fn uefi_source(disk: &Path, extra: &str, ssh_timeout: &str) -> String {
    format!(
        "disk = \"{}\"\ndisk_checksum = \"sha256:{}\"\nfirmware = \"uefi\"\ndisk_interface = \"nvme\"\nssh_timeout = \"{ssh_timeout}\"\noutput = \"out/uefi.qcow2\"\n{extra}",
        disk.display(),
        sha256(disk),
    )
}

/// UEFI end to end under TCG: OVMF boots the disk's own loader (no kernel
/// from the host) from an NVMe disk; the guest runs on EFI with writable
/// variables, and OVMF's shipped variable store is not written to.
#[test]
fn qemu_uefi_boots_the_disk_through_ovmf() {
    if !uefi_ready() {
        return;
    }
    let img = debian_uefi_image();
    let vars = Path::new("/usr/share/OVMF/OVMF_VARS_4M.fd");
    let vars_digest = sha256(vars);
    let s = Scratch::new();
    let tmpfs = TmpfsDir::new();
    let check = r#"
[[build.provisioner]]
type = "shell"
inline = [
  "test -d /sys/firmware/efi && echo firmware: efi",
  "echo root: $(findmnt -n -o SOURCE /)",
  "echo efivars: $(ls /sys/firmware/efi/efivars | grep -c '^Boot0')",
]
"#;
    let t = s.write(
        "u.toml",
        &template(&uefi_source(&img.join("disk.qcow2"), "", "8m"), check),
    );
    let (code, summary, out) = build(&s, &tmpfs, &t);
    assert_eq!(code, 0, "{summary}\n{out}");
    assert!(
        out.contains("firmware: UEFI (`/usr/share/OVMF/OVMF_CODE_4M.fd`)"),
        "{out}"
    );
    assert!(
        out.contains("BdsDxe: starting Boot"),
        "OVMF chose the disk: {out}"
    );
    assert!(out.contains("firmware: efi"), "{out}");
    assert!(out.contains("root: /dev/nvme0n1p2"), "{out}");
    assert!(
        !out.contains("efivars: 0"),
        "boot entries in the variable store: {out}"
    );
    assert_eq!(
        sha256(vars),
        vars_digest,
        "OVMF's own variable store changed"
    );
    assert!(s.path().join("out/uefi.qcow2").exists());
    assert_nothing_left(&s, &tmpfs);
}

/// Secure boot with Microsoft's keys enrolled: the test image's loader is
/// unsigned, so the firmware refuses it and SSH never comes; a BIOS boot
/// setting is refused before launch.
#[test]
fn qemu_secure_boot_refuses_an_unsigned_loader() {
    if !uefi_ready() {
        return;
    }
    let img = debian_uefi_image();
    let s = Scratch::new();
    let tmpfs = TmpfsDir::new();
    let t = s.write(
        "sb.toml",
        &template(
            &uefi_source(&img.join("disk.qcow2"), "secure_boot = true\n", "90s"),
            "",
        ),
    );
    let (code, summary, out) = build(&s, &tmpfs, &t);
    assert_eq!(code, 1, "{summary}\n{out}");
    assert!(
        out.contains("secure boot with Microsoft's keys enrolled"),
        "{out}"
    );
    assert!(
        out.contains("Access Denied") || out.contains("Security Violation"),
        "the firmware refused the unsigned loader: {out}"
    );
    assert!(!out.contains("Linux version"), "{out}");
    assert_nothing_left(&s, &tmpfs);
}

/// `python3 -m http.server` on a free loopback port serving `dir`, its
/// request log in `log`; stopped when dropped.
struct HttpServer {
    child: std::process::Child,
    addr: String,
    log: PathBuf,
}

impl HttpServer {
    fn start(dir: &Path, log: PathBuf) -> HttpServer {
        let addr = crate::free_addr();
        let port = addr.rsplit(':').next().unwrap().to_string();
        let child = Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port,
                "--directory",
            ])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("python3");
        crate::wait_listening(&addr, "python3 -m http.server");
        HttpServer { child, addr, log }
    }

    /// How many times `path` was fetched.
    fn gets(&self, path: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .matches(&format!("\"GET {path} HTTP"))
            .count()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A base by URL: a dead mirror is skipped, the checksum comes from a
/// SHA256SUMS file by URL (matched by file name among other lines), two
/// jobs that start together download it once into the content-addressed
/// cache (0700), a later build reuses it without a request, and a wrong
/// checksum is refused before anything boots, leaving nothing in the
/// cache.
#[test]
fn qemu_url_base_is_downloaded_once_verified_and_shared() {
    if !ready() || !crate::require("QEMU URL bases", &["python3"], true) {
        return;
    }
    let s = Scratch::new();
    let tmpfs = TmpfsDir::new();
    no_os_source(&s, "4s");
    let www = s.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::copy(s.path().join("empty.qcow2"), www.join("empty.qcow2")).unwrap();
    let digest = sha256(&www.join("empty.qcow2"));
    std::fs::write(
        www.join("SHA256SUMS"),
        format!("{}  other.qcow2\n{digest} *empty.qcow2\n", "1".repeat(64)),
    )
    .unwrap();
    std::fs::write(www.join("other.qcow2"), b"not the base").unwrap();
    let server = HttpServer::start(&www, s.path().join("http.log"));
    let dead = crate::free_addr();
    let addr = &server.addr;
    let source = |name: &str| {
        format!(
            "[source.qemu.{name}]\naccelerator = \"tcg\"\nmemory = \"256MiB\"\ndisk_urls = [\"http://{dead}/empty.qcow2\", \"http://{addr}/empty.qcow2\"]\ndisk_checksum = \"file:http://{addr}/SHA256SUMS\"\nssh_timeout = \"4s\"\noutput = \"out/{name}.qcow2\"\n\n"
        )
    };
    let t = s.write(
        "url.toml",
        &format!(
            "[image]\nname = \"url\"\nversion = \"1.0.0\"\n\n{}{}[[build]]\nname = \"b\"\nsources = [\"qemu.a\", \"qemu.b\"]\n",
            source("a"),
            source("b")
        ),
    );
    let (code, summary, out) = build(&s, &tmpfs, &t);
    // No OS on the disk: both boot, neither gets SSH.
    assert_eq!(code, 1, "{summary}\n{out}");
    assert_eq!(out.matches("booting `").count(), 2, "{out}");
    assert!(
        out.contains(&format!("`http://{dead}/empty.qcow2`: ")),
        "dead mirror named: {out}"
    );
    assert!(out.contains(&format!("sha256:{digest} verified")), "{out}");
    assert_eq!(server.gets("/empty.qcow2"), 1, "one download for two jobs");
    let cache = s.state().join("qemu/bases");
    let cached = cache.join(format!("sha256-{digest}"));
    assert_eq!(sha256(&cached), digest);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert!(
        summary["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["error"]
                .as_str()
                .unwrap_or_default()
                .contains("was not ready within 4s")),
        "{summary}"
    );
    assert_nothing_left(&s, &tmpfs);

    // Again: from the cache, no request for the disk.
    let (code, _, out) = build(&s, &tmpfs, &t);
    assert_eq!(code, 1);
    assert!(out.contains("is cached"), "{out}");
    assert_eq!(server.gets("/empty.qcow2"), 1, "served from the cache");
    assert_nothing_left(&s, &tmpfs);

    // A wrong checksum: refused before anything boots, nothing cached.
    let wrong = s.write(
        "wrong.toml",
        &format!(
            "[image]\nname = \"w\"\nversion = \"1.0.0\"\n\n[source.qemu.w]\naccelerator = \"tcg\"\ndisk_url = \"http://{addr}/other.qcow2\"\ndisk_checksum = \"sha256:{}\"\nssh_timeout = \"4s\"\noutput = \"out/w.qcow2\"\n\n[[build]]\nname = \"b\"\nsources = [\"qemu.w\"]\n",
            "0".repeat(64)
        ),
    );
    let (code, summary, out) = build(&s, &tmpfs, &wrong);
    assert_eq!(code, 1, "{summary}\n{out}");
    let error = summary["jobs"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("no mirror served")
            && error.contains("nothing was launched")
            && error.contains(&sha256(&www.join("other.qcow2"))),
        "{error}"
    );
    assert!(!out.contains("booting"), "{out}");
    let left = cache_entries(&cache);
    assert_eq!(
        left,
        vec![format!("sha256-{digest}")],
        "only the good base is cached"
    );
    assert_nothing_left(&s, &tmpfs);
}

/// The names in a base cache folder, its lock files left out.
pub fn cache_entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect()
}

/// A script reboots the guest (`expect_disconnect`); the next provisioner
/// runs after the reboot, in a new boot. Then Ansible on the host
/// (`type = "ansible"`, a real ansible-core) reaches the guest over SSH
/// with the build's key and the pinned host key, with a secret in
/// `extra_vars`. The checks run in the guest: the build fails if any does.
#[test]
fn qemu_reboot_then_ansible_from_the_host() {
    if !ready() || !crate::require("ansible", &["ansible-playbook", "ssh"], true) {
        return;
    }
    let img = debian_image();
    let base = img.join("disk.qcow2");
    let s = Scratch::new();
    let tmpfs = TmpfsDir::new();
    s.write(
        "site.yml",
        r#"- hosts: web
  gather_facts: false
  tasks:
    - name: greeting
      ansible.builtin.copy:
        content: "{{ greeting }}\n"
        dest: /etc/greeting
        mode: "0644"
    - name: the secret arrived
      ansible.builtin.assert:
        that: ["token | length == 21"]
      no_log: true
"#,
    );
    let provisioners = r#"
[[build.provisioner]]
type = "shell"
inline = ["cat /proc/sys/kernel/random/boot_id > /var/tmp/boot-before", "sync", "systemctl reboot"]
expect_disconnect = true
start_retry_timeout = "8m"

[[build.provisioner]]
type = "shell"
inline = [
  "before=$(cat /var/tmp/boot-before)",
  "now=$(cat /proc/sys/kernel/random/boot_id)",
  "echo boots: $before then $now",
  "test \"$before\" != \"$now\"",
]

[[build.provisioner]]
type = "ansible"
playbook_file = "site.yml"
groups = ["web"]
extra_vars = { greeting = "from-the-host", token = "${secret.token}" }
ansible_env_vars = ["ANSIBLE_FORKS=1"]

[[build.provisioner]]
type = "shell"
inline = ["grep -qx from-the-host /etc/greeting", "echo greeting checked", "! ls -d /root/.ansible/tmp/ansible-tmp-* 2>/dev/null"]
"#;
    let t = s.write(
        "reboot.toml",
        &template(
            &boot_source(&img, &base, &sha256(&base), "out/deb.qcow2"),
            provisioners,
        ),
    );
    let shm_before: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let (code, summary, out) = build(&s, &tmpfs, &t);
    assert_eq!(code, 0, "{summary}\n{out}");
    assert!(
        out.contains("the instance rebooted and answers again"),
        "the reboot is waited for: {out}"
    );
    assert!(out.contains("boots: "), "{out}");
    assert!(out.contains("TASK [greeting]"), "{out}");
    assert!(out.contains("greeting checked"), "{out}");
    assert!(!out.contains(SECRET), "the secret is redacted from the log");
    let mut shm_after: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| !n.to_string_lossy().starts_with("kiln-it-"))
        .collect();
    shm_after.retain(|n| !shm_before.contains(n));
    assert!(shm_after.is_empty(), "left on /dev/shm: {shm_after:?}");
    assert_nothing_left(&s, &tmpfs);
}

/// `[[build.test]]` on a QEMU artifact: after the export, a fresh guest
/// boots from the exported disk (on its own overlay) and the checks run
/// there over SSH — what the build left only in memory (`/run`) is gone,
/// what it wrote to the disk is there, sshd runs. The signed test
/// attestation lands beside the disk, so `kiln verify DISK
/// --require-tests` passes. Then `kiln test` runs a failing expectation
/// against the same disk: exit 1, the disk unchanged, and its signed
/// (failing) attestation replaces the one beside the disk, so
/// `--require-tests` now refuses it.
#[test]
fn qemu_artifact_tests_boot_the_exported_disk() {
    if !ready() {
        return;
    }
    let img = debian_image();
    let base = img.join("disk.qcow2");
    let s = Scratch::new();
    let tmpfs = TmpfsDir::new();
    s.keygen("cosign", "test-pw");
    let body = |want: &str| {
        format!(
            r#"
[build.sign]
key = "cosign.key"

[[build.provisioner]]
type = "shell"
inline = ["echo provisioned > /etc/kiln-proof", "echo build-only > /run/kiln-build-only"]

[[build.test]]
type = "file"
path = "/etc/kiln-proof"
contains = ["{want}"]

[[build.test]]
type = "file"
path = "/run/kiln-build-only"
exists = false

[[build.test]]
type = "service"
name = "ssh"
running = true

[[build.test]]
type = "command"
run = "cat /proc/sys/kernel/random/boot_id"
stdout_matches = "^[0-9a-f-]{{36}}$"
"#
        )
    };
    let t = s.write(
        "t.toml",
        &template(
            &boot_source(&img, &base, &sha256(&base), "out/deb.qcow2"),
            &body("provisioned"),
        ),
    );
    let (code, summary, out) = build(&s, &tmpfs, &t);
    assert_eq!(code, 0, "{summary}\n{out}");
    assert!(out.contains("verifying the artifact"), "{out}");
    assert!(out.contains("\"step\":\"test\""), "a test step ran: {out}");
    let manifest = summary["jobs"][0]["artifacts"][0]["manifest"]
        .as_str()
        .unwrap_or_else(|| panic!("no manifest: {summary}"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    let tests = manifest["tests"]["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 4, "{manifest}");
    for t in tests {
        assert_eq!(t["outcome"], "pass", "{t}");
    }
    assert_nothing_left(&s, &tmpfs);
    let disk = s.path().join("out/deb.qcow2");
    let digest = sha256(&disk);
    let beside = s.path().join("out/deb.qcow2.tests.intoto.json");
    assert!(beside.is_file(), "the test attestation is beside the disk");
    let verify = || {
        s.kiln()
            .args(["verify", "--require-tests", "--key", "cosign.pub"])
            .arg(&disk)
            .output()
            .unwrap()
    };
    let o = verify();
    let (v_out, v_err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{v_out}{v_err}");
    assert!(v_out.contains("tests: PASSED"), "{v_out}");

    // `kiln test` with an expectation the disk does not meet.
    let t2 = s.write(
        "t2.toml",
        &template(
            &boot_source(&img, &base, &sha256(&base), "out/unused.qcow2"),
            &body("something else"),
        ),
    );
    let o = s
        .kiln()
        .arg("test")
        .arg(&t2)
        .arg("--artifact")
        .arg(&disk)
        .env("KILN_TMPFS", &tmpfs.0)
        .env("KILN_QEMU_TEST_TOKEN", SECRET)
        .env("KILN_PASSWORD", "test-pw")
        .output()
        .unwrap();
    let (o_out, o_err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{o_out}{o_err}");
    assert!(
        format!("{o_out}{o_err}").contains("/etc/kiln-proof"),
        "the failing check is named: {o_out}{o_err}"
    );
    assert_eq!(sha256(&disk), digest, "the artifact was not written to");
    let o = verify();
    let (v_out, v_err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{v_out}{v_err}");
    assert!(
        format!("{v_out}{v_err}").contains("did not pass"),
        "the later failing run counts: {v_out}{v_err}"
    );
    assert_nothing_left(&s, &tmpfs);
}

/// `--on-error=abort` after a failed provisioner keeps the VM running
/// after kiln exits and prints an `ssh` command (the build's key and
/// pinned host key, written to the tmpfs) that enters it and sees what the
/// provisioner left; `kiln cleanup` stops the VM and removes the key.
#[test]
fn qemu_on_error_abort_keeps_the_vm_and_prints_an_ssh_command_that_enters_it() {
    if !ready() {
        return;
    }
    let img = debian_image();
    let base = img.join("disk.qcow2");
    let s = Scratch::new();
    let tmpfs = TmpfsDir::new();
    let provisioners = r#"
[[build.provisioner]]
type = "shell"
inline = ["echo left-by-the-provisioner > /root/marker", "exit 3"]
"#;
    let t = s.write(
        "t.toml",
        &template(
            &boot_source(&img, &base, &sha256(&base), "out/deb.qcow2"),
            provisioners,
        ),
    );
    let o = s
        .kiln()
        .args(["build", "--on-error=abort"])
        .arg(&t)
        .env("KILN_TMPFS", &tmpfs.0)
        .env("KILN_QEMU_TEST_TOKEN", SECRET)
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
    assert!(how.starts_with("ssh -i '"), "{how}");
    assert!(how.contains("StrictHostKeyChecking=yes"), "{how}");
    let key_dir = how
        .split('\'')
        .nth(1)
        .map(|k| Path::new(k).parent().unwrap().to_path_buf())
        .unwrap();
    assert!(
        key_dir.starts_with(&tmpfs.0),
        "the key is on the tmpfs: {how}"
    );
    let seen = Command::new("sh")
        .args([
            "-c",
            &format!(
                "{} cat /root/marker",
                how.replacen("ssh ", "ssh -o BatchMode=yes ", 1)
            ),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&seen.stdout),
        "left-by-the-provisioner\n",
        "{how}: {}",
        String::from_utf8_lossy(&seen.stderr)
    );
    let o = s.kiln().arg("cleanup").output().unwrap();
    assert_exit(&o, 0);
    assert!(!key_dir.exists(), "the key is removed with the VM");
    let state = s.state().display().to_string();
    let start = std::time::Instant::now();
    while !qemu_processes(&state).is_empty() && start.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_nothing_left(&s, &tmpfs);
}

/// aarch64 with `firmware = "uefi"`: kiln picks AAVMF (Debian's
/// `qemu-efi-aarch64`) on `qemu-system-aarch64 -machine virt` under TCG,
/// with no `kernel`. The disk's ESP holds an unsigned EFI program; the
/// firmware's boot manager starts it (the proof that the firmware ran
/// and, beside the next test, that it does not check signatures). kiln
/// is then stopped (SIGTERM) and leaves nothing behind; AAVMF's shipped
/// variable store is untouched.
#[test]
fn qemu_aarch64_uefi_boots_aavmf_without_a_kernel() {
    let vars = Path::new("/usr/share/AAVMF/AAVMF_VARS.fd");
    let Some(seen) = aarch64_uefi_until("", "BdsDxe: starting Boot0001", vars) else {
        return;
    };
    assert!(
        seen.contains("firmware: UEFI (`/usr/share/AAVMF/AAVMF_CODE.fd`)"),
        "{seen}"
    );
}

/// aarch64 with `secure_boot = true`: AAVMF with Microsoft's keys
/// enrolled and secure boot on (Debian's `AAVMF_VARS.ms.fd`). The same
/// unsigned EFI program that the test above sees started is refused
/// (`Access Denied`): the firmware enforces secure boot.
#[test]
fn qemu_aarch64_secure_boot_refuses_an_unsigned_loader() {
    let vars = Path::new("/usr/share/AAVMF/AAVMF_VARS.ms.fd");
    let Some(seen) = aarch64_uefi_until(
        "secure_boot = true\n",
        "BdsDxe: failed to load Boot0001",
        vars,
    ) else {
        return;
    };
    assert!(
        seen.contains("firmware: UEFI (`/usr/share/AAVMF/AAVMF_CODE.ms.fd`, secure boot with Microsoft's keys enrolled)"),
        "{seen}"
    );
    assert!(seen.contains("Access Denied"), "{seen}");
    assert!(!seen.contains("BdsDxe: starting Boot0001"), "{seen}");
}

/// A minimal unsigned PE32+ EFI application for AArch64 (one section
/// whose entry point returns `EFI_SUCCESS`), made here byte by byte.
fn unsigned_aa64_efi() -> Vec<u8> {
    let mut f = vec![0u8; 0x400];
    let put = |f: &mut Vec<u8>, at: usize, b: &[u8]| f[at..at + b.len()].copy_from_slice(b);
    put(&mut f, 0, b"MZ");
    put(&mut f, 0x3c, &0x40u32.to_le_bytes());
    put(&mut f, 0x40, b"PE\0\0");
    // COFF: AArch64, one section, a 240-byte optional header, executable.
    let coff: [u16; 2] = [0xaa64, 1];
    put(&mut f, 0x44, &coff[0].to_le_bytes());
    put(&mut f, 0x46, &coff[1].to_le_bytes());
    put(&mut f, 0x54, &240u16.to_le_bytes());
    put(&mut f, 0x56, &0x22u16.to_le_bytes());
    // Optional header (PE32+) at 0x58.
    let o = 0x58;
    put(&mut f, o, &0x20bu16.to_le_bytes());
    put(&mut f, o + 4, &0x200u32.to_le_bytes()); // SizeOfCode
    put(&mut f, o + 16, &0x1000u32.to_le_bytes()); // AddressOfEntryPoint
    put(&mut f, o + 20, &0x1000u32.to_le_bytes()); // BaseOfCode
    put(&mut f, o + 32, &0x1000u32.to_le_bytes()); // SectionAlignment
    put(&mut f, o + 36, &0x200u32.to_le_bytes()); // FileAlignment
    put(&mut f, o + 56, &0x2000u32.to_le_bytes()); // SizeOfImage
    put(&mut f, o + 60, &0x200u32.to_le_bytes()); // SizeOfHeaders
    put(&mut f, o + 68, &10u16.to_le_bytes()); // EFI application
    for (i, v) in [0x100000u64, 0x1000, 0x100000, 0x1000].iter().enumerate() {
        put(&mut f, o + 72 + 8 * i, &v.to_le_bytes());
    }
    put(&mut f, o + 108, &16u32.to_le_bytes()); // data directories
                                                // The section header after the optional header.
    let sh = o + 240;
    put(&mut f, sh, b".text");
    put(&mut f, sh + 8, &0x1000u32.to_le_bytes());
    put(&mut f, sh + 12, &0x1000u32.to_le_bytes());
    put(&mut f, sh + 16, &0x200u32.to_le_bytes());
    put(&mut f, sh + 20, &0x200u32.to_le_bytes());
    put(&mut f, sh + 36, &0x6000_0020u32.to_le_bytes());
    // mov x0, xzr; ret
    put(&mut f, 0x200, &0xaa1f_03e0u32.to_le_bytes());
    put(&mut f, 0x204, &0xd65f_03c0u32.to_le_bytes());
    f
}

/// A raw GPT disk whose EFI system partition holds [`unsigned_aa64_efi`]
/// as `\EFI\BOOT\BOOTAA64.EFI` (the removable-media path), made with
/// sfdisk and mtools; its source settings.
fn unsigned_efi_disk(s: &Scratch) -> String {
    let run = |cmd: &mut Command| {
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{cmd:?}: {o:?}");
    };
    let disk = s.path().join("esp-disk.img");
    let part = s.path().join("esp.img");
    let efi = s.path().join("BOOTAA64.EFI");
    std::fs::write(&efi, unsigned_aa64_efi()).unwrap();
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(40 << 20)
        .unwrap();
    std::fs::File::create(&part)
        .unwrap()
        .set_len(30 << 20)
        .unwrap();
    let mut sfdisk = Command::new("sfdisk")
        .arg("-q")
        .arg(&disk)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"label: gpt\nstart=2048, size=61440, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n",
        )
        .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    run(Command::new("mkfs.vfat").args(["-n", "ESP"]).arg(&part));
    run(Command::new("mmd")
        .arg("-i")
        .arg(&part)
        .args(["::EFI", "::EFI/BOOT"]));
    run(Command::new("mcopy")
        .arg("-i")
        .arg(&part)
        .arg(&efi)
        .arg("::EFI/BOOT/BOOTAA64.EFI"));
    let mut d = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    d.seek(std::io::SeekFrom::Start(2048 * 512)).unwrap();
    d.write_all(&std::fs::read(&part).unwrap()).unwrap();
    "disk = \"esp-disk.img\"\ninsecure_skip_checksum = true\nssh_timeout = \"10m\"\noutput = \"out/x.qcow2\"\n".into()
}

/// Runs `kiln build --json` of an aarch64 UEFI source (the disk of
/// [`unsigned_efi_disk`], `extra` settings) until the console shows
/// `until` (4 minutes at most under TCG), stops kiln (SIGTERM) and checks
/// that it left nothing and that `vars`, the shipped variable store, is
/// untouched. `None`: the tools are missing (a skip, or a failure under
/// `CI=true`).
fn aarch64_uefi_until(extra: &str, until: &str, vars: &Path) -> Option<String> {
    if !crate::require(
        "QEMU aarch64",
        &[
            "qemu-system-aarch64",
            "qemu-img",
            "sha256sum",
            "sfdisk",
            "mkfs.vfat",
            "mmd",
            "mcopy",
        ],
        true,
    ) {
        return None;
    }
    let code = Path::new("/usr/share/AAVMF/AAVMF_CODE.fd");
    if !code.is_file() || !vars.is_file() {
        let msg = "QEMU aarch64 tests need qemu-efi-aarch64 (AAVMF, installed by .ci/run)";
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "{msg}");
        eprintln!("SKIPPED: {msg}");
        return None;
    }
    let vars_digest = sha256(vars);
    let s = Scratch::new();
    let tmpfs = TmpfsDir::new();
    let disk = unsigned_efi_disk(&s);
    let t = s.write(
        "a.toml",
        &format!(
            "[image]\nname = \"arm\"\nversion = \"1.0.0\"\n\n[source.qemu.arm]\narch = \"aarch64\"\nfirmware = \"uefi\"\n{extra}accelerator = \"tcg\"\ncpus = 1\nmemory = \"512MiB\"\n{disk}\n[[build]]\nname = \"b\"\nsources = [\"qemu.arm\"]\n"
        ),
    );
    let mut child = s
        .kiln()
        .args(["build", "--json"])
        .arg(&t)
        .env("KILN_TMPFS", &tmpfs.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let started = std::time::Instant::now();
    let mut seen = String::new();
    while !seen.contains(until) {
        let left = std::time::Duration::from_secs(240).saturating_sub(started.elapsed());
        match rx.recv_timeout(left) {
            Ok(l) => {
                seen.push_str(&l);
                seen.push('\n');
            }
            Err(_) => break,
        }
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let status = child.wait().unwrap();
    while let Ok(l) = rx.recv_timeout(std::time::Duration::from_secs(5)) {
        seen.push_str(&l);
        seen.push('\n');
    }
    assert!(
        seen.contains(until),
        "`{until}` on AAVMF's console within 4 minutes under TCG: {seen}"
    );
    assert!(!status.success(), "stopped before SSH: {seen}");
    assert_eq!(
        sha256(vars),
        vars_digest,
        "AAVMF's own variable store changed"
    );
    assert_nothing_left(&s, &tmpfs);
    Some(seen)
}
