//! What the log keeps of a `kiln rescan` of one catalog version: which
//! feeds and VEX documents it read (digests, feed dates, who signed each
//! VEX), and per artifact the findings with their VEX status. The policy
//! gate reads the latest one of a version (`input.vulnerabilities`,
//! docs/policy.md); `kiln audit` shows and verifies it like every entry.
//! The vulnerability module (`vuln::record`) makes these records; the
//! catalog only stores and replays them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A rescan of `image` `version`, as logged (`action: "rescan"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RescanRecord {
    pub image: String,
    pub version: String,
    /// Counted findings per severity (`critical` … `unknown`) over the
    /// version's artifacts, and `vex_not_affected`: those a live VEX
    /// statement took out.
    pub counts: BTreeMap<String, u64>,
    pub feeds: Vec<FeedRecord>,
    #[serde(default)]
    pub vex: Vec<VexRecord>,
    pub artifacts: Vec<ArtifactScan>,
}

/// A feed file or folder as read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedRecord {
    pub path: String,
    /// `sha256:` of the file, or of the folder's `.json` files (names and
    /// digests, canonical JSON).
    pub digest: String,
    /// How current it is: the newest OSV `modified` of its records, else
    /// the newest file's modification time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<String>,
}

/// A VEX document as read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VexRecord {
    pub path: String,
    /// `sha256:` of the file.
    pub digest: String,
    /// The key id of the `--vex-key` that verified it; absent for an
    /// unsigned document taken as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
}

/// One artifact of the version: scanned, or why not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactScan {
    /// The job that built it (`build.oci.x`).
    pub job: String,
    pub artifact: String,
    /// Whether its recorded SBOM was read and matched.
    pub scanned: bool,
    /// Why it was not: the SBOM or manifest does not match its digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub findings: Vec<FindingRecord>,
}

/// One vulnerable package of an artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingRecord {
    pub id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    pub package: String,
    pub version: String,
    pub purl: String,
    /// `critical`, `high`, `medium`, `low` or `unknown`.
    pub severity: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed: Option<String>,
    /// The live VEX statement that covered it at the rescan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vex: Option<VexStatementRecord>,
}

/// A VEX statement applied to a finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VexStatementRecord {
    /// `not_affected`, `fixed`, `affected` or `under_investigation`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
    pub author: String,
    /// RFC 3339: after it the statement no longer counts (the gate checks
    /// it again when it reads the record).
    pub expires: String,
    /// `FILE#N`.
    pub statement: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
}

impl VexStatementRecord {
    /// Whether it takes its finding out of the count (at the rescan).
    pub fn suppresses(&self) -> bool {
        matches!(self.status.as_str(), "not_affected" | "fixed")
    }
}

impl RescanRecord {
    /// `1 critical, 2 high; 1 not affected per VEX`.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = ["critical", "high", "medium", "low", "unknown"]
            .iter()
            .filter_map(|s| {
                let n = self.counts.get(*s).copied().unwrap_or(0);
                (n > 0).then(|| format!("{n} {s}"))
            })
            .collect();
        let mut out = if parts.is_empty() {
            "no findings".to_string()
        } else {
            parts.join(", ")
        };
        let vexed = self.counts.get("vex_not_affected").copied().unwrap_or(0);
        if vexed > 0 {
            out.push_str(&format!("; {vexed} not affected per VEX"));
        }
        let unscanned = self.artifacts.iter().filter(|a| !a.scanned).count();
        if unscanned > 0 {
            out.push_str(&format!("; {unscanned} artifact(s) not scanned"));
        }
        out
    }
}

/// A version's latest rescan, with its log position.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoggedRescan {
    pub seq: u64,
    pub at: String,
    pub by: String,
    #[serde(flatten)]
    pub record: RescanRecord,
}
