//! Offline vulnerability rescans of recorded SBOMs: a build's CycloneDX
//! document (its digest checked against the manifest) matched against
//! feeds read from files ([`feed`]: OSV records, Debian's security
//! tracker) with each ecosystem's version ordering ([`version`], Alpine's
//! in [`apk`]), and OpenVEX statements ([`vex`], signed or not) that take
//! findings out of the count. `kiln rescan` (cli) walks the catalog,
//! presents the results and records them ([`record`]) in the catalog's
//! log, where the policy gate reads them.

pub mod apk;
pub mod feed;
pub mod record;
pub mod version;
pub mod vex;

use std::collections::BTreeMap;

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use feed::Advisory;
use version::{Ecosystem, Scheme};
use vex::Statement;

/// How bad a finding is; ordered from least to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Unknown,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Unknown,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Severity::Unknown => "unknown",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// One package of a recorded SBOM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SbomPackage {
    pub name: String,
    pub version: String,
    pub purl: String,
    /// The source package and version (the binary's own when none).
    pub source: String,
    pub source_version: String,
}

/// What a rescan reads of one artifact: its OS and packages.
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub os_id: Option<String>,
    pub os_version: Option<String>,
    pub packages: Vec<SbomPackage>,
}

/// The CycloneDX SBOM a build manifest records, after checking that the
/// file is the one whose digest the manifest holds. `Ok(None)`: the build
/// recorded no SBOM.
pub fn target_of(manifest: &Value) -> Result<Option<Target>, String> {
    let rec = &manifest["sbom"]["cyclonedx"];
    let Some(file) = rec["file"].as_str() else {
        return Ok(None);
    };
    let bytes = fs_err::read(Path::new(file))
        .map_err(|e| format!("cannot read the SBOM the manifest names: {e}"))?;
    let digest = crate::manifest::sha256_hex(&bytes);
    if rec["digest"].as_str() != Some(digest.as_str()) {
        return Err(format!(
            "the SBOM `{file}` is not the one the manifest recorded (digest {digest}, recorded {})",
            rec["digest"]
        ));
    }
    let doc: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("the SBOM `{file}`: {e}"))?;
    let mut t = Target::default();
    for c in doc["components"].as_array().into_iter().flatten() {
        let s = |k: &str| c[k].as_str().map(String::from);
        if c["type"] == "operating-system" {
            t.os_id = s("name");
            t.os_version = s("version");
            continue;
        }
        let (Some(name), Some(version), Some(purl)) = (s("name"), s("version"), s("purl")) else {
            continue;
        };
        let prop = |k: &str| {
            c["properties"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"] == k)
                .and_then(|p| p["value"].as_str().map(String::from))
        };
        t.packages.push(SbomPackage {
            source: prop("kiln:package:source").unwrap_or_else(|| name.clone()),
            source_version: prop("kiln:package:source-version").unwrap_or_else(|| version.clone()),
            name,
            version,
            purl,
        });
    }
    Ok(Some(t))
}

/// A VEX statement applied to a finding.
#[derive(Debug, Clone, Serialize)]
pub struct VexNote {
    pub status: String,
    pub justification: Option<String>,
    pub author: String,
    pub expires: String,
    /// `FILE#N`.
    pub statement: String,
    /// The key id of the `--vex-key` its document was verified with
    /// (absent: an unsigned document, taken as given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
}

/// One vulnerable package.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub id: String,
    pub aliases: Vec<String>,
    pub severity: Severity,
    pub package: String,
    pub version: String,
    pub purl: String,
    pub source_package: String,
    pub source_version: String,
    /// The first version that fixes it, when the feed names one.
    pub fixed: Option<String>,
    /// `osv:FILE` or `debian-tracker:FILE`.
    pub origin: String,
    /// The live VEX statement that marks it `not_affected`/`fixed` (then it
    /// does not count), or says `affected`/`under_investigation`.
    pub vex: Option<VexNote>,
    /// Expired statements that would have covered it (ignored).
    pub expired_vex: Vec<String>,
}

impl Finding {
    /// Whether it counts toward the totals and `--fail-on`.
    pub fn counts(&self) -> bool {
        !self
            .vex
            .as_ref()
            .is_some_and(|v| matches!(v.status.as_str(), "not_affected" | "fixed"))
    }
}

/// Debian release numbers and the codenames the security tracker uses.
const DEBIAN_CODENAMES: &[(&str, &str)] = &[
    ("10", "buster"),
    ("11", "bullseye"),
    ("12", "bookworm"),
    ("13", "trixie"),
    ("14", "forky"),
];

/// Whether an advisory for `release` applies to an image of `os_version`:
/// the same release, or `os_version` a point release of it (`3.19.1` of
/// `3.19`, `9.3` of `9`, `15-SP5` of `15`); Debian's codenames too.
fn release_matches(eco: &Ecosystem, release: Option<&str>, os_version: Option<&str>) -> bool {
    let Some(r) = release else { return true };
    let Some(v) = os_version else { return false };
    let major = v.split('.').next().unwrap_or(v);
    if *eco == Ecosystem::DEBIAN
        && (r == major || DEBIAN_CODENAMES.iter().any(|(n, c)| *n == major && *c == r))
    {
        return true;
    }
    v == r
        || v.strip_prefix(r)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('-'))
}

/// The installed version to compare when advisory `a` (naming `package`)
/// may concern `p`: Debian's and Alpine's feeds name source packages, so
/// the source version; RPM feeds name binary or source packages.
fn installed<'p>(scheme: Scheme, p: &'p SbomPackage, package: &str) -> Option<&'p str> {
    if p.source == package {
        Some(&p.source_version)
    } else if scheme == Scheme::Rpm && p.name == package {
        Some(&p.version)
    } else {
        None
    }
}

/// Feed records of ecosystems kiln does not match against OS packages
/// (`npm`, `PyPI`, a distribution it does not know), counted by name:
/// the rescan reports them instead of passing over them in silence.
pub fn unmatched_ecosystems(advisories: &[Advisory]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for a in advisories {
        if let Ecosystem::Other(name) = &a.ecosystem {
            *out.entry(name.clone()).or_default() += 1;
        }
    }
    out
}

/// Matches a target's packages against the advisories (by source package
/// name, as Debian's and Alpine's feeds name them, comparing the source
/// version) and applies the VEX statements.
pub fn scan(
    t: &Target,
    advisories: &[Advisory],
    statements: &[Statement],
) -> Result<Vec<Finding>, String> {
    let mut out: Vec<Finding> = vec![];
    for a in advisories {
        let Some(scheme) = a.ecosystem.scheme() else {
            continue;
        };
        if !a.ecosystem.describes(t.os_id.as_deref()) {
            continue;
        }
        if !release_matches(&a.ecosystem, a.release.as_deref(), t.os_version.as_deref()) {
            continue;
        }
        for p in &t.packages {
            let Some(v) = installed(scheme, p, &a.package) else {
                continue;
            };
            // Exact text first: a listed version needs no ordering.
            let listed = a.versions.iter().any(|x| {
                x == v
                    || a.ecosystem
                        .compare(x, v)
                        .is_ok_and(|o| o == std::cmp::Ordering::Equal)
            });
            let mut hit = None;
            for r in &a.ranges {
                if r.contains(&a.ecosystem, v)
                    .map_err(|e| format!("{} ({} in {}): {e}", a.id, a.package, a.origin))?
                {
                    hit = Some(r);
                    break;
                }
            }
            if !listed && hit.is_none() {
                continue;
            }
            if out.iter().any(|f| f.id == a.id && f.package == p.name) {
                continue;
            }
            let mut ids: Vec<&str> = vec![a.id.as_str()];
            ids.extend(a.aliases.iter().map(String::as_str));
            let covering: Vec<&Statement> = statements
                .iter()
                .filter(|s| s.covers(&ids, &p.purl))
                .collect();
            let live = covering.iter().find(|s| !s.expired).map(|s| VexNote {
                status: s.status.clone(),
                justification: s.justification.clone(),
                author: s.author.clone(),
                expires: s.expires.clone(),
                statement: s.at.clone(),
                signed_by: s.signed_by.clone(),
            });
            out.push(Finding {
                id: a.id.clone(),
                aliases: a.aliases.clone(),
                severity: a.severity,
                package: p.name.clone(),
                version: p.version.clone(),
                purl: p.purl.clone(),
                source_package: p.source.clone(),
                source_version: p.source_version.clone(),
                fixed: hit.and_then(|r| r.fixed.clone()),
                origin: a.origin.clone(),
                vex: live,
                expired_vex: covering
                    .iter()
                    .filter(|s| s.expired)
                    .map(|s| format!("{} (by {}, expired {})", s.at, s.author, s.expires))
                    .collect(),
            });
        }
    }
    out.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.package.cmp(&b.package))
            .then_with(|| a.id.cmp(&b.id))
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn target() -> Target {
        Target {
            os_id: Some("debian".into()),
            os_version: Some("12".into()),
            packages: vec![SbomPackage {
                name: "libssl3".into(),
                version: "3.0.11-1~deb12u1".into(),
                purl: "pkg:deb/debian/libssl3@3.0.11-1~deb12u1?arch=amd64&distro=debian-12".into(),
                source: "openssl".into(),
                source_version: "3.0.11-1~deb12u1".into(),
            }],
        }
    }

    #[test]
    fn source_packages_match_by_release_and_version() {
        let feed = json!({ "openssl": {
            "CVE-A": { "releases": {
                "bookworm": { "status": "resolved", "fixed_version": "3.0.11-1~deb12u2", "urgency": "high" },
                "bullseye": { "status": "open", "urgency": "high" } } },
            "CVE-B": { "releases": { "bookworm": { "status": "resolved", "fixed_version": "3.0.11-1~deb12u1", "urgency": "high" } } }
        }});
        let adv = feed::parse(&feed, "t.json").unwrap();
        let f = scan(&target(), &adv, &[]).unwrap();
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].id, "CVE-A");
        assert_eq!(f[0].package, "libssl3");
        assert_eq!(f[0].fixed.as_deref(), Some("3.0.11-1~deb12u2"));
        assert_eq!(f[0].severity, Severity::High);
        // On Debian 11 only the bullseye entry applies: open, no fix.
        let mut t = target();
        t.os_version = Some("11".into());
        let f = scan(&t, &adv, &[]).unwrap();
        assert_eq!(
            f.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(),
            ["CVE-A"]
        );
        assert_eq!(f[0].fixed, None);
    }

    #[test]
    fn vex_takes_a_finding_out_of_the_count_until_it_expires() {
        let adv = feed::parse(
            &json!({ "id": "OSV-1", "aliases": ["CVE-C"], "database_specific": { "severity": "CRITICAL" },
                "affected": [{ "package": { "ecosystem": "Debian:12", "name": "openssl" },
                    "ranges": [{ "type": "ECOSYSTEM", "events": [{ "introduced": "0" }] }] }] }),
            "o.json",
        )
        .unwrap();
        let vex = json!({ "@context": "https://openvex.dev/ns/v0.2.0", "author": "sec",
            "statements": [{ "vulnerability": { "name": "CVE-C" }, "products": [{ "@id": "pkg:deb/debian/libssl3" }],
                "status": "not_affected", "justification": "component_not_present", "kiln:expires": "2030-01-01T00:00:00Z" }] });
        let before = humantime::parse_rfc3339("2029-01-01T00:00:00Z").unwrap();
        let st = vex::parse(&vex, "v.json", before).unwrap();
        let f = scan(&target(), &adv, &st).unwrap();
        assert_eq!(f[0].severity, Severity::Critical);
        assert!(!f[0].counts(), "{f:#?}");
        let after = humantime::parse_rfc3339("2031-01-01T00:00:00Z").unwrap();
        let st = vex::parse(&vex, "v.json", after).unwrap();
        let f = scan(&target(), &adv, &st).unwrap();
        assert!(f[0].counts());
        assert_eq!(f[0].expired_vex.len(), 1);
    }

    /// RPM feeds name binary packages too; the ecosystem must be the
    /// image's distribution and the release its major version.
    #[test]
    fn rpm_records_match_binary_names_by_distribution_and_release() {
        let t = Target {
            os_id: Some("almalinux".into()),
            os_version: Some("9.3".into()),
            packages: vec![SbomPackage {
                name: "openssl-libs".into(),
                version: "1:3.0.7-27.el9".into(),
                purl: "pkg:rpm/almalinux/openssl-libs@3.0.7-27.el9?epoch=1".into(),
                source: "openssl".into(),
                source_version: "1:3.0.7-27.el9".into(),
            }],
        };
        let rec = |eco: &str, name: &str, fixed: &str| {
            json!({ "id": format!("{eco}/{name}/{fixed}"), "affected": [{
                "package": { "ecosystem": eco, "name": name },
                "ranges": [{ "type": "ECOSYSTEM", "events": [{ "introduced": "0" }, { "fixed": fixed }] }] }] })
        };
        let adv: Vec<Advisory> = [
            rec("AlmaLinux:9", "openssl-libs", "1:3.0.7-28.el9"),
            rec("AlmaLinux:9", "openssl", "1:3.0.7-27.el9_4"),
            rec("AlmaLinux:9", "openssl-libs", "1:3.0.7-27.el9"),
            rec("AlmaLinux:9", "openssl-libs", "3.9-1.el9"),
            rec("AlmaLinux:8", "openssl-libs", "1:9-1"),
            rec("Rocky Linux:9", "openssl-libs", "1:9-1"),
        ]
        .iter()
        .flat_map(|r| feed::parse(r, "r.json").unwrap())
        .collect();
        let ids: Vec<String> = scan(&t, &adv, &[])
            .unwrap()
            .into_iter()
            .map(|f| f.id)
            .collect();
        assert_eq!(
            ids,
            [
                "AlmaLinux:9/openssl-libs/1:3.0.7-28.el9",
                "AlmaLinux:9/openssl/1:3.0.7-27.el9_4",
            ]
        );
    }
}
