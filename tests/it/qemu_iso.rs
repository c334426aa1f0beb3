//! Installs from an ISO end to end, under TCG: the test makes an
//! installer ISO with `grub-mkrescue` (GRUB, the Debian test image's
//! kernel and initramfs, and a busybox installer added to it), kiln boots
//! it onto an empty disk, types the kernel command line at GRUB's prompt
//! over QMP (`boot_command`), and serves the system image and an answer
//! file over its own HTTP server (`http_directory`). The installer writes
//! the image and a marker made of the typed command line and the fetched
//! answer, then reboots; GRUB finds the installed system and boots it, and
//! kiln's SSH communicator connects as for any build. A second boot of the
//! exported disk (direct kernel boot, no ISO) finds the marker again.
//! `cd_content` is read back from the seed volume in the installed guest.
//! Needs root and grub-mkrescue/xorriso; CI fails when they are missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::qemu::{
    assert_nothing_left, boot_source, build, debian_image, sha256, template, TmpfsDir,
};
use crate::Scratch;

/// Where the installer writes its marker: 1000 MiB into the 1 GiB disk,
/// past the end of the (shrunk) system image.
const MARKER_MIB: u32 = 1000;

fn ready() -> bool {
    crate::qemu::ready()
        && crate::require(
            "QEMU ISO install",
            &["grub-mkrescue", "xorriso", "busybox", "e2fsck", "resize2fs"],
            true,
        )
}

fn run(cmd: &mut Command) {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A `newc` cpio archive of `(path, mode, content)`; directories have
/// mode `0o040755` and no content.
fn cpio(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
    fn pad(out: &mut Vec<u8>) {
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }
    let mut out = vec![];
    let trailer: (&str, u32, &[u8]) = ("TRAILER!!!", 0, b"");
    for (i, (name, mode, data)) in entries.iter().chain([&trailer]).enumerate() {
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            i + 1,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        pad(&mut out);
        out.extend_from_slice(data);
        pad(&mut out);
    }
    out
}

/// The installer's `/init`: network up on whatever the NIC is called,
/// the answer and the system image fetched from the URL typed on the
/// kernel command line, the marker written, and a reboot.
const INSTALLER: &str = r#"#!/kiln/busybox sh
B=/kiln/busybox
$B mkdir -p /proc /sys /dev
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
fail() { echo "kiln-installer: FAILED: $*"; $B sleep 2; $B poweroff -f; }
for m in virtio_pci virtio_blk virtio_net; do
  PATH=/usr/sbin:/sbin:/usr/bin:/bin modprobe $m 2>/dev/null || $B modprobe $m
done
for a in $($B cat /proc/cmdline); do
  case "$a" in
    kiln.base=*) base="${a#kiln.base=}" ;;
    kiln.marker=*) marker="${a#kiln.marker=}" ;;
  esac
done
[ -n "$base" ] || fail "no kiln.base= on the kernel command line"
i=0
while :; do
  nic=$($B ls /sys/class/net | $B grep -v '^lo$' | $B head -n1)
  [ -n "$nic" ] && [ -b /dev/vda ] && break
  i=$((i+1)); [ $i -lt 100 ] || fail "no NIC or no /dev/vda"
  $B sleep 0.2
done
$B ip link set lo up
$B ip link set "$nic" up
$B ip addr add 10.0.2.15/24 dev "$nic"
$B ip route add default via 10.0.2.2
echo "kiln-installer: $nic up, fetching from $base"
answer=$($B wget -q -O - "$base/answer.txt") || fail "cannot fetch $base/answer.txt"
$B wget -q -O /dev/vda "$base/system.img" || fail "cannot fetch $base/system.img"
echo "KILN-INSTALLED $marker $answer" | $B dd of=/dev/vda bs=1M seek=MARKER_MIB conv=fsync 2>/dev/null || fail "cannot write the marker"
$B sync
echo "kiln-installer: installed, rebooting"
$B reboot -f
"#;

/// GRUB: boots the installed system when the disk holds it (ext4 label
/// `root`), else leaves the prompt to the boot command.
const GRUB_CFG: &str = r#"serial --unit=0 --speed=115200
terminal_input console
terminal_output serial console
if search --no-floppy --set=installed --label root; then
  echo "kiln-test: installed system on ($installed)"
  linux /vmlinuz root=/dev/vda console=ttyS0
  initrd /initrd.img
  boot
fi
echo "kiln-test: no installed system; waiting for the boot command"
"#;

/// The Debian test image as a raw ext4 image shrunk to its minimum, the
/// "system" the installer writes.
fn system_image(img: &Path, out: &Path) {
    run(Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(img.join("disk.qcow2"))
        .arg(out));
    // e2fsck exits 1 when it fixed something: only >1 is an error.
    let o = Command::new("e2fsck").arg("-fy").arg(out).output().unwrap();
    assert!(o.status.code().unwrap_or(8) <= 1, "e2fsck: {o:?}");
    run(Command::new("resize2fs").arg("-M").arg(out));
    let sb = {
        use std::io::{Read, Seek};
        let mut f = std::fs::File::open(out).unwrap();
        f.seek(std::io::SeekFrom::Start(1024)).unwrap();
        let mut sb = [0u8; 64];
        f.read_exact(&mut sb).unwrap();
        sb
    };
    let blocks = u32::from_le_bytes(sb[4..8].try_into().unwrap()) as u64;
    let block_size = 1024u64 << u32::from_le_bytes(sb[24..28].try_into().unwrap());
    let len = blocks * block_size;
    assert!(
        len < (MARKER_MIB as u64) << 20,
        "system image too large: {len}"
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(out)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// The installer ISO: GRUB, the Debian kernel and initramfs, and the
/// installer's cpio appended to that initramfs by the typed `initrd` line.
fn installer_iso(img: &Path, dir: &Path) -> PathBuf {
    let root = dir.join("iso");
    std::fs::create_dir_all(root.join("boot/grub")).unwrap();
    std::fs::copy(img.join("vmlinuz"), root.join("vmlinuz")).unwrap();
    std::fs::copy(img.join("initrd.img"), root.join("initrd.img")).unwrap();
    std::fs::write(root.join("boot/grub/grub.cfg"), GRUB_CFG).unwrap();
    let busybox = std::fs::read(
        String::from_utf8(
            Command::new("sh")
                .args(["-c", "command -v busybox"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim(),
    )
    .unwrap();
    let init = INSTALLER.replace("MARKER_MIB", &MARKER_MIB.to_string());
    std::fs::write(
        root.join("install.cpio"),
        cpio(&[
            ("kiln", 0o040755, b""),
            ("kiln/busybox", 0o100755, &busybox),
            ("init", 0o100755, init.as_bytes()),
        ]),
    )
    .unwrap();
    let iso = dir.join("installer.iso");
    run(Command::new("grub-mkrescue").arg("-o").arg(&iso).arg(&root));
    iso
}

#[test]
fn qemu_installs_from_an_iso_with_a_typed_boot_command_and_http_then_the_export_boots() {
    if !ready() {
        return;
    }
    let img = debian_image();
    let s = Scratch::new();
    let tmpfs = TmpfsDir::new();
    let www = s.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    system_image(&img, &www.join("system.img"));
    let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let answer = format!("answer-{id}");
    std::fs::write(www.join("answer.txt"), &answer).unwrap();
    let iso = installer_iso(&img, s.path());
    let typed = format!("typed-{id}");
    let source = format!(
        r#"iso_url = "installer.iso"
iso_checksum = "sha256:{sum}"
disk_size = "1GiB"
boot_wait = "15s"
boot_key_interval = "50ms"
boot_command = [
  "linux /vmlinuz console=ttyS0 kiln.base=http://{{http_ip}}:{{http_port}} kiln.marker={typed}<enter><wait5>",
  "initrd /initrd.img /install.cpio<enter><wait10>",
  "boot<enter>",
]
http_directory = "www"
cd_content = {{ "kiln/cd.txt" = "cd-{id}" }}
ssh_timeout = "12m"
output = "out/installed.qcow2"
"#,
        sum = sha256(&iso)
    );
    let check = format!(
        r#"
[[build.provisioner]]
type = "shell"
inline = ["echo marker: $(dd if=/dev/vda bs=1M skip={MARKER_MIB} count=1 2>/dev/null | tr -d '\\000' | head -n1)", "echo proof > /etc/kiln-installed", "mkdir -p /mnt/seed && mount -o ro LABEL=CIDATA /mnt/seed && echo cd: $(cat /mnt/seed/kiln/cd.txt) && umount /mnt/seed"]
"#
    );
    let t = s.write("build.toml", &template(&source, &check));
    let (code, summary, out) = build(&s, &tmpfs, &t);
    assert_eq!(code, 0, "{summary}\n{out}");
    // The typed line reached GRUB (the marker is only on it) and the
    // installer fetched the answer and the system from kiln's server.
    let want = format!("marker: KILN-INSTALLED {typed} {answer}");
    assert!(out.contains(&want), "want `{want}` in:\n{out}");
    assert!(
        out.contains("typing: linux /vmlinuz console=ttyS0 kiln.base=http://10.0.2.2:"),
        "{out}"
    );
    assert!(out.contains("http: GET /answer.txt 200"), "{out}");
    assert!(out.contains("http: GET /system.img 200"), "{out}");
    assert!(out.contains("SSH ready after"), "{out}");
    // `cd_content` is on the seed volume beside cloud-init's files.
    assert!(out.contains(&format!("cd: cd-{id}")), "{out}");
    let artifact = &summary["jobs"][0]["artifacts"][0];
    let exported = s.path().join("out/installed.qcow2");
    let digest = sha256(&exported);
    assert_eq!(artifact["digest"], format!("sha256:{digest}"), "{summary}");
    assert!(
        artifact["base"]
            .as_str()
            .unwrap_or("")
            .contains("installer.iso@sha256:"),
        "the artifact names the ISO it was installed from: {summary}"
    );
    assert_nothing_left(&s, &tmpfs);

    // The export boots on its own (no ISO, no HTTP): the installed system
    // with the marker and the build's change.
    let again = format!(
        r#"
[[build.provisioner]]
type = "shell"
inline = ["echo again: $(dd if=/dev/vda bs=1M skip={MARKER_MIB} count=1 2>/dev/null | tr -d '\\000' | head -n1) $(cat /etc/kiln-installed)"]
"#
    );
    let t = s.write(
        "again.toml",
        &template(
            &boot_source(&img, &exported, &digest, "out/again.qcow2"),
            &again,
        ),
    );
    let (code, summary, out) = build(&s, &tmpfs, &t);
    assert_eq!(code, 0, "{summary}\n{out}");
    let want = format!("again: KILN-INSTALLED {typed} {answer} proof");
    assert!(out.contains(&want), "want `{want}` in:\n{out}");
    assert_nothing_left(&s, &tmpfs);
}

/// A boot command with an unknown key is refused before anything runs
/// (as bad input, exit 2), at the key's line and column in the template.
#[test]
fn qemu_iso_unknown_boot_key_is_refused_with_its_column() {
    let s = Scratch::new();
    s.write("installer.iso", "not really an ISO");
    let source = r#"iso_url = "installer.iso"
iso_checksum = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
disk_size = "1GiB"
boot_command = ["linux <enter><foo>"]
output = "out/x.qcow2"
"#;
    let t = s.write("build.toml", &template(source, ""));
    let o = s
        .kiln()
        .args(["build"])
        .arg(&t)
        .env("KILN_QEMU_TEST_TOKEN", "x")
        .output()
        .unwrap();
    let (stdout, stderr) = crate::text(&o);
    let all = format!("{stdout}{stderr}");
    assert_eq!(o.status.code(), Some(2), "{all}");
    assert!(
        all.contains("build.toml:14:31: `source.qemu.vm`: `boot_command[0]`: unknown key `<foo>`"),
        "{all}"
    );
    assert!(!s.path().join("out").exists());
}
