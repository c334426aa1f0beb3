//! A version's rescan as the catalog log keeps it
//! ([`crate::catalog::rescan::RescanRecord`]): the findings of each
//! artifact, the counts, and the feeds and VEX documents read. Made here
//! from the scan's own types, so the catalog needs to know nothing of
//! feeds or VEX.

use std::collections::BTreeMap;

use crate::catalog::rescan::{
    ArtifactScan, FeedRecord, FindingRecord, RescanRecord, VexRecord, VexStatementRecord,
};

use super::feed::Feed;
use super::vex::Document;
use super::{Finding, Severity};

/// One artifact's outcome: its findings, or why it was not scanned
/// (`Ok(None)`: the build recorded no SBOM).
pub struct ArtifactOutcome<'a> {
    pub job: &'a str,
    pub artifact: &'a str,
    pub result: &'a Result<Option<Vec<Finding>>, String>,
}

/// The findings in the log's form.
pub fn finding(f: &Finding) -> FindingRecord {
    FindingRecord {
        id: f.id.clone(),
        aliases: f.aliases.clone(),
        package: f.package.clone(),
        version: f.version.clone(),
        purl: f.purl.clone(),
        severity: f.severity.name().to_string(),
        fixed: f.fixed.clone(),
        vex: f.vex.as_ref().map(|v| VexStatementRecord {
            status: v.status.clone(),
            justification: v.justification.clone(),
            author: v.author.clone(),
            expires: v.expires.clone(),
            statement: v.statement.clone(),
            signed_by: v.signed_by.clone(),
        }),
    }
}

/// Counted findings per severity, plus `vex_not_affected`.
pub fn counts<'a>(findings: impl IntoIterator<Item = &'a FindingRecord>) -> BTreeMap<String, u64> {
    let mut m: BTreeMap<String, u64> = Severity::ALL
        .iter()
        .map(|s| (s.name().to_string(), 0))
        .collect();
    m.insert("vex_not_affected".into(), 0);
    for f in findings {
        let key = if f.vex.as_ref().is_some_and(|v| v.suppresses()) {
            "vex_not_affected"
        } else {
            f.severity.as_str()
        };
        *m.entry(key.to_string()).or_default() += 1;
    }
    m
}

/// The record of one version's rescan.
pub fn version_record(
    image: &str,
    version: &str,
    artifacts: &[ArtifactOutcome<'_>],
    feeds: &[Feed],
    vex: &[Document],
) -> RescanRecord {
    let artifacts: Vec<ArtifactScan> = artifacts
        .iter()
        .map(|a| ArtifactScan {
            job: a.job.to_string(),
            artifact: a.artifact.to_string(),
            scanned: matches!(a.result, Ok(Some(_))),
            error: a.result.as_ref().err().cloned(),
            findings: a
                .result
                .as_ref()
                .ok()
                .and_then(Option::as_ref)
                .map(|fs| fs.iter().map(finding).collect())
                .unwrap_or_default(),
        })
        .collect();
    RescanRecord {
        image: image.to_string(),
        version: version.to_string(),
        counts: counts(artifacts.iter().flat_map(|a| &a.findings)),
        feeds: feeds
            .iter()
            .map(|f| FeedRecord {
                path: f.path.clone(),
                digest: f.digest.clone(),
                modified: f.modified.clone(),
            })
            .collect(),
        vex: vex
            .iter()
            .map(|d| VexRecord {
                path: d.file.clone(),
                digest: d.digest.clone(),
                signed_by: d.signed_by.clone(),
            })
            .collect(),
        artifacts,
    }
}
