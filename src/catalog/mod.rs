//! The image catalog: versioned images, channels, and the append-only,
//! hash-chained, signed log every change goes through (register, promote,
//! rollback, deprecate, revoke). The log is the only record; [`model`]
//! replays it into images, versions and channels, [`chain`] signs and
//! verifies it, and a [`Backend`] stores it: on disk under the state
//! directory ([`fs`], the default) or in PostgreSQL ([`postgres`]) for
//! builds on many CI runners. [`publish`] moves the channel pointers users
//! consume (an OCI `:<channel>` tag).
//!
//! Architecture invariant: nothing is ever updated in place; a writer
//! holds the backend's lock from reading the log to appending, so the
//! chain stays linear under concurrent writers.

pub mod chain;
pub mod fs;
pub mod head;
pub mod model;
pub mod postgres;
pub mod publish;
pub mod rescan;

use std::path::{Path, PathBuf};

use async_trait::async_trait;

pub use chain::{BrokenLink, Entry};
pub use model::{Action, ArtifactRecord, Registration, State, Status};

use crate::sign::SigningKey;

/// What went wrong with the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("catalog database: {0}")]
    Db(String),
    /// The stored log cannot be read as entries.
    #[error("the catalog log is damaged: {0} (run `kiln audit`)")]
    Corrupt(String),
    /// A request the catalog's state does not allow (unknown version, …).
    #[error("{0}")]
    Refused(String),
    /// Bad input: an invalid channel name, a missing reason, a file that
    /// is not a build manifest (exit 2).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Sign(#[from] crate::sign::SignError),
    #[error("{0}")]
    BadLocation(String),
    /// A policy gate denied the change; its decision is in the log (exit 1).
    #[error("{0}")]
    PolicyDenied(String),
}

impl CatalogError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CatalogError {
        let what = what.into();
        move |source| CatalogError::Io { what, source }
    }
}

/// Where a log is stored.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Every stored entry's bytes, in log order.
    async fn read(&self) -> Result<Vec<Vec<u8>>, CatalogError>;
    /// Takes the single-writer lock and reads the log under it.
    async fn begin(&self) -> Result<Box<dyn Txn>, CatalogError>;
    /// The catalog's secret for fingerprinting sensitive values (HMAC
    /// key), created on first use. Never leaves the catalog but as HMACs.
    async fn fingerprint_key(&self) -> Result<Vec<u8>, CatalogError>;
}

/// A writer's hold on the log: appends entries, then lets go. Dropped
/// without `commit`, nothing is written.
#[async_trait]
pub trait Txn: Send {
    /// The stored entries, read under the lock.
    fn stored(&self) -> &[Vec<u8>];
    /// Appends `entries` (in order) atomically per entry, and lets go.
    async fn commit(self: Box<Self>, entries: &[Entry]) -> Result<(), CatalogError>;
}

/// An open catalog.
pub struct Catalog {
    backend: Box<dyn Backend>,
    /// For messages: the path or the URL without its password.
    pub location: String,
    /// Where the key kiln signs with, when given none, is kept.
    state_dir: PathBuf,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Catalog({})", self.location)
    }
}

/// The catalog `--catalog`/`KILN_CATALOG` names: a `postgres://` URL, a
/// folder, or (none) `STATE/catalog`; created if needed.
pub async fn open(spec: Option<&str>, state_dir: &Path) -> Result<Catalog, CatalogError> {
    open_as(spec, state_dir, true).await
}

/// Like [`open`], for commands that only read: an on-disk catalog must
/// exist already (`audit` of a mistyped path must not pass), and nothing
/// is created.
pub async fn open_existing(spec: Option<&str>, state_dir: &Path) -> Result<Catalog, CatalogError> {
    open_as(spec, state_dir, false).await
}

async fn open_as(
    spec: Option<&str>,
    state_dir: &Path,
    create: bool,
) -> Result<Catalog, CatalogError> {
    let fs_open = |dir: &Path| {
        if create {
            fs::FsCatalog::open(dir)
        } else {
            fs::FsCatalog::open_existing(dir)
        }
    };
    let (backend, location): (Box<dyn Backend>, String) = match spec {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => (
            Box::new(postgres::PgCatalog::connect(url).await?),
            postgres::redact_url(url),
        ),
        Some(other) if other.contains("password=") => return Err(CatalogError::BadLocation(
            "the catalog looks like a connection string with a password: give a `postgres://` URL"
                .into(),
        )),
        Some(other) if other.contains("://") => {
            return Err(CatalogError::BadLocation(format!(
                "catalog `{}`: only postgres:// URLs and folders are supported",
                postgres::redact_url(other)
            )))
        }
        Some(dir) => {
            let dir = std::path::absolute(dir).unwrap_or_else(|_| PathBuf::from(dir));
            (Box::new(fs_open(&dir)?), dir.display().to_string())
        }
        None => {
            let dir = state_dir.join("catalog");
            (Box::new(fs_open(&dir)?), dir.display().to_string())
        }
    };
    Ok(Catalog {
        backend,
        location,
        state_dir: state_dir.to_path_buf(),
    })
}

/// The catalog as read: its entries, checked for shape only, and the
/// state they replay to.
pub struct Snapshot {
    pub entries: Vec<Entry>,
    pub state: State,
}

fn parse_all(stored: &[Vec<u8>]) -> Result<Vec<Entry>, CatalogError> {
    stored
        .iter()
        .enumerate()
        .map(|(i, b)| {
            Entry::parse(b).map_err(|e| CatalogError::Corrupt(format!("entry {}: {e}", i + 1)))
        })
        .collect()
}

fn replay(entries: &[Entry]) -> State {
    State::replay(entries.iter().map(|e| model::Applied {
        seq: e.seq,
        time: &e.time,
        actor: &e.actor,
        action: &e.change,
    }))
}

impl Catalog {
    /// Reads the whole catalog.
    pub async fn snapshot(&self) -> Result<Snapshot, CatalogError> {
        let entries = parse_all(&self.backend.read().await?)?;
        let state = replay(&entries);
        Ok(Snapshot { entries, state })
    }

    /// The stored log, for `audit`.
    pub async fn stored(&self) -> Result<Vec<Vec<u8>>, CatalogError> {
        self.backend.read().await
    }

    pub async fn fingerprint_key(&self) -> Result<Vec<u8>, CatalogError> {
        self.backend.fingerprint_key().await
    }

    /// Starts a change: locks the log and replays it.
    pub async fn writer(&self) -> Result<Writer, CatalogError> {
        let txn = self.backend.begin().await?;
        let entries = parse_all(txn.stored())?;
        let state = replay(&entries);
        let last = entries.last().map(|e| (e.seq, e.hash.clone()));
        Ok(Writer {
            txn,
            state,
            last,
            pending: vec![],
        })
    }

    /// The key changes made from the command line are signed with:
    /// `KILN_SIGNING_KEY` (a cosign key, password `KILN_PASSWORD`), else a
    /// key kiln keeps in the state directory for this purpose.
    pub fn operator_key(&self) -> Result<SigningKey, CatalogError> {
        self.operator_key_noting().map(|(k, _)| k)
    }

    /// Where kiln keeps its own catalog key (and its `.pub`).
    pub fn own_key_path(&self) -> std::path::PathBuf {
        self.state_dir.join("keys").join("catalog-signer.key")
    }

    /// [`Catalog::operator_key`], with what to tell the operator the first
    /// time kiln creates its own key: which key it is, what it signs, and
    /// how to trust it or sign with one's own instead.
    pub fn operator_key_noting(&self) -> Result<(SigningKey, Option<String>), CatalogError> {
        match std::env::var("KILN_SIGNING_KEY") {
            Ok(v) if !v.is_empty() => {
                Ok((crate::sign::load_signing_key("", &self.state_dir)?, None))
            }
            _ => {
                let path = self.own_key_path();
                let (key, created) = crate::sign::load_or_create_plain_key_noting(&path)?;
                let note = created.then(|| {
                    format!(
                        "created kiln's catalog key `{}` (key id {}): it signs the catalog changes made from the command line (promote, rollback, revoke, register, prune) and registrations of builds without `[build.sign]`; builds with `[build.sign]` are registered under their own key. Trust it with `kiln audit --key {}`, or sign as yourself: set KILN_SIGNING_KEY to your cosign key (password in KILN_PASSWORD)",
                        path.display(),
                        key.key_id(),
                        path.with_extension("pub").display()
                    )
                });
                Ok((key, note))
            }
        }
    }
}

/// A change in progress: the state under the lock, and the entries to
/// append. `record` applies each entry to `state` at once, so later
/// checks in the same change see it.
pub struct Writer {
    txn: Box<dyn Txn>,
    pub state: State,
    last: Option<(u64, String)>,
    pending: Vec<Entry>,
}

impl Writer {
    /// Signs and queues one entry.
    pub async fn record(
        &mut self,
        change: Action,
        actor: &str,
        key: &SigningKey,
    ) -> Result<&Entry, CatalogError> {
        let prev = self.last.as_ref().map(|(s, h)| (*s, h.as_str()));
        let entry = Entry::new(prev, actor, change, key).await?;
        self.last = Some((entry.seq, entry.hash.clone()));
        self.state.apply(&model::Applied {
            seq: entry.seq,
            time: &entry.time,
            actor: &entry.actor,
            action: &entry.change,
        });
        self.pending.push(entry);
        Ok(self.pending.last().expect("just pushed"))
    }

    /// Appends what was recorded and lets go of the lock.
    pub async fn commit(self) -> Result<Vec<Entry>, CatalogError> {
        self.txn.commit(&self.pending).await?;
        Ok(self.pending)
    }
}

/// Who is making a change: `KILN_ACTOR`, the CI's user, else user@host.
pub fn actor() -> String {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let Some(a) = env("KILN_ACTOR") {
        return a;
    }
    if let Some(a) = env("GITHUB_ACTOR") {
        return format!("github:{a}");
    }
    if let Some(a) = env("GITLAB_USER_LOGIN") {
        return format!("gitlab:{a}");
    }
    let uid = nix::unistd::getuid();
    let user = env("USER")
        .or_else(|| env("LOGNAME"))
        .or_else(|| {
            nix::unistd::User::from_uid(uid)
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| format!("uid{uid}"));
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{user}@{host}")
}

/// Checks a channel name: it becomes an OCI tag and part of paths.
pub fn check_channel(name: &str) -> Result<(), CatalogError> {
    if model::is_valid_name(name) {
        Ok(())
    } else {
        Err(CatalogError::Invalid(format!(
            "`{name}` is not a valid channel name: letters, digits, `-`, `_`, `.`, starting with a letter or digit"
        )))
    }
}

fn find_version<'a>(
    state: &'a State,
    image: &str,
    version: &str,
) -> Result<&'a model::Version, CatalogError> {
    let family = state
        .family(image)
        .ok_or_else(|| CatalogError::Refused(format!("no image `{image}` in the catalog")))?;
    family.version(version).ok_or_else(|| {
        let known: Vec<&str> = family
            .versions
            .iter()
            .rev()
            .take(5)
            .map(|v| v.registration.version.as_str())
            .collect();
        CatalogError::Refused(format!(
            "`{image}` has no version `{version}` (latest: {})",
            known.join(", ")
        ))
    })
}

/// The changes an operator makes from the command line.
pub enum Operation {
    Promote {
        image: String,
        version: String,
        channel: String,
    },
    /// Back to the previous target, or to `to`.
    Rollback {
        image: String,
        channel: String,
        to: Option<String>,
    },
    Deprecate {
        image: String,
        version: String,
        reason: String,
    },
    Revoke {
        image: String,
        version: String,
        reason: String,
    },
}

impl Catalog {
    /// Checks an operation against the current state, then records it.
    pub async fn apply(
        &self,
        op: Operation,
        actor: &str,
        key: &SigningKey,
    ) -> Result<Entry, CatalogError> {
        self.apply_gated(op, |_| Ok(None), actor, key).await
    }

    /// [`Catalog::apply`] after a policy gate: once the operation is
    /// checked, `decide` judges it on the state read under the lock (so
    /// no change can slip in between the decision and its entries), and
    /// its decision is recorded first, in the same locked change; a
    /// `deny` is recorded alone and refuses the operation
    /// ([`CatalogError::PolicyDenied`]).
    pub async fn apply_gated<F>(
        &self,
        op: Operation,
        decide: F,
        actor: &str,
        key: &SigningKey,
    ) -> Result<Entry, CatalogError>
    where
        F: FnOnce(&State) -> Result<Option<model::PolicyDecision>, CatalogError>,
    {
        let mut w = self.writer().await?;
        let change = match op {
            Operation::Promote {
                image,
                version,
                channel,
            } => {
                check_channel(&channel)?;
                let v = find_version(&w.state, &image, &version)?;
                if !v.is_active() {
                    return Err(CatalogError::Refused(format!(
                        "`{image} {version}` is {}: only active versions can be promoted",
                        v.status.name()
                    )));
                }
                Action::Promote {
                    image,
                    version,
                    channel,
                }
            }
            Operation::Rollback { image, channel, to } => {
                let family = w.state.family(&image).ok_or_else(|| {
                    CatalogError::Refused(format!("no image `{image}` in the catalog"))
                })?;
                let from = family
                    .channels
                    .get(&channel)
                    .and_then(|c| c.current.clone())
                    .ok_or_else(|| {
                        CatalogError::Refused(format!("`{image}` has no channel `{channel}`"))
                    })?;
                let to = match to {
                    Some(t) => {
                        let v = find_version(&w.state, &image, &t)?;
                        if matches!(v.status, Status::Revoked { .. } | Status::Deleted { .. }) {
                            return Err(CatalogError::Refused(format!(
                                "`{image} {t}` is {}: a channel cannot point at it",
                                v.status.name()
                            )));
                        }
                        t
                    }
                    None => family
                        .previous_target(&channel)
                        .map(String::from)
                        .ok_or_else(|| {
                            CatalogError::Refused(format!(
                                "`{image}` channel `{channel}` has no earlier, unrevoked target to roll back to"
                            ))
                        })?,
                };
                Action::Rollback {
                    image,
                    channel,
                    from,
                    to,
                }
            }
            Operation::Deprecate {
                image,
                version,
                reason,
            } => {
                let v = find_version(&w.state, &image, &version)?;
                if !v.is_active() {
                    return Err(CatalogError::Refused(format!(
                        "`{image} {version}` is {} already",
                        v.status.name()
                    )));
                }
                Action::Deprecate {
                    image,
                    version,
                    reason,
                }
            }
            Operation::Revoke {
                image,
                version,
                reason,
            } => {
                let v = find_version(&w.state, &image, &version)?;
                if matches!(v.status, Status::Revoked { .. }) {
                    return Err(CatalogError::Refused(format!(
                        "`{image} {version}` is revoked already"
                    )));
                }
                Action::Revoke {
                    image,
                    version,
                    reason,
                }
            }
        };
        if let Action::Deprecate { reason, .. } | Action::Revoke { reason, .. } = &change {
            if reason.trim().is_empty() {
                return Err(CatalogError::Invalid(
                    "give a reason with `--reason`".into(),
                ));
            }
        }
        if let Some(d) = decide(&w.state)? {
            let denied = d.decision == model::Decision::Deny;
            let text = d
                .denials
                .iter()
                .map(|f| format!("{}: {} ({})", f.rule, f.message, f.artifact))
                .collect::<Vec<_>>()
                .join("; ");
            let seq = w.record(Action::Policy(d), actor, key).await?.seq;
            if denied {
                w.commit().await?;
                return Err(CatalogError::PolicyDenied(format!(
                    "denied by policy (decision #{seq} in the catalog log): {text}\nhint: fix what the policy names and build again, or promote anyway with `--override-policy REASON` (the override and its reason are logged)"
                )));
            }
        }
        w.record(change, actor, key).await?;
        let mut entries = w.commit().await?;
        Ok(entries.pop().expect("one entry recorded"))
    }
}
