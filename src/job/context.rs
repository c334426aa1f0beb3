//! `JobContext`: everything a running job's steps may use — its plan, ids
//! and folders, the secrets for the leak scan, its undo stack, the
//! cancellation token, and (through `emit`) the event bus. The engine makes
//! one per job; builders, communicators and provisioners only receive it.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::undo::Undo;
use crate::template::plan::{ImagePlan, JobPlan, VaultSettings};
use crate::ui::EventBus;

/// What a running job's steps can use.
pub struct JobContext {
    /// `build.type.name`.
    pub name: String,
    pub plan: JobPlan,
    pub build_id: String,
    pub image: ImagePlan,
    /// `sha256:` of the template (for labels and provenance).
    pub template_digest: String,
    pub template_dir: PathBuf,
    pub state_dir: PathBuf,
    /// `(name, value)` of every secret and sensitive variable, for the leak
    /// scan. In memory only.
    pub secrets: Arc<Vec<(String, String)>>,
    pub undo: Undo,
    pub cancel: CancellationToken,
    pub interactive: bool,
    /// `[vault]` of the template: where remote instances' secrets are
    /// wrapped for delivery.
    pub vault: VaultSettings,
    pub(crate) bus: Arc<EventBus>,
    /// Compliance reports of hardening provisioners, for the artifacts.
    pub(crate) hardening_reports: std::sync::Mutex<Vec<serde_json::Value>>,
}

impl JobContext {
    /// Records a hardening provisioner's compliance report; every artifact
    /// of the job carries it into its manifest and provenance.
    pub fn add_hardening_report(&self, report: serde_json::Value) {
        if let Ok(mut reports) = self.hardening_reports.lock() {
            reports.push(report);
        }
    }

    /// The compliance reports recorded so far.
    pub fn hardening_reports(&self) -> Vec<serde_json::Value> {
        self.hardening_reports
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }
}
