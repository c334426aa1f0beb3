//! After the jobs: one manifest per artifact of each successful job, then
//! (when every job succeeded and a catalog is open) the build registered
//! as one version and promoted to its channels in one locked change, and
//! the channels published.

use std::path::PathBuf;
use std::sync::Arc;

use super::options::RunOptions;
use super::records::{write_artifact_records, ArtifactRecords};
use crate::job::sanitize;
use crate::manifest;
use crate::sign::SigningKey;
use crate::template::plan::{BuildPlan, JobPlan};
use crate::ui::{Event, EventBus, JobStatus, JobSummary};

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
pub(super) async fn write_manifests(
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
    // Signed with the build's key when it has one, else the operator's;
    // channel pointer files too.
    let own;
    let key = match plan.jobs.iter().find_map(|j| signers.get(&j.name())) {
        Some(k) => k.as_ref(),
        None => match c.operator_key_noting() {
            Ok((k, note)) => {
                if let Some(text) = note {
                    bus.emit(Event::Message { job: None, text });
                }
                own = k;
                &own
            }
            Err(e) => {
                remove_files(&written);
                return fail_all(
                    jobs,
                    format!("cannot register in the catalog `{}`: {e}", c.location),
                );
            }
        },
    };
    let mut denials: Vec<String> = vec![];
    let registered = async {
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
        let mut promoted = vec![];
        for ch in &channels {
            crate::catalog::check_channel(ch)?;
            // The policy gate before the channel moves; its decision is
            // logged either way, a denial keeps the channel where it is.
            let gate = w
                .state
                .family(&plan.image.name)
                .and_then(|f| f.version(&version).map(|v| (v, f.channels_of(&version))))
                .map(|(v, now)| {
                    crate::policy::gate::evaluate_version(
                        v,
                        ch,
                        crate::policy::input::Occasion::Register,
                        &now,
                    )
                })
                .transpose()
                .map_err(|e| crate::catalog::CatalogError::Refused(format!("policy: {e}")))?
                .flatten();
            if let Some(g) = gate {
                let d = g.decision(
                    &plan.image.name,
                    &version,
                    ch,
                    crate::policy::input::Occasion::Register,
                    opts.override_policy.as_deref(),
                );
                let denied = d.decision == crate::catalog::model::Decision::Deny;
                let text = crate::policy::gate::describe_denials(&d.denials);
                if d.decision == crate::catalog::model::Decision::Override {
                    bus.emit(Event::Message {
                        job: None,
                        text: format!(
                            "warning: `{ch}` moves against the policy (override: {}):\n{text}",
                            d.reason.as_deref().unwrap_or_default()
                        ),
                    });
                }
                let seq = w
                    .record(crate::catalog::Action::Policy(d), &actor, key)
                    .await?
                    .seq;
                if denied {
                    denials.push(format!(
                        "not promoted to `{ch}`: denied by policy (decision #{seq} in the catalog log):\n{text}\nhint: fix what the policy names and rebuild, or promote anyway with `kiln images promote {} {version} {ch} --override-policy REASON` (logged)",
                        plan.image.name
                    ));
                    continue;
                }
            }
            let change = crate::catalog::Action::Promote {
                image: plan.image.name.clone(),
                version: version.clone(),
                channel: ch.clone(),
            };
            w.record(change, &actor, key).await?;
            promoted.push(ch.clone());
        }
        let state = w.state.clone();
        let committed = w.commit().await?;
        let head = crate::catalog::chain::head(&committed);
        Ok::<_, crate::catalog::CatalogError>((state, head, promoted))
    }
    .await;
    let (state, head, channels) = match registered {
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
    if !denials.is_empty() {
        // Registered (the version exists, the decision is logged), but a
        // channel it was meant for refused it: the build fails.
        fail_all(jobs, denials.join("\n"));
    }
    let Some(v) = state
        .family(&plan.image.name)
        .and_then(|f| f.version(&version))
    else {
        return;
    };
    for ch in &channels {
        match crate::catalog::publish::channel(v, ch, key).await {
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
    // The head after the promotion, published beside the artifacts so a
    // log cut short later is caught by `kiln verify`.
    if let (false, Some(head)) = (channels.is_empty(), head) {
        match crate::catalog::head::publish(v, &head, key).await {
            Ok(p) => {
                for text in p.done.into_iter().chain(p.not_supported) {
                    bus.emit(Event::Message { job: None, text });
                }
            }
            Err(e) => fail_all(
                jobs,
                format!("promoted in the catalog, but {e}; retry with `kiln images promote {} {version} CHANNEL`", plan.image.name),
            ),
        }
    }
}

fn remove_files(paths: &[PathBuf]) {
    for p in paths {
        let _ = std::fs::remove_file(p);
    }
}
