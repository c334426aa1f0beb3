//! The input fingerprint of a job: what, if unchanged, gives the same
//! image. `--skip-unchanged`, `kiln plan` and the catalog compare it.

use hmac::Mac as _;
use serde_json::json;
use sha2::Sha256;

use super::canonical::{canonical, sha256_hex};
use super::digest::provisioner_digest;
use crate::template::plan::{BuildPlan, JobPlan};

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
