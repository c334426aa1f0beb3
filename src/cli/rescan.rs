//! `kiln rescan [IMAGE] --feed FILE|DIR [--vex FILE] [--json] [--fail-on
//! SEVERITY]`: matches the SBOMs recorded for every version still active
//! or in a channel against vulnerability feeds given as files (no
//! network), with OpenVEX statements, and reports per version and per
//! channel. Exit 0 clean (or below `--fail-on`), 1 when a counted finding
//! at or above `--fail-on` remains or a version's SBOM cannot be trusted,
//! 2 on bad input (feed, VEX, unknown image).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use clap::{Args, ValueEnum};
use serde_json::{json, Value};

use super::images::fail;
use super::Exit;
use crate::catalog;
use crate::vuln::{self, feed, vex, Finding, Severity};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FailOn {
    Critical,
    High,
    Medium,
    Low,
}

impl FailOn {
    fn severity(self) -> Severity {
        match self {
            FailOn::Critical => Severity::Critical,
            FailOn::High => Severity::High,
            FailOn::Medium => Severity::Medium,
            FailOn::Low => Severity::Low,
        }
    }
}

#[derive(Args, Debug)]
pub struct RescanArgs {
    /// Only this image family (default: every image in the catalog).
    #[arg(value_name = "IMAGE")]
    pub image: Option<String>,
    /// A feed: an OSV record (or a JSON array of them), a folder of OSV
    /// `.json` files, or Debian security-tracker JSON. Repeatable.
    #[arg(long = "feed", value_name = "FILE|DIR", required = true)]
    pub feeds: Vec<PathBuf>,
    /// An OpenVEX document; every statement needs an author and a
    /// `kiln:expires`. Repeatable.
    #[arg(long = "vex", value_name = "FILE")]
    pub vex: Vec<PathBuf>,
    /// One JSON object instead of the report.
    #[arg(long)]
    pub json: bool,
    /// Exit 1 when a finding of this severity or worse remains (not
    /// marked not_affected/fixed by a live VEX statement).
    #[arg(long, value_enum, value_name = "SEVERITY")]
    pub fail_on: Option<FailOn>,
}

pub async fn exec(args: RescanArgs, state_dir: &Path, catalog: Option<&str>) -> Exit {
    let mut advisories = vec![];
    for f in &args.feeds {
        match feed::load(f) {
            Ok(a) => advisories.extend(a),
            Err(e) => {
                eprintln!("error: feed `{}`: {e}", f.display());
                return Exit::BadInput;
            }
        }
    }
    let now = SystemTime::now();
    let mut statements = vec![];
    for f in &args.vex {
        match vex::load(f, now) {
            Ok(s) => statements.extend(s),
            Err(e) => {
                eprintln!("error: VEX `{}`: {e}", f.display());
                return Exit::BadInput;
            }
        }
    }
    for s in statements.iter().filter(|s| s.expired) {
        eprintln!(
            "note: VEX statement {} ({} by {}) expired at {}: ignored",
            s.at,
            s.vulnerabilities.join("/"),
            s.author,
            s.expires
        );
    }
    let cat = match catalog::open_existing(catalog, state_dir).await {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let snap = match cat.snapshot().await {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    if let Some(i) = &args.image {
        if snap.state.family(i).is_none() {
            eprintln!("error: no image `{i}` in the catalog {}", cat.location);
            return Exit::BadInput;
        }
    }
    let mut versions = vec![];
    let mut channels = vec![];
    let mut broken = false;
    for (name, fam) in &snap.state.images {
        if args.image.as_ref().is_some_and(|i| i != name) {
            continue;
        }
        for v in &fam.versions {
            let ver = &v.registration.version;
            let chans = fam.channels_of(ver);
            if !v.is_active() && chans.is_empty() {
                continue;
            }
            let mut arts = vec![];
            for a in &v.registration.artifacts {
                let res = artifact_findings(a, &advisories, &statements);
                if res.is_err() {
                    broken = true;
                }
                arts.push(json!({
                    "job": a.job,
                    "artifact": a.id,
                    "scanned": matches!(res, Ok(Some(_))),
                    "error": res.as_ref().err(),
                    "findings": res.ok().flatten().unwrap_or_default(),
                }));
            }
            let counts = counts(&arts);
            for c in &chans {
                channels
                    .push(json!({ "image": name, "channel": c, "version": ver, "counts": counts }));
            }
            versions.push(json!({
                "image": name,
                "version": ver,
                "status": v.status.name(),
                "channels": chans,
                "counts": counts,
                "artifacts": arts,
            }));
        }
    }
    let threshold = args.fail_on.map(FailOn::severity);
    let over = threshold.is_some_and(|t| {
        versions.iter().any(|v| {
            Severity::ALL
                .iter()
                .filter(|s| **s >= t)
                .any(|s| v["counts"][s.name()].as_u64().unwrap_or(0) > 0)
        })
    });
    let report = json!({
        "feeds": args.feeds,
        "advisories": advisories.len(),
        "vex": args.vex,
        "vex_statements": statements.len(),
        "expired_vex_statements": statements.iter().filter(|s| s.expired).map(|s| &s.at).collect::<Vec<_>>(),
        "fail_on": threshold.map(Severity::name),
        "failed": over || broken,
        "versions": versions,
        "channels": channels,
    });
    if args.json {
        println!("{report:#}");
    } else {
        print_human(&report);
    }
    if over || broken {
        Exit::Failure
    } else {
        Exit::Success
    }
}

fn artifact_findings(
    a: &catalog::ArtifactRecord,
    advisories: &[feed::Advisory],
    statements: &[vex::Statement],
) -> Result<Option<Vec<Finding>>, String> {
    let Some(path) = a.manifest.as_deref() else {
        return Ok(None);
    };
    let manifest =
        crate::policy::gate::read_manifest(Path::new(path), a.manifest_digest.as_deref())
            .map_err(|e| e.to_string())?;
    let Some(t) = vuln::target_of(&manifest)? else {
        return Ok(None);
    };
    vuln::scan(&t, advisories, statements).map(Some)
}

/// Counted findings per severity, over a version's artifacts, plus how
/// many a VEX statement took out.
fn counts(arts: &[Value]) -> Value {
    let mut m: BTreeMap<&str, u64> = Severity::ALL.iter().map(|s| (s.name(), 0)).collect();
    let mut vexed = 0;
    for a in arts {
        for f in a["findings"].as_array().into_iter().flatten() {
            let suppressed = matches!(f["vex"]["status"].as_str(), Some("not_affected" | "fixed"));
            if suppressed {
                vexed += 1;
            } else if let Some(s) = f["severity"].as_str() {
                *m.entry(
                    Severity::ALL
                        .iter()
                        .find(|x| x.name() == s)
                        .map_or("unknown", |x| x.name()),
                )
                .or_default() += 1;
            }
        }
    }
    let mut v = json!(m);
    v["vex_not_affected"] = vexed.into();
    v
}

fn summary(c: &Value) -> String {
    let parts: Vec<String> = Severity::ALL
        .iter()
        .filter_map(|s| {
            let n = c[s.name()].as_u64().unwrap_or(0);
            (n > 0).then(|| format!("{n} {}", s.name()))
        })
        .collect();
    let mut out = if parts.is_empty() {
        "no findings".to_string()
    } else {
        parts.join(", ")
    };
    let vexed = c["vex_not_affected"].as_u64().unwrap_or(0);
    if vexed > 0 {
        out.push_str(&format!("; {vexed} not affected per VEX"));
    }
    out
}

fn print_human(r: &Value) {
    println!(
        "{} advisories from {} feed(s), {} VEX statement(s)",
        r["advisories"],
        r["feeds"].as_array().map_or(0, Vec::len),
        r["vex_statements"]
    );
    let versions = r["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        println!("no version is active or in a channel");
    }
    for v in &versions {
        let chans = v["channels"].as_array().cloned().unwrap_or_default();
        let chans: Vec<&str> = chans.iter().filter_map(Value::as_str).collect();
        println!(
            "\n{} {} ({}{}): {}",
            v["image"].as_str().unwrap_or_default(),
            v["version"].as_str().unwrap_or_default(),
            v["status"].as_str().unwrap_or_default(),
            if chans.is_empty() {
                String::new()
            } else {
                format!("; channels: {}", chans.join(", "))
            },
            summary(&v["counts"])
        );
        for a in v["artifacts"].as_array().into_iter().flatten() {
            let job = a["job"].as_str().unwrap_or_default();
            if let Some(e) = a["error"].as_str() {
                println!("  {job}: NOT SCANNED: {e}");
                continue;
            }
            if a["scanned"] != true {
                println!("  {job}: not scanned: the build recorded no SBOM");
                continue;
            }
            for f in a["findings"].as_array().into_iter().flatten() {
                let s = |k: &str| f[k].as_str().unwrap_or_default().to_string();
                let fixed = f["fixed"]
                    .as_str()
                    .map_or("no fix".to_string(), |x| format!("fixed in {x}"));
                let vex = match f["vex"]["status"].as_str() {
                    Some(st) => format!(
                        " [VEX {st} by {} until {}]",
                        f["vex"]["author"].as_str().unwrap_or_default(),
                        f["vex"]["expires"].as_str().unwrap_or_default()
                    ),
                    None => String::new(),
                };
                let source = if s("source_package") != s("package") {
                    format!(" (source {} {})", s("source_package"), s("source_version"))
                } else {
                    String::new()
                };
                println!(
                    "  {:<8} {:<18} {} {}{source}, {fixed}  ({}){vex}",
                    s("severity"),
                    s("id"),
                    s("package"),
                    s("version"),
                    s("origin")
                );
            }
        }
    }
    for c in r["channels"].as_array().into_iter().flatten() {
        println!(
            "channel {}/{} -> {}: {}",
            c["image"].as_str().unwrap_or_default(),
            c["channel"].as_str().unwrap_or_default(),
            c["version"].as_str().unwrap_or_default(),
            summary(&c["counts"])
        );
    }
    if let Some(t) = r["fail_on"].as_str() {
        println!(
            "{}",
            if r["failed"] == true {
                format!("FAILED: a finding at or above `{t}` remains, or an SBOM could not be read")
            } else {
                format!("ok: nothing at or above `{t}`")
            }
        );
    }
}
