//! Fetching declared secrets, once per build, before any instance starts:
//! `env`, `file` and `vault` (KV v1/v2, all read concurrently with one
//! login, see [`vault`]); [`leak`] scans artifacts for them.
//!
//! Architecture invariant: secret values live only in memory (as sensitive
//! template values) and in provisioner process environments; every value
//! fetched here reaches the redactor before any output is written.

pub mod leak;
pub mod vault;

use std::collections::BTreeMap;

use crate::template::plan::SecretRequest;
use crate::template::{Diagnostic, Diagnostics, SecretSource, Value};

/// Values for `validate` and `inspect`, which never fetch secrets.
pub fn unresolved(req: &SecretRequest) -> Result<BTreeMap<String, Value>, Diagnostics> {
    Ok(req
        .decls
        .iter()
        .map(|d| (d.name.clone(), Value::Unknown))
        .collect())
}

/// Fetches every secret. Errors name the secret and its source, never a value.
pub fn fetch(req: &SecretRequest) -> Result<BTreeMap<String, Value>, Diagnostics> {
    let decls = req.decls;
    let mut out = BTreeMap::new();
    let mut diags = Diagnostics::default();
    for d in decls {
        let err = |msg: String| {
            Diagnostic::at(
                &d.file,
                d.span.clone(),
                format!("secret `{}`: {msg}", d.name),
            )
            .with_label("declared here")
        };
        match &d.source {
            SecretSource::Env(name) => match std::env::var(name) {
                Ok(v) => {
                    out.insert(d.name.clone(), Value::Str(v));
                }
                Err(_) => diags.push(err(format!("environment variable `{name}` is not set"))),
            },
            SecretSource::File(path) => match std::fs::read_to_string(path) {
                // A trailing newline is an artifact of how such files are written.
                Ok(v) => {
                    out.insert(
                        d.name.clone(),
                        Value::Str(v.strip_suffix('\n').unwrap_or(&v).to_string()),
                    );
                }
                Err(e) => diags.push(err(format!("cannot read `{}`: {e}", path.display()))),
            },
            SecretSource::Vault { .. } => {}
        }
    }
    let wanted: Vec<(String, String, String, Option<u64>)> = decls
        .iter()
        .filter_map(|d| match &d.source {
            SecretSource::Vault { path, key, version } => Some((
                d.name.clone(),
                path.clone(),
                key.clone(),
                version.as_ref().copied(),
            )),
            _ => None,
        })
        .collect();
    if !wanted.is_empty() {
        match block_on(vault::fetch_all(req.vault, &wanted)) {
            Ok(values) => out.extend(values.into_iter().map(|(k, v)| (k, Value::Str(v)))),
            Err(errors) => {
                for (name, e) in errors {
                    let d = decls
                        .iter()
                        .find(|d| d.name == name)
                        .expect("asked for declared secrets");
                    diags.push(
                        Diagnostic::at(&d.file, d.span.clone(), format!("secret `{name}`: {e}"))
                            .with_label("declared here"),
                    );
                }
            }
        }
    }
    if diags.is_empty() {
        Ok(out)
    } else {
        Err(diags)
    }
}

/// Runs a future to completion from the synchronous secret-fetch hook,
/// inside or outside a tokio runtime.
fn block_on<F: std::future::Future + Send>(f: F) -> F::Output
where
    F::Output: Send,
{
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| h.block_on(f))
        }
        _ => std::thread::scope(|s| {
            s.spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(f)
            })
            .join()
            .expect("secret fetch panicked")
        }),
    }
}

/// Writes `bytes` to `path` once, mode 0600, durably: a temp file is
/// synced and hard-linked into place, so a reader never sees half of it
/// and racing creators cannot overwrite each other. `Ok(false)` when the
/// file existed already (the caller reads the winner's).
pub fn create_private_once(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<bool> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()));
    let linked = written.and_then(|_| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// The tmpfs folder where files holding secrets live (`KILN_TMPFS`, else
/// `/dev/shm`); an error naming `what` needs it when it is not a tmpfs.
pub fn tmpfs_dir(what: &str) -> Result<std::path::PathBuf, String> {
    let dir = std::env::var_os("KILN_TMPFS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("/dev/shm"));
    let is_tmpfs = nix::sys::statfs::statfs(&dir)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
    if !is_tmpfs {
        return Err(format!(
            "`{}` is not a tmpfs: kiln keeps {what} only in memory; set KILN_TMPFS to a tmpfs folder",
            dir.display()
        ));
    }
    Ok(dir)
}
