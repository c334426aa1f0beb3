//! The build manifest: one JSON file per artifact of a successful job,
//! for people and tools auditing what was built, from what and how. Written
//! under `STATE/manifests/BUILD_ID/`: the template (digest, git source),
//! each provisioner as it ran ([`review`]), the artifact, signatures,
//! provenance, the signer's key id, hardening reports and catalog fields.
//! Below `sign` and `catalog`, which compute over its canonical JSON,
//! digests and fingerprints.

pub mod canonical;
pub mod digest;
pub mod fingerprint;
pub mod review;

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::template::plan::{BuildPlan, JobPlan};
use crate::ui::ArtifactInfo;
pub use canonical::{canonical, sha256_hex};
pub use digest::provisioner_digest;
pub use fingerprint::{fingerprint, fingerprint_inputs, fingerprint_with_base};
pub use review::{provisioner_record, template_source, warm_template_source};

/// `[build.policy]` as the manifest records it: each file with its
/// digest, and the entrypoint (what `kiln images promote` evaluates).
fn policy_record(p: &crate::template::plan::PolicyPlan) -> serde_json::Value {
    json!({
        "files": p.files.iter().map(|f| json!({
            "path": f,
            "digest": fs_err::read(f).ok().map(|b| sha256_hex(&b)),
        })).collect::<Vec<_>>(),
        "entrypoint": p.entrypoint,
        "at": p.at,
    })
}

/// Writes the manifest of one artifact; returns its path and bytes.
#[allow(clippy::too_many_arguments)]
pub fn write(
    dir: &Path,
    plan: &BuildPlan,
    job: &JobPlan,
    artifact: &ArtifactInfo,
    n: usize,
    started: &str,
    finished: &str,
    provenance: serde_json::Value,
    fingerprint: &str,
    catalog: serde_json::Value,
    signer: Option<&str>,
) -> std::io::Result<(PathBuf, Vec<u8>)> {
    fs_err::create_dir_all(dir)?;
    let run = |index: usize| {
        artifact
            .runs
            .iter()
            .find(|r| r["index"].as_u64() == Some(index as u64))
    };
    let doc = json!({
        "kiln_version": env!("CARGO_PKG_VERSION"),
        "build_id": plan.build_id,
        "job": job.name(),
        "image": { "name": plan.image.name, "version": plan.image.version },
        "template": { "path": plan.template, "digest": plan.template_digest, "source": template_source(plan) },
        "fingerprint": fingerprint,
        "base": artifact.base,
        "provisioners": job.provisioners.iter().map(|p| provisioner_record(p, &plan.template_dir(), run(p.index))).collect::<Vec<_>>(),
        "signer": signer.map(|key_id| json!({ "key_id": key_id })),
        "artifact": { "kind": artifact.kind, "id": artifact.id, "digest": artifact.digest },
        "signatures": artifact.signatures,
        "provenance": provenance,
        "hardening": artifact.hardening,
        "tests": artifact.tests,
        "sbom": artifact.sbom,
        "policy": job.policy.as_ref().map(policy_record),
        "catalog": catalog,
        "started": started,
        "finished": finished,
    });
    let path = dir.join(format!("{}.json", stem(job, n)));
    let bytes = serde_json::to_vec_pretty(&doc).expect("JSON values serialize");
    write_atomic(&path, &bytes)?;
    Ok((path, bytes))
}

/// The file name stem of an artifact's manifest and its companions.
pub fn stem(job: &JobPlan, n: usize) -> String {
    format!("{}-{n}", crate::job::sanitize(&job.name()))
}

/// Writes a file by rename, so readers never see half of it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs_err::write(&tmp, bytes)?;
    fs_err::rename(&tmp, path)
}
