//! The run loop: preflight every job (builder available, provisioners
//! buildable, signing key loadable) before anything is created, then the
//! jobs in parallel under a semaphore, fail-fast through a child
//! cancellation token, and the summary event.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::error::JobError;
use super::keys::signing_key;
use super::options::RunOptions;
use super::register::write_manifests;
use super::steps::run_job;
use crate::builder::Builders;
use crate::job::scratch::build_work_dir;
use crate::job::{JobContext, Journal, Undo};
use crate::manifest;
use crate::provisioner::{self, Provisioner};
use crate::template::plan::{BuildPlan, JobPlan};
use crate::ui::{Event, EventBus, JobStatus, JobSummary};

/// A job's provisioners with their index and type, ready to run.
pub(super) type Provisioners = Vec<(usize, String, Box<dyn Provisioner>)>;

/// Runs every job of the plan and returns one summary per job.
pub async fn run(
    plan: &BuildPlan,
    builders: &Builders,
    opts: &RunOptions,
    bus: Arc<EventBus>,
    cancel: CancellationToken,
) -> Vec<JobSummary> {
    let started = Instant::now();
    bus.emit(Event::BuildStarted {
        build_id: plan.build_id.clone(),
        template: plan.template.display().to_string(),
        jobs: plan.jobs.iter().map(JobPlan::name).collect(),
    });
    let template_dir = plan.template_dir();
    // Asked of git now, ready when the records are written.
    manifest::warm_template_source(plan);

    // Preflight: refuse up front what cannot run, before anything is created.
    let mut prepared = vec![];
    let mut refused = vec![];
    let mut keys = std::collections::HashMap::new();
    let mut job_signers = std::collections::HashMap::new();
    // The inputs are fingerprinted now, before anything runs: the record
    // must describe what the image was built from.
    let fp_key = match opts.catalog.as_deref() {
        Some(c) => c
            .fingerprint_key()
            .await
            .map_err(|e| format!("catalog `{}`: {e}", c.location)),
        None => Ok(vec![]),
    };
    let fp_inputs: std::collections::HashMap<String, serde_json::Value> = plan
        .jobs
        .iter()
        .map(|j| {
            let key = fp_key.as_deref().unwrap_or_default();
            (j.name(), manifest::fingerprint_inputs(plan, j, key))
        })
        .collect();
    for job in &plan.jobs {
        let ready = match (&fp_key, preflight(job, builders, &template_dir)) {
            (Err(e), _) => Err(JobError::NotSupported(e.clone())),
            (Ok(_), p) => p,
        };
        let ready = match ready {
            Ok(p) => signing_key(job, plan, &template_dir, &mut keys)
                .await
                .map(|k| (p, k)),
            Err(e) => Err(e),
        };
        if let Ok((_, Some(key))) = &ready {
            job_signers.insert(job.name(), key.clone());
        }
        match ready {
            Ok(p) => prepared.push((job.clone(), p)),
            Err(e) => refused.push((job.name(), e)),
        }
    }
    if !refused.is_empty() {
        // Report in plan order: the refused jobs failed, the others never started.
        let out = plan
            .jobs
            .iter()
            .map(|job| {
                let name = job.name();
                let (status, error) = match refused.iter().find(|(n, _)| *n == name) {
                    Some((_, e)) => {
                        bus.emit(Event::Error {
                            job: Some(name.clone()),
                            message: e.to_string(),
                            file: None,
                            line: None,
                            column: None,
                        });
                        (JobStatus::Failed, e.to_string())
                    }
                    None => (
                        JobStatus::Cancelled,
                        "not started: another job cannot run".to_string(),
                    ),
                };
                JobSummary {
                    job: name,
                    status,
                    duration_ms: 0,
                    error: Some(error),
                    artifacts: vec![],
                }
            })
            .collect();
        return finish(plan, out, started, &bus);
    }

    let secrets = Arc::new(leak_scan_inputs(plan));
    let siblings = cancel.child_token();
    let permits = Arc::new(Semaphore::new(opts.parallel.max(1)));
    let journal = Journal::new(&opts.state_dir);
    let mut tasks = tokio::task::JoinSet::new();
    let mut ended = vec![];
    for (order, (job, (provisioners, signer))) in prepared.into_iter().enumerate() {
        let name = job.name();
        let builder = builders
            .get(&job.source_type)
            .expect("checked in preflight");
        let ctx = JobContext {
            undo: Undo::new(journal.clone(), builders.reapers(), &plan.build_id, &name),
            name,
            plan: job,
            build_id: plan.build_id.clone(),
            image: plan.image.clone(),
            template_digest: plan.template_digest.clone(),
            secrets: secrets.clone(),
            template_dir: template_dir.clone(),
            state_dir: opts.state_dir.clone(),
            cancel: siblings.clone(),
            interactive: opts.interactive,
            vault: plan.vault.clone(),
            bus: bus.clone(),
            hardening_reports: Default::default(),
        };
        let (permits, siblings, opts) = (permits.clone(), siblings.clone(), opts.clone());
        let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
        ended.push(ended_rx);
        tasks.spawn(async move {
            let permit = tokio::select! {
                p = permits.acquire_owned() => p.ok(),
                _ = ctx.cancel.cancelled() => None,
            };
            let summary = match permit {
                Some(_permit) => {
                    use futures_util::FutureExt as _;
                    let job = run_job(
                        &ctx,
                        builder.as_ref(),
                        &provisioners,
                        signer.as_deref(),
                        (opts.on_error, opts.keep_on_failure),
                        ended_tx,
                    );
                    match std::panic::AssertUnwindSafe(job).catch_unwind().await {
                        Ok(summary) => summary,
                        // A bug in a step must not leak what the job created.
                        Err(_) => {
                            let unwound = ctx.undo.unwind().await;
                            let error = format!(
                                "internal error (a step panicked); cleaned up {} resource(s)",
                                unwound.undone.len()
                            );
                            ctx.bus.emit(Event::JobFinished {
                                job: ctx.name.clone(),
                                status: JobStatus::Failed,
                                duration_ms: 0,
                                error: Some(error.clone()),
                            });
                            JobSummary {
                                job: ctx.name.clone(),
                                status: JobStatus::Failed,
                                duration_ms: 0,
                                error: Some(error),
                                artifacts: vec![],
                            }
                        }
                    }
                }
                None => JobSummary {
                    job: ctx.name.clone(),
                    status: JobStatus::Cancelled,
                    duration_ms: 0,
                    error: Some("cancelled before it started".into()),
                    artifacts: vec![],
                },
            };
            if summary.status == JobStatus::Failed && opts.fail_fast {
                siblings.cancel();
            }
            (order, summary)
        });
    }
    // Every job's steps are over when each has sent what it made (a job
    // that never ran, or panicked, sends nothing: then the records wait
    // for the tasks). The records and the catalog registration go ahead
    // while the jobs unwind their undo stacks.
    let mut early = vec![];
    for rx in ended {
        early.push(rx.await.ok());
    }
    let summaries = match early.into_iter().collect::<Option<Vec<JobSummary>>>() {
        Some(mut early) => {
            let ((), done) = tokio::join!(
                write_manifests(plan, opts, &mut early, &job_signers, &fp_inputs, &bus),
                join_jobs(&mut tasks, &bus)
            );
            // What the records decided (a failed registration fails the
            // job), with the jobs' whole time, cleanup included.
            for s in early.iter_mut() {
                if let Some(d) = done.iter().find(|d| d.job == s.job) {
                    s.duration_ms = d.duration_ms;
                }
            }
            early
        }
        None => {
            let mut done = join_jobs(&mut tasks, &bus).await;
            write_manifests(plan, opts, &mut done, &job_signers, &fp_inputs, &bus).await;
            done
        }
    };
    for key in keys.values() {
        key.close().await;
    }
    // Jobs removed their own work directories; drop the build's, if empty.
    let _ = std::fs::remove_dir(build_work_dir(&opts.state_dir, &plan.build_id));
    finish(plan, summaries, started, &bus)
}

/// Waits for every job's task (its cleanup included); their summaries in
/// plan order.
async fn join_jobs(
    tasks: &mut tokio::task::JoinSet<(usize, JobSummary)>,
    bus: &EventBus,
) -> Vec<JobSummary> {
    let mut results = vec![];
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(r) => results.push(r),
            Err(e) => bus.emit(Event::Error {
                job: None,
                message: format!("a job panicked: {e}"),
                file: None,
                line: None,
                column: None,
            }),
        }
    }
    results.sort_by_key(|(order, _)| *order);
    results.into_iter().map(|(_, s)| s).collect()
}

/// Secrets and sensitive variables by name, as the leak scan needs them.
fn leak_scan_inputs(plan: &BuildPlan) -> Vec<(String, String)> {
    let mut out = vec![];
    for (name, v) in &plan.secret_values {
        let mut values = vec![];
        v.sensitive_strings(&mut values);
        out.extend(values.into_iter().map(|s| (name.clone(), s)));
    }
    for var in plan.variables.iter().filter(|v| v.value.is_sensitive()) {
        let mut values = vec![];
        var.value.sensitive_strings(&mut values);
        out.extend(values.into_iter().map(|s| (format!("var.{}", var.name), s)));
    }
    out
}

fn finish(
    plan: &BuildPlan,
    jobs: Vec<JobSummary>,
    started: Instant,
    bus: &EventBus,
) -> Vec<JobSummary> {
    let count = |s: JobStatus| jobs.iter().filter(|j| j.status == s).count();
    bus.emit(Event::Summary {
        build_id: plan.build_id.clone(),
        succeeded: count(JobStatus::Succeeded),
        failed: count(JobStatus::Failed),
        cancelled: count(JobStatus::Cancelled),
        duration_ms: started.elapsed().as_millis() as u64,
        jobs: jobs.clone(),
    });
    jobs
}

fn preflight(
    job: &JobPlan,
    builders: &Builders,
    template_dir: &Path,
) -> Result<Provisioners, JobError> {
    let builder = builders.get(&job.source_type).ok_or_else(|| {
        JobError::NotSupported(format!("no builder for source type `{}`", job.source_type))
    })?;
    builder.preflight(job).map_err(JobError::Launch)?;
    if let Some(p) = &job.policy {
        // A policy that does not parse would fail at registration, after
        // the whole build: refuse it before anything is created.
        crate::policy::Policy::load(&p.files, &p.entrypoint).map_err(|e| JobError::Policy {
            at: p.at.clone(),
            message: e.to_string(),
        })?;
    }
    if let (Some(t), false) = (job.tests.first(), builder.can_test()) {
        return Err(JobError::NotSupported(format!(
            "{}: `[[build.test]]` on `{}` sources is not supported yet (OCI images, QEMU disks and AMIs only)",
            t.at, job.source_type
        )));
    }
    job.provisioners
        .iter()
        .map(|p| {
            provisioner::for_plan(p, template_dir)
                .and_then(|prov| {
                    prov.check_source(&job.source_type)?;
                    Ok(prov)
                })
                .map(|prov| (p.index, p.kind.clone(), prov))
                .map_err(|source| JobError::Provision {
                    index: p.index,
                    kind: p.kind.clone(),
                    source,
                })
        })
        .collect()
}
