//! One job's steps — launch, each provisioner, snapshot, sign — each
//! between started/finished events, inside a `select!` with the job's
//! cancellation token; then its undo stack unwinds (or is abandoned for
//! `--on-error=abort`).

use std::time::Instant;

use super::error::JobError;
use super::options::OnError;
use super::run::Provisioners;
use crate::job::JobContext;
use crate::sign::SigningKey;
use crate::ui::{ArtifactInfo, Event, JobStatus, JobSummary};

/// Runs one job's steps, then unwinds its undo stack. As soon as the
/// steps are over (before the unwinding), what the job made is sent on
/// `ended`, so the build's records and catalog registration can go ahead
/// while the job cleans up: nothing on the undo stack is an artifact.
pub(super) async fn run_job(
    ctx: &JobContext,
    builder: &dyn crate::builder::Builder,
    provisioners: &Provisioners,
    signer: Option<&SigningKey>,
    (on_error, keep_on_failure): (OnError, bool),
    ended: tokio::sync::oneshot::Sender<JobSummary>,
) -> JobSummary {
    let started = Instant::now();
    // The test instance has a stack of its own, so it can be kept alone.
    let test_undo = ctx.undo.sibling("test").await;
    ctx.bus.emit(Event::JobStarted {
        job: ctx.name.clone(),
    });
    let steps = async {
        let mut instance = step(ctx, "launch", builder.launch(ctx))
            .await
            .map_err(JobError::Launch)?;
        let mut runs = vec![];
        for (index, kind, p) in provisioners {
            let (began, t) = (std::time::SystemTime::now(), Instant::now());
            let provisioned = step(
                ctx,
                &format!("provision {index} ({kind})"),
                p.provision(ctx, instance.communicator()),
            )
            .await;
            if let Err(source) = provisioned {
                if on_error == OnError::Abort {
                    if let Some(how) = instance.keep_for_inspection(ctx).await {
                        ctx.message(format!(
                            "--on-error=abort: the instance is kept as provisioner {index} left it; enter it with: {how}"
                        ));
                    }
                }
                return Err(JobError::Provision {
                    index: *index,
                    kind: kind.clone(),
                    source,
                });
            }
            // A provisioner that fails fails the job: a manifest only ever
            // records provisioners that succeeded (a shell one exited 0).
            runs.push(serde_json::json!({
                "index": index,
                "started": humantime::format_rfc3339_millis(began).to_string(),
                "finished": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
                "duration_ms": t.elapsed().as_millis() as u64,
                "status": "succeeded",
            }));
        }
        let mut artifacts = step(ctx, "snapshot", instance.snapshot(ctx))
            .await
            .map_err(JobError::Snapshot)?;
        if !ctx.plan.tests.is_empty() {
            step(
                ctx,
                "test",
                super::test::test_artifacts(ctx, builder, &test_undo, &mut artifacts),
            )
            .await?;
        }
        if ctx.plan.sbom {
            step(
                ctx,
                "sbom",
                super::sbom::sbom_artifacts(ctx, builder, &test_undo, &mut artifacts),
            )
            .await?;
        }
        // Copies, shares and protection only for an artifact whose tests
        // passed (a failed test returned above; the undo stack removes
        // what `snapshot` made).
        if instance.distributes() {
            artifacts = step(ctx, "distribute", instance.distribute(ctx, artifacts))
                .await
                .map_err(JobError::Distribute)?;
        }
        let reports = ctx.hardening_reports();
        for a in &mut artifacts {
            a.hardening = reports.clone();
            a.runs = runs.clone();
        }
        if let Some(key) = signer {
            step(
                ctx,
                "sign",
                crate::sign::sign_artifacts(&|m| ctx.message(m), &mut artifacts, key),
            )
            .await
            .map_err(|e| JobError::Sign(e.to_string()))?;
        }
        Ok::<Vec<ArtifactInfo>, JobError>(artifacts)
    };
    // Cancellation drops the running step (its processes die with it);
    // the undo stack below then removes whatever was created.
    let result = tokio::select! {
        r = steps => r,
        _ = ctx.cancel.cancelled() => Err(JobError::Cancelled),
    };
    let _ = ended.send(summary_of(ctx, &result, started));
    let keep = matches!(result, Err(ref e) if !matches!(e, JobError::Cancelled))
        && on_error == OnError::Abort;
    let keep_test = keep || (keep_on_failure && matches!(result, Err(JobError::TestFailed(_))));
    if keep_test {
        let kept = test_undo.abandon().await;
        if !kept.is_empty() {
            ctx.message(format!(
                "kept the failed test instance for inspection: {}; remove with `kiln cleanup`",
                kept.join(", ")
            ));
        }
    } else {
        for f in test_undo.unwind().await.failed {
            ctx.bus.emit(Event::Error {
                job: Some(ctx.name.clone()),
                message: format!(
                    "cleanup of the test instance failed: {f}; `kiln cleanup` will retry"
                ),
                file: None,
                line: None,
                column: None,
            });
        }
    }
    if let (Err(JobError::Provision { index, .. }), OnError::Cleanup) = (&result, on_error) {
        ctx.message(format!(
            "hint: `kiln build --on-error=abort` keeps the instance as provisioner {index} left it and prints the command that enters it (it is then listed here, and removed with `kiln cleanup`); a `type = \"breakpoint\"` provisioner before it pauses the build there, with the same command"
        ));
    }
    if keep {
        let kept = ctx.undo.abandon().await;
        if !kept.is_empty() {
            ctx.message(format!(
                "--on-error=abort: left in place for inspection: {}; remove with `kiln cleanup`",
                kept.join(", ")
            ));
        }
    } else {
        let t = Instant::now();
        ctx.bus.emit(Event::StepStarted {
            job: ctx.name.clone(),
            step: "cleanup".into(),
        });
        let unwound = ctx.undo.unwind().await;
        for f in &unwound.failed {
            ctx.bus.emit(Event::Error {
                job: Some(ctx.name.clone()),
                message: format!("cleanup failed: {f}; `kiln cleanup` will retry"),
                file: None,
                line: None,
                column: None,
            });
        }
        ctx.bus.emit(Event::StepFinished {
            job: ctx.name.clone(),
            step: "cleanup".into(),
            ok: unwound.failed.is_empty(),
            duration_ms: t.elapsed().as_millis() as u64,
        });
    }
    let JobSummary {
        status,
        error,
        artifacts,
        ..
    } = summary_of(ctx, &result, started);
    for a in &artifacts {
        ctx.bus.emit(Event::Artifact {
            job: ctx.name.clone(),
            artifact: Box::new(a.clone()),
        });
    }
    let duration_ms = started.elapsed().as_millis() as u64;
    ctx.bus.emit(Event::JobFinished {
        job: ctx.name.clone(),
        status,
        duration_ms,
        error: error.clone(),
    });
    JobSummary {
        job: ctx.name.clone(),
        status,
        duration_ms,
        error,
        artifacts,
    }
}

/// The job's summary from its steps' result, with the time so far.
fn summary_of(
    ctx: &JobContext,
    result: &Result<Vec<ArtifactInfo>, JobError>,
    started: Instant,
) -> JobSummary {
    let (status, error, artifacts) = match result {
        Ok(a) => (JobStatus::Succeeded, None, a.clone()),
        Err(JobError::Cancelled) => (JobStatus::Cancelled, Some("cancelled".to_string()), vec![]),
        Err(e) => (JobStatus::Failed, Some(e.to_string()), vec![]),
    };
    JobSummary {
        job: ctx.name.clone(),
        status,
        duration_ms: started.elapsed().as_millis() as u64,
        error,
        artifacts,
    }
}

/// Runs a step between `step_started` and `step_finished` events.
async fn step<T, E>(
    ctx: &JobContext,
    name: &str,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let t = Instant::now();
    ctx.bus.emit(Event::StepStarted {
        job: ctx.name.clone(),
        step: name.to_string(),
    });
    let r = fut.await;
    ctx.bus.emit(Event::StepFinished {
        job: ctx.name.clone(),
        step: name.to_string(),
        ok: r.is_ok(),
        duration_ms: t.elapsed().as_millis() as u64,
    });
    r
}
