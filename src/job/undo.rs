//! A job's undo stack. A step that is about to create something outside
//! the process registers it here first: the resource is journaled durably,
//! and its undo action pushed. On success, failure or cancellation the
//! stack unwinds in reverse order (unless `--on-error=abort` keeps a failed
//! job's resources for inspection, still journaled for `kiln cleanup`).
//! Once it started unwinding (or was abandoned) the stack is closed: a
//! resource registered after that — a step still finishing when Ctrl-C
//! came — is undone at once and the caller gets an error, so nothing is
//! created that no one would remove.

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
    /// Unwinding (or abandoning) began: nothing more may stay on the stack.
    closed: bool,
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
                closed: false,
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
    /// reaper of its kind. Call this *before* creating it, and do not
    /// create it when this fails: after unwinding began it fails, having
    /// undone the resource already (so one created first is removed too).
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

    /// Journals `resource` and pushes it; on a closed stack (unwinding
    /// began) undoes it at once instead and returns an error, so the
    /// caller does not create it, or gives up what it created. Reapers
    /// accept a resource that does not exist (registration comes first).
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
        let registered = Registered {
            handle,
            resource,
            description: description.into(),
            journal_entry: entry,
            action,
        };
        if !inner.closed {
            inner.stack.push(registered);
            return Ok(handle);
        }
        let (journal, reapers) = (inner.journal.clone(), inner.reapers.clone());
        drop(inner);
        let outcome = match undo_one(registered, &journal, &reapers).await {
            Ok(_) => "undone at once".to_string(),
            Err(failed) => format!("its undo failed ({failed}); `kiln cleanup` will retry"),
        };
        Err(std::io::Error::new(
            std::io::ErrorKind::Interrupted,
            format!(
                "`{description}` was registered after the job's cleanup began (cancelled or ended): {outcome}"
            ),
        ))
    }

    /// The resource is gone by itself (a process exited): forget it.
    pub async fn release(&self, handle: UndoHandle) {
        let mut inner = self.inner.lock().await;
        if let Some(pos) = inner.stack.iter().position(|r| r.handle == handle) {
            let r = inner.stack.remove(pos);
            let _ = inner.journal.remove(&r.journal_entry);
        }
    }

    /// Undoes every registered resource, newest first, and closes the
    /// stack: a later registration is undone at once ([`Undo::register`]
    /// fails). A resource whose undo fails stays in the journal for
    /// `kiln cleanup`.
    pub async fn unwind(&self) -> Unwound {
        let mut out = Unwound::default();
        loop {
            let (r, journal, reapers) = {
                let mut inner = self.inner.lock().await;
                inner.closed = true;
                match inner.stack.pop() {
                    Some(r) => (r, inner.journal.clone(), inner.reapers.clone()),
                    None => break,
                }
            };
            match undo_one(r, &journal, &reapers).await {
                Ok(description) => out.undone.push(description),
                Err(failed) => out.failed.push(failed),
            }
        }
        out
    }

    /// Leaves every resource in place (`--on-error=abort`); they stay in the
    /// journal. Returns their descriptions.
    pub async fn abandon(&self) -> Vec<String> {
        let mut inner = self.inner.lock().await;
        inner.closed = true;
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

/// Runs `r`'s undo action, then its kind's reaper; on success removes its
/// journal entry and returns its description, else says what failed (the
/// entry stays for `kiln cleanup`).
async fn undo_one(r: Registered, journal: &Journal, reapers: &Reapers) -> Result<String, String> {
    let mut result = Ok(());
    if let Some(action) = r.action {
        result = action().await;
    }
    let reaped = reapers.reap(&r.resource).await;
    match result.and(reaped) {
        Ok(()) => {
            let _ = journal.remove(&r.journal_entry);
            Ok(r.description)
        }
        Err(e) => Err(format!(
            "{} ({}): {e}",
            r.description,
            reapers.describe(&r.resource)
        )),
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

    /// A registration that loses the race with cancellation: the stack
    /// is unwinding (its oldest resource's undo still running) when a step
    /// that has not noticed the cancel yet registers what it just created.
    #[tokio::test]
    async fn a_push_after_unwinding_began_is_undone_at_once() {
        let tmp = tempfile::tempdir().unwrap();
        let journal = Journal::new(tmp.path());
        let undo = Undo::new(journal.clone(), Reapers::default(), "b", "j");
        let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let first = tmp.path().join("first");
        std::fs::create_dir(&first).unwrap();
        undo.register_with(
            Resource::TempDir {
                path: first.clone(),
            },
            "first",
            Box::new(move || {
                Box::pin(async move {
                    let _ = entered_tx.send(());
                    let _ = go_rx.await;
                    Ok(())
                })
            }),
        )
        .await
        .unwrap();
        let unwinding = tokio::spawn({
            let undo = undo.clone();
            async move { undo.unwind().await }
        });
        entered_rx.await.unwrap();

        // Created just before the cancel, registered just after.
        let late = tmp.path().join("late");
        std::fs::create_dir(&late).unwrap();
        let err = undo
            .register(Resource::TempDir { path: late.clone() }, "late")
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("`late`") && err.to_string().contains("undone at once"),
            "{err}"
        );
        assert!(!late.exists(), "the late resource is undone at once");
        assert_eq!(
            journal.entries().unwrap().len(),
            1,
            "only the first one is still journaled"
        );

        go_tx.send(()).unwrap();
        let out = unwinding.await.unwrap();
        assert_eq!(out.undone, vec!["first"]);
        assert!(!first.exists());

        // And after the unwinding ended: the same.
        let after = tmp.path().join("after");
        std::fs::create_dir(&after).unwrap();
        assert!(undo
            .register(
                Resource::TempDir {
                    path: after.clone()
                },
                "after"
            )
            .await
            .is_err());
        assert!(!after.exists());
        assert!(journal.entries().unwrap().is_empty());
        assert!(undo.is_empty().await);
    }

    /// A late registration whose undo fails stays journaled for `kiln
    /// cleanup`, and the caller hears of it.
    #[tokio::test]
    async fn a_late_push_whose_undo_fails_stays_journaled() {
        let tmp = tempfile::tempdir().unwrap();
        let journal = Journal::new(tmp.path());
        let undo = Undo::new(journal.clone(), Reapers::default(), "b", "j");
        assert!(undo.unwind().await.undone.is_empty());
        let err = undo
            .register_with(
                Resource::TempFile {
                    path: tmp.path().join("f"),
                },
                "stuck",
                Box::new(|| Box::pin(async { Err("busy".to_string()) })),
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("busy"), "{err}");
        assert_eq!(journal.entries().unwrap().len(), 1);
    }
}
