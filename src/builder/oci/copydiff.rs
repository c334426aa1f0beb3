//! The fallback where overlayfs cannot be mounted (some kernels, nested
//! containers): the base is copied into the instance root, and the
//! snapshot diffs that root against the base to build the same kind of
//! "upper" tree overlayfs would have produced (changed entries hard-linked,
//! deleted ones as 0/0 whiteout devices), which `layer::write_layer` then
//! turns into a layer.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::builder::BuildError;

/// Copies `lower` into `root` keeping ownership, modes, links, devices,
/// xattrs and times (`cp -a`, which knows every file type). Returns when
/// the copy was done (by the file system's clock, in nanoseconds since the
/// epoch), for the diff. The copy is killed once `cancelled()` says so.
pub fn copy_base_until(
    lower: &Path,
    root: &Path,
    cancelled: &dyn Fn() -> bool,
) -> Result<i64, BuildError> {
    let mut child = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", lower.display()))
        .arg(root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(BuildError::io("cannot run `cp`"))?;
    loop {
        if child
            .try_wait()
            .map_err(BuildError::io("waiting for `cp`"))?
            .is_some()
        {
            break;
        }
        if cancelled() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(BuildError::Config("copy cancelled".into()));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child
        .wait_with_output()
        .map_err(BuildError::io("waiting for `cp`"))?;
    if !out.status.success() {
        return Err(BuildError::Io {
            what: format!("cannot copy the base into `{}`", root.display()),
            source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        });
    }
    // The file system's own clock (coarser than the system's): a marker
    // file's ctime. Later changes have a later ctime.
    let marker = root.with_extension("copied-at");
    fs_err::write(&marker, b"").map_err(BuildError::io("cannot write the copy marker"))?;
    let m = fs_err::metadata(&marker).map_err(BuildError::io("cannot read the copy marker"))?;
    let _ = std::fs::remove_file(&marker);
    Ok(m.ctime() * 1_000_000_000 + m.ctime_nsec())
}

fn same(a: &std::fs::Metadata, b: &std::fs::Metadata, pa: &Path, pb: &Path, since: i64) -> bool {
    let (ta, tb) = (a.file_type(), b.file_type());
    if ta.is_dir() != tb.is_dir()
        || ta.is_symlink() != tb.is_symlink()
        || ta.is_file() != tb.is_file()
    {
        return false;
    }
    if a.mode() != b.mode() || a.uid() != b.uid() || a.gid() != b.gid() {
        return false;
    }
    // Anything whose inode changed after the copy changed, even with its
    // size and mtime put back (`touch -r`).
    if !ta.is_dir() && a.ctime() * 1_000_000_000 + a.ctime_nsec() > since {
        return false;
    }
    if ta.is_symlink() {
        return std::fs::read_link(pa).ok() == std::fs::read_link(pb).ok();
    }
    if ta.is_file() {
        // The quick check rsync and docker use: `cp -a` kept size and mtime.
        return a.len() == b.len() && a.mtime() == b.mtime() && a.mtime_nsec() == b.mtime_nsec();
    }
    if !ta.is_dir() {
        return a.rdev() == b.rdev();
    }
    true
}

/// Builds in `upper` the changes of `root` relative to `lower`; `since`
/// is when the copy was finished (nanoseconds since the epoch).
pub fn diff_into_upper(
    lower: &Path,
    root: &Path,
    upper: &Path,
    since: i64,
) -> Result<(), BuildError> {
    walk(lower, root, upper, Path::new(""), since)
}

fn walk(lower: &Path, root: &Path, upper: &Path, rel: &Path, since: i64) -> Result<(), BuildError> {
    let io = |w: &str| BuildError::io(format!("{w} `{}`", rel.display()));
    let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(root.join(rel))
        .map_err(io("cannot read"))?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    if let Ok(rd) = std::fs::read_dir(lower.join(rel)) {
        names.extend(rd.flatten().map(|e| e.file_name()));
    }
    names.sort();
    names.dedup();
    for name in names {
        let path = rel.join(&name);
        let (now, old) = (root.join(&path), lower.join(&path));
        let (m_now, m_before) = (
            std::fs::symlink_metadata(&now).ok(),
            std::fs::symlink_metadata(&old).ok(),
        );
        let dest = upper.join(&path);
        match (m_now, m_before) {
            (None, Some(_)) => {
                // Deleted: an overlay-style whiteout.
                use nix::sys::stat::{mknod, Mode, SFlag};
                mknod(&dest, SFlag::S_IFCHR, Mode::empty(), 0)
                    .map_err(|e| io("cannot create whiteout")(e.into()))?;
            }
            (Some(m), before) => {
                let unchanged = before
                    .as_ref()
                    .is_some_and(|b| same(&m, b, &now, &old, since));
                if m.is_dir() {
                    let was_dir = before.as_ref().is_some_and(|b| b.is_dir());
                    let dir_changed = !unchanged || !was_dir;
                    // Keep the directory only if it or something below it changed.
                    fs_err::create_dir_all(&dest).map_err(io("cannot create"))?;
                    walk(lower, root, upper, &path, since)?;
                    let empty = std::fs::read_dir(&dest)
                        .map(|mut d| d.next().is_none())
                        .unwrap_or(true);
                    if empty && !dir_changed {
                        let _ = std::fs::remove_dir(&dest);
                    } else {
                        let _ = std::os::unix::fs::lchown(&dest, Some(m.uid()), Some(m.gid()));
                        use std::os::unix::fs::PermissionsExt;
                        let _ = std::fs::set_permissions(
                            &dest,
                            std::fs::Permissions::from_mode(m.mode() & 0o7777),
                        );
                        let t = nix::sys::time::TimeSpec::new(m.mtime(), m.mtime_nsec());
                        let _ = nix::sys::stat::utimensat(
                            None,
                            &dest,
                            &t,
                            &t,
                            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
                        );
                    }
                } else if !unchanged {
                    // The same inode: metadata comes along. (A directory
                    // replaced by a file needs nothing more: unpacking a
                    // file entry replaces whatever was there.)
                    fs_err::hard_link(&now, &dest).map_err(io("cannot link"))?;
                }
            }
            (None, None) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_finds_new_changed_and_deleted() {
        let tmp = tempfile::tempdir().unwrap();
        let (lower, root, upper) = (
            tmp.path().join("l"),
            tmp.path().join("r"),
            tmp.path().join("u"),
        );
        std::fs::create_dir_all(lower.join("etc/keep")).unwrap();
        std::fs::write(lower.join("etc/same"), "1").unwrap();
        std::fs::write(lower.join("etc/changed"), "1").unwrap();
        std::fs::write(lower.join("etc/gone"), "1").unwrap();
        std::fs::write(lower.join("etc/keep/x"), "1").unwrap();
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&upper).unwrap();
        let since = copy_base_until(&lower, &root, &|| false).unwrap();
        // Provisioning starts well after the copy (a container start).
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(root.join("etc/changed"), "22").unwrap();
        std::fs::remove_file(root.join("etc/gone")).unwrap();
        std::fs::write(root.join("etc/new"), "3").unwrap();
        // Same size and mtime as the base, different content: still a change.
        std::fs::write(root.join("etc/same"), "9").unwrap();
        let m = std::fs::metadata(lower.join("etc/same")).unwrap();
        let t = nix::sys::time::TimeSpec::new(m.mtime(), m.mtime_nsec());
        nix::sys::stat::utimensat(
            None,
            &root.join("etc/same"),
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
        diff_into_upper(&lower, &root, &upper, since).unwrap();
        assert!(upper.join("etc/changed").is_file() && upper.join("etc/new").is_file());
        assert!(
            upper.join("etc/same").is_file(),
            "touch -r does not hide a change"
        );
        assert!(!upper.join("etc/keep").exists());
        if nix::unistd::geteuid().is_root() {
            use std::os::unix::fs::FileTypeExt;
            assert!(std::fs::symlink_metadata(upper.join("etc/gone"))
                .unwrap()
                .file_type()
                .is_char_device());
        }
    }
}
