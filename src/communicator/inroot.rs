//! Files inside an instance's root file system, opened from the host:
//! every path is resolved by the kernel with the root as `/`
//! (`openat2(RESOLVE_IN_ROOT)`), so no symlink, `..` or concurrent rename
//! inside the root can lead the open out of it, and only regular files are
//! read or written — a device node, FIFO or socket that the image put at a
//! path is refused by name and type, never opened.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use super::CommError;

fn how(flags: OFlag, mode: u32) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .mode(Mode::from_bits_truncate(mode))
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

fn open_in(dir: &OwnedFd, rel: &Path, flags: OFlag, mode: u32) -> Result<OwnedFd, Errno> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let fd = openat2(dir.as_raw_fd(), rel, how(flags, mode))?;
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The path inside the root, relative (`/etc/x` → `etc/x`), `..` kept for
/// the kernel to clamp at the root.
fn relative(path: &str) -> PathBuf {
    Path::new(path)
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::CurDir))
        .collect()
}

/// Resolves `path` inside `root` as the container would see it, by
/// reading the links on the way: every symlink, the last one included, is
/// followed relative to `root`, never out of it. (A snapshot of the tree:
/// opening goes through [`create`] and [`open`], which the kernel resolves.)
pub fn lexical(root: &Path, path: &str) -> Result<PathBuf, String> {
    let mut out = root.to_path_buf();
    let mut todo: Vec<std::ffi::OsString> = Path::new(path)
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            if out != root {
                out.pop();
            }
            continue;
        }
        let next = out.join(&c);
        match std::fs::symlink_metadata(&next) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return Err(format!("`{path}`: too many symlinks"));
                }
                let target = fs_err::read_link(&next).map_err(|e| e.to_string())?;
                if target.is_absolute() {
                    out = root.to_path_buf();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => todo.push(n.to_os_string()),
                        Component::ParentDir => todo.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => out = next,
        }
    }
    Ok(out)
}

/// What kind of file a `stat` mode is, for error messages.
pub fn kind_name(ft: std::fs::FileType, rdev: u64) -> String {
    let dev = || {
        format!(
            " ({}:{})",
            nix::sys::stat::major(rdev),
            nix::sys::stat::minor(rdev)
        )
    };
    if ft.is_block_device() {
        format!("a block device{}", dev())
    } else if ft.is_char_device() {
        format!("a character device{}", dev())
    } else if ft.is_fifo() {
        "a FIFO".into()
    } else if ft.is_socket() {
        "a socket".into()
    } else if ft.is_dir() {
        "a directory".into()
    } else if ft.is_symlink() {
        "a symlink".into()
    } else {
        "a regular file".into()
    }
}

/// Opens the file at `path` (with `O_PATH`: nothing of the file is opened
/// yet) and refuses anything but a regular file; then reopens that very
/// inode through its descriptor with `flags`.
fn reopen_regular(
    root: &OwnedFd,
    rel: &Path,
    shown: &str,
    flags: OFlag,
) -> Result<Option<File>, CommError> {
    let fd = match open_in(root, rel, OFlag::O_PATH, 0) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => {
            return Err(CommError::Refused(format!(
                "`{shown}` in the instance: {e}"
            )))
        }
    };
    let st = nix::sys::stat::fstat(fd.as_raw_fd())
        .map_err(|e| CommError::Refused(format!("`{shown}` in the instance: {e}")))?;
    let ft = File::from(fd.try_clone().map_err(CommError::io("dup"))?)
        .metadata()
        .map_err(CommError::io(format!("stat `{shown}`")))?
        .file_type();
    if !ft.is_file() {
        return Err(CommError::Refused(format!(
            "`{shown}` in the instance is {}, not a regular file: kiln copies only regular files in and out of an instance",
            kind_name(ft, st.st_rdev)
        )));
    }
    // The same inode, whatever happened to its path since.
    let f = std::fs::OpenOptions::new()
        .read(!flags.contains(OFlag::O_WRONLY))
        .write(flags.contains(OFlag::O_WRONLY) || flags.contains(OFlag::O_RDWR))
        .truncate(flags.contains(OFlag::O_TRUNC))
        .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(CommError::io(format!("cannot open `{shown}`")))?;
    Ok(Some(f))
}

fn open_root(root: &Path) -> Result<OwnedFd, CommError> {
    let fd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| CommError::Io {
        what: format!("cannot open the instance root `{}`", root.display()),
        source: e.into(),
    })?;
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Creates the folders on the way to `rel` inside the root (mode 0755),
/// each resolved inside the root.
fn create_parents(root: &OwnedFd, rel: &Path, shown: &str) -> Result<OwnedFd, CommError> {
    let mut dir = open_in(root, Path::new("."), OFlag::O_PATH | OFlag::O_DIRECTORY, 0)
        .map_err(|e| CommError::Refused(format!("`{shown}`: {e}")))?;
    let Some(parent) = rel.parent() else {
        return Ok(dir);
    };
    let mut so_far = PathBuf::new();
    for c in parent.components() {
        so_far.push(c);
        match open_in(root, &so_far, OFlag::O_PATH | OFlag::O_DIRECTORY, 0) {
            Ok(d) => dir = d,
            Err(Errno::ENOENT) => {
                let name: &OsStr = c.as_os_str();
                match nix::sys::stat::mkdirat(
                    Some(dir.as_raw_fd()),
                    name,
                    Mode::from_bits_truncate(0o755),
                ) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => {
                        return Err(CommError::Refused(format!(
                            "cannot create `{}` for `{shown}`: {e}",
                            so_far.display()
                        )))
                    }
                }
                dir =
                    open_in(root, &so_far, OFlag::O_PATH | OFlag::O_DIRECTORY, 0).map_err(|e| {
                        CommError::Refused(format!("`{}` for `{shown}`: {e}", so_far.display()))
                    })?;
            }
            Err(e) => {
                return Err(CommError::Refused(format!(
                    "`{}` on the way to `{shown}` in the instance: {e}",
                    so_far.display()
                )))
            }
        }
    }
    Ok(dir)
}

/// Opens `path` inside `root` for writing: an existing regular file is
/// truncated, a missing one created (folders on the way too); anything
/// else is refused.
pub fn create(root: &Path, path: &str, mode: u32) -> Result<File, CommError> {
    let rootfd = open_root(root)?;
    let rel = relative(path);
    if let Some(f) = reopen_regular(&rootfd, &rel, path, OFlag::O_WRONLY | OFlag::O_TRUNC)? {
        return Ok(f);
    }
    // Where the path leads now (symlinks followed inside the root), so
    // that missing folders are made where the kernel will look for them;
    // every open below is still resolved in the root by the kernel.
    let rel = lexical(root, path)
        .map_err(CommError::Refused)?
        .strip_prefix(root)
        .map(Path::to_path_buf)
        .unwrap_or(rel);
    let dir = create_parents(&rootfd, &rel, path)?;
    let name = rel
        .file_name()
        .ok_or_else(|| CommError::Refused(format!("`{path}` names no file inside the instance")))?;
    // Resolved from the (already resolved) parent; the last component is
    // never followed and must not exist yet.
    let fd = nix::fcntl::openat(
        Some(dir.as_raw_fd()),
        name.as_bytes(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode),
    )
    .map_err(|e| {
        CommError::Refused(format!(
            "cannot create `{path}` in the instance: {e} (a link or a file appeared there meanwhile)"
        ))
    })?;
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Opens `path` inside `root` for reading; only a regular file.
pub fn open(root: &Path, path: &str) -> Result<File, CommError> {
    let rootfd = open_root(root)?;
    reopen_regular(&rootfd, &relative(path), path, OFlag::O_RDONLY)?
        .ok_or_else(|| CommError::Refused(format!("`{path}` does not exist in the instance")))
}

/// Copies the host file `local` to `remote` inside `root`; `mode` is set
/// when given (else 0644 for a new file, the existing mode otherwise).
pub fn upload(root: &Path, local: &Path, remote: &str, mode: Option<u32>) -> Result<(), CommError> {
    let mut src =
        File::open(local).map_err(CommError::io(format!("cannot read `{}`", local.display())))?;
    let mut dest = create(root, remote, mode.unwrap_or(0o644))?;
    std::io::copy(&mut src, &mut dest)
        .map_err(CommError::io(format!("cannot upload to `{remote}`")))?;
    if let Some(m) = mode {
        use std::os::unix::fs::PermissionsExt;
        dest.set_permissions(std::fs::Permissions::from_mode(m))
            .map_err(CommError::io("cannot set the file mode"))?;
    }
    dest.sync_all()
        .map_err(CommError::io(format!("cannot upload to `{remote}`")))
}

/// Copies `remote` inside `root` to the host file `local`, at most
/// `limit` bytes (a sparse file can claim any size).
pub fn download(root: &Path, remote: &str, local: &Path, limit: u64) -> Result<(), CommError> {
    let src = open(root, remote)?;
    super::save_capped_blocking(src, remote, local, limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_inside_the_root_and_refuses_special_files() {
        let tmp = tempfile::tempdir().unwrap();
        let (root, host) = (tmp.path().join("root"), tmp.path().join("host"));
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(&host).unwrap();
        std::fs::write(host.join("passwd"), "host\n").unwrap();
        // Links out of the root land inside it.
        std::os::unix::fs::symlink(&host, root.join("escape")).unwrap();
        std::os::unix::fs::symlink("../../../host/passwd", root.join("etc/up")).unwrap();
        let src = tmp.path().join("src");
        std::fs::write(&src, "new\n").unwrap();
        upload(&root, &src, "/escape/passwd", Some(0o600)).unwrap();
        upload(&root, &src, "/etc/up", None).unwrap();
        assert_eq!(
            std::fs::read_to_string(host.join("passwd")).unwrap(),
            "host\n"
        );
        assert_eq!(
            std::fs::read_to_string(root.join(host.strip_prefix("/").unwrap()).join("passwd"))
                .unwrap(),
            "new\n"
        );
        // A FIFO is refused by name and type, without blocking on it.
        nix::unistd::mkfifo(&root.join("etc/fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        let e = upload(&root, &src, "/etc/fifo", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`/etc/fifo`") && e.contains("a FIFO"), "{e}");
        let e = download(&root, "/etc/fifo", &tmp.path().join("out"), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a FIFO"), "{e}");
        download(&root, "/escape/passwd", &tmp.path().join("out"), 1 << 20).unwrap();
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("out")).unwrap(),
            "new\n"
        );
    }

    /// A file of the image larger than the limit (sparse: it claims far
    /// more than it holds) is refused naming the path and the limit, and
    /// no part of it stays on the host; one at the limit is copied.
    #[test]
    fn downloads_stop_at_the_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("var")).unwrap();
        std::fs::File::create(root.join("var/huge"))
            .unwrap()
            .set_len(1 << 40)
            .unwrap();
        std::fs::write(root.join("var/small"), [1u8; 4096]).unwrap();
        let out = tmp.path().join("host/out");
        let e = download(&root, "/var/huge", &out, 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`/var/huge`") && e.contains("1048576 bytes"),
            "{e}"
        );
        assert!(!out.exists());
        download(&root, "/var/small", &out, 4096).unwrap();
        assert_eq!(std::fs::metadata(&out).unwrap().len(), 4096);
        assert!(download(&root, "/var/small", &out, 4095).is_err());
        assert!(!out.exists());
    }
}
