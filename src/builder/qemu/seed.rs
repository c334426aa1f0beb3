//! Guest access: the build's ephemeral ed25519 key pair (kept in memory
//! only) and the cloud-init NoCloud seed, a small FAT volume labelled
//! `CIDATA` holding `meta-data` and `user-data`, written by kiln itself.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use russh::keys::PrivateKey;

use crate::builder::BuildError;

/// Size of the seed volume: small, but above FAT12's cluster minimum.
const SEED_BYTES: u64 = 1 << 20;

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
}

impl SeedContent<'_> {
    pub fn meta_data(&self) -> String {
        format!(
            "instance-id: {}\nlocal-hostname: {}\n",
            self.instance_id, self.hostname
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
pub fn write_seed(path: &Path, content: &SeedContent<'_>) -> Result<(), BuildError> {
    let files = [
        ("meta-data", content.meta_data()),
        ("user-data", content.user_data()?),
    ];
    let io = BuildError::io(format!("cannot write the seed `{}`", path.display()));
    (|| -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.set_len(SEED_BYTES)?;
        fatfs::format_volume(
            &mut file,
            fatfs::FormatVolumeOptions::new().volume_label(*b"CIDATA     "),
        )?;
        file.seek(SeekFrom::Start(0))?;
        let fs = fatfs::FileSystem::new(&mut file, fatfs::FsOptions::new())?;
        for (name, text) in &files {
            let mut f = fs.root_dir().create_file(name)?;
            f.truncate()?;
            f.write_all(text.as_bytes())?;
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
