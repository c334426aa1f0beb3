//! `input.vulnerabilities`: one artifact's findings from the latest
//! `kiln rescan` the catalog logged for its version, as a policy reads
//! them. VEX statements are judged again at evaluation time: one that
//! has expired since the rescan no longer covers its finding, which
//! counts again. No logged rescan: `scanned: false`.

use std::time::SystemTime;

use serde_json::{json, Value};

use crate::catalog::rescan::{FindingRecord, LoggedRescan};

const SEVERITIES: [&str; 5] = ["critical", "high", "medium", "low", "unknown"];

/// Days from `t` (RFC 3339) to `now`, to two decimals.
fn age_days(t: &str, now: SystemTime) -> Option<f64> {
    let then = humantime::parse_rfc3339_weak(t).ok()?;
    let secs = now.duration_since(then).unwrap_or_default().as_secs_f64();
    Some((secs / 864.0).round() / 100.0)
}

/// Whether a statement's expiry has passed.
fn expired(expires: &str, now: SystemTime) -> bool {
    humantime::parse_rfc3339_weak(expires).map_or(true, |t| t <= now)
}

/// One finding for the policy: `status` is the live VEX statement's
/// (else `affected`); `vex` is present only when a live `not_affected`
/// or `fixed` statement takes it out of the count — so `not f.vex` reads
/// "no VEX says this does not matter".
fn finding(f: &FindingRecord, now: SystemTime) -> (Value, bool) {
    let live = f.vex.as_ref().filter(|v| !expired(&v.expires, now));
    let counts = !live.is_some_and(|v| v.suppresses());
    let mut out = json!({
        "id": f.id,
        "aliases": f.aliases,
        "package": f.package,
        "version": f.version,
        "purl": f.purl,
        "severity": f.severity,
        "fixed": f.fixed,
        "status": live.map_or("affected", |v| v.status.as_str()),
        "counts": counts,
    });
    if let Some(v) = live.filter(|v| v.suppresses()) {
        out["vex"] = json!({
            "status": v.status,
            "justification": v.justification,
            "author": v.author,
            "expires": v.expires,
            "statement": v.statement,
            "signed_by": v.signed_by,
        });
    }
    if f.vex.is_some() && live.is_none() {
        out["vex_expired"] = true.into();
    }
    (out, counts)
}

/// The section for the artifact built by `job` (or with id `artifact`).
pub fn section(
    rescan: Option<&LoggedRescan>,
    job: Option<&str>,
    artifact: Option<&str>,
    now: SystemTime,
) -> Value {
    let Some(r) = rescan else {
        return json!({ "scanned": false, "rescan": null, "findings": [] });
    };
    let scan = r
        .record
        .artifacts
        .iter()
        .find(|a| Some(a.job.as_str()) == job)
        .or_else(|| {
            r.record
                .artifacts
                .iter()
                .find(|a| Some(a.artifact.as_str()) == artifact)
        });
    let mut counts = serde_json::Map::new();
    for s in SEVERITIES {
        counts.insert(s.into(), 0.into());
    }
    counts.insert("vex_not_affected".into(), 0.into());
    let mut findings = vec![];
    for f in scan.map(|a| a.findings.as_slice()).unwrap_or_default() {
        let (v, counted) = finding(f, now);
        let key = if counted {
            f.severity.as_str()
        } else {
            "vex_not_affected"
        };
        let n = counts.get(key).and_then(Value::as_u64).unwrap_or(0);
        counts.insert(key.into(), (n + 1).into());
        findings.push(v);
    }
    let oldest_feed = r
        .record
        .feeds
        .iter()
        .filter_map(|f| f.modified.as_deref())
        .filter_map(|m| age_days(m, now))
        .fold(None, |acc: Option<f64>, d| {
            Some(acc.map_or(d, |a| a.max(d)))
        });
    json!({
        "scanned": scan.is_some_and(|a| a.scanned),
        "error": scan.and_then(|a| a.error.clone()),
        "rescan": r.seq,
        "scanned_at": r.at,
        "scanned_by": r.by,
        "scan_age_days": age_days(&r.at, now),
        "feeds": r.record.feeds,
        "feed_age_days": oldest_feed,
        "vex": r.record.vex,
        "counts": counts,
        "findings": findings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::rescan::{
        ArtifactScan, FeedRecord, RescanRecord, VexRecord, VexStatementRecord,
    };

    fn logged(expires: &str) -> LoggedRescan {
        let f = |id: &str, vex: Option<VexStatementRecord>| FindingRecord {
            id: id.into(),
            aliases: vec![],
            package: "libssl3".into(),
            version: "3.0.11-1~deb12u1".into(),
            purl: "pkg:deb/debian/libssl3@3.0.11-1~deb12u1".into(),
            severity: "critical".into(),
            fixed: None,
            vex,
        };
        let vex = VexStatementRecord {
            status: "not_affected".into(),
            justification: Some("component_not_present".into()),
            author: "sec".into(),
            expires: expires.into(),
            statement: "v.json#1".into(),
            signed_by: Some("sha256:k".into()),
        };
        LoggedRescan {
            seq: 7,
            at: "2026-01-01T00:00:00Z".into(),
            by: "me".into(),
            record: RescanRecord {
                image: "web".into(),
                version: "1.0.0+1".into(),
                counts: Default::default(),
                feeds: vec![FeedRecord {
                    path: "osv".into(),
                    digest: "sha256:f".into(),
                    modified: Some("2025-12-31T00:00:00Z".into()),
                }],
                vex: vec![VexRecord {
                    path: "v.json".into(),
                    digest: "sha256:v".into(),
                    signed_by: Some("sha256:k".into()),
                }],
                artifacts: vec![ArtifactScan {
                    job: "b.oci.img".into(),
                    artifact: "oci-layout:x".into(),
                    scanned: true,
                    error: None,
                    findings: vec![f("CVE-1", None), f("CVE-2", Some(vex))],
                }],
            },
        }
    }

    #[test]
    fn findings_carry_live_vex_only_and_counts_follow() {
        let now = humantime::parse_rfc3339("2026-01-02T00:00:00Z").unwrap();
        let r = logged("2027-01-01T00:00:00Z");
        let s = section(Some(&r), Some("b.oci.img"), None, now);
        assert_eq!(s["scanned"], true);
        assert_eq!(s["rescan"], 7);
        assert_eq!(s["scan_age_days"], 1.0);
        assert_eq!(s["feed_age_days"], 2.0);
        assert_eq!(s["counts"]["critical"], 1);
        assert_eq!(s["counts"]["vex_not_affected"], 1);
        assert!(s["findings"][0].get("vex").is_none());
        assert_eq!(s["findings"][0]["status"], "affected");
        assert_eq!(s["findings"][1]["vex"]["signed_by"], "sha256:k");
        assert_eq!(s["findings"][1]["status"], "not_affected");
        // The statement expired after the rescan: the finding counts again.
        let r = logged("2026-01-01T12:00:00Z");
        let s = section(Some(&r), Some("b.oci.img"), None, now);
        assert_eq!(s["counts"]["critical"], 2);
        assert!(s["findings"][1].get("vex").is_none());
        assert_eq!(s["findings"][1]["vex_expired"], true);
        // Another artifact of the version, or no rescan at all.
        let s = section(Some(&r), Some("b.oci.other"), None, now);
        assert_eq!(s["scanned"], false);
        assert_eq!(section(None, None, None, now)["scanned"], false);
    }
}
