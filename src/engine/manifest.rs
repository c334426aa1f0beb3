//! The build manifest: one JSON file per artifact of a successful job,
//! for people and tools auditing what was built, from what and how. Written
//! under `STATE/manifests/BUILD_ID/`. Signing (DSSE), provenance and catalog
//! fields are filled by their issues; until then they are empty, not absent.

use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::template::plan::{BuildPlan, JobPlan, ProvisionerPlan};
use crate::template::Value;
use crate::ui::ArtifactInfo;

fn sha256_hex(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// JSON with sorted keys (serde_json's maps are sorted without
/// `preserve_order`; sorting again keeps it independent of features).
fn canonical(v: &serde_json::Value) -> Vec<u8> {
    fn sort(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                serde_json::Value::Object(
                    keys.into_iter().map(|k| (k.clone(), sort(&m[k]))).collect(),
                )
            }
            serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(sort).collect()),
            v => v.clone(),
        }
    }
    serde_json::to_vec(&sort(v)).expect("JSON values serialize")
}

/// A provisioner's digest: its settings (secrets masked, never hashed) and
/// the content of every local file it runs or copies.
pub fn provisioner_digest(p: &ProvisionerPlan) -> serde_json::Value {
    let settings = serde_json::Value::Object(
        p.config
            .iter()
            .map(|(k, v)| (k.clone(), v.to_masked_json()))
            .collect(),
    );
    let mut files = serde_json::Map::new();
    for key in ["script", "scripts", "source"] {
        let paths: Vec<String> = match p.config.get(key) {
            Some(Value::Str(s)) => vec![s.clone()],
            Some(Value::List(l)) => l.iter().filter_map(Value::as_interpolated).collect(),
            _ => vec![],
        };
        for path in paths {
            if let Ok(bytes) = std::fs::read(&path) {
                files.insert(path, sha256_hex(&bytes).into());
            }
        }
    }
    json!({
        "index": p.index,
        "type": p.kind,
        "settings_digest": sha256_hex(&canonical(&settings)),
        "files": files,
    })
}

/// The input fingerprint: what, if unchanged, gives the same image. The
/// template, non-sensitive variable values (sensitive ones by name only),
/// the resolved base, the provisioners and kiln's version.
pub fn fingerprint(plan: &BuildPlan, job: &JobPlan, base: Option<&str>) -> String {
    let vars: serde_json::Map<String, serde_json::Value> = plan
        .variables
        .iter()
        .map(|v| (v.name.clone(), v.value.to_masked_json()))
        .collect();
    let input = json!({
        "kiln": env!("CARGO_PKG_VERSION"),
        "template": plan.template_digest,
        "variables": vars,
        "job": job.name(),
        "base": base,
        "provisioners": job.provisioners.iter().map(provisioner_digest).collect::<Vec<_>>(),
    });
    sha256_hex(&canonical(&input))
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
) -> std::io::Result<(PathBuf, Vec<u8>)> {
    fs_err::create_dir_all(dir)?;
    let doc = json!({
        "kiln_version": env!("CARGO_PKG_VERSION"),
        "build_id": plan.build_id,
        "job": job.name(),
        "image": { "name": plan.image.name, "version": plan.image.version },
        "template": { "path": plan.template, "digest": plan.template_digest },
        "fingerprint": fingerprint(plan, job, artifact.base.as_deref()),
        "base": artifact.base,
        "provisioners": job.provisioners.iter().map(provisioner_digest).collect::<Vec<_>>(),
        "artifact": { "kind": artifact.kind, "id": artifact.id, "digest": artifact.digest },
        "signatures": artifact.signatures,
        "provenance": provenance,
        "hardening": artifact.hardening,
        "catalog": null,
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
    format!("{}-{n}", super::journal::sanitize(&job.name()))
}

/// Writes a file by rename, so readers never see half of it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs_err::write(&tmp, bytes)?;
    fs_err::rename(&tmp, path)
}
