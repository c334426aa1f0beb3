//! Vulnerability feeds read from files, never the network: OSV JSON
//! records (one per file, a JSON array of them, or a folder of `.json`
//! files) and Debian's security-tracker JSON (`package → CVE → releases →
//! SUITE → {status, fixed_version, urgency}`), both turned into
//! [`Advisory`] records that [`super::scan`] matches against an SBOM.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::Value;

use super::version::{Ecosystem, Range};
use super::Severity;

/// One package affected by one vulnerability, as a feed says.
#[derive(Debug, Clone)]
pub struct Advisory {
    /// OSV `id` or the CVE name.
    pub id: String,
    /// OSV `aliases` (CVE names a VEX statement may use).
    pub aliases: Vec<String>,
    pub ecosystem: Ecosystem,
    /// OSV `Debian:12` → `12`; the tracker's suite (`bookworm`); `None`
    /// for every release.
    pub release: Option<String>,
    /// The (source) package name: Debian's and Alpine's feeds name
    /// source packages.
    pub package: String,
    pub ranges: Vec<Range>,
    /// Versions listed as affected one by one (OSV `versions`).
    pub versions: Vec<String>,
    pub severity: Severity,
    /// `osv:FILE` or `debian-tracker:FILE`.
    pub origin: String,
}

/// One `--feed` as read: its advisories, and what the catalog log keeps
/// of it.
#[derive(Debug, Clone)]
pub struct Feed {
    pub path: String,
    /// `sha256:` of the file; for a folder, of its `.json` files' names
    /// and digests (canonical JSON).
    pub digest: String,
    /// The newest OSV `modified` of its records, else its newest file's
    /// modification time (RFC 3339): how current the feed is.
    pub modified: Option<String>,
    pub advisories: Vec<Advisory>,
}

/// Reads every feed file a `--feed` names (a folder: its `.json` files,
/// sorted). Errors name the file and, for bad JSON, line and column.
pub fn load(path: &Path) -> Result<Feed, String> {
    let mut files: Vec<PathBuf> = vec![];
    let is_dir = path.is_dir();
    if is_dir {
        let rd = fs_err::read_dir(path).map_err(|e| e.to_string())?;
        for e in rd {
            let p = e.map_err(|e| e.to_string())?.path();
            if p.extension().is_some_and(|x| x == "json") {
                files.push(p);
            }
        }
        files.sort();
        if files.is_empty() {
            return Err(format!(
                "feed folder `{}` has no .json files",
                path.display()
            ));
        }
    } else {
        files.push(path.to_path_buf());
    }
    let mut advisories = vec![];
    let mut digests = serde_json::Map::new();
    let mut single = String::new();
    let mut newest: Option<SystemTime> = None;
    for f in files {
        let bytes = fs_err::read(&f).map_err(|e| e.to_string())?;
        let digest = crate::manifest::sha256_hex(&bytes);
        let name = f
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        digests.insert(name, digest.clone().into());
        single = digest;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{}:{}:{}: not JSON: {e}", f.display(), e.line(), e.column()))?;
        let stamp = newest_modified(&v)
            .or_else(|| fs_err::metadata(&f).ok().and_then(|m| m.modified().ok()));
        newest = newest.max(stamp);
        advisories.extend(parse(&v, &f.display().to_string())?);
    }
    let digest = if is_dir {
        crate::manifest::sha256_hex(&crate::manifest::canonical(&Value::Object(digests)))
    } else {
        single
    };
    Ok(Feed {
        path: path.display().to_string(),
        digest,
        modified: newest.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
        advisories,
    })
}

/// The newest `modified` among the OSV records of a document.
fn newest_modified(v: &Value) -> Option<SystemTime> {
    let one = |r: &Value| {
        r["modified"]
            .as_str()
            .and_then(|m| humantime::parse_rfc3339_weak(m).ok())
    };
    match v {
        Value::Array(items) => items.iter().filter_map(one).max(),
        _ => one(v),
    }
}

/// The advisories of one parsed feed document.
pub fn parse(v: &Value, file: &str) -> Result<Vec<Advisory>, String> {
    match v {
        Value::Array(items) => {
            let mut out = vec![];
            for (i, r) in items.iter().enumerate() {
                out.extend(osv(r, &format!("{file} (record {})", i + 1))?);
            }
            Ok(out)
        }
        Value::Object(o) if o.contains_key("affected") || o.contains_key("schema_version") => {
            osv(v, file)
        }
        Value::Object(_) => debian_tracker(v, file),
        _ => Err(format!(
            "{file}: neither an OSV record nor Debian security-tracker JSON"
        )),
    }
}

/// The release an OSV ecosystem suffix names: its first number
/// (`v3.19` → `3.19`, `enterprise_linux:8::appstream` → `8`,
/// `22.04:LTS` → `22.04`, `Leap 15.5` → `15.5`), else the suffix as
/// written (`Tumbleweed`).
fn release_of(suffix: &str) -> String {
    let Some(start) = suffix.find(|c: char| c.is_ascii_digit()) else {
        return suffix.to_string();
    };
    let tail = &suffix[start..];
    let mut end = tail
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(tail.len());
    while tail[..end].ends_with('.') {
        end -= 1;
    }
    tail[..end].to_string()
}

fn severity_word(s: &str) -> Severity {
    match s.to_ascii_lowercase().as_str() {
        "critical" => Severity::Critical,
        "high" | "important" => Severity::High,
        "medium" | "moderate" => Severity::Medium,
        "low" | "unimportant" | "negligible" => Severity::Low,
        _ => Severity::Unknown,
    }
}

/// One OSV record (https://ossf.github.io/osv-schema/): its `affected`
/// entries of ECOSYSTEM ranges and `versions`. Severity from
/// `database_specific.severity` or the affected entry's
/// `ecosystem_specific.urgency`/`severity`; a CVSS vector alone is not
/// scored (severity `unknown`).
fn osv(r: &Value, file: &str) -> Result<Vec<Advisory>, String> {
    let id = r["id"]
        .as_str()
        .ok_or_else(|| format!("{file}: OSV record without an `id`"))?;
    let aliases: Vec<String> = r["aliases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(String::from))
        .collect();
    let top = r["database_specific"]["severity"]
        .as_str()
        .map(severity_word);
    let mut out = vec![];
    for (i, a) in r["affected"].as_array().into_iter().flatten().enumerate() {
        let at = format!("{file}: `{id}` affected[{i}]");
        let eco_full = a["package"]["ecosystem"]
            .as_str()
            .ok_or_else(|| format!("{at}: no package.ecosystem"))?;
        let name = a["package"]["name"]
            .as_str()
            .ok_or_else(|| format!("{at}: no package.name"))?;
        let (eco, release) = match eco_full.split_once(':') {
            Some((e, r)) => (e, Some(release_of(r))),
            None => (eco_full, None),
        };
        let mut ranges = vec![];
        for rg in a["ranges"].as_array().into_iter().flatten() {
            match rg["type"].as_str() {
                Some("ECOSYSTEM") => {}
                Some(other) => {
                    return Err(format!(
                        "{at}: range type `{other}` is not supported (only ECOSYSTEM)"
                    ))
                }
                None => return Err(format!("{at}: a range without `type`")),
            }
            // Events in order: each `introduced` opens a range that the
            // next `fixed`/`last_affected` closes.
            let mut cur: Option<Range> = None;
            for ev in rg["events"].as_array().into_iter().flatten() {
                let s = |k: &str| ev[k].as_str().map(String::from);
                if let Some(v) = s("introduced") {
                    if let Some(open) = cur.take() {
                        ranges.push(open);
                    }
                    cur = Some(Range {
                        introduced: Some(v),
                        ..Range::default()
                    });
                } else if let Some(v) = s("fixed") {
                    let mut r = cur.take().unwrap_or_default();
                    r.fixed = Some(v);
                    ranges.push(r);
                } else if let Some(v) = s("last_affected") {
                    let mut r = cur.take().unwrap_or_default();
                    r.last_affected = Some(v);
                    ranges.push(r);
                }
            }
            ranges.extend(cur);
        }
        let severity = top
            .or_else(|| {
                a["ecosystem_specific"]["urgency"]
                    .as_str()
                    .map(severity_word)
            })
            .or_else(|| {
                a["ecosystem_specific"]["severity"]
                    .as_str()
                    .map(severity_word)
            })
            .unwrap_or(Severity::Unknown);
        out.push(Advisory {
            id: id.to_string(),
            aliases: aliases.clone(),
            ecosystem: Ecosystem::parse(eco),
            release,
            package: name.to_string(),
            ranges,
            versions: a["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            severity,
            origin: format!("osv:{file}"),
        });
    }
    Ok(out)
}

/// Debian's security-tracker JSON: for each source package, CVE and
/// suite, `resolved` with `fixed_version` (`0`: never affected) or
/// `open`/`undetermined` (affected, no fix). Severity from `urgency`
/// (`unimportant` → low; `not yet assigned` → unknown).
fn debian_tracker(v: &Value, file: &str) -> Result<Vec<Advisory>, String> {
    let mut out = vec![];
    let Value::Object(pkgs) = v else {
        unreachable!("called on objects")
    };
    for (pkg, cves) in pkgs {
        let Value::Object(cves) = cves else {
            return Err(format!(
                "{file}: package `{pkg}` is not an object of CVEs (not Debian security-tracker JSON)"
            ));
        };
        for (cve, rec) in cves {
            let Some(releases) = rec["releases"].as_object() else {
                return Err(format!("{file}: `{pkg}` / `{cve}` has no `releases`"));
            };
            for (suite, st) in releases {
                let fixed = st["fixed_version"].as_str();
                let range = match (st["status"].as_str(), fixed) {
                    (Some("resolved"), Some("0")) => continue,
                    (Some("resolved"), Some(f)) => Range {
                        introduced: Some("0".into()),
                        fixed: Some(f.to_string()),
                        last_affected: None,
                    },
                    (Some("resolved"), None) => continue,
                    (Some("open" | "undetermined"), _) => Range::default(),
                    (other, _) => {
                        return Err(format!(
                            "{file}: `{pkg}` / `{cve}` / `{suite}`: unknown status {other:?}"
                        ))
                    }
                };
                out.push(Advisory {
                    id: cve.clone(),
                    aliases: vec![],
                    ecosystem: Ecosystem::DEBIAN,
                    release: Some(suite.clone()),
                    package: pkg.clone(),
                    ranges: vec![range],
                    versions: vec![],
                    severity: st["urgency"]
                        .as_str()
                        .map(severity_word)
                        .unwrap_or(Severity::Unknown),
                    origin: format!("debian-tracker:{file}"),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn osv_events_become_ranges() {
        let r = json!({
            "id": "DSA-1-1", "aliases": ["CVE-2024-1"],
            "affected": [{
                "package": { "ecosystem": "Debian:12", "name": "openssl" },
                "ranges": [{ "type": "ECOSYSTEM", "events": [
                    { "introduced": "0" }, { "fixed": "3.0.11-1~deb12u2" },
                    { "introduced": "3.1" }
                ]}],
                "versions": ["3.0.9-1"],
                "ecosystem_specific": { "urgency": "high" }
            }]
        });
        let a = parse(&r, "f.json").unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].release.as_deref(), Some("12"));
        assert_eq!(a[0].ecosystem, Ecosystem::DEBIAN);
        assert_eq!(a[0].ranges.len(), 2);
        assert_eq!(a[0].ranges[0].fixed.as_deref(), Some("3.0.11-1~deb12u2"));
        assert_eq!(a[0].ranges[1].fixed, None);
        assert_eq!(a[0].severity, Severity::High);
        assert_eq!(a[0].aliases, vec!["CVE-2024-1".to_string()]);
    }

    #[test]
    fn releases_are_read_from_each_ecosystem_suffix() {
        for (suffix, release) in [
            ("12", "12"),
            ("v3.19", "3.19"),
            ("enterprise_linux:8::appstream", "8"),
            ("22.04:LTS", "22.04"),
            ("Leap 15.5", "15.5"),
            ("Tumbleweed", "Tumbleweed"),
        ] {
            assert_eq!(release_of(suffix), release, "{suffix}");
        }
    }

    #[test]
    fn tracker_statuses_map_to_ranges() {
        let t = json!({ "zlib": {
            "CVE-1": { "releases": { "bookworm": { "status": "resolved", "fixed_version": "1:1.2.13-2", "urgency": "medium" } } },
            "CVE-2": { "releases": { "bookworm": { "status": "resolved", "fixed_version": "0", "urgency": "low" } } },
            "CVE-3": { "releases": { "bookworm": { "status": "open", "urgency": "unimportant" } } }
        }});
        let a = parse(&t, "t.json").unwrap();
        let ids: Vec<&str> = a.iter().map(|x| x.id.as_str()).collect();
        assert_eq!(ids, ["CVE-1", "CVE-3"]);
        assert_eq!(a[0].severity, Severity::Medium);
        assert_eq!(a[1].ranges, vec![Range::default()]);
        assert_eq!(a[1].severity, Severity::Low);
    }

    #[test]
    fn bad_feeds_are_named() {
        let e = parse(&json!({"affected": []}), "x.json").unwrap_err();
        assert!(e.contains("x.json") && e.contains("id"), "{e}");
        let e = parse(&json!({"id": "A", "affected": [{"package": {"ecosystem": "Debian", "name": "a"}, "ranges": [{"type": "SEMVER", "events": []}]}]}), "y.json").unwrap_err();
        assert!(e.contains("SEMVER"), "{e}");
        let e = parse(&json!(3), "z.json").unwrap_err();
        assert!(e.contains("z.json"), "{e}");
    }
}
