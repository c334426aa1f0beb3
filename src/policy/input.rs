//! The one input document a policy sees, per artifact, built from what a
//! build recorded: its build manifest (template, provenance, hardening
//! reports, `[[build.test]]` results, SBOM record and the CycloneDX
//! document it names), the catalog version and the decision's context
//! (target channel, why it is asked) and the version's latest logged
//! `kiln rescan` ([`super::vulnerabilities`]). Its fields are documented
//! in docs/policy.md.

use std::path::Path;

use serde_json::{json, Value};

use super::PolicyError;

/// The input document's format, `input.kiln_input`.
pub const FORMAT: &str = "kiln.policy-input/v1";

/// Why a policy is being evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occasion {
    /// `kiln images promote`.
    Promote,
    /// A build's `[build.register] channels`.
    Register,
    /// `kiln verify --policy`: no channel moves.
    Verify,
}

impl Occasion {
    pub fn name(self) -> &'static str {
        match self {
            Occasion::Promote => "promote",
            Occasion::Register => "register",
            Occasion::Verify => "verify",
        }
    }
}

/// What the input names besides the manifest.
pub struct Context<'a> {
    pub occasion: Occasion,
    /// The target channel (none for `verify`).
    pub channel: Option<&'a str>,
    /// The catalog version (`1.4.0+7`), when catalogued.
    pub version: Option<&'a str>,
    /// The catalog status (`active`, …), when catalogued.
    pub status: Option<&'a str>,
    /// Channels that point at the version now.
    pub channels: &'a [String],
    /// The version's latest rescan in the catalog log.
    pub rescan: Option<&'a crate::catalog::rescan::LoggedRescan>,
}

/// The input document for one artifact's build manifest.
pub fn document(manifest: &Value, ctx: &Context<'_>) -> Result<Value, PolicyError> {
    let artifact = &manifest["artifact"];
    Ok(json!({
        "kiln_input": FORMAT,
        "action": ctx.occasion.name(),
        "channel": ctx.channel,
        "image": {
            "name": manifest["image"]["name"],
            "semver": manifest["image"]["version"],
            "version": ctx.version,
            "status": ctx.status,
            "channels": ctx.channels,
        },
        "artifact": {
            "job": manifest["job"],
            "kind": artifact["kind"],
            "id": artifact["id"],
            "digest": artifact["digest"],
            "base": manifest["base"],
        },
        "build": {
            "id": manifest["build_id"],
            "kiln_version": manifest["kiln_version"],
            "started": manifest["started"],
            "finished": manifest["finished"],
            "fingerprint": manifest["fingerprint"],
        },
        "template": {
            "path": manifest["template"]["path"],
            "digest": manifest["template"]["digest"],
            "source": manifest["template"]["source"],
        },
        "signer": {
            "key_id": manifest["signer"]["key_id"],
        },
        "provenance": provenance(&manifest["provenance"]),
        "hardening": hardening(&manifest["hardening"]),
        "tests": tests(&manifest["tests"]),
        "sbom": sbom(&manifest["sbom"])?,
        "vulnerabilities": super::vulnerabilities::section(
            ctx.rescan,
            manifest["job"].as_str(),
            artifact["id"].as_str(),
            std::time::SystemTime::now(),
        ),
    }))
}

fn provenance(p: &Value) -> Value {
    if p.is_null() {
        return json!({ "present": false });
    }
    json!({
        "present": true,
        "predicate_type": p["predicateType"],
        "attestation": p["attestation"],
    })
}

/// Each report: profile, mode, `fail_on`, summary, and its rules (id,
/// title, severity, result) — the evidence stays in the manifest.
fn hardening(list: &Value) -> Value {
    let reports: Vec<Value> = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            json!({
                "profile": r["profile"],
                "profile_digest": r["profile_digest"],
                "mode": r["mode"],
                "fail_on": r["fail_on"],
                "summary": r["summary"],
                "rules": r["rules"].as_array().into_iter().flatten().map(|rule| json!({
                    "id": rule["id"],
                    "title": rule["title"],
                    "severity": rule["severity"],
                    "result": rule["result"],
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Value::Array(reports)
}

/// `[[build.test]]` results: `ran` false when the build had none.
fn tests(t: &Value) -> Value {
    let Some(list) = t["tests"].as_array() else {
        return json!({ "ran": false, "result": null, "passed": 0, "failed": 0, "skipped": 0, "tests": [] });
    };
    let count = |o: &str| list.iter().filter(|x| x["outcome"] == o).count();
    let (passed, failed, skipped) = (count("pass"), count("fail"), count("skip"));
    let result = if failed > 0 {
        "FAILED"
    } else if skipped > 0 {
        "WARNED"
    } else {
        "PASSED"
    };
    json!({
        "ran": true,
        "result": result,
        "passed": passed,
        "failed": failed,
        "skipped": skipped,
        "tests": list.iter().map(|x| json!({ "name": x["name"], "at": x["at"], "outcome": x["outcome"] })).collect::<Vec<_>>(),
    })
}

/// The SBOM summary, and its packages read from the CycloneDX document
/// the manifest names (its digest checked first).
fn sbom(s: &Value) -> Result<Value, PolicyError> {
    if s.is_null() {
        return Ok(json!({ "present": false, "package_count": 0, "packages": [] }));
    }
    let mut packages = vec![];
    if let Some(file) = s["cyclonedx"]["file"].as_str() {
        let bytes = fs_err::read(Path::new(file)).map_err(|e| {
            PolicyError::Input(format!("cannot read the SBOM the manifest names: {e}"))
        })?;
        let digest = crate::manifest::sha256_hex(&bytes);
        if s["cyclonedx"]["digest"].as_str() != Some(digest.as_str()) {
            return Err(PolicyError::Input(format!(
                "the SBOM `{file}` is not the one the manifest recorded (digest {digest}, recorded {})",
                s["cyclonedx"]["digest"]
            )));
        }
        let doc: Value = serde_json::from_slice(&bytes)
            .map_err(|e| PolicyError::Input(format!("the SBOM `{file}`: {e}")))?;
        for c in doc["components"].as_array().into_iter().flatten() {
            packages.push(json!({
                "name": c["name"],
                "version": c["version"],
                "purl": c["purl"],
            }));
        }
    }
    Ok(json!({
        "present": true,
        "package_count": s["packages"],
        "os": s["os"],
        "packages": packages,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_without_evidence_gives_explicit_absences() {
        let m = json!({
            "image": { "name": "web", "version": "1.0.0" },
            "artifact": { "kind": "oci", "id": "registry:x/y:1", "digest": "sha256:ab" },
            "signer": null,
        });
        let ctx = Context {
            occasion: Occasion::Promote,
            channel: Some("prod"),
            version: Some("1.0.0+1"),
            status: Some("active"),
            channels: &[],
            rescan: None,
        };
        let d = document(&m, &ctx).unwrap();
        assert_eq!(d["kiln_input"], FORMAT);
        assert_eq!(d["channel"], "prod");
        assert_eq!(d["tests"]["ran"], false);
        assert_eq!(d["sbom"]["present"], false);
        assert_eq!(d["provenance"]["present"], false);
        assert_eq!(d["vulnerabilities"]["scanned"], false);
        assert_eq!(d["hardening"], json!([]));
        assert_eq!(d["signer"]["key_id"], Value::Null);
    }

    #[test]
    fn test_results_are_counted_and_judged() {
        let t = json!({ "tests": [
            { "name": "a", "at": "t:1:1", "outcome": "pass", "checks": [] },
            { "name": "b", "at": "t:2:1", "outcome": "skip", "checks": [] },
        ]});
        let r = tests(&t);
        assert_eq!(r["result"], "WARNED");
        assert_eq!(r["passed"], 1);
        assert_eq!(r["skipped"], 1);
    }
}
