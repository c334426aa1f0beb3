//! Guest access: the build's ephemeral ed25519 key pair (kept in memory
//! only) and the cloud-init NoCloud seed, a small FAT volume labelled
//! `CIDATA` holding `meta-data`, `user-data` and `network-config`, written
//! by kiln itself. The network config matches the NIC by the MAC address
//! kiln gives it and renames it, so the guest's network comes up whatever
//! name the machine type gives the NIC.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use russh::keys::PrivateKey;

use crate::builder::BuildError;

/// Size of the seed volume: small, but above FAT12's cluster minimum.
const SEED_BYTES: u64 = 1 << 20;

/// NoCloud's network configuration file on the seed.
pub const NETWORK_CONFIG: &str = "network-config";

/// A fresh ed25519 key pair from the OS random source (memory only).
pub fn ephemeral_key() -> Result<PrivateKey, BuildError> {
    crate::communicator::ssh::ephemeral_key().map_err(BuildError::Comm)
}

/// The `authorized_keys` line for `key`.
pub fn authorized_key(key: &PrivateKey) -> Result<String, BuildError> {
    crate::communicator::ssh::authorized_key(key).map_err(BuildError::Comm)
}

/// What the guest learns from the seed.
pub struct SeedContent<'a> {
    pub instance_id: &'a str,
    pub hostname: &'a str,
    pub username: &'a str,
    /// `authorized_keys` line; `None` when the template brings its own
    /// credentials (the user-data then only carries `extra_user_data`).
    pub public_key: Option<&'a str>,
    /// The template's `user_data`, merged in: a `#cloud-config` document
    /// whose top-level keys are appended after kiln's own.
    pub extra_user_data: Option<&'a str>,
    /// The MAC address kiln gives the guest's NIC (`-device …,mac=`): the
    /// network config matches it.
    pub mac: &'a str,
}

/// The name kiln's network config gives the NIC: cloud-init renames the
/// interface with this MAC to it before any renderer's configuration is
/// applied, so ENI, netplan, networkd and sysconfig all find it.
pub const GUEST_NIC: &str = "eth0";

/// A MAC address in QEMU's `52:54:00` range with three random bytes: a
/// locally administered, unicast address, fresh per boot.
pub fn random_mac() -> String {
    let b = uuid::Uuid::new_v4().into_bytes();
    format!("52:54:00:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2])
}

impl SeedContent<'_> {
    pub fn meta_data(&self) -> String {
        format!(
            "instance-id: {}\nlocal-hostname: {}\n",
            self.instance_id, self.hostname
        )
    }

    /// The NoCloud `network-config` (version 1): the NIC with kiln's MAC
    /// is renamed to [`GUEST_NIC`] and configured by DHCP. Matching by MAC
    /// rather than by name glob is what every renderer honours: cloud-init
    /// renames the interface itself (`ip link set … name`) before the
    /// renderer's files are read.
    pub fn network_config(&self) -> String {
        format!(
            "version: 1\nconfig:\n  - type: physical\n    name: {GUEST_NIC}\n    mac_address: \"{}\"\n    subnets:\n      - type: dhcp\n",
            self.mac
        )
    }

    /// The `#cloud-config` user-data: the key for the SSH user (root gets
    /// it directly, any other user is created with passwordless sudo).
    pub fn user_data(&self) -> Result<String, BuildError> {
        let mut out = String::from("#cloud-config\n");
        // RSA and ECDSA host keys would only cost boot time (seconds under
        // TCG) in a VM that is thrown away. `user_data` may set it again:
        // cloud-init keeps the last value of a repeated key.
        out.push_str("ssh_genkeytypes: [ed25519]\n");
        if let Some(key) = self.public_key {
            let key = yaml_string(key);
            if self.username == "root" {
                out.push_str("disable_root: false\n");
                out.push_str(&format!("ssh_authorized_keys:\n  - {key}\n"));
            } else {
                let name = yaml_string(self.username);
                out.push_str(&format!(
                    "users:\n  - default\n  - name: {name}\n    shell: /bin/sh\n    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n    ssh_authorized_keys:\n      - {key}\n"
                ));
            }
        }
        if let Some(extra) = self.extra_user_data {
            let body = extra.trim_start();
            let body = body
                .strip_prefix("#cloud-config")
                .ok_or_else(|| {
                    BuildError::Config(
                        "`user_data` must be a `#cloud-config` document (its first line is `#cloud-config`)".into(),
                    )
                })?
                .trim_start_matches(['\r', '\n']);
            for key in ["ssh_authorized_keys:", "disable_root:"] {
                if self.public_key.is_some() && body.lines().any(|l| l.starts_with(key)) {
                    return Err(BuildError::Config(format!(
                        "`user_data` sets `{}`, which kiln sets itself to reach the guest",
                        key.trim_end_matches(':')
                    )));
                }
            }
            out.push_str(body);
            if !out.ends_with('\n') {
                out.push('\n');
            }
        }
        Ok(out)
    }
}

/// A double-quoted YAML scalar.
fn yaml_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// Writes the NoCloud seed volume to `path` (created, mode 0600).
#[cfg(test)]
pub fn write_seed(path: &Path, content: &SeedContent<'_>) -> Result<(), BuildError> {
    write_volume(path, Some(content), &[], "CIDATA")
}

/// Writes the seed volume with `cd_files`/`cd_content` merged in (`extra`:
/// path inside the volume → bytes; a path ending in `/` is a folder). With `content` it is the NoCloud seed
/// (`label` must then be `CIDATA`); without, a plain volume of `extra`.
pub fn write_volume(
    path: &Path,
    content: Option<&SeedContent<'_>>,
    extra: &[(String, Vec<u8>)],
    label: &str,
) -> Result<(), BuildError> {
    let mut files: Vec<(String, Vec<u8>)> = vec![];
    if let Some(content) = content {
        if !label.eq_ignore_ascii_case("cidata") {
            return Err(BuildError::Config(format!(
                "`cd_label = \"{label}\"`: kiln's cloud-init seed shares the volume and needs the label `cidata`"
            )));
        }
        files.push(("meta-data".into(), content.meta_data().into_bytes()));
        files.push(("user-data".into(), content.user_data()?.into_bytes()));
        // A `network-config` of the template's own (`cd_files`,
        // `cd_content`) replaces kiln's.
        if !extra
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(NETWORK_CONFIG))
        {
            files.push((NETWORK_CONFIG.into(), content.network_config().into_bytes()));
        }
    }
    for (name, bytes) in extra {
        let bare = name.trim_end_matches('/');
        if files
            .iter()
            .any(|(n, _)| n.trim_end_matches('/').eq_ignore_ascii_case(bare))
        {
            return Err(BuildError::Config(format!(
                "`{name}` is on the seed volume twice (kiln writes `meta-data` and `user-data` itself; `user_data` merges into them)"
            )));
        }
        files.push((name.clone(), bytes.clone()));
    }
    if label.is_empty() || label.len() > 11 || !label.is_ascii() {
        return Err(BuildError::Config(format!(
            "`cd_label = \"{label}\"` is not a FAT volume label (1 to 11 ASCII characters)"
        )));
    }
    let mut volume_label = [b' '; 11];
    for (i, b) in label.to_ascii_uppercase().bytes().enumerate() {
        volume_label[i] = b;
    }
    let payload: u64 = files.iter().map(|(_, b)| b.len() as u64 + 4096).sum();
    let bytes = SEED_BYTES.max((payload + payload / 4 + (1 << 20)).next_multiple_of(1 << 20));
    let io = BuildError::io(format!("cannot write the seed `{}`", path.display()));
    (|| -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.set_len(bytes)?;
        fatfs::format_volume(
            &mut file,
            fatfs::FormatVolumeOptions::new().volume_label(volume_label),
        )?;
        file.seek(SeekFrom::Start(0))?;
        let fs = fatfs::FileSystem::new(&mut file, fatfs::FsOptions::new())?;
        for (name, data) in &files {
            let mut dir = fs.root_dir();
            let parts: Vec<&str> = name.split('/').filter(|p| !p.is_empty()).collect();
            let Some((leaf, parents)) = parts.split_last() else {
                continue;
            };
            for p in parents {
                dir = match dir.open_dir(p) {
                    Ok(d) => d,
                    Err(_) => dir.create_dir(p)?,
                };
            }
            if name.ends_with('/') {
                if dir.open_dir(leaf).is_err() {
                    dir.create_dir(leaf)?;
                }
                continue;
            }
            let mut f = dir.create_file(leaf)?;
            f.truncate()?;
            f.write_all(data)?;
            f.flush()?;
        }
        fs.unmount()?;
        Ok(())
    })()
    .map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn content<'a>(user: &'a str, extra: Option<&'a str>) -> SeedContent<'a> {
        SeedContent {
            instance_id: "kiln-1",
            hostname: "kiln-vm",
            username: user,
            public_key: Some("ssh-ed25519 AAAA test"),
            extra_user_data: extra,
            mac: "52:54:00:6b:69:6c",
        }
    }

    #[test]
    fn qemu_keys_are_fresh_ed25519() {
        let a = ephemeral_key().unwrap();
        let b = ephemeral_key().unwrap();
        let (la, lb) = (authorized_key(&a).unwrap(), authorized_key(&b).unwrap());
        assert!(la.starts_with("ssh-ed25519 "), "{la}");
        assert_ne!(la, lb);
    }

    #[test]
    fn qemu_user_data_gives_root_the_key_and_merges_extra() {
        let ud = content("root", Some("#cloud-config\nruncmd:\n  - [touch, /x]\n"))
            .user_data()
            .unwrap();
        assert!(
            ud.starts_with("#cloud-config\nssh_genkeytypes: [ed25519]\ndisable_root: false\n"),
            "{ud}"
        );
        assert!(ud.contains("  - \"ssh-ed25519 AAAA test\"\n"), "{ud}");
        assert!(ud.ends_with("runcmd:\n  - [touch, /x]\n"), "{ud}");
        let ud = content("debian", None).user_data().unwrap();
        assert!(ud.contains("name: \"debian\""), "{ud}");
    }

    #[test]
    fn qemu_user_data_must_be_cloud_config_and_keep_kiln_access() {
        let err = content("root", Some("#!/bin/sh\necho hi"))
            .user_data()
            .unwrap_err();
        assert!(err.to_string().contains("#cloud-config"), "{err}");
        let err = content("root", Some("#cloud-config\nssh_authorized_keys: []"))
            .user_data()
            .unwrap_err();
        assert!(err.to_string().contains("ssh_authorized_keys"), "{err}");
    }

    /// `cd_files`/`cd_content` land on the seed beside kiln's files; an
    /// independent reader (mtools) sees them and the label.
    #[test]
    fn qemu_cd_files_merge_into_the_seed() {
        let dir = std::env::temp_dir().join(format!("kiln-seed-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("seed.img");
        let big = vec![b'k'; 3 << 20];
        write_volume(
            &path,
            Some(&content("root", None)),
            &[
                ("ks.cfg".into(), b"text\n".to_vec()),
                ("sub/big.bin".into(), big.clone()),
                ("sub/empty/".into(), vec![]),
            ],
            "cidata",
        )
        .unwrap();
        let mut file = std::fs::File::open(&path).unwrap();
        let fs = fatfs::FileSystem::new(&mut file, fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.volume_label().trim_end(), "CIDATA");
        let mut got = vec![];
        fs.root_dir()
            .open_file("sub/big.bin")
            .unwrap()
            .read_to_end(&mut got)
            .unwrap();
        assert_eq!(got, big);
        let empty = fs.root_dir().open_dir("sub/empty").unwrap();
        assert_eq!(
            empty
                .iter()
                .filter_map(Result::ok)
                .filter(|e| !e.file_name().starts_with('.'))
                .count(),
            0
        );
        drop(empty);
        drop(fs);
        if let Ok(o) = std::process::Command::new("mtype")
            .args(["-i"])
            .arg(&path)
            .arg("::ks.cfg")
            .output()
        {
            assert_eq!(String::from_utf8_lossy(&o.stdout), "text\n", "{o:?}");
        } else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "mtools missing"
            );
        }
        let e = write_volume(
            &dir.join("b.img"),
            Some(&content("root", None)),
            &[("user-data".into(), vec![])],
            "cidata",
        )
        .unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        let e = write_volume(
            &dir.join("c.img"),
            Some(&content("root", None)),
            &[],
            "OEMDRV",
        )
        .unwrap_err();
        assert!(e.to_string().contains("cidata"), "{e}");
        write_volume(
            &dir.join("d.img"),
            None,
            &[("ks.cfg".into(), vec![b'x'])],
            "OEMDRV",
        )
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The network config matches the NIC by kiln's MAC and names it; a
    /// `network-config` of the template's own replaces it.
    #[test]
    fn qemu_seed_network_config_matches_the_nic_by_mac() {
        let c = content("root", None);
        assert_eq!(
            c.network_config(),
            "version: 1\nconfig:\n  - type: physical\n    name: eth0\n    mac_address: \"52:54:00:6b:69:6c\"\n    subnets:\n      - type: dhcp\n"
        );
        let read = |path: &Path, name: &str| {
            let mut file = std::fs::File::open(path).unwrap();
            let fs = fatfs::FileSystem::new(&mut file, fatfs::FsOptions::new()).unwrap();
            let mut text = String::new();
            fs.root_dir()
                .open_file(name)
                .unwrap()
                .read_to_string(&mut text)
                .unwrap();
            text
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed.img");
        write_seed(&path, &c).unwrap();
        assert_eq!(read(&path, "network-config"), c.network_config());
        let own = b"version: 2\nethernets: {}\n".to_vec();
        let path = dir.path().join("own.img");
        write_volume(
            &path,
            Some(&c),
            &[("network-config".into(), own.clone())],
            "cidata",
        )
        .unwrap();
        assert_eq!(read(&path, "network-config").as_bytes(), own);
    }

    #[test]
    fn qemu_macs_are_fresh_local_unicast_addresses() {
        let (a, b) = (random_mac(), random_mac());
        assert_ne!(a, b);
        for mac in [a, b] {
            let bytes: Vec<u8> = mac
                .split(':')
                .map(|h| u8::from_str_radix(h, 16).unwrap())
                .collect();
            assert_eq!(bytes.len(), 6, "{mac}");
            assert_eq!(bytes[0] & 1, 0, "unicast: {mac}");
            assert_eq!(bytes[0] & 2, 2, "locally administered: {mac}");
        }
    }

    #[test]
    fn qemu_seed_is_a_cidata_fat_volume() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed.img");
        write_seed(&path, &content("root", None)).unwrap();
        let mut file = std::fs::File::open(&path).unwrap();
        let fs = fatfs::FileSystem::new(&mut file, fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.volume_label().trim_end(), "CIDATA");
        let mut meta = String::new();
        fs.root_dir()
            .open_file("meta-data")
            .unwrap()
            .read_to_string(&mut meta)
            .unwrap();
        assert_eq!(meta, "instance-id: kiln-1\nlocal-hostname: kiln-vm\n");
        assert!(fs.root_dir().open_file("user-data").is_ok());
    }
}
