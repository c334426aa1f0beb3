//! The on-disk catalog (the default, under `STATE/catalog`): one file per
//! log entry, `log/000000000042.json`. Writers take an exclusive lock on
//! `lock` (flock, so it dies with the process), read the log, and add an
//! entry by writing a hidden temp file, syncing it and hard-linking it to
//! its final name — which fails rather than overwrite — then syncing the
//! folder. A crash at any point leaves either the whole entry or none
//! (readers ignore hidden temp files; the next writer removes them).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{Backend, CatalogError, Entry, Txn};

pub struct FsCatalog {
    root: PathBuf,
}

impl FsCatalog {
    /// Opens (creating if needed) the catalog in `root`.
    pub fn open(root: &Path) -> Result<FsCatalog, CatalogError> {
        let what = format!("cannot create the catalog folder `{}`", root.display());
        fs_err::create_dir_all(root.join("log")).map_err(CatalogError::io(what))?;
        Ok(FsCatalog {
            root: root.to_path_buf(),
        })
    }

    /// Opens the catalog in `root` for reading: a folder that does not
    /// exist is an error (a mistyped path must not look like an empty,
    /// intact catalog), and nothing is created.
    pub fn open_existing(root: &Path) -> Result<FsCatalog, CatalogError> {
        if !root.is_dir() {
            return Err(CatalogError::BadLocation(format!(
                "no catalog at `{}` (no such folder)",
                root.display()
            )));
        }
        Ok(FsCatalog {
            root: root.to_path_buf(),
        })
    }

    fn log_dir(&self) -> PathBuf {
        self.root.join("log")
    }
}

/// Entry file name for a position.
fn entry_name(seq: u64) -> String {
    format!("{seq:012}.json")
}

fn read_log(dir: &Path) -> Result<Vec<Vec<u8>>, CatalogError> {
    let what = || format!("cannot read the catalog log `{}`", dir.display());
    if !dir.exists() {
        return Ok(vec![]);
    }
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(CatalogError::io(what()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.') && n.ends_with(".json"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|n| std::fs::read(dir.join(n)).map_err(CatalogError::io(what())))
        .collect()
}

#[async_trait]
impl Backend for FsCatalog {
    async fn read(&self) -> Result<Vec<Vec<u8>>, CatalogError> {
        let dir = self.log_dir();
        tokio::task::spawn_blocking(move || read_log(&dir))
            .await
            .map_err(|e| CatalogError::Db(e.to_string()))?
    }

    async fn begin(&self) -> Result<Box<dyn Txn>, CatalogError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || -> Result<Box<dyn Txn>, CatalogError> {
            let lock_path = root.join("lock");
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(CatalogError::io(format!(
                    "cannot open the catalog lock `{}`",
                    lock_path.display()
                )))?;
            lock.lock().map_err(CatalogError::io(format!(
                "cannot lock the catalog `{}`",
                lock_path.display()
            )))?;
            let log = root.join("log");
            // What a writer that crashed mid-append left.
            if let Ok(dir) = std::fs::read_dir(&log) {
                for e in dir.flatten() {
                    if e.file_name().to_string_lossy().starts_with(".tmp-") {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
            let stored = read_log(&log)?;
            Ok(Box::new(FsTxn {
                _lock: lock,
                log,
                stored,
            }))
        })
        .await
        .map_err(|e| CatalogError::Db(e.to_string()))?
    }

    async fn fingerprint_key(&self) -> Result<Vec<u8>, CatalogError> {
        let path = self.root.join("fingerprint.key");
        tokio::task::spawn_blocking(move || secret_file(&path))
            .await
            .map_err(|e| CatalogError::Db(e.to_string()))?
    }
}

/// Reads the 32-byte secret in `path`, creating it (mode 0600) if absent.
fn secret_file(path: &Path) -> Result<Vec<u8>, CatalogError> {
    let what = format!("cannot read the catalog secret `{}`", path.display());
    match std::fs::read_to_string(path) {
        Ok(hex_key) => {
            return hex::decode(hex_key.trim())
                .map_err(|_| CatalogError::Corrupt(format!("`{}` is not hex", path.display())))
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(CatalogError::io(what)(e))
        }
        Err(_) => {}
    }
    let mut key = [0u8; 32];
    getrandom::getrandom(&mut key).map_err(|e| CatalogError::Db(e.to_string()))?;
    // Racing creators: the first one wins, the others read it.
    if crate::secrets::create_private_once(path, hex::encode(key).as_bytes())
        .map_err(CatalogError::io(what))?
    {
        Ok(key.to_vec())
    } else {
        secret_file(path)
    }
}

struct FsTxn {
    /// Held until the transaction ends (dropping unlocks).
    _lock: std::fs::File,
    log: PathBuf,
    stored: Vec<Vec<u8>>,
}

#[async_trait]
impl Txn for FsTxn {
    fn stored(&self) -> &[Vec<u8>] {
        &self.stored
    }

    async fn commit(self: Box<Self>, entries: &[Entry]) -> Result<(), CatalogError> {
        let entries = entries.to_vec();
        tokio::task::spawn_blocking(move || {
            // One change is all its entries or none: if a later entry
            // cannot be written, the earlier ones of this change go again
            // before the lock is released.
            let mut written: Vec<PathBuf> = vec![];
            for e in &entries {
                match append(&self.log, e) {
                    Ok(path) => written.push(path),
                    Err(err) => {
                        for p in written.iter().rev() {
                            let _ = std::fs::remove_file(p);
                        }
                        let _ = std::fs::File::open(&self.log).and_then(|d| d.sync_all());
                        return Err(err);
                    }
                }
            }
            drop(self);
            Ok(())
        })
        .await
        .map_err(|e| CatalogError::Db(e.to_string()))?
    }
}

/// Writes one entry; returns its file.
fn append(log: &Path, e: &Entry) -> Result<PathBuf, CatalogError> {
    let what = || format!("cannot append to the catalog log `{}`", log.display());
    let tmp = log.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
    let target = log.join(entry_name(e.seq));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(CatalogError::io(what()))?;
    let written = f
        .write_all(&e.to_bytes())
        .and_then(|_| f.write_all(b"\n"))
        .and_then(|_| f.sync_all());
    let linked = written.and_then(|_| std::fs::hard_link(&tmp, &target));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(CatalogError::Corrupt(format!(
                "entry {} exists already: another writer ignored the lock",
                e.seq
            )))
        }
        Err(err) => return Err(CatalogError::io(what())(err)),
    }
    if let Err(err) = std::fs::File::open(log).and_then(|d| d.sync_all()) {
        // Not known to be durable: not written, as far as callers know.
        let _ = std::fs::remove_file(&target);
        return Err(CatalogError::io(what())(err));
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_append_in_order_and_leftover_temp_files_are_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let cat = FsCatalog::open(tmp.path()).unwrap();
        let key = crate::sign::load_or_create_plain_key(&tmp.path().join("k")).unwrap();
        // A crashed writer's half-written entry.
        std::fs::write(tmp.path().join("log/.tmp-crashed"), b"{\"seq\":1,").unwrap();
        let mut prev: Option<Entry> = None;
        for i in 0..3 {
            let txn = cat.begin().await.unwrap();
            assert_eq!(txn.stored().len(), i);
            let e = Entry::new(
                prev.as_ref().map(|p| (p.seq, p.hash.as_str())),
                "me",
                super::super::Action::Promote {
                    image: "web".into(),
                    version: "1.0.0+1".into(),
                    channel: "dev".into(),
                },
                &key,
            )
            .await
            .unwrap();
            txn.commit(std::slice::from_ref(&e)).await.unwrap();
            prev = Some(e);
        }
        let stored = cat.read().await.unwrap();
        assert_eq!(super::super::chain::verify(&stored, &[]).unwrap().len(), 3);
        assert!(!tmp.path().join("log/.tmp-crashed").exists());
        // Dropped without commit: nothing written, lock released.
        drop(cat.begin().await.unwrap());
        assert_eq!(cat.begin().await.unwrap().stored().len(), 3);
        let k1 = cat.fingerprint_key().await.unwrap();
        assert_eq!(k1.len(), 32);
        assert_eq!(cat.fingerprint_key().await.unwrap(), k1);
    }
}
