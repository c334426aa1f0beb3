//! The instance of an OCI build: an overlayfs mount of the cached base
//! (lower) and this build's changes (upper), and the OCI runtime config
//! (generated from oci-spec's defaults) each provisioner process runs with.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use crate::builder::BuildError;

/// Mounts overlayfs at `merged`, `nodev,nosuid`: a device node or setuid
/// file from the base image is inert on the host (an upload onto the
/// image's `/dev/sda`-like node must not reach the host's disk). Redirects, metadata-only copy-up and the
/// inode index are turned off where the kernel knows the options: with
/// them the upper directory would not hold full copies of what changed.
pub fn mount_overlay(
    lower: &Path,
    upper: &Path,
    work: &Path,
    merged: &Path,
) -> Result<(), BuildError> {
    use nix::mount::{mount, MsFlags};
    let base = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    let strict = format!("{base},redirect_dir=off,metacopy=off,index=off");
    let result = mount(
        Some("overlay"),
        merged,
        Some("overlay"),
        MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
        Some(strict.as_str()),
    )
    .or_else(|e| {
        if e == nix::errno::Errno::EINVAL {
            // An older kernel without these options has none of the features either.
            mount(
                Some("overlay"),
                merged,
                Some("overlay"),
                MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
                Some(base.as_str()),
            )
        } else {
            Err(e)
        }
    });
    result.map_err(|e| BuildError::Io {
        what: format!("cannot mount overlayfs at `{}`", merged.display()),
        source: e.into(),
    })
}

/// Bind-mounts `dir` onto itself `nodev,nosuid` (the no-overlayfs
/// fallback's tree: the same protection as the overlay).
pub fn bind_nodev(dir: &Path) -> Result<(), BuildError> {
    use nix::mount::{mount, MsFlags};
    let err = |e: nix::errno::Errno| BuildError::Io {
        what: format!("cannot bind-mount `{}` nodev,nosuid", dir.display()),
        source: e.into(),
    };
    mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(err)?;
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
        None::<&str>,
    )
    .map_err(err)
}

/// Unmounts (lazily, so a busy mount never blocks cleanup).
pub fn unmount(target: &Path) -> Result<(), String> {
    use nix::mount::{umount2, MntFlags};
    match umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(format!("cannot unmount `{}`: {e}", target.display())),
    }
}

/// Capabilities a provisioner needs to install packages and manage files
/// (Docker's default set).
const CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Where a provisioner script file appears inside the container.
pub const SCRIPT_PATH: &str = "/dev/.kiln-script";

/// What one process in the container looks like.
pub struct ProcessSpec<'a> {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: &'a str,
    pub uid: u32,
    pub gid: u32,
    /// A script file on the host, bound read-only at [`SCRIPT_PATH`]
    /// (under the runtime's own `/dev` tmpfs, so it never reaches the image).
    pub script: Option<&'a Path>,
}

/// The runtime config for one process on `rootfs`.
pub fn runtime_spec(
    rootfs: &Path,
    hostname: &str,
    host_network: bool,
    p: &ProcessSpec,
) -> Result<Spec, BuildError> {
    let mut v = serde_json::to_value(Spec::default()).expect("spec serializes");
    v["root"] = serde_json::json!({ "path": rootfs, "readonly": false });
    v["hostname"] = hostname.into();
    let caps = serde_json::json!(CAPS);
    v["process"] = serde_json::json!({
        "terminal": false,
        "user": { "uid": p.uid, "gid": p.gid },
        "args": p.args,
        "env": p.env,
        "cwd": p.cwd,
        "noNewPrivileges": true,
        "capabilities": { "bounding": caps, "effective": caps, "permitted": caps },
        "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
    });
    if let Some(ns) = v["linux"]["namespaces"].as_array_mut() {
        if host_network {
            ns.retain(|n| n["type"] != "network");
        }
        // Cgroup namespaces are not available on every host this runs on.
        ns.retain(|n| n["type"] != "cgroup");
    }
    if let (Some(script), Some(mounts)) = (p.script, v["mounts"].as_array_mut()) {
        mounts.push(serde_json::json!({
            "destination": SCRIPT_PATH, "type": "bind", "source": script,
            "options": ["bind", "ro", "nosuid", "nodev"],
        }));
    }
    if host_network {
        if let Some(mounts) = v["mounts"].as_array_mut() {
            mounts.push(serde_json::json!({
                "destination": "/etc/resolv.conf", "type": "bind", "source": "/etc/resolv.conf",
                "options": ["rbind", "ro", "nosuid", "nodev", "noexec"],
            }));
        }
    }
    serde_json::from_value(v)
        .map_err(|e| BuildError::Config(format!("invalid runtime config: {e}")))
}

/// Writes `config.json` into a bundle directory.
pub fn write_bundle(bundle: &Path, spec: &Spec) -> Result<PathBuf, BuildError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let path = bundle.join("config.json");
    // Root-only and never an existing file: it holds the environment.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(BuildError::io("cannot write bundle"))?;
    f.write_all(&serde_json::to_vec_pretty(spec).expect("spec serializes"))
        .map_err(BuildError::io("cannot write bundle"))?;
    Ok(path)
}

/// Resolves `path` inside `root` as the container would see it: every
/// symlink on the way, the last one included, is followed relative to
/// `root`, never out of it (see [`crate::communicator::inroot`], which
/// also opens files race-free).
pub fn resolve_in_root(root: &Path, path: &str) -> Result<PathBuf, BuildError> {
    crate::communicator::inroot::lexical(root, path).map_err(BuildError::Config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_is_valid_and_respects_network_mode() {
        let p = ProcessSpec {
            args: vec!["/bin/sh".into()],
            env: vec!["A=1".into()],
            cwd: "/",
            uid: 0,
            gid: 0,
            script: None,
        };
        let host = serde_json::to_value(runtime_spec(Path::new("/r"), "kiln-x", true, &p).unwrap())
            .unwrap();
        assert!(!host["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "network"));
        assert!(host["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["destination"] == "/etc/resolv.conf"));
        assert_eq!(host["process"]["noNewPrivileges"], true);
        let none =
            serde_json::to_value(runtime_spec(Path::new("/r"), "kiln-x", false, &p).unwrap())
                .unwrap();
        assert!(none["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "network"));
    }

    #[test]
    fn paths_resolve_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        std::fs::create_dir_all(r.join("usr/etc")).unwrap();
        std::os::unix::fs::symlink("/usr/etc", r.join("etc")).unwrap();
        std::os::unix::fs::symlink("../../../../..", r.join("up")).unwrap();
        assert_eq!(
            resolve_in_root(r, "/etc/x.conf").unwrap(),
            r.join("usr/etc/x.conf")
        );
        assert_eq!(
            resolve_in_root(r, "/up/etc/passwd").unwrap(),
            r.join("usr/etc/passwd")
        );
        assert_eq!(resolve_in_root(r, "../../x").unwrap(), r.join("x"));
        // The last component is followed too, inside the root.
        std::fs::create_dir_all(r.join("tmp")).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", r.join("tmp/x")).unwrap();
        assert_eq!(
            resolve_in_root(r, "/tmp/x").unwrap(),
            r.join("usr/etc/shadow")
        );
    }
}
