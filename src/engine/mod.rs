//! The build engine: runs each job (build × source) through its steps —
//! launch, provision…, snapshot — in parallel up to `--parallel`, with
//! fail-fast cancellation of siblings, Ctrl-C/SIGTERM cancellation, and an
//! undo stack per job that always unwinds (unless `--on-error=abort`).
//!
//! Architecture invariant: the engine only sees a resolved `BuildPlan`, and
//! reports only through events; it knows no builder's internals.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::builder::{BuildError, Builders};
use crate::job::scratch::build_work_dir;
use crate::job::{sanitize, Undo};
use crate::manifest;
use crate::provisioner::{self, ProvisionError, Provisioner};
use crate::sign::SigningKey;
use crate::template::plan::{BuildPlan, JobPlan};
use crate::ui::{ArtifactInfo, Event, EventBus, JobStatus, JobSummary, Stream};

// A test or an embedder drives the engine with its own builder, which
// needs the job runtime's types.
pub use crate::job::{JobContext, Journal, Resource};

/// What to do with a failed job's resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnError {
    /// Undo everything (the default).
    Cleanup,
    /// Leave the failed job's instance for inspection; `kiln cleanup` reaps it.
    Abort,
}

/// How to run a plan.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub parallel: usize,
    pub on_error: OnError,
    /// Cancel the other jobs when one fails.
    pub fail_fast: bool,
    pub state_dir: PathBuf,
    /// May a provisioner wait for a person (breakpoints)?
    pub interactive: bool,
    /// Where successful builds are registered (none: not registered).
    pub catalog: Option<Arc<crate::catalog::Catalog>>,
}

/// Why a job did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{0}")]
    NotSupported(String),
    #[error("launch: {0}")]
    Launch(BuildError),
    #[error("provisioner {index} ({kind}): {source}")]
    Provision {
        index: usize,
        kind: String,
        source: ProvisionError,
    },
    #[error("snapshot: {0}")]
    Snapshot(BuildError),
    #[error("sign: {0}")]
    Sign(String),
    #[error("cancelled")]
    Cancelled,
}

/// A job's provisioners with their index and type, ready to run.
type Provisioners = Vec<(usize, String, Box<dyn Provisioner>)>;

/// The signing key of a job, loaded once per key for the whole run.
async fn signing_key(
    job: &JobPlan,
    plan: &BuildPlan,
    template_dir: &Path,
    keys: &mut std::collections::HashMap<String, Arc<SigningKey>>,
) -> Result<Option<Arc<SigningKey>>, JobError> {
    let Some(sign) = &job.sign else {
        return Ok(None);
    };
    let spec = sign
        .get("key")
        .and_then(|v| v.as_interpolated())
        .unwrap_or_default();
    if let Some(k) = keys.get(&spec) {
        return Ok(Some(k.clone()));
    }
    let key = match spec.strip_prefix("vault-transit:") {
        Some(name) => SigningKey::from_vault_transit(name, &plan.vault).await,
        None => crate::sign::load_signing_key(&spec, template_dir),
    }
    .map_err(|e| JobError::Sign(e.to_string()))?;
    let key = Arc::new(key);
    keys.insert(spec, key.clone());
    Ok(Some(key))
}

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
                        opts.on_error,
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
    let mut summaries: Vec<JobSummary> = results.into_iter().map(|(_, s)| s).collect();
    write_manifests(plan, opts, &mut summaries, &job_signers, &fp_inputs, &bus).await;
    for key in keys.values() {
        key.close().await;
    }
    // Jobs removed their own work directories; drop the build's, if empty.
    let _ = std::fs::remove_dir(build_work_dir(&opts.state_dir, &plan.build_id));
    finish(plan, summaries, started, &bus)
}

/// A job's channels from `[build.register]`.
fn register_channels(job: &JobPlan) -> Vec<String> {
    match job.register.as_ref().and_then(|r| r.get("channels")) {
        Some(crate::template::Value::List(l)) => l
            .iter()
            .filter_map(crate::template::Value::as_interpolated)
            .collect(),
        _ => vec![],
    }
}

/// One build manifest per artifact of each successful job; then, when
/// every job succeeded and a catalog is open, the build is registered as
/// one new version (all its artifacts) and promoted to the channels of
/// `[build.register]`, in one locked change of the catalog.
async fn write_manifests(
    plan: &BuildPlan,
    opts: &RunOptions,
    jobs: &mut [JobSummary],
    signers: &std::collections::HashMap<String, Arc<SigningKey>>,
    fp_inputs: &std::collections::HashMap<String, serde_json::Value>,
    bus: &EventBus,
) {
    let fail_all = |jobs: &mut [JobSummary], message: String| {
        bus.emit(Event::Error {
            job: None,
            message: message.clone(),
            file: None,
            line: None,
            column: None,
        });
        for j in jobs.iter_mut().filter(|j| j.status == JobStatus::Succeeded) {
            j.status = JobStatus::Failed;
            j.error = Some(message.clone());
        }
    };
    let all_ok = !jobs.is_empty() && jobs.iter().all(|j| j.status == JobStatus::Succeeded);
    let has_artifacts = jobs.iter().any(|j| !j.artifacts.is_empty());
    let catalog = opts.catalog.as_deref();
    // Registering holds the catalog's lock from choosing the build number
    // to appending the entry, so the manifests can name the version.
    let mut writer = None;
    let mut registration = serde_json::Value::Null;
    let mut channels: Vec<String> = vec![];
    if let (Some(c), true) = (catalog, all_ok && has_artifacts) {
        let w = match c.writer().await {
            Ok(w) => w,
            Err(e) => return fail_all(jobs, format!("catalog `{}`: {e}", c.location)),
        };
        let build = w
            .state
            .family(&plan.image.name)
            .map_or(1, |f| f.next_build());
        for job in &plan.jobs {
            for ch in register_channels(job) {
                if !channels.contains(&ch) {
                    channels.push(ch);
                }
            }
        }
        registration = serde_json::json!({
            "catalog": c.location,
            "image": plan.image.name,
            "version": format!("{}+{build}", plan.image.version),
            "build": build,
            "channels": channels,
        });
        writer = Some(w);
    } else if catalog.is_some() && !all_ok && !jobs.is_empty() {
        bus.emit(Event::Message {
            job: None,
            text: "not registered in the catalog: not every job succeeded".into(),
        });
    } else if catalog.is_some() && all_ok {
        bus.emit(Event::Message {
            job: None,
            text: "not registered in the catalog: the build made no artifact".into(),
        });
    }

    let dir = opts
        .state_dir
        .join("manifests")
        .join(sanitize(&plan.build_id));
    let now = std::time::SystemTime::now();
    let mut records = vec![];
    let mut written = vec![];
    for summary in jobs.iter_mut().filter(|j| j.status == JobStatus::Succeeded) {
        let Some(job) = plan.jobs.iter().find(|j| j.name() == summary.job) else {
            continue;
        };
        let finished = humantime::format_rfc3339_seconds(now).to_string();
        let started = humantime::format_rfc3339_seconds(
            now - std::time::Duration::from_millis(summary.duration_ms),
        )
        .to_string();
        let signer = signers.get(&summary.job).cloned();
        let mut failure = None;
        for (n, artifact) in summary.artifacts.iter_mut().enumerate() {
            let fingerprint = match fp_inputs.get(&job.name()) {
                Some(inputs) => manifest::fingerprint_with_base(inputs, artifact.base.as_deref()),
                None => manifest::fingerprint(plan, job, artifact.base.as_deref(), &[]),
            };
            let records_of = ArtifactRecords {
                times: (started.as_str(), finished.as_str()),
                fingerprint: &fingerprint,
                catalog: registration.clone(),
            };
            match write_artifact_records(
                &dir,
                plan,
                job,
                artifact,
                n + 1,
                records_of,
                signer.as_deref(),
                bus,
            )
            .await
            {
                Ok(files) => {
                    let parent = writer.as_ref().and_then(|w| {
                        let digest = artifact.base.as_deref()?.rsplit_once('@')?.1;
                        let (image, v) = w.state.by_digest(digest)?;
                        Some(format!("{image} {}", v.registration.version))
                    });
                    records.push(crate::catalog::ArtifactRecord {
                        job: job.name(),
                        kind: artifact.kind.clone(),
                        id: artifact.id.clone(),
                        digest: artifact.digest.clone(),
                        base: artifact.base.clone(),
                        endpoint: artifact.endpoint.clone(),
                        parent,
                        fingerprint,
                        manifest_digest: Some(files.manifest_digest),
                        manifest: artifact.manifest.clone(),
                        signed_manifest_digest: files.signed_manifest_digest,
                        signatures: artifact.signatures.clone(),
                        signer: signer
                            .as_ref()
                            .map(|k| crate::catalog::chain::key_id(&k.public_pem)),
                    });
                    written.extend(files.paths);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if let Some(message) = failure {
            bus.emit(Event::Error {
                job: Some(summary.job.clone()),
                message: message.clone(),
                file: None,
                line: None,
                column: None,
            });
            summary.status = JobStatus::Failed;
            summary.error = Some(message);
        }
    }
    let (Some(mut w), Some(c)) = (writer, catalog) else {
        return;
    };
    if jobs.iter().any(|j| j.status != JobStatus::Succeeded) {
        // A manifest failed: register nothing, keep no manifest naming a
        // version that does not exist.
        remove_files(&written);
        return;
    }
    let version = registration["version"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let registered = async {
        // Signed with the build's key when it has one, else the operator's.
        let own;
        let key = match plan.jobs.iter().find_map(|j| signers.get(&j.name())) {
            Some(k) => k.as_ref(),
            None => {
                own = c.operator_key()?;
                &own
            }
        };
        let actor = crate::catalog::actor();
        let change = crate::catalog::Action::Register(crate::catalog::Registration {
            image: plan.image.name.clone(),
            version: version.clone(),
            build: registration["build"].as_u64().unwrap_or_default(),
            build_id: plan.build_id.clone(),
            template_digest: plan.template_digest.clone(),
            artifacts: records,
        });
        w.record(change, &actor, key).await?;
        for ch in &channels {
            crate::catalog::check_channel(ch)?;
            let change = crate::catalog::Action::Promote {
                image: plan.image.name.clone(),
                version: version.clone(),
                channel: ch.clone(),
            };
            w.record(change, &actor, key).await?;
        }
        let state = w.state.clone();
        w.commit().await?;
        Ok::<_, crate::catalog::CatalogError>(state)
    }
    .await;
    let state = match registered {
        Ok(s) => s,
        Err(e) => {
            remove_files(&written);
            return fail_all(
                jobs,
                format!("cannot register in the catalog `{}`: {e}", c.location),
            );
        }
    };
    bus.emit(Event::Message {
        job: None,
        text: format!(
            "registered {} {version} in the catalog{}",
            plan.image.name,
            if channels.is_empty() {
                String::new()
            } else {
                format!("; promoted to {}", channels.join(", "))
            }
        ),
    });
    let Some(v) = state
        .family(&plan.image.name)
        .and_then(|f| f.version(&version))
    else {
        return;
    };
    for ch in &channels {
        match crate::catalog::publish::channel(v, ch).await {
            Ok(p) => {
                for d in p.done {
                    bus.emit(Event::Message {
                        job: None,
                        text: format!("channel {ch}: {d}"),
                    });
                }
                for n in p.not_supported {
                    bus.emit(Event::Message {
                        job: None,
                        text: format!("channel {ch}: {n}"),
                    });
                }
            }
            Err(e) => fail_all(
                jobs,
                format!("promoted to `{ch}` in the catalog, but {e}; retry with `kiln images promote {} {version} {ch}`", plan.image.name),
            ),
        }
    }
}

fn remove_files(paths: &[PathBuf]) {
    for p in paths {
        let _ = std::fs::remove_file(p);
    }
}

/// What goes into an artifact's records besides the artifact.
struct ArtifactRecords<'a> {
    times: (&'a str, &'a str),
    fingerprint: &'a str,
    catalog: serde_json::Value,
}

/// The files written for an artifact.
struct WrittenRecords {
    paths: Vec<PathBuf>,
    manifest_digest: String,
    signed_manifest_digest: Option<String>,
}

fn sha256_of(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// The manifest of one artifact and, when the build signs, its signed
/// provenance (beside the manifest, and attached to registry images) and
/// the manifest's own DSSE envelope.
#[allow(clippy::too_many_arguments)]
async fn write_artifact_records(
    dir: &Path,
    plan: &BuildPlan,
    job: &JobPlan,
    artifact: &mut ArtifactInfo,
    n: usize,
    records: ArtifactRecords<'_>,
    signer: Option<&SigningKey>,
    bus: &EventBus,
) -> Result<WrittenRecords, String> {
    let (started, finished) = records.times;
    let say = |text: String| {
        bus.emit(Event::Message {
            job: Some(job.name()),
            text,
        })
    };
    fs_err::create_dir_all(dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    let stem = manifest::stem(job, n);
    let mut paths = vec![];
    let mut provenance = serde_json::Value::Null;
    if let Some(key) = signer {
        let statement = crate::sign::provenance::statement(plan, job, artifact, started, finished);
        let body = serde_json::to_vec(&statement).expect("JSON serializes");
        let env = crate::sign::dsse::sign(crate::sign::provenance::PAYLOAD_TYPE, &body, key)
            .await
            .map_err(|e| e.to_string())?;
        let env_bytes = serde_json::to_vec(&env).expect("JSON serializes");
        let path = dir.join(format!("{stem}.intoto.json"));
        manifest::write_atomic(&path, &env_bytes)
            .map_err(|e| format!("cannot write provenance: {e}"))?;
        paths.push(path.clone());
        #[allow(unused_mut)]
        let mut attached = serde_json::Value::Null;
        #[cfg(feature = "oci")]
        if let (Some(r), Some(digest)) = (
            artifact.id.strip_prefix("registry:"),
            artifact.digest.as_deref(),
        ) {
            let target: oci_client::Reference = r.parse().map_err(|e| format!("`{r}`: {e}"))?;
            let att = crate::sign::cosign::attach_attestation(&target, digest, &env_bytes)
                .await
                .map_err(|e| e.to_string())?;
            say(format!("provenance attached: `{att}`"));
            attached = format!("registry:{att}").into();
        }
        say(format!("provenance `{}`", path.display()));
        provenance = serde_json::json!({ "file": path, "attestation": attached, "predicateType": crate::sign::provenance::PREDICATE_TYPE });
    }
    let (path, bytes) = manifest::write(
        dir,
        plan,
        job,
        artifact,
        n,
        started,
        finished,
        provenance,
        records.fingerprint,
        records.catalog,
    )
    .map_err(|e| format!("cannot write the build manifest: {e}"))?;
    paths.push(path.clone());
    artifact.manifest = Some(path.display().to_string());
    say(format!("manifest `{}`", path.display()));
    let mut signed_manifest_digest = None;
    if let Some(key) = signer {
        let env =
            crate::sign::dsse::sign(crate::sign::provenance::MANIFEST_PAYLOAD_TYPE, &bytes, key)
                .await
                .map_err(|e| e.to_string())?;
        let signed = dir.join(format!("{stem}.dsse.json"));
        let env_bytes = serde_json::to_vec(&env).expect("JSON serializes");
        manifest::write_atomic(&signed, &env_bytes)
            .map_err(|e| format!("cannot write the signed manifest: {e}"))?;
        paths.push(signed.clone());
        signed_manifest_digest = Some(sha256_of(&env_bytes));
        say(format!("signed manifest `{}`", signed.display()));
    }
    Ok(WrittenRecords {
        paths,
        manifest_digest: sha256_of(&bytes),
        signed_manifest_digest,
    })
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
    job.provisioners
        .iter()
        .map(|p| {
            provisioner::for_plan(p, template_dir)
                .map(|prov| (p.index, p.kind.clone(), prov))
                .map_err(|source| JobError::Provision {
                    index: p.index,
                    kind: p.kind.clone(),
                    source,
                })
        })
        .collect()
}

/// Runs one job's steps, then unwinds its undo stack.
async fn run_job(
    ctx: &JobContext,
    builder: &dyn crate::builder::Builder,
    provisioners: &Provisioners,
    signer: Option<&SigningKey>,
    on_error: OnError,
) -> JobSummary {
    let started = Instant::now();
    ctx.bus.emit(Event::JobStarted {
        job: ctx.name.clone(),
    });
    let steps = async {
        let mut instance = step(ctx, "launch", builder.launch(ctx))
            .await
            .map_err(JobError::Launch)?;
        for (index, kind, p) in provisioners {
            step(
                ctx,
                &format!("provision {index} ({kind})"),
                p.provision(ctx, instance.communicator()),
            )
            .await
            .map_err(|source| JobError::Provision {
                index: *index,
                kind: kind.clone(),
                source,
            })?;
        }
        let mut artifacts = step(ctx, "snapshot", instance.snapshot(ctx))
            .await
            .map_err(JobError::Snapshot)?;
        let reports = ctx.hardening_reports();
        for a in &mut artifacts {
            a.hardening = reports.clone();
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
    let keep = matches!(result, Err(ref e) if !matches!(e, JobError::Cancelled))
        && on_error == OnError::Abort;
    if let (Err(JobError::Provision { index, .. }), OnError::Cleanup) = (&result, on_error) {
        ctx.message(format!(
            "hint: `kiln build --on-error=abort` keeps the instance as provisioner {index} left it (then listed here, and removed with `kiln cleanup`); a `type = \"breakpoint\"` provisioner before it pauses the build there so you can enter the instance"
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
    let (status, error, artifacts) = match result {
        Ok(a) => (JobStatus::Succeeded, None, a),
        Err(JobError::Cancelled) => (JobStatus::Cancelled, Some("cancelled".to_string()), vec![]),
        Err(e) => (JobStatus::Failed, Some(e.to_string()), vec![]),
    };
    for a in &artifacts {
        ctx.bus.emit(Event::Artifact {
            job: ctx.name.clone(),
            artifact: a.clone(),
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
