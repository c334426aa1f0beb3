//! `kiln cleanup`: reaps the journaled resources of builds whose kiln
//! process is gone, through each kind's owner.

use std::path::Path;

use crate::job::Journal;

/// What `kiln cleanup` found and did.
#[derive(Debug, Default, serde::Serialize)]
pub struct CleanupReport {
    pub reaped: Vec<String>,
    pub skipped_live: Vec<String>,
    pub failed: Vec<String>,
    pub would_reap: Vec<String>,
}

/// Reaps journaled resources of builds whose kiln process is gone,
/// newest first within each job. `older_than` limits it to old entries.
pub async fn cleanup(
    state_dir: &Path,
    reapers: &crate::job::Reapers,
    older_than: Option<std::time::Duration>,
    dry_run: bool,
) -> std::io::Result<CleanupReport> {
    let journal = Journal::new(state_dir);
    let mut entries = journal.entries()?;
    entries.reverse();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut report = CleanupReport::default();
    for (path, e) in entries {
        let what = format!(
            "{}: {} ({})",
            e.job,
            e.description,
            reapers.describe(&e.resource)
        );
        if crate::job::process::owner_alive(e.owner_pid, e.owner_start_time) {
            report.skipped_live.push(what);
            continue;
        }
        if older_than.is_some_and(|d| now.saturating_sub(e.created) < d.as_secs()) {
            continue;
        }
        if dry_run {
            report.would_reap.push(what);
            continue;
        }
        match reapers.reap(&e.resource).await {
            Ok(()) => {
                journal.remove(&path)?;
                report.reaped.push(what);
            }
            Err(err) => report.failed.push(format!("{what}: {err}")),
        }
    }
    if !dry_run {
        // Builds remove their own empty work folders; do it for the dead ones.
        if let Ok(builds) = std::fs::read_dir(state_dir.join("work")) {
            for b in builds.flatten() {
                let _ = std::fs::remove_dir(b.path());
            }
        }
    }
    Ok(report)
}
