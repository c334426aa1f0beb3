//! Whether a build is due: `[build.rebuild] when` against the catalog.
//! `inputs` and `base` compare the job's input fingerprint now (its base
//! resolved, nothing launched) with the newest active version's, telling
//! the two apart by fingerprinting once more with the recorded base;
//! `age:D` compares the newest version's age; `security-updates` runs
//! `provisioners/checks/security-updates.sh` (shipped in the binary) in a
//! throw-away instance of the newest image. `kiln plan` shows the
//! decision; `kiln build --skip-unchanged` obeys it.

use std::path::Path;

use serde::Serialize;

use crate::builder::Builders;
use crate::catalog::Catalog;
use crate::manifest::fingerprint;
use crate::template::plan::{BuildPlan, RebuildTrigger};

/// The policy when a build has no `[build.rebuild]`.
pub const DEFAULT_TRIGGERS: &[RebuildTrigger] = &[RebuildTrigger::Inputs, RebuildTrigger::Base];

/// What was decided for one job.
#[derive(Debug, Clone, Serialize)]
pub struct JobDecision {
    pub job: String,
    pub rebuild: bool,
    /// Why it is rebuilt, or why not.
    pub reasons: Vec<String>,
    pub fingerprint: String,
    pub base: Option<String>,
}

/// What was decided for a template.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub template: String,
    pub image: String,
    /// The newest active version, compared against.
    pub newest: Option<String>,
    pub rebuild: bool,
    pub jobs: Vec<JobDecision>,
}

impl Decision {
    /// One line for people: "rebuild: …" or "up to date: …".
    pub fn summary(&self) -> String {
        let why: Vec<String> = self
            .jobs
            .iter()
            .flat_map(|j| j.reasons.iter().map(move |r| format!("{}: {r}", j.job)))
            .collect();
        if self.rebuild {
            format!("rebuild {}: {}", self.image, why.join("; "))
        } else {
            format!(
                "up to date: {} {} ({})",
                self.image,
                self.newest.as_deref().unwrap_or("-"),
                why.join("; ")
            )
        }
    }
}

fn age_of(rfc3339: &str) -> Option<std::time::Duration> {
    let t = humantime::parse_rfc3339(rfc3339).ok()?;
    std::time::SystemTime::now().duration_since(t).ok()
}

fn round(d: std::time::Duration) -> String {
    humantime::format_duration(std::time::Duration::from_secs(d.as_secs())).to_string()
}

/// Decides, without launching anything, whether `plan` must be built.
pub async fn decide(
    plan: &BuildPlan,
    catalog: &Catalog,
    builders: &Builders,
    state_dir: &Path,
) -> Result<Decision, String> {
    let key = catalog.fingerprint_key().await.map_err(|e| e.to_string())?;
    let snap = catalog.snapshot().await.map_err(|e| e.to_string())?;
    let newest = snap.state.family(&plan.image.name).and_then(|f| {
        f.versions
            .iter()
            .filter(|v| v.is_active())
            .max_by_key(|v| v.registration.build)
    });
    let template_dir = plan.template_dir();
    let mut jobs = vec![];
    for job in &plan.jobs {
        let triggers: &[RebuildTrigger] = if job.rebuild.is_empty() {
            DEFAULT_TRIGGERS
        } else {
            &job.rebuild
        };
        let base = match builders.get(&job.source_type) {
            Some(b) => b
                .resolve_base(job, &template_dir, state_dir)
                .await
                .map_err(|e| format!("{}: cannot resolve the base: {e}", job.name()))?,
            None => None,
        };
        let now = fingerprint(plan, job, base.as_deref(), &key);
        let mut reasons = vec![];
        let mut rebuild = false;
        let recorded = newest.and_then(|v| {
            v.registration
                .artifacts
                .iter()
                .find(|a| a.job == job.name())
        });
        match (newest, recorded) {
            (None, _) => {
                rebuild = true;
                reasons.push(format!(
                    "no active version of `{}` in the catalog",
                    plan.image.name
                ));
            }
            (Some(v), None) => {
                rebuild = true;
                reasons.push(format!(
                    "{} has no artifact of this job",
                    v.registration.version
                ));
            }
            (Some(v), Some(a)) if a.fingerprint == now => {
                reasons.push(format!(
                    "inputs and base unchanged since {}",
                    v.registration.version
                ));
            }
            (Some(_), Some(a)) => {
                let base_moved = a.base != base;
                let only_base =
                    base_moved && fingerprint(plan, job, a.base.as_deref(), &key) == a.fingerprint;
                if base_moved {
                    let said = format!(
                        "base: {} → {}",
                        a.base.as_deref().unwrap_or("-"),
                        base.as_deref().unwrap_or("-")
                    );
                    if triggers.contains(&RebuildTrigger::Base) {
                        rebuild = true;
                        reasons.push(said);
                    } else {
                        reasons.push(format!("{said} (ignored: `base` is not a trigger)"));
                    }
                }
                if !only_base {
                    let said = "inputs changed (template, variables, provisioner files or kiln)"
                        .to_string();
                    if triggers.contains(&RebuildTrigger::Inputs) {
                        rebuild = true;
                        reasons.push(said);
                    } else {
                        reasons.push(format!("{said} (ignored: `inputs` is not a trigger)"));
                    }
                }
            }
        }
        for t in triggers {
            match t {
                RebuildTrigger::Age(max) => {
                    if let Some(v) = newest {
                        let age = age_of(&v.registered_at).unwrap_or_default();
                        if age > *max {
                            rebuild = true;
                            reasons.push(format!(
                                "age: {} was registered {} ago (more than {})",
                                v.registration.version,
                                round(age),
                                round(*max)
                            ));
                        }
                    }
                }
                RebuildTrigger::SecurityUpdates => {
                    let Some((v, a)) = newest.zip(recorded) else {
                        continue; // Nothing built yet: due anyway.
                    };
                    match security_updates(plan, job, a, builders, state_dir).await? {
                        Pending::Some(pkgs) => {
                            rebuild = true;
                            let shown: Vec<&str> =
                                pkgs.iter().take(10).map(String::as_str).collect();
                            reasons.push(format!(
                                "security-updates: {} pending in {} ({}{})",
                                pkgs.len(),
                                v.registration.version,
                                shown.join(", "),
                                if pkgs.len() > 10 { ", …" } else { "" }
                            ));
                        }
                        Pending::None => reasons.push(format!(
                            "security-updates: none pending in {}",
                            v.registration.version
                        )),
                        Pending::CannotCheck(why) => reasons.push(format!(
                            "security-updates: cannot check {}: {why}",
                            v.registration.version
                        )),
                    }
                }
                RebuildTrigger::Inputs | RebuildTrigger::Base => {}
            }
        }
        jobs.push(JobDecision {
            job: job.name(),
            rebuild,
            reasons,
            fingerprint: now,
            base,
        });
    }
    Ok(Decision {
        template: plan.template.display().to_string(),
        image: plan.image.name.clone(),
        newest: newest.map(|v| v.registration.version.clone()),
        rebuild: jobs.is_empty() || jobs.iter().any(|j| j.rebuild),
        jobs,
    })
}

/// The check run inside the newest image (shipped in the binary).
const SECURITY_CHECK: &str = include_str!("../../provisioners/checks/security-updates.sh");

/// What the security check found.
enum Pending {
    Some(Vec<String>),
    None,
    CannotCheck(String),
}

/// Runs the security check in a throw-away instance of the artifact
/// `recorded` (its image by digest, in place of the job's base).
async fn security_updates(
    plan: &BuildPlan,
    job: &crate::template::plan::JobPlan,
    recorded: &crate::catalog::ArtifactRecord,
    builders: &Builders,
    state_dir: &Path,
) -> Result<Pending, String> {
    let image = match (recorded.id.strip_prefix("registry:"), &recorded.digest) {
        (Some(r), Some(d)) if job.source_type == "oci" => {
            let repo = r.split_once('@').map_or(r, |(n, _)| n);
            let repo = match repo.rsplit_once(':') {
                Some((n, tag)) if !tag.contains('/') => n,
                _ => repo,
            };
            format!("registry:{repo}@{d}")
        }
        _ => {
            return Err(format!(
                "{}: the `security-updates` trigger is not supported yet for `{}` ({} artifacts); it checks registry images",
                job.name(),
                recorded.id,
                recorded.kind
            ))
        }
    };
    let mut probe_job = job.clone();
    probe_job
        .source
        .insert("from".into(), crate::template::Value::Str(image.clone()));
    let out = crate::engine::probe(
        plan,
        &probe_job,
        builders,
        state_dir,
        SECURITY_CHECK,
        std::time::Duration::from_secs(600),
    )
    .await
    .map_err(|e| format!("{}: security check in `{image}`: {e}", job.name()))?;
    match out.code {
        0 => {
            let mut pkgs: Vec<String> = out
                .stdout
                .into_iter()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect();
            pkgs.sort();
            pkgs.dedup();
            Ok(if pkgs.is_empty() {
                Pending::None
            } else {
                Pending::Some(pkgs)
            })
        }
        4 => Ok(Pending::CannotCheck(out.stderr.join(" "))),
        code => Err(format!(
            "{}: the security check in `{image}` failed (exit {code}): {}",
            job.name(),
            out.stderr.join(" ")
        )),
    }
}
