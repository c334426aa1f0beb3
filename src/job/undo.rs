//! A job's undo stack. A step that is about to create something outside
//! the process registers it here first: the resource is journaled durably,
//! and its undo action pushed. On success, failure or cancellation the
//! stack unwinds in reverse order (unless `--on-error=abort` keeps a failed
//! job's resources for inspection, still journaled for `kiln cleanup`).

use std::path::PathBuf;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::Mutex;

use super::journal::Journal;
use super::resource::{Reapers, Resource};

/// A custom undo action (a graceful stop before the kind's reaper).
pub type UndoAction = Box<dyn FnOnce() -> BoxFuture<'static, Result<(), String>> + Send>;

/// Identifies a registered resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UndoHandle(u64);

struct Registered {
    handle: UndoHandle,
    resource: Resource,
    description: String,
    journal_entry: PathBuf,
    action: Option<UndoAction>,
}

struct Inner {
    journal: Journal,
    reapers: Reapers,
    build_id: String,
    job: String,
    next: u64,
    stack: Vec<Registered>,
}

/// A shared handle to one job's undo stack.
#[derive(Clone)]
pub struct Undo {
    inner: Arc<Mutex<Inner>>,
}

/// What unwinding did: each resource undone, and each failure.
#[derive(Debug, Default)]
pub struct Unwound {
    pub undone: Vec<String>,
    pub failed: Vec<String>,
}

impl Undo {
    /// The undo stack of one job; `reapers` remove the kinds their owners
    /// (builders, communicators) register.
    pub fn new(journal: Journal, reapers: Reapers, build_id: &str, job: &str) -> Undo {
        Undo {
            inner: Arc::new(Mutex::new(Inner {
                journal,
                reapers,
                build_id: build_id.into(),
                job: job.into(),
                next: 1,
                stack: vec![],
            })),
        }
    }

    /// A separate stack for part of the same job (`JOB.test`: the test
    /// instance), journaled beside it with the same reapers, so it can be
    /// unwound or kept on its own.
    pub async fn sibling(&self, job_suffix: &str) -> Undo {
        let inner = self.inner.lock().await;
        Undo::new(
            inner.journal.clone(),
            inner.reapers.clone(),
            &inner.build_id,
            &format!("{}.{job_suffix}", inner.job),
        )
    }

    /// Registers a resource that is about to be created; its undo is the
    /// reaper of its kind. Call this *before* creating it.
    pub async fn register(
        &self,
        resource: Resource,
        description: &str,
    ) -> std::io::Result<UndoHandle> {
        self.push(resource, description, None).await
    }

    /// Like [`Undo::register`] with a custom undo action; the reaper still
    /// runs after it, so the action may be best-effort.
    pub async fn register_with(
        &self,
        resource: Resource,
        description: &str,
        action: UndoAction,
    ) -> std::io::Result<UndoHandle> {
        self.push(resource, description, Some(action)).await
    }

    async fn push(
        &self,
        resource: Resource,
        description: &str,
        action: Option<UndoAction>,
    ) -> std::io::Result<UndoHandle> {
        let mut inner = self.inner.lock().await;
        let seq = inner.next;
        inner.next += 1;
        let journal = inner.journal.clone();
        let (build_id, job) = (inner.build_id.clone(), inner.job.clone());
        let res = resource.clone();
        let desc = description.to_string();
        let entry =
            tokio::task::spawn_blocking(move || journal.record(&build_id, &job, seq, &res, &desc))
                .await
                .map_err(std::io::Error::other)??;
        let handle = UndoHandle(seq);
        inner.stack.push(Registered {
            handle,
            resource,
            description: description.into(),
            journal_entry: entry,
            action,
        });
        Ok(handle)
    }

    /// The resource is gone by itself (a process exited): forget it.
    pub async fn release(&self, handle: UndoHandle) {
        let mut inner = self.inner.lock().await;
        if let Some(pos) = inner.stack.iter().position(|r| r.handle == handle) {
            let r = inner.stack.remove(pos);
            let _ = inner.journal.remove(&r.journal_entry);
        }
    }

    /// Undoes every registered resource, newest first. A resource whose undo
    /// fails stays in the journal for `kiln cleanup`.
    pub async fn unwind(&self) -> Unwound {
        let mut out = Unwound::default();
        loop {
            let (r, journal, reapers) = {
                let mut inner = self.inner.lock().await;
                match inner.stack.pop() {
                    Some(r) => (r, inner.journal.clone(), inner.reapers.clone()),
                    None => break,
                }
            };
            let mut result = Ok(());
            if let Some(action) = r.action {
                result = action().await;
            }
            let reaped = reapers.reap(&r.resource).await;
            match result.and(reaped) {
                Ok(()) => {
                    let _ = journal.remove(&r.journal_entry);
                    out.undone.push(r.description);
                }
                Err(e) => out.failed.push(format!(
                    "{} ({}): {e}",
                    r.description,
                    reapers.describe(&r.resource)
                )),
            }
        }
        out
    }

    /// Leaves every resource in place (`--on-error=abort`); they stay in the
    /// journal. Returns their descriptions.
    pub async fn abandon(&self) -> Vec<String> {
        let mut inner = self.inner.lock().await;
        let reapers = inner.reapers.clone();
        inner
            .stack
            .drain(..)
            .map(|r| format!("{} ({})", r.description, reapers.describe(&r.resource)))
            .collect()
    }

    /// Number of resources currently registered.
    pub async fn len(&self) -> usize {
        self.inner.lock().await.stack.len()
    }

    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unwinds_in_reverse_and_clears_journal() {
        let tmp = tempfile::tempdir().unwrap();
        let journal = Journal::new(tmp.path());
        let undo = Undo::new(journal.clone(), Reapers::default(), "b", "j");
        let order = Arc::new(std::sync::Mutex::new(vec![]));
        for i in 0..3 {
            let order = order.clone();
            let dir = tmp.path().join(format!("d{i}"));
            undo.register_with(
                Resource::TempDir { path: dir.clone() },
                &format!("d{i}"),
                Box::new(move || {
                    Box::pin(async move {
                        order.lock().unwrap().push(i);
                        Ok(())
                    })
                }),
            )
            .await
            .unwrap();
            std::fs::create_dir(&dir).unwrap();
        }
        assert_eq!(journal.entries().unwrap().len(), 3);
        let out = undo.unwind().await;
        assert_eq!(*order.lock().unwrap(), vec![2, 1, 0]);
        assert_eq!(out.undone, vec!["d2", "d1", "d0"]);
        assert!(journal.entries().unwrap().is_empty());
        assert!(!tmp.path().join("d0").exists());
    }

    #[tokio::test]
    async fn failed_undo_stays_journaled_and_abandon_keeps_all() {
        let tmp = tempfile::tempdir().unwrap();
        let journal = Journal::new(tmp.path());
        let undo = Undo::new(journal.clone(), Reapers::default(), "b", "j");
        undo.register_with(
            Resource::TempFile {
                path: tmp.path().join("f"),
            },
            "f",
            Box::new(|| Box::pin(async { Err("stuck".to_string()) })),
        )
        .await
        .unwrap();
        let out = undo.unwind().await;
        assert_eq!(out.failed.len(), 1);
        assert_eq!(journal.entries().unwrap().len(), 1);

        let undo = Undo::new(Journal::new(tmp.path()), Reapers::default(), "b2", "j");
        undo.register(
            Resource::TempDir {
                path: tmp.path().join("keep"),
            },
            "keep",
        )
        .await
        .unwrap();
        assert_eq!(undo.abandon().await.len(), 1);
        assert!(undo.is_empty().await);
        assert_eq!(journal.entries().unwrap().len(), 2);
    }
}
