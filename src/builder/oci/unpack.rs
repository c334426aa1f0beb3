//! Unpacking image layers into a root filesystem on the host: whiteouts
//! and opaque directories, hard links, symlinks, device nodes, ownership,
//! modes, xattrs and mtimes. Entries that would escape the root (`../`,
//! links pointing above it, writes through a symlink) are refused, and
//! [`Limits`] bound what an image may unpack to (decompression bombs).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::builder::BuildError;

fn refuse(msg: String) -> BuildError {
    BuildError::Config(format!("unsafe layer: {msg}"))
}

/// Normalizes a path inside an archive, refusing `..`.
pub fn clean_rel(p: &Path) -> Result<PathBuf, BuildError> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                return Err(refuse(format!("path `{}` contains `..`", p.display())))
            }
            Component::Prefix(_) => {
                return Err(refuse(format!("path `{}` is not a Unix path", p.display())))
            }
        }
    }
    Ok(out)
}

/// Resolves a link target lexically from `dir` (relative to the root);
/// refuses one that climbs above the root.
fn link_stays_inside(dir: &Path, target: &Path, entry: &Path) -> Result<(), BuildError> {
    let mut depth: Vec<&OsStr> = if target.is_absolute() {
        vec![]
    } else {
        dir.iter().collect()
    };
    for c in target.components() {
        match c {
            Component::Normal(n) => depth.push(n),
            Component::ParentDir if depth.pop().is_none() => {
                return Err(refuse(format!(
                    "link `{}` → `{}` escapes the root",
                    entry.display(),
                    target.display()
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Refuses to create `rel` when a directory on the way is a symlink, which
/// would make the write land outside the root.
fn check_parents(root: &Path, rel: &Path) -> Result<(), BuildError> {
    let mut p = root.to_path_buf();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            p.push(c);
            if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(refuse(format!(
                    "`{}` would be written through the symlink `{}`",
                    rel.display(),
                    p.display()
                )));
            }
        }
    }
    Ok(())
}

fn remove_any(p: &Path) {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            let _ = std::fs::remove_dir_all(p);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(p);
        }
        Err(_) => {}
    }
}

/// Opens a layer blob, decompressing gzip or zstd by their magic bytes.
pub fn open_layer(path: &Path) -> Result<Box<dyn Read>, BuildError> {
    let f = fs_err::File::open(path).map_err(BuildError::io("cannot open layer"))?;
    decompress(f)
}

/// A layer's tar stream: gzip or zstd decompressed by their magic bytes.
fn decompress<'a>(mut f: impl Read + 'a) -> Result<Box<dyn Read + 'a>, BuildError> {
    let mut magic = [0u8; 4];
    let n = f
        .read(&mut magic)
        .map_err(BuildError::io("cannot read layer"))?;
    let f = std::io::Cursor::new(magic[..n].to_vec()).chain(f);
    Ok(match magic {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(f)),
        [0x28, 0xb5, 0x2f, 0xfd] => {
            Box::new(zstd::stream::read::Decoder::new(f).map_err(BuildError::io("zstd"))?)
        }
        _ => Box::new(f),
    })
}

/// Bounds on what unpacking one image may produce: a base is untrusted
/// input, and a 1 MB gzip layer can unpack to terabytes. The defaults are
/// far above what real images reach.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Bytes written for the whole image (all layers).
    pub unpacked: u64,
    /// Bytes of any one file.
    pub file: u64,
    /// Uncompressed ÷ compressed bytes of a layer, checked once the layer
    /// has produced [`RATIO_FLOOR`] bytes (small layers compress as they like).
    pub ratio: u64,
}

/// A layer may expand by any ratio until it has produced this much.
pub const RATIO_FLOOR: u64 = 64 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            unpacked: 64 << 30,
            file: 16 << 30,
            ratio: 200,
        }
    }
}

/// The template's `[source.oci.NAME.limits]`, as written.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct LimitSettings {
    pub unpacked: Option<String>,
    pub file: Option<String>,
    pub ratio: Option<u64>,
}

impl Limits {
    /// The template's settings, else `KILN_OCI_MAX_UNPACKED`,
    /// `KILN_OCI_MAX_FILE`, `KILN_OCI_MAX_RATIO`, else the defaults.
    pub fn resolve(t: Option<&LimitSettings>) -> Result<Limits, BuildError> {
        let d = Limits::default();
        let size = |name: &str, tv: Option<&String>, env: &str, dflt: u64| {
            let (v, from) = match (tv, std::env::var(env).ok()) {
                (Some(v), _) => (v.clone(), format!("`limits.{name}`")),
                (None, Some(v)) => (v, env.to_string()),
                (None, None) => return Ok(dflt),
            };
            crate::template::schema::parse_size(&v)
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    BuildError::Config(format!("{from} = `{v}`: expected a size such as \"64GiB\""))
                })
        };
        let ratio = match (
            t.and_then(|t| t.ratio),
            std::env::var("KILN_OCI_MAX_RATIO").ok(),
        ) {
            (Some(r), _) => r,
            (None, Some(v)) => v.trim().parse().ok().filter(|r| *r > 0).ok_or_else(|| {
                BuildError::Config(format!(
                    "KILN_OCI_MAX_RATIO = `{v}`: expected a whole number such as 200"
                ))
            })?,
            (None, None) => d.ratio,
        };
        Ok(Limits {
            unpacked: size(
                "unpacked",
                t.and_then(|t| t.unpacked.as_ref()),
                "KILN_OCI_MAX_UNPACKED",
                d.unpacked,
            )?,
            file: size(
                "file",
                t.and_then(|t| t.file.as_ref()),
                "KILN_OCI_MAX_FILE",
                d.file,
            )?,
            ratio,
        })
    }
}

fn mib(b: u64) -> String {
    crate::builder::cache::human_bytes(b)
}

/// What one image's unpacking has used so far, and the first limit hit.
struct Budget {
    limits: Limits,
    layer: String,
    written: u64,
    read_in: Arc<AtomicU64>,
    read_out: Arc<AtomicU64>,
    exceeded: Arc<std::sync::Mutex<Option<String>>>,
}

impl Budget {
    fn unlimited() -> Budget {
        Budget {
            limits: Limits {
                unpacked: u64::MAX,
                file: u64::MAX,
                ratio: u64::MAX,
            },
            layer: String::new(),
            written: 0,
            read_in: Default::default(),
            read_out: Default::default(),
            exceeded: Default::default(),
        }
    }

    fn exceeded(&self, what: String) -> BuildError {
        let mut e = self.exceeded.lock().expect("not poisoned");
        let msg = e.get_or_insert(what).clone();
        BuildError::Limit(msg)
    }

    fn check_written(&mut self, n: u64) -> Result<(), BuildError> {
        self.written += n;
        if self.written > self.limits.unpacked {
            return Err(self.exceeded(format!(
                "layer {} unpacks past the limit of {} for the whole image (`limits.unpacked`; raise it in `[source.oci.NAME.limits] unpacked = \"…\"` or with KILN_OCI_MAX_UNPACKED)",
                self.layer,
                mib(self.limits.unpacked)
            )));
        }
        Ok(())
    }
}

/// Counts the bytes read through it.
struct Counted<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The decompressed stream of a layer, failing once it expands past the
/// ratio limit (the bomb is stopped while it streams, not after).
struct RatioGuard<R> {
    inner: R,
    limits: Limits,
    layer: String,
    read_in: Arc<AtomicU64>,
    read_out: Arc<AtomicU64>,
    exceeded: Arc<std::sync::Mutex<Option<String>>>,
}

impl<R: Read> Read for RatioGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let out = self.read_out.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        let inn = self.read_in.load(Ordering::Relaxed).max(1);
        if out > RATIO_FLOOR && out / inn > self.limits.ratio {
            let msg = format!(
                "layer {} expands more than {} times its compressed size ({} from {} so far): a decompression bomb? (`limits.ratio`; raise it in `[source.oci.NAME.limits] ratio = N` or with KILN_OCI_MAX_RATIO)",
                self.layer,
                self.limits.ratio,
                mib(out),
                mib(inn)
            );
            self.exceeded
                .lock()
                .expect("not poisoned")
                .get_or_insert(msg);
            return Err(std::io::Error::other("unpack limit exceeded"));
        }
        Ok(n)
    }
}

/// Unpacks an image's layers (`(digest, blob path)`, bottom first) into
/// `root` within `limits`, stopping between entries once `cancelled()`.
pub fn unpack_image(
    root: &Path,
    layers: &[(String, PathBuf)],
    limits: Limits,
    cancelled: &dyn Fn() -> bool,
) -> Result<(), BuildError> {
    let mut budget = Budget::unlimited();
    budget.limits = limits;
    for (digest, path) in layers {
        budget.layer = digest.clone();
        budget.read_in = Default::default();
        budget.read_out = Default::default();
        let file = fs_err::File::open(path).map_err(BuildError::io("cannot open layer"))?;
        let counted = Counted {
            inner: file,
            count: budget.read_in.clone(),
        };
        let reader = RatioGuard {
            inner: decompress(counted)?,
            limits,
            layer: digest.clone(),
            read_in: budget.read_in.clone(),
            read_out: budget.read_out.clone(),
            exceeded: budget.exceeded.clone(),
        };
        let r = apply(root, reader, cancelled, &mut budget);
        if let Some(msg) = budget.exceeded.lock().expect("not poisoned").clone() {
            return Err(BuildError::Limit(msg));
        }
        r?;
    }
    Ok(())
}

/// Applies one layer (a tar stream) on top of `root`.
pub fn apply_layer(root: &Path, layer: impl Read) -> Result<(), BuildError> {
    apply_layer_until(root, layer, &|| false)
}

/// [`apply_layer`], stopping between entries once `cancelled()` says so.
pub fn apply_layer_until(
    root: &Path,
    layer: impl Read,
    cancelled: &dyn Fn() -> bool,
) -> Result<(), BuildError> {
    apply(root, layer, cancelled, &mut Budget::unlimited())
}

fn apply(
    root: &Path,
    layer: impl Read,
    cancelled: &dyn Fn() -> bool,
    budget: &mut Budget,
) -> Result<(), BuildError> {
    let mut archive = tar::Archive::new(layer);
    let mut dir_times: Vec<(PathBuf, i64)> = vec![];
    let mut seen_in_layer: HashSet<PathBuf> = HashSet::new();
    let entries = archive
        .entries()
        .map_err(BuildError::io("cannot read layer"))?;
    for entry in entries {
        if cancelled() {
            return Err(BuildError::Config("unpacking cancelled".into()));
        }
        let mut entry = entry.map_err(BuildError::io("cannot read layer entry"))?;
        let raw_path = entry
            .path()
            .map_err(BuildError::io("bad entry path"))?
            .into_owned();
        let rel = clean_rel(&raw_path)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        check_parents(root, &rel)?;
        let name = rel
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default();
        let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        if name == b".wh..wh..opq" {
            // Opaque directory: hide what lower layers put there.
            let dir = root.join(&parent);
            if let Ok(rd) = std::fs::read_dir(&dir) {
                for e in rd.flatten() {
                    if !seen_in_layer.contains(&parent.join(e.file_name())) {
                        remove_any(&e.path());
                    }
                }
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(b".wh.") {
            if hidden.is_empty() || hidden == b"." || hidden == b".." || hidden.contains(&b'/') {
                return Err(refuse(format!(
                    "whiteout `{}` names no file in its folder",
                    rel.display()
                )));
            }
            remove_any(&root.join(&parent).join(OsStr::from_bytes(hidden)));
            continue;
        }
        seen_in_layer.insert(rel.clone());
        let dest = root.join(&rel);
        let header = entry.header().clone();
        let kind = header.entry_type();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let (uid, gid) = (
            header.uid().unwrap_or(0) as u32,
            header.gid().unwrap_or(0) as u32,
        );
        let mtime = header.mtime().unwrap_or(0) as i64;
        if let Some(p) = dest.parent() {
            fs_err::create_dir_all(p).map_err(BuildError::io("cannot create directory"))?;
        }
        let real_dir = std::fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir());
        if !(kind.is_dir() && real_dir) {
            remove_any(&dest);
        }
        let io = |what: &str| BuildError::io(format!("{what} `{}`", rel.display()));
        match kind {
            k if k.is_dir() => fs_err::create_dir_all(&dest).map_err(io("cannot create"))?,
            k if k.is_file() || k == tar::EntryType::Continuous => {
                let mut f = fs_err::File::create(&dest).map_err(io("cannot create"))?;
                // Bounded: a sparse entry's holes are written out as zeros.
                let limit = budget.limits.file;
                let n = std::io::copy(&mut (&mut entry).take(limit.saturating_add(1)), &mut f)
                    .map_err(io("cannot write"))?;
                if n > limit {
                    drop(f);
                    let _ = std::fs::remove_file(&dest);
                    return Err(budget.exceeded(format!(
                        "`/{}` in layer {} is larger than the per-file limit of {} (`limits.file`; raise it in `[source.oci.NAME.limits] file = \"…\"` or with KILN_OCI_MAX_FILE)",
                        rel.display(),
                        budget.layer,
                        mib(limit)
                    )));
                }
                budget.check_written(n)?;
            }
            k if k.is_symlink() => {
                let target = entry
                    .link_name()
                    .map_err(io("bad link"))?
                    .ok_or_else(|| refuse("symlink without target".into()))?
                    .into_owned();
                link_stays_inside(&parent, &target, &rel)?;
                std::os::unix::fs::symlink(&target, &dest).map_err(io("cannot create symlink"))?;
            }
            k if k.is_hard_link() => {
                let target = entry
                    .link_name()
                    .map_err(io("bad link"))?
                    .ok_or_else(|| refuse("hard link without target".into()))?
                    .into_owned();
                let target = clean_rel(&target)?;
                check_parents(root, &target)?;
                fs_err::hard_link(root.join(&target), &dest)
                    .map_err(io("cannot create hard link"))?;
                continue; // shares the target's metadata
            }
            k if k.is_character_special() || k.is_block_special() || k.is_fifo() => {
                use nix::sys::stat::{makedev, mknod, Mode, SFlag};
                let sflag = if k.is_character_special() {
                    SFlag::S_IFCHR
                } else if k.is_block_special() {
                    SFlag::S_IFBLK
                } else {
                    SFlag::S_IFIFO
                };
                let dev = makedev(
                    header.device_major().ok().flatten().unwrap_or(0) as u64,
                    header.device_minor().ok().flatten().unwrap_or(0) as u64,
                );
                mknod(&dest, sflag, Mode::from_bits_truncate(mode), dev)
                    .map_err(|e| io("cannot create device")(std::io::Error::from(e)))?;
            }
            _ => continue, // PAX/GNU metadata entries are consumed by the tar crate
        }
        // Ownership, mode, xattrs, mtime.
        let _ = std::os::unix::fs::lchown(&dest, Some(uid), Some(gid));
        if !kind.is_symlink() {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode));
        }
        if let Ok(Some(exts)) = entry.pax_extensions() {
            for ext in exts.flatten() {
                if let Some(name) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                    let _ = xattr_set(&dest, name, ext.value_bytes());
                }
            }
        }
        if kind.is_dir() {
            dir_times.push((dest, mtime));
        } else {
            set_mtime(&dest, mtime);
        }
    }
    // Directory mtimes last: creating their children changed them.
    for (d, t) in dir_times.into_iter().rev() {
        set_mtime(&d, t);
    }
    Ok(())
}

fn set_mtime(p: &Path, secs: i64) {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let t = TimeSpec::new(secs, 0);
    let _ = utimensat(None, p, &t, &t, UtimensatFlags::NoFollowSymlink);
}

/// Sets an extended attribute without following symlinks.
pub fn xattr_set(p: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    let path = std::ffi::CString::new(p.as_os_str().as_bytes())?;
    let name = std::ffi::CString::new(name)?;
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let r = unsafe {
        libc_lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

extern "C" {
    #[link_name = "lsetxattr"]
    fn libc_lsetxattr(
        path: *const std::ffi::c_char,
        name: *const std::ffi::c_char,
        value: *const std::ffi::c_void,
        size: usize,
        flags: i32,
    ) -> i32;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_size(0);
            if !link.is_empty() {
                h.set_link_name(link).unwrap();
            }
            // Write the name raw so that `..` survives (set_path refuses it).
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            b.append(&h, std::io::empty()).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn whiteouts_and_opaque_directories() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        apply_layer(
            r,
            &tar_with(&[
                ("a/", tar::EntryType::Directory, ""),
                ("a/x", tar::EntryType::Regular, ""),
                ("a/y", tar::EntryType::Regular, ""),
                ("b", tar::EntryType::Regular, ""),
            ])[..],
        )
        .unwrap();
        apply_layer(
            r,
            &tar_with(&[
                ("a/.wh..wh..opq", tar::EntryType::Regular, ""),
                ("a/z", tar::EntryType::Regular, ""),
                (".wh.b", tar::EntryType::Regular, ""),
            ])[..],
        )
        .unwrap();
        assert!(!r.join("a/x").exists() && !r.join("a/y").exists() && r.join("a/z").exists());
        assert!(!r.join("b").exists());
    }

    #[test]
    fn refuses_traversal_and_escaping_links() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let e = apply_layer(
            r,
            &tar_with(&[("../evil", tar::EntryType::Regular, "")])[..],
        )
        .unwrap_err();
        assert!(e.to_string().contains("contains `..`"), "{e}");
        let e = apply_layer(
            r,
            &tar_with(&[("a/link", tar::EntryType::Symlink, "../../etc/passwd")])[..],
        )
        .unwrap_err();
        assert!(e.to_string().contains("escapes the root"), "{e}");
        // An absolute link is resolved inside the root at run time: allowed.
        apply_layer(
            r,
            &tar_with(&[("etc", tar::EntryType::Symlink, "/usr/etc")])[..],
        )
        .unwrap();
        let e = apply_layer(
            r,
            &tar_with(&[("etc/passwd", tar::EntryType::Regular, "")])[..],
        )
        .unwrap_err();
        assert!(e.to_string().contains("through the symlink"), "{e}");
    }

    #[test]
    fn layers_cannot_touch_the_host_through_links_or_whiteouts() {
        let host = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(host.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let root = tempfile::tempdir().unwrap();
        let r = root.path().join("rootfs");
        std::fs::create_dir(&r).unwrap();
        let target = host.path().display().to_string();
        apply_layer(
            &r,
            &tar_with(&[("etc", tar::EntryType::Symlink, &target)])[..],
        )
        .unwrap();
        // A directory entry over the link replaces the link; the host folder keeps its mode.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o777);
        h.set_size(0);
        b.append_data(&mut h, "etc/", std::io::empty()).unwrap();
        apply_layer(&r, &b.into_inner().unwrap()[..]).unwrap();
        assert_eq!(
            std::fs::metadata(host.path()).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert!(std::fs::symlink_metadata(r.join("etc")).unwrap().is_dir());
        let e = apply_layer(
            &r,
            &tar_with(&[(".wh...", tar::EntryType::Regular, "")])[..],
        )
        .unwrap_err();
        assert!(e.to_string().contains("names no file"), "{e}");
        assert!(root.path().exists() && r.exists());
    }
}
