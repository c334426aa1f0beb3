//! The state folder and the caches under it: who may enter them (root, or
//! whoever runs kiln, only: an unpacked base keeps the image's setuid files
//! and device nodes), how much room they take, and removing them
//! (`kiln cleanup --caches`; nothing prunes them otherwise).
//!
//! What the caches keep: `oci/blobs/sha256` holds blobs exactly as pulled
//! (verified against their digests); `oci/rootfs/<manifest hex>` holds
//! each base unpacked as the image says — ownership, modes (setuid
//! included) and device nodes — because the build's overlay shows it to
//! the provisioners as it is. `qemu/bases/<algo>-<hex>` holds QEMU base
//! disks downloaded from `disk_url`, named by their verified digest. It is safe on the host because the state
//! folder is 0700 (no other user reaches a setuid file or a node), every
//! mount kiln makes over it is `nodev,nosuid`, and files are copied in and
//! out of an instance only as regular files (`communicator::inroot`).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The caches under a state folder: (name, path relative to it).
const CACHES: &[(&str, &str)] = &[
    ("unpacked base images", "oci/rootfs"),
    ("image blobs", "oci/blobs"),
    ("downloaded base disks", "qemu/bases"),
];

/// Makes `dir` (and its missing parents) with mode 0700, or tightens it
/// to 0700 if it exists with more. Returns the old mode when it tightened.
pub fn private_dir(dir: &Path) -> std::io::Result<Option<u32>> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) => {
            let mode = m.mode() & 0o7777;
            if mode & 0o077 != 0 && m.is_dir() {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
                return Ok(Some(mode));
            }
            Ok(None)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            // `recursive` applies the umask-filtered mode; be explicit.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Secures the state folder: created 0700 when `create`, and the folder
/// and its caches tightened to 0700 when they are open to other users.
/// Returns a note naming the folders it tightened (said once: the next
/// run finds them tight).
pub fn secure_state(state: &Path, create: bool) -> std::io::Result<Vec<String>> {
    if !create && !state.exists() {
        return Ok(vec![]);
    }
    let mut tightened = vec![];
    let dirs = std::iter::once(state.to_path_buf()).chain(
        ["oci", "oci/rootfs", "oci/blobs", "qemu", "qemu/bases"]
            .iter()
            .map(|d| state.join(d))
            .filter(|d| d.is_dir()),
    );
    for d in dirs {
        if let Some(old) = private_dir(&d)? {
            tightened.push(format!("`{}` (was {old:04o})", d.display()));
        }
    }
    Ok(if tightened.is_empty() {
        vec![]
    } else {
        vec![format!(
            "the state folder was open to other users: tightened to 0700 {} — its caches hold image files such as setuid binaries and device nodes",
            tightened.join(", ")
        )]
    })
}

/// The room one cache takes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CacheUsage {
    pub name: &'static str,
    pub path: PathBuf,
    /// Top-level entries (unpacked bases, blobs).
    pub entries: usize,
    /// Bytes allocated on disk (hard links counted once).
    pub bytes: u64,
}

fn du(p: &Path, seen: &mut std::collections::HashSet<(u64, u64)>) -> u64 {
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    let mut total = 0;
    if seen.insert((m.dev(), m.ino())) {
        total += m.blocks() * 512;
    }
    if m.is_dir() {
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                total += du(&e.path(), seen);
            }
        }
    }
    total
}

fn entries_of(p: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(p)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    // The blob store keeps its blobs one level down (`sha256/`).
    if out.len() == 1 && out[0].file_name().is_some_and(|n| n == "sha256") {
        out = std::fs::read_dir(&out[0])
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
    }
    out
}

/// How much each cache under `state` takes.
pub fn usage(state: &Path) -> Vec<CacheUsage> {
    CACHES
        .iter()
        .map(|(name, rel)| {
            let path = state.join(rel);
            let mut seen = Default::default();
            CacheUsage {
                name,
                entries: entries_of(&path).len(),
                bytes: if path.exists() {
                    du(&path, &mut seen)
                } else {
                    0
                },
                path,
            }
        })
        .collect()
}

/// One line for humans: `12.0 MiB in 2 unpacked base images (PATH), …`.
pub fn describe(usage: &[CacheUsage]) -> String {
    usage
        .iter()
        .map(|u| {
            format!(
                "{} in {} {} (`{}`)",
                human_bytes(u.bytes),
                u.entries,
                u.name,
                u.path.display()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn human_bytes(b: u64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// Removes every cache under `state` (not the catalog, keys or journal).
/// A cache in use by a mount (a running build's overlay) is left, and
/// named in the error list.
pub fn remove_caches(state: &Path) -> (Vec<CacheUsage>, Vec<String>) {
    let before = usage(state);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut failed = vec![];
    for (_, rel) in CACHES {
        for e in entries_of(&state.join(rel)) {
            let shown = e.display().to_string();
            if mounts.contains(&shown) {
                failed.push(format!("`{shown}` is in use by a mount (a running build?)"));
                continue;
            }
            let r = if std::fs::symlink_metadata(&e).is_ok_and(|m| m.is_dir()) {
                std::fs::remove_dir_all(&e)
            } else {
                std::fs::remove_file(&e)
            };
            if let Err(err) = r {
                failed.push(format!("cannot remove `{shown}`: {err}"));
            }
        }
    }
    (before, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_made_and_kept_private() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("a/state");
        assert!(secure_state(&state, false).unwrap().is_empty());
        assert!(!state.exists(), "not created unless asked");
        secure_state(&state, true).unwrap();
        assert_eq!(std::fs::metadata(&state).unwrap().mode() & 0o777, 0o700);
        std::fs::create_dir_all(state.join("oci/rootfs/x")).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(
            state.join("oci/rootfs"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let notes = secure_state(&state, false).unwrap();
        assert_eq!(notes.len(), 1, "one note: {notes:?}");
        assert!(notes[0].contains("rootfs` (was 0755)"), "{notes:?}");
        assert!(secure_state(&state, false).unwrap().is_empty(), "said once");
        std::fs::write(state.join("oci/rootfs/x/f"), vec![1u8; 10_000]).unwrap();
        let u = usage(&state);
        assert_eq!(u[0].entries, 1);
        assert!(u[0].bytes >= 10_000, "{u:?}");
        let (_, failed) = remove_caches(&state);
        assert!(failed.is_empty());
        assert_eq!(usage(&state)[0].entries, 0);
        assert!(state.join("oci/rootfs").is_dir());
    }
}
