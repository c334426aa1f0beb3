//! The gate before a channel moves: a catalog version's artifacts, each
//! judged by the policy its build manifest names (`[build.policy]`),
//! and the decision the catalog's log records for it — allow, deny, or
//! an operator's override with its reason.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::input::{self, Context, Occasion};
use super::{Policy, PolicyError, PolicyFile, Verdict};
use crate::catalog::model::{Decision, DecisionFinding, PolicyDecision, Version};

/// One artifact's evaluation.
#[derive(Debug)]
pub struct Evaluation {
    /// The job that made it (`build.oci.x`).
    pub job: String,
    pub input: Value,
    pub verdict: Verdict,
}

/// A version's evaluations under its policies.
#[derive(Debug)]
pub struct GateResult {
    pub evaluations: Vec<Evaluation>,
    pub files: Vec<PolicyFile>,
    pub entrypoint: String,
}

impl GateResult {
    pub fn allowed(&self) -> bool {
        self.evaluations.iter().all(|e| e.verdict.allowed())
    }

    /// The denials, each with its artifact's job.
    pub fn denials(&self) -> Vec<DecisionFinding> {
        self.evaluations
            .iter()
            .flat_map(|e| {
                e.verdict.denials.iter().map(|d| DecisionFinding {
                    artifact: e.job.clone(),
                    rule: d.rule.clone(),
                    message: d.message.clone(),
                })
            })
            .collect()
    }

    /// What the log records: allow, deny, or (denied, with a reason)
    /// override.
    pub fn decision(
        &self,
        image: &str,
        version: &str,
        channel: &str,
        occasion: Occasion,
        override_reason: Option<&str>,
    ) -> PolicyDecision {
        let decision = match (self.allowed(), override_reason) {
            (true, _) => Decision::Allow,
            (false, Some(_)) => Decision::Override,
            (false, None) => Decision::Deny,
        };
        PolicyDecision {
            image: image.into(),
            version: version.into(),
            channel: channel.into(),
            occasion: occasion.name().into(),
            decision,
            entrypoint: self.entrypoint.clone(),
            policies: self
                .files
                .iter()
                .map(|f| crate::catalog::model::PolicyFileRecord {
                    path: f.path.clone(),
                    digest: f.digest.clone(),
                })
                .collect(),
            inputs: self
                .evaluations
                .iter()
                .map(|e| crate::manifest::sha256_hex(&crate::manifest::canonical(&e.input)))
                .collect(),
            denials: self.denials(),
            reason: (decision == Decision::Override)
                .then(|| override_reason.unwrap_or_default().to_string()),
        }
    }
}

/// The policy a build manifest names (`policy.files`, `policy.entrypoint`).
pub fn manifest_policy(manifest: &Value) -> Option<(Vec<PathBuf>, String)> {
    let p = manifest.get("policy").filter(|p| !p.is_null())?;
    let files = p["files"]
        .as_array()?
        .iter()
        .filter_map(|f| f["path"].as_str().map(PathBuf::from))
        .collect();
    let entry = p["entrypoint"]
        .as_str()
        .unwrap_or(super::DEFAULT_ENTRYPOINT)
        .to_string();
    Some((files, entry))
}

/// A version's manifest, checked against the digest the catalog
/// recorded for it.
pub fn read_manifest(path: &Path, recorded: Option<&str>) -> Result<Value, PolicyError> {
    let bytes = fs_err::read(path).map_err(|e| {
        PolicyError::Input(format!(
            "cannot read the build manifest the catalog names: {e}"
        ))
    })?;
    let digest = crate::manifest::sha256_hex(&bytes);
    if let Some(r) = recorded {
        if r != digest {
            return Err(PolicyError::Input(format!(
                "`{}` is not the build manifest the catalog recorded (digest {digest}, recorded {r})",
                path.display()
            )));
        }
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| PolicyError::Input(format!("`{}`: {e}", path.display())))
}

/// Judges a catalog version for `channel`: each artifact whose manifest
/// names a policy, under that policy (the files as they are now; the
/// log records their digests). `None` when no manifest names one.
pub fn evaluate_version(
    v: &Version,
    channel: &str,
    occasion: Occasion,
    channels_now: &[String],
) -> Result<Option<GateResult>, PolicyError> {
    let mut loaded: Vec<((Vec<PathBuf>, String), Policy)> = vec![];
    let mut evaluations = vec![];
    let mut files: Vec<PolicyFile> = vec![];
    let mut entrypoints: Vec<String> = vec![];
    for a in &v.registration.artifacts {
        let Some(path) = a.manifest.as_deref() else {
            continue;
        };
        let manifest = read_manifest(Path::new(path), a.manifest_digest.as_deref())?;
        let Some(spec) = manifest_policy(&manifest) else {
            continue;
        };
        let policy = match loaded.iter().find(|(s, _)| *s == spec) {
            Some((_, p)) => p.clone(),
            None => {
                let p = Policy::load(&spec.0, &spec.1)?;
                loaded.push((spec.clone(), p.clone()));
                p
            }
        };
        for f in &policy.files {
            if !files.contains(f) {
                files.push(f.clone());
            }
        }
        if !entrypoints.contains(&policy.entrypoint) {
            entrypoints.push(policy.entrypoint.clone());
        }
        let ctx = Context {
            occasion,
            channel: Some(channel),
            version: Some(&v.registration.version),
            status: Some(v.status.name()),
            channels: channels_now,
            rescan: v.rescan.as_ref(),
        };
        let doc = input::document(&manifest, &ctx)?;
        let verdict = policy.evaluate(&doc)?;
        evaluations.push(Evaluation {
            job: a.job.clone(),
            input: doc,
            verdict,
        });
    }
    if evaluations.is_empty() {
        return Ok(None);
    }
    Ok(Some(GateResult {
        evaluations,
        files,
        entrypoint: entrypoints.join(", "),
    }))
}

/// A denial for people: `rule: message (artifact)`, one per line.
pub fn describe_denials(denials: &[DecisionFinding]) -> String {
    denials
        .iter()
        .map(|d| format!("  {}: {} ({})", d.rule, d.message, d.artifact))
        .collect::<Vec<_>>()
        .join("\n")
}
