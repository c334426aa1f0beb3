//! `probe`: a throw-away instance of a job for a check that keeps nothing
//! (pending security updates of the newest image), journaled like a build.

use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::builder::Builders;
use crate::job::scratch::build_work_dir;
use crate::job::{JobContext, Journal, Undo};
use crate::template::plan::{BuildPlan, JobPlan};
use crate::ui::{EventBus, Stream};

/// What a probe saw: the script's exit code and its standard output.
#[derive(Debug)]
pub struct ProbeOutput {
    pub code: i32,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

/// Runs `script` in a throw-away instance of `job` — launch, one command,
/// undo — for checks that change nothing kept (e.g. pending security
/// updates of the newest image). Journaled like a build, so `kiln cleanup`
/// reaps what a killed probe leaves.
pub async fn probe(
    plan: &BuildPlan,
    job: &JobPlan,
    builders: &Builders,
    state_dir: &Path,
    script: &str,
    timeout: std::time::Duration,
) -> Result<ProbeOutput, String> {
    let builder = builders
        .get(&job.source_type)
        .ok_or_else(|| format!("no builder for source type `{}`", job.source_type))?;
    builder.preflight(job).map_err(|e| e.to_string())?;
    let build_id = format!("probe-{}", uuid::Uuid::new_v4());
    let name = job.name();
    let redactor = Arc::new(std::sync::RwLock::new(crate::ui::Redactor::default()));
    let ctx = JobContext {
        undo: Undo::new(
            Journal::new(state_dir),
            builders.reapers(),
            &build_id,
            &name,
        ),
        name,
        plan: job.clone(),
        build_id: build_id.clone(),
        image: plan.image.clone(),
        template_digest: plan.template_digest.clone(),
        secrets: Arc::new(vec![]),
        template_dir: plan.template_dir(),
        state_dir: state_dir.to_path_buf(),
        cancel: CancellationToken::new(),
        interactive: false,
        vault: plan.vault.clone(),
        hardening_reports: Default::default(),
        bus: EventBus::new(redactor, vec![]),
    };
    let run = async {
        let instance = builder.launch(&ctx).await.map_err(|e| e.to_string())?;
        let cmd = crate::communicator::RemoteCommand {
            script: script.to_string(),
            timeout: Some(timeout),
            ..Default::default()
        };
        let (mut stdout, mut stderr) = (vec![], vec![]);
        let code = instance
            .communicator()
            .exec(&cmd, &mut |stream, line| match stream {
                Stream::Stdout => stdout.push(line),
                Stream::Stderr => stderr.push(line),
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(ProbeOutput {
            code,
            stdout,
            stderr,
        })
    };
    let result = run.await;
    let unwound = ctx.undo.unwind().await;
    let _ = std::fs::remove_dir(build_work_dir(state_dir, &build_id));
    if !unwound.failed.is_empty() {
        return Err(format!(
            "cleanup failed: {}; `kiln cleanup` will retry",
            unwound.failed.join("; ")
        ));
    }
    result
}
