//! The guest's network comes up whatever its NIC is called (issue #16):
//! kiln gives the NIC a MAC address and its NoCloud seed a network config
//! that cloud-init applies by that MAC, renaming the interface, even when
//! the template brings its own SSH key. The fixture is the Debian test
//! image rewritten by the test (no mount, `debugfs -w` on a raw copy): its
//! systemd-networkd configuration names only `ens3`, a NIC `-machine q35`
//! does not have (it calls the NIC `enp0s1`), and root's
//! `authorized_keys` holds the template's key. One TCG boot.

use std::path::Path;
use std::process::Command;

use crate::qemu::{assert_nothing_left, boot_source, build, debian_image, sha256, template};
use crate::qemu::{ready, TmpfsDir};
use crate::Scratch;

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The Debian test image with its network configuration replaced by one
/// naming only `ens3`, and `public_key` authorized for root: written into
/// a raw copy with `debugfs`, returned as qcow2.
fn image_naming_ens3(s: &Scratch, base: &Path, public_key: &Path) -> std::path::PathBuf {
    let raw = s.path().join("ens3.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(base)
        .arg(&raw));
    let network = s.write(
        "ens3.network",
        "[Match]\nName=ens3\n\n[Network]\nDHCP=ipv4\n",
    );
    let keys = s.path().join("authorized_keys");
    std::fs::copy(public_key, &keys).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    let commands = s.write(
        "debugfs.cmd",
        &format!(
            "rm /etc/systemd/network/99-kiln-dhcp.network\ncd /etc/systemd/network\nwrite {} 10-ens3.network\nmkdir /root/.ssh\ncd /root/.ssh\nwrite {} authorized_keys\n",
            network.display(),
            keys.display()
        ),
    );
    run(Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&commands)
        .arg(&raw));
    // What the guest will find: only `ens3` is configured.
    let listing = run(Command::new("debugfs")
        .args(["-R", "ls -l /etc/systemd/network"])
        .arg(&raw));
    assert!(listing.contains("10-ens3.network"), "{listing}");
    assert!(!listing.contains("99-kiln-dhcp"), "{listing}");
    let qcow2 = s.path().join("ens3.qcow2");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow2));
    std::fs::remove_file(&raw).unwrap();
    qcow2
}

#[test]
fn qemu_network_comes_up_when_the_image_names_another_nic() {
    if !ready() || !crate::require("QEMU network", &["debugfs", "ssh-keygen"], true) {
        return;
    }
    let img = debian_image();
    let s = Scratch::new();
    let tmpfs = TmpfsDir::new();
    let key = s.path().join("id_ed25519");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", ""])
        .arg("-f")
        .arg(&key));
    let disk = image_naming_ens3(&s, &img.join("disk.qcow2"), &key.with_extension("pub"));
    let source = boot_source(&img, &disk, &sha256(&disk), "out/net.qcow2")
        + &format!("ssh_private_key_file = \"{}\"\n", key.display());
    // ENI is the renderer that matches no name globs: cloud-init's own
    // converter renders kiln's network config for it, from the seed.
    let check = r#"
[[build.provisioner]]
type = "shell"
inline = [
  "echo links: $(for i in /sys/class/net/*; do printf '%s=%s ' $(basename $i) $(cat $i/address); done)",
  "echo fixture: $(grep Name= /etc/systemd/network/10-ens3.network)",
  "echo networkd: $(ls /etc/systemd/network | tr '\n' ' ')",
  "echo route: $(ip -4 route show default)",
  "mkdir -p /mnt/seed && mount -o ro LABEL=CIDATA /mnt/seed",
  "cloud-init devel net-convert -p /mnt/seed/network-config -k yaml -d /tmp/eni -D debian -O eni",
  "umount /mnt/seed",
  "echo eni: $(find /tmp/eni -type f -path '*network/interfaces*' | xargs grep -hv -e '^#' -e '^$' | tr '\n' ' ')",
]
"#;
    let t = s.write("net.toml", &template(&source, check));
    let (code, summary, out) = build(&s, &tmpfs, &t);
    assert_eq!(code, 0, "{summary}\n{out}");
    let mac = out
        .split("cloud-init renames the NIC with MAC ")
        .nth(1)
        .map(|rest| rest[..17].to_string())
        .unwrap_or_else(|| panic!("kiln names the NIC's MAC: {out}"));
    assert!(mac.starts_with("52:54:00:"), "{mac}");
    // The image configures `ens3` only; the NIC came up as kiln's `eth0`,
    // with kiln's MAC, and holds the default route.
    assert!(out.contains("fixture: Name=ens3"), "{out}");
    assert!(out.contains(&format!("eth0={mac}")), "{out}");
    assert!(!out.contains("enp0s1="), "renamed: {out}");
    assert!(out.contains("default via 10.0.2.2 dev eth0"), "{out}");
    assert!(out.contains("auto eth0 iface eth0 inet dhcp"), "{out}");
    assert!(s.path().join("out/net.qcow2").exists());
    assert_nothing_left(&s, &tmpfs);
}
