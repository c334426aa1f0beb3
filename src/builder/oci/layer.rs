//! Snapshotting: an overlay upper directory becomes exactly one OCI layer,
//! a deterministic tar (entries sorted, mtimes clamped, uid/gid kept, no
//! user or group names), compressed and hashed in the same pass: the
//! compressed digest and the uncompressed diff_id.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::store::BlobStore;
use crate::builder::BuildError;

/// How a layer is compressed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Compression {
    Gzip,
    Zstd,
}

impl Compression {
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// A layer written into the blob store.
#[derive(Debug, Clone)]
pub struct LayerBlob {
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
    pub media_type: &'static str,
}

/// Counts and hashes what passes through.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Gzip in parallel: the stream is cut into fixed-size chunks, each
/// compressed as its own gzip member (as pigz `--independent` and pgzip
/// do). Concatenated members are one valid gzip file (RFC 1952 §2.2);
/// fixed chunk size, level and header keep the bytes reproducible.
struct ParallelGzip<W: Write> {
    out: W,
    pending: Vec<Vec<u8>>,
    current: Vec<u8>,
    threads: usize,
}

const GZIP_CHUNK: usize = 4 << 20;

impl<W: Write> ParallelGzip<W> {
    fn new(out: W) -> Self {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        ParallelGzip {
            out,
            pending: vec![],
            current: Vec::with_capacity(GZIP_CHUNK),
            threads,
        }
    }

    fn compress_pending(&mut self) -> std::io::Result<()> {
        let chunks = std::mem::take(&mut self.pending);
        let members: Vec<std::io::Result<Vec<u8>>> = std::thread::scope(|s| {
            let handles: Vec<_> = chunks
                .iter()
                .map(|c| {
                    s.spawn(move || {
                        let mut gz = flate2::GzBuilder::new().mtime(0).write(
                            Vec::with_capacity(c.len() / 2),
                            flate2::Compression::default(),
                        );
                        gz.write_all(c)?;
                        gz.finish()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(std::io::Error::other("compressor panicked")))
                })
                .collect()
        });
        for m in members {
            self.out.write_all(&m?)?;
        }
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<()> {
        if !self.current.is_empty() || self.pending.is_empty() {
            self.pending.push(std::mem::take(&mut self.current));
        }
        self.compress_pending()?;
        self.out.flush()
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(GZIP_CHUNK - self.current.len());
        self.current.extend_from_slice(&buf[..n]);
        if self.current.len() == GZIP_CHUNK {
            self.pending.push(std::mem::replace(
                &mut self.current,
                Vec::with_capacity(GZIP_CHUNK),
            ));
            if self.pending.len() >= self.threads {
                self.compress_pending()?;
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Paths the runtime creates as mount points; left out of the layer when
/// the base did not have them and the build left them empty.
const MOUNT_POINTS: &[&str] = &[
    "proc",
    "sys",
    "dev",
    "etc/resolv.conf",
    "etc/hostname",
    "etc/hosts",
];

/// Writes the changes in `upper` (relative to `lower`) as one layer.
pub fn write_layer(
    upper: &Path,
    lower: &Path,
    clamp: i64,
    compression: Compression,
    store: &BlobStore,
) -> Result<LayerBlob, BuildError> {
    write_layer_until(upper, lower, clamp, compression, store, &|| false)
}

/// [`write_layer`], stopping between entries once `cancelled()` says so
/// (the partial blob is removed).
pub fn write_layer_until(
    upper: &Path,
    lower: &Path,
    clamp: i64,
    compression: Compression,
    store: &BlobStore,
    cancelled: &dyn Fn() -> bool,
) -> Result<LayerBlob, BuildError> {
    let tmp = store.temp_path()?;
    let _cleanup = super::store::RemoveOnDrop(tmp.clone());
    let file = fs_err::File::create(&tmp).map_err(BuildError::io("cannot create layer file"))?;
    let mut compressed = Hashing {
        inner: std::io::BufWriter::new(file),
        hasher: Sha256::new(),
        count: 0,
    };
    let diff_id = {
        let io = BuildError::io("cannot write layer");
        match compression {
            Compression::Gzip => {
                let mut gz = ParallelGzip::new(&mut compressed);
                let d = write_tar(upper, lower, clamp, &mut gz, cancelled)?;
                gz.finish().map_err(io)?;
                d
            }
            Compression::Zstd => {
                let mut z = zstd::stream::write::Encoder::new(&mut compressed, 3)
                    .map_err(BuildError::io("zstd"))?;
                // Always the multithreaded mode (even with one worker): its output
                // does not depend on the number of workers, so digests match
                // across hosts.
                let threads = std::thread::available_parallelism()
                    .map(|n| n.get() as u32)
                    .unwrap_or(1);
                z.multithread(threads.max(1))
                    .map_err(BuildError::io("zstd"))?;
                let d = write_tar(upper, lower, clamp, &mut z, cancelled)?;
                z.finish().map_err(io)?;
                d
            }
        }
    };
    compressed
        .flush()
        .map_err(BuildError::io("cannot write layer"))?;
    let digest = format!("sha256:{}", hex::encode(compressed.hasher.finalize()));
    let size = compressed.count;
    drop(compressed.inner);
    store.commit(&tmp, &digest)?;
    Ok(LayerBlob {
        digest,
        diff_id,
        size,
        media_type: compression.media_type(),
    })
}

/// Writes the tar stream; returns its diff_id.
fn write_tar(
    upper: &Path,
    lower: &Path,
    clamp: i64,
    out: &mut dyn Write,
    cancelled: &dyn Fn() -> bool,
) -> Result<String, BuildError> {
    let mut hashing = Hashing {
        inner: out,
        hasher: Sha256::new(),
        count: 0,
    };
    {
        let mut builder = tar::Builder::new(&mut hashing);
        builder.mode(tar::HeaderMode::Deterministic);
        let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
        walk(
            upper,
            lower,
            Path::new(""),
            clamp,
            &mut builder,
            &mut links,
            cancelled,
        )?;
        builder
            .finish()
            .map_err(BuildError::io("cannot write layer"))?;
    }
    Ok(format!("sha256:{}", hex::encode(hashing.hasher.finalize())))
}

fn sorted_children(dir: &Path) -> Result<Vec<std::fs::DirEntry>, BuildError> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map_err(BuildError::io("cannot read upper directory"))?
        .flatten()
        .collect();
    v.sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()));
    Ok(v)
}

fn header(meta: &std::fs::Metadata, kind: tar::EntryType, clamp: i64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.mode() & 0o7777);
    h.set_uid(meta.uid() as u64);
    h.set_gid(meta.gid() as u64);
    h.set_mtime(meta.mtime().min(clamp).max(0) as u64);
    h.set_size(0);
    h
}

fn walk<W: Write>(
    upper: &Path,
    lower: &Path,
    rel: &Path,
    clamp: i64,
    b: &mut tar::Builder<W>,
    links: &mut HashMap<(u64, u64), PathBuf>,
    cancelled: &dyn Fn() -> bool,
) -> Result<(), BuildError> {
    let io = |what: &str| BuildError::io(format!("{what} `{}`", rel.display()));
    for child in sorted_children(&upper.join(rel))? {
        if cancelled() {
            return Err(BuildError::Config("snapshot cancelled".into()));
        }
        let name = child.file_name();
        let path = rel.join(&name);
        let full = upper.join(&path);
        let meta = fs_err::symlink_metadata(&full).map_err(io("cannot stat"))?;
        let ft = meta.file_type();
        let in_lower = std::fs::symlink_metadata(lower.join(&path)).is_ok();
        if !in_lower && MOUNT_POINTS.iter().any(|m| Path::new(m) == path) {
            let empty = if ft.is_dir() {
                fs_err::read_dir(&full)
                    .map(|mut d| d.next().is_none())
                    .unwrap_or(false)
            } else {
                meta.len() == 0
            };
            if empty {
                continue;
            }
        }
        // Overlay whiteout (0/0 char device) → OCI `.wh.` file.
        if ft.is_char_device() && meta.rdev() == 0 {
            let mut wh_name = std::ffi::OsString::from(".wh.");
            wh_name.push(&name);
            let mut h = header(&meta, tar::EntryType::Regular, clamp);
            h.set_mode(0o644);
            b.append_data(&mut h, rel.join(wh_name), std::io::empty())
                .map_err(io("cannot write"))?;
            continue;
        }
        append_xattrs(b, &path, &xattrs(&full)).map_err(io("cannot write"))?;
        if ft.is_dir() {
            let mut h = header(&meta, tar::EntryType::Directory, clamp);
            b.append_data(&mut h, &path, std::io::empty())
                .map_err(io("cannot write"))?;
            if is_opaque(&full) {
                let mut h = header(&meta, tar::EntryType::Regular, clamp);
                h.set_mode(0o644);
                b.append_data(&mut h, path.join(".wh..wh..opq"), std::io::empty())
                    .map_err(io("cannot write"))?;
            }
            walk(upper, lower, &path, clamp, b, links, cancelled)?;
        } else if ft.is_symlink() {
            let target = fs_err::read_link(&full).map_err(io("cannot read link"))?;
            let mut h = header(&meta, tar::EntryType::Symlink, clamp);
            b.append_link(&mut h, &path, &target)
                .map_err(io("cannot write"))?;
        } else if ft.is_file() {
            let key = (meta.dev(), meta.ino());
            if meta.nlink() > 1 {
                if let Some(first) = links.get(&key) {
                    let mut h = header(&meta, tar::EntryType::Link, clamp);
                    b.append_link(&mut h, &path, first)
                        .map_err(io("cannot write"))?;
                    continue;
                }
                links.insert(key, path.clone());
            }
            let mut h = header(&meta, tar::EntryType::Regular, clamp);
            h.set_size(meta.len());
            let f = fs_err::File::open(&full).map_err(io("cannot read"))?;
            b.append_data(&mut h, &path, f)
                .map_err(io("cannot write"))?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            let kind = if ft.is_char_device() {
                tar::EntryType::Char
            } else if ft.is_block_device() {
                tar::EntryType::Block
            } else {
                tar::EntryType::Fifo
            };
            let mut h = header(&meta, kind, clamp);
            let rdev = meta.rdev();
            let _ = h.set_device_major(nix::sys::stat::major(rdev) as u32);
            let _ = h.set_device_minor(nix::sys::stat::minor(rdev) as u32);
            b.append_data(&mut h, &path, std::io::empty())
                .map_err(io("cannot write"))?;
        }
        // Sockets are not part of images.
    }
    Ok(())
}

/// Extended attributes to carry into the layer (file capabilities, ACLs,
/// `user.*`), without overlayfs' own bookkeeping.
fn xattrs(p: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(path) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
        return vec![];
    };
    let mut names = vec![0u8; 4096];
    // SAFETY: valid NUL-terminated path and a buffer of the given length.
    let n = unsafe { llistxattr(path.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return vec![];
    }
    let mut out = vec![];
    for name in names[..n as usize]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
    {
        let name = String::from_utf8_lossy(name).into_owned();
        if name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") {
            continue;
        }
        if let Some(v) = xattr_get(p, &name) {
            out.push((name, v));
        }
    }
    out.sort();
    out
}

/// Writes a PAX extended header with `SCHILY.xattr.*` records, which
/// applies to the entry written next (what GNU tar and the OCI tools read).
fn append_xattrs<W: Write>(
    b: &mut tar::Builder<W>,
    path: &Path,
    attrs: &[(String, Vec<u8>)],
) -> std::io::Result<()> {
    if attrs.is_empty() {
        return Ok(());
    }
    let mut data = Vec::new();
    for (name, value) in attrs {
        let body_len = format!(" SCHILY.xattr.{name}=").len() + value.len() + 1;
        // The length field counts its own digits.
        let mut len = body_len + 1;
        while len != body_len + len.to_string().len() {
            len = body_len + len.to_string().len();
        }
        data.extend_from_slice(format!("{len} SCHILY.xattr.{name}=").as_bytes());
        data.extend_from_slice(value);
        data.push(b'\n');
    }
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_mtime(0);
    let name = format!(
        "PaxHeaders/{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    let name: String = name.chars().take(99).collect();
    b.append_data(&mut h, name, &data[..])
}

/// Overlayfs marks a directory that hides the lower one as opaque.
fn is_opaque(dir: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|name| xattr_get(dir, name).is_some_and(|v| v == b"y"))
}

fn xattr_get(p: &Path, name: &str) -> Option<Vec<u8>> {
    let path = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    let name = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let n = unsafe {
        lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

extern "C" {
    fn llistxattr(path: *const std::ffi::c_char, list: *mut std::ffi::c_char, size: usize)
        -> isize;
    fn lgetxattr(
        path: *const std::ffi::c_char,
        name: *const std::ffi::c_char,
        value: *mut std::ffi::c_void,
        size: usize,
    ) -> isize;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_tree_same_digest_and_whiteouts_are_written() {
        let tmp = tempfile::tempdir().unwrap();
        let (upper, lower) = (tmp.path().join("upper"), tmp.path().join("lower"));
        std::fs::create_dir_all(upper.join("etc")).unwrap();
        std::fs::create_dir_all(&lower).unwrap();
        std::fs::write(upper.join("etc/app.conf"), "x=1\n").unwrap();
        std::fs::create_dir(upper.join("proc")).unwrap();
        nix::sys::stat::mknod(
            &upper.join("gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .ok();
        let store = BlobStore::new(tmp.path());
        let a = write_layer(&upper, &lower, 1_000, Compression::Gzip, &store).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        std::fs::write(upper.join("etc/app.conf"), "x=1\n").unwrap();
        let b = write_layer(&upper, &lower, 1_000, Compression::Gzip, &store).unwrap();
        assert_eq!(a.digest, b.digest, "mtimes are clamped");
        let names: Vec<String> = tar::Archive::new(
            super::super::unpack::open_layer(&store.path(&a.digest).unwrap()).unwrap(),
        )
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
        assert!(names.contains(&"etc/app.conf".to_string()), "{names:?}");
        assert!(
            !names.iter().any(|n| n.starts_with("proc")),
            "empty runtime mount points are left out: {names:?}"
        );
        if upper.join("gone").exists() {
            assert!(names.contains(&".wh.gone".to_string()), "{names:?}");
        }
        let z = write_layer(&upper, &lower, 1_000, Compression::Zstd, &store).unwrap();
        assert_eq!(z.diff_id, a.diff_id, "same tar, other compression");
    }

    #[test]
    fn extended_attributes_travel_in_the_layer() {
        let tmp = tempfile::tempdir().unwrap();
        let (upper, lower, out) = (
            tmp.path().join("upper"),
            tmp.path().join("lower"),
            tmp.path().join("out"),
        );
        for d in [&upper, &lower, &out] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(upper.join("tool"), "x").unwrap();
        if super::super::unpack::xattr_set(&upper.join("tool"), "user.kiln", b"cap-like").is_err() {
            eprintln!("SKIPPED: this file system has no user xattrs");
            return;
        }
        let store = BlobStore::new(tmp.path());
        let layer = write_layer(&upper, &lower, 0, Compression::Gzip, &store).unwrap();
        super::super::unpack::apply_layer(
            &out,
            super::super::unpack::open_layer(&store.path(&layer.digest).unwrap()).unwrap(),
        )
        .unwrap();
        assert_eq!(
            xattr_get(&out.join("tool"), "user.kiln").as_deref(),
            Some(&b"cap-like"[..])
        );
        assert_eq!(std::fs::read_to_string(out.join("tool")).unwrap(), "x");
    }
}
