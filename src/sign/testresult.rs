//! The evidence of an artifact's `[[build.test]]`: an in-toto Statement v1
//! with the test-result v0.1 predicate (`result`, the template as
//! `configuration`, the tests passed, warned — skipped — and failed),
//! signed into a DSSE envelope like the provenance, attached as a cosign
//! attestation to registry images and written beside layouts.

use serde_json::json;

use super::provenance::{sha256_map, STATEMENT_TYPE};
use crate::imagetest::{Outcome, TestReport};

pub const PREDICATE_TYPE: &str = "https://in-toto.io/attestation/test-result/v0.1";

/// What the tests were run from: the template and its digest.
pub struct TestConfiguration<'a> {
    pub template: &'a str,
    pub template_digest: &'a str,
    /// Where the run can be looked up (`kiln:build/ID`).
    pub url: String,
}

/// The statement for one tested artifact; `None` without a content digest
/// (in-toto requires one for every subject).
pub fn statement(report: &TestReport, config: &TestConfiguration) -> Option<serde_json::Value> {
    let digest = report.digest.as_deref()?;
    Some(json!({
        "_type": STATEMENT_TYPE,
        "subject": [{ "name": report.artifact, "digest": sha256_map(Some(digest)) }],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "result": report.result(),
            "configuration": [{
                "uri": format!("file:{}", config.template),
                "digest": sha256_map(Some(config.template_digest)),
            }],
            "url": config.url,
            "passedTests": report.named(Outcome::Pass),
            "warnedTests": report.named(Outcome::Skip),
            "failedTests": report.named(Outcome::Fail),
        },
    }))
}

/// The folder of `oci-layout:DIR[:TAG]` (a tag never contains `/`).
pub fn layout_dir(layout: &str) -> &str {
    match layout.rsplit_once(':') {
        Some((dir, tag)) if !tag.contains('/') && !dir.is_empty() => dir,
        _ => layout,
    }
}

/// Where the test attestation of an OCI layout or a disk image lives:
/// beside it, `DIR.tests.intoto.json` or `FILE.tests.intoto.json`.
pub fn beside(dir: &std::path::Path) -> std::path::PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(".tests.intoto.json");
    std::path::PathBuf::from(name)
}

/// The predicate's `result` of a verified statement, and whether its
/// subject is `digest`: what `kiln verify --require-tests` asks.
pub fn result_for(statement: &serde_json::Value, digest: &str) -> Result<String, String> {
    if statement["predicateType"] != PREDICATE_TYPE {
        return Err(format!(
            "predicate type {} is not {PREDICATE_TYPE}",
            statement["predicateType"]
        ));
    }
    let hex = digest.trim_start_matches("sha256:");
    let names_it = statement["subject"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| s["digest"]["sha256"] == hex);
    if !names_it {
        return Err(format!("its subject is not {digest}"));
    }
    statement["predicate"]["result"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| "no `result` in the predicate".into())
}

/// A passing result: `PASSED`, or `WARNED` (nothing failed, something
/// could not be checked in that kind of instance).
pub fn is_passing(result: &str) -> bool {
    result == "PASSED" || result == "WARNED"
}

/// Verifies a test attestation's DSSE envelope with `key` and returns its
/// result for `digest`; `Err` when the signature, the subject or the
/// result (not passing) is wrong.
pub fn verify_passing(
    envelope: &[u8],
    key: &sigstore::crypto::CosignVerificationKey,
    digest: &str,
) -> Result<String, String> {
    let body = super::dsse::verify_bytes(envelope, super::provenance::PAYLOAD_TYPE, key)
        .map_err(|e| e.to_string())?;
    let st: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("not a statement: {e}"))?;
    let result = result_for(&st, digest)?;
    if !is_passing(&result) {
        return Err(format!(
            "the tests did not pass: {result} ({})",
            st["predicate"]["failedTests"]
        ));
    }
    Ok(result)
}

/// The manifest digest of an OCI layout's image (`tag`, or its only one),
/// from its `index.json`.
pub fn layout_digest(dir: &std::path::Path, tag: Option<&str>) -> Result<String, String> {
    let path = dir.join("index.json");
    let index: serde_json::Value = std::fs::read(&path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    let pick = match tag {
        Some(t) => manifests
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == t),
        None if manifests.len() == 1 => manifests.first(),
        None => None,
    };
    pick.and_then(|m| m["digest"].as_str().map(String::from))
        .ok_or_else(|| {
            format!(
                "`{}` has no image{}",
                dir.display(),
                tag.map(|t| format!(" tagged `{t}`")).unwrap_or_default()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imagetest::{CheckResult, TestResult};

    fn report(outcomes: &[Outcome]) -> TestReport {
        TestReport {
            artifact: "oci-layout:/out".into(),
            digest: Some(format!("sha256:{}", "ab".repeat(32))),
            tests: outcomes
                .iter()
                .enumerate()
                .map(|(i, o)| TestResult {
                    name: format!("file /f{i}"),
                    at: format!("t.toml:{i}:1"),
                    outcome: *o,
                    checks: vec![CheckResult {
                        property: "exists".into(),
                        expected: "true".into(),
                        observed: "true".into(),
                        outcome: *o,
                    }],
                })
                .collect(),
        }
    }

    #[test]
    fn result_follows_the_worst_outcome() {
        let cfg = TestConfiguration {
            template: "t.toml",
            template_digest: &format!("sha256:{}", "cd".repeat(32)),
            url: "kiln:build/x".into(),
        };
        let s = statement(&report(&[Outcome::Pass, Outcome::Pass]), &cfg).unwrap();
        assert_eq!(s["predicate"]["result"], "PASSED");
        assert_eq!(s["predicate"]["passedTests"].as_array().unwrap().len(), 2);
        assert_eq!(s["subject"][0]["digest"]["sha256"], "ab".repeat(32));
        let s = statement(&report(&[Outcome::Pass, Outcome::Skip]), &cfg).unwrap();
        assert_eq!(s["predicate"]["result"], "WARNED");
        assert_eq!(s["predicate"]["warnedTests"][0], "file /f1 (t.toml:1:1)");
        let s = statement(&report(&[Outcome::Skip, Outcome::Fail]), &cfg).unwrap();
        assert_eq!(s["predicate"]["result"], "FAILED");
        let digest = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(result_for(&s, &digest).unwrap(), "FAILED");
        assert!(result_for(&s, "sha256:00").is_err());
        let mut no_digest = report(&[Outcome::Pass]);
        no_digest.digest = None;
        assert!(statement(&no_digest, &cfg).is_none());
    }
}
