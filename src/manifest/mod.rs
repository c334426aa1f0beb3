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
pub fn canonical(v: &serde_json::Value) -> Vec<u8> {
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

/// `sha256:` of a file, or of a folder's files (relative paths and
/// contents, sorted), so a provisioner's uploaded tree counts whole.
fn path_digest(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_file() {
        return std::fs::read(path).ok().map(|b| sha256_hex(&b));
    }
    let mut files = vec![];
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).ok()?.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_symlink() => {
                    let target = std::fs::read_link(&p).ok()?;
                    files.push((p, format!("link:{}", target.display())));
                }
                Ok(_) => {
                    let bytes = std::fs::read(&p).ok()?;
                    files.push((p, sha256_hex(&bytes)));
                }
                Err(_) => return None,
            }
        }
    }
    files.sort();
    let listing: Vec<String> = files
        .iter()
        .map(|(p, d)| format!("{} {d}", p.strip_prefix(path).unwrap_or(p).display()))
        .collect();
    Some(sha256_hex(listing.join("\n").as_bytes()))
}

/// A provisioner's digest: its settings (secrets masked, never hashed) and
/// the content of every local file or folder it runs or copies (relative
/// paths against `template_dir`, keyed as written so a checkout's location
/// does not count).
pub fn provisioner_digest(p: &ProvisionerPlan, template_dir: &Path) -> serde_json::Value {
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
            if let Some(d) = path_digest(&template_dir.join(&path)) {
                files.insert(path, d.into());
            }
        }
    }
    // A hardening profile file counts with everything it includes (shipped
    // profiles change only with kiln's version, which is fingerprinted).
    if p.kind == "hardening" {
        use crate::provisioner::hardening::profile;
        let spec = p.config.get("profile").and_then(Value::as_interpolated);
        if let Some(spec) = spec.filter(|s| profile::is_path(s)) {
            if let Ok(loaded) = profile::load(&spec, template_dir) {
                files.insert(spec, loaded.digest.into());
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

/// `sha256:` of the template in its canonical layout (`kiln fmt`), so
/// comments and spacing do not count; the raw digest if it cannot be read.
fn canonical_template_digest(plan: &BuildPlan) -> String {
    std::fs::read_to_string(&plan.template)
        .ok()
        .and_then(|t| crate::template::fmt::format_template(&t).ok())
        .map(|t| sha256_hex(t.as_bytes()))
        .unwrap_or_else(|| plan.template_digest.clone())
}

/// The input fingerprint: what, if unchanged, gives the same image. The
/// canonical template, non-sensitive variable values, an HMAC (keyed with
/// the catalog's secret) of each sensitive one — never the value — the
/// resolved base, every file a provisioner runs or uploads, and kiln's
/// version.
pub fn fingerprint(plan: &BuildPlan, job: &JobPlan, base: Option<&str>, key: &[u8]) -> String {
    fingerprint_with_base(&fingerprint_inputs(plan, job, key), base)
}

/// Everything of the fingerprint but the base, read now: the engine takes
/// it before launching, so the fingerprint describes what the image was
/// built from even if files change during the build.
pub fn fingerprint_inputs(plan: &BuildPlan, job: &JobPlan, key: &[u8]) -> serde_json::Value {
    use hmac::Mac as _;
    let vars: serde_json::Map<String, serde_json::Value> = plan
        .variables
        .iter()
        .map(|v| {
            let value = if v.value.is_sensitive() {
                let mut values = vec![];
                v.value.sensitive_strings(&mut values);
                let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("any key length");
                for s in &values {
                    mac.update(s.as_bytes());
                    mac.update(&[0]);
                }
                json!({ "hmac": hex::encode(mac.finalize().into_bytes()) })
            } else {
                v.value.to_masked_json()
            };
            (v.name.clone(), value)
        })
        .collect();
    json!({
        "kiln": env!("CARGO_PKG_VERSION"),
        "template": canonical_template_digest(plan),
        "variables": vars,
        "job": job.name(),
        "provisioners": job.provisioners.iter().map(|p| provisioner_digest(p, &plan.template_dir())).collect::<Vec<_>>(),
    })
}

/// The fingerprint of `inputs` (from [`fingerprint_inputs`]) with `base`.
pub fn fingerprint_with_base(inputs: &serde_json::Value, base: Option<&str>) -> String {
    let mut input = inputs.clone();
    input["base"] = json!(base);
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
    fingerprint: &str,
    catalog: serde_json::Value,
) -> std::io::Result<(PathBuf, Vec<u8>)> {
    fs_err::create_dir_all(dir)?;
    let doc = json!({
        "kiln_version": env!("CARGO_PKG_VERSION"),
        "build_id": plan.build_id,
        "job": job.name(),
        "image": { "name": plan.image.name, "version": plan.image.version },
        "template": { "path": plan.template, "digest": plan.template_digest },
        "fingerprint": fingerprint,
        "base": artifact.base,
        "provisioners": job.provisioners.iter().map(|p| provisioner_digest(p, &plan.template_dir())).collect::<Vec<_>>(),
        "artifact": { "kind": artifact.kind, "id": artifact.id, "digest": artifact.digest },
        "signatures": artifact.signatures,
        "provenance": provenance,
        "hardening": artifact.hardening,
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
