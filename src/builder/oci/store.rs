//! The content-addressed blob cache under `STATE/oci/blobs/sha256/`: blobs
//! are verified against their digest on the way in (written to a temp file,
//! hashed, renamed), so a blob in the cache is always intact and a second
//! build does not download it again.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::builder::BuildError;

#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
}

/// Removes a temp file when dropped, unless it was renamed into place
/// first: no half-downloaded blob survives an error or a cancellation.
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `sha256:<hex>` → `<hex>`, refusing anything else (no path tricks).
pub fn hex_of(digest: &str) -> Result<&str, BuildError> {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(h),
        _ => Err(BuildError::Config(format!(
            "unsupported digest `{digest}` (sha256 only)"
        ))),
    }
}

impl BlobStore {
    pub fn new(state_dir: &Path) -> BlobStore {
        BlobStore {
            dir: state_dir.join("oci").join("blobs").join("sha256"),
        }
    }

    pub fn path(&self, digest: &str) -> Result<PathBuf, BuildError> {
        Ok(self.dir.join(hex_of(digest)?))
    }

    pub fn has(&self, digest: &str) -> bool {
        self.path(digest).is_ok_and(|p| p.is_file())
    }

    /// A temp path in the store's folder (same filesystem as the blobs).
    pub fn temp_path(&self) -> Result<PathBuf, BuildError> {
        if let Some(blobs) = self.dir.parent() {
            crate::builder::cache::private_dir(blobs)
                .map_err(BuildError::io("cannot create the blob cache"))?;
        }
        fs_err::create_dir_all(&self.dir)
            .map_err(BuildError::io("cannot create the blob cache"))?;
        Ok(self.dir.join(format!(".tmp-{}", uuid::Uuid::new_v4())))
    }

    /// Moves a fully written temp file into the store if its digest matches.
    pub fn commit(&self, tmp: &Path, digest: &str) -> Result<PathBuf, BuildError> {
        let actual = file_digest(tmp)?;
        if actual != digest {
            let _ = std::fs::remove_file(tmp);
            return Err(BuildError::Config(format!(
                "blob digest mismatch: expected {digest}, got {actual}"
            )));
        }
        let dest = self.path(digest)?;
        fs_err::rename(tmp, &dest).map_err(BuildError::io("cannot store blob"))?;
        Ok(dest)
    }

    /// Stores bytes whose digest is computed here.
    pub fn put_bytes(&self, data: &[u8]) -> Result<String, BuildError> {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(data)));
        if !self.has(&digest) {
            let tmp = self.temp_path()?;
            let _cleanup = RemoveOnDrop(tmp.clone());
            let mut f = fs_err::File::create(&tmp).map_err(BuildError::io("cannot write blob"))?;
            f.write_all(data)
                .map_err(BuildError::io("cannot write blob"))?;
            drop(f);
            self.commit(&tmp, &digest)?;
        }
        Ok(digest)
    }

    pub fn read(&self, digest: &str) -> Result<Vec<u8>, BuildError> {
        fs_err::read(self.path(digest)?)
            .map_err(BuildError::io(format!("cannot read blob {digest}")))
    }
}

/// A writer that refuses to take more than `left` bytes: a blob's size in
/// its manifest is only a claim, enforced while the blob streams in.
pub struct SizeLimited<W> {
    pub inner: W,
    pub left: u64,
    pub exceeded: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for SizeLimited<W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if buf.len() as u64 > self.left {
            self.exceeded
                .store(true, std::sync::atomic::Ordering::SeqCst);
            return std::task::Poll::Ready(Err(std::io::Error::other(
                "the blob is larger than its descriptor says",
            )));
        }
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &r {
            self.left -= *n as u64;
        }
        r
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// `sha256:<hex>` of a file, streaming.
pub fn file_digest(path: &Path) -> Result<String, BuildError> {
    let mut f = fs_err::File::open(path).map_err(BuildError::io("cannot read blob"))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(BuildError::io("cannot read blob"))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

/// JSON with object keys sorted, so the same value always has the same
/// bytes and digest (oci-spec keeps labels in a `HashMap`).
pub fn canonical_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    fn sort(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let mut entries: Vec<_> = m.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                let mut out = serde_json::Map::new();
                for (k, v) in entries {
                    out.insert(k, sort(v));
                }
                serde_json::Value::Object(out)
            }
            serde_json::Value::Array(a) => {
                serde_json::Value::Array(a.into_iter().map(sort).collect())
            }
            v => v,
        }
    }
    let v = sort(serde_json::to_value(value).expect("OCI types serialize"));
    // Maps are written in insertion order only with `preserve_order`; sort
    // again while writing to be independent of serde_json's features.
    let mut out = Vec::new();
    write_sorted(&v, &mut out);
    out
}

fn write_sorted(v: &serde_json::Value, out: &mut Vec<u8>) {
    match v {
        serde_json::Value::Object(m) => {
            out.push(b'{');
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend(serde_json::to_vec(k).expect("string"));
                out.push(b':');
                write_sorted(&m[*k], out);
            }
            out.push(b'}');
        }
        serde_json::Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_sorted(x, out);
            }
            out.push(b']');
        }
        v => out.extend(serde_json::to_vec(v).expect("scalar")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_digests_and_rejects_mismatch() {
        let tmp = tempfile::tempdir().unwrap();
        let s = BlobStore::new(tmp.path());
        let d = s.put_bytes(b"hello").unwrap();
        assert!(s.has(&d));
        assert_eq!(s.read(&d).unwrap(), b"hello");
        let t = s.temp_path().unwrap();
        std::fs::write(&t, b"evil").unwrap();
        assert!(s.commit(&t, &d.replace('2', "3")).is_err());
        assert!(hex_of("sha256:../../etc").is_err());
    }

    #[tokio::test]
    async fn a_blob_may_not_outgrow_its_descriptor() {
        use tokio::io::AsyncWriteExt as _;
        let exceeded = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut w = SizeLimited {
            inner: Vec::new(),
            left: 5,
            exceeded: exceeded.clone(),
        };
        w.write_all(b"12345").await.unwrap();
        assert!(w.write_all(b"6").await.is_err());
        assert!(exceeded.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(w.inner, b"12345");
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let mut m = std::collections::HashMap::new();
        for k in ["z", "a", "m"] {
            m.insert(k, 1);
        }
        assert_eq!(canonical_json(&m), br#"{"a":1,"m":1,"z":1}"#);
    }
}
