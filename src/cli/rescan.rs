//! `kiln rescan [IMAGE] --feed FILE|DIR [--vex FILE] [--vex-key PUB]
//! [--json] [--fail-on SEVERITY] [--no-record]`: matches the SBOMs
//! recorded for every version still active or in a channel against
//! vulnerability feeds given as files (no network), with OpenVEX
//! statements (signed ones verified first), reports per version and per
//! channel, and logs each version's result in the catalog (a signed
//! `rescan` entry the policy gate reads). Exit 0 clean (or below
//! `--fail-on`), 1 when a counted finding at or above `--fail-on` remains
//! or a version's SBOM cannot be trusted, 2 on bad input (feed, VEX,
//! unknown image).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use clap::{Args, ValueEnum};
use serde_json::{json, Value};

use super::images::fail;
use super::Exit;
use crate::catalog;
use crate::vuln::record::{self, ArtifactOutcome};
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
    /// An OpenVEX document, or a DSSE envelope around one (`kiln vex
    /// sign`); every statement needs an author and a `kiln:expires`.
    /// Repeatable.
    #[arg(long = "vex", value_name = "FILE")]
    pub vex: Vec<PathBuf>,
    /// A public key (cosign PEM) VEX documents are signed with: with
    /// one, every `--vex` must be an envelope one of these keys signed.
    /// Repeatable.
    #[arg(long = "vex-key", value_name = "PUB")]
    pub vex_keys: Vec<PathBuf>,
    /// Report only: do not log the result in the catalog (the policy
    /// gate then does not see it).
    #[arg(long)]
    pub no_record: bool,
    /// One JSON object instead of the report.
    #[arg(long)]
    pub json: bool,
    /// Exit 1 when a finding of this severity or worse remains (not
    /// marked not_affected/fixed by a live VEX statement).
    #[arg(long, value_enum, value_name = "SEVERITY")]
    pub fail_on: Option<FailOn>,
}

pub async fn exec(args: RescanArgs, state_dir: &Path, catalog: Option<&str>) -> Exit {
    let mut feeds = vec![];
    for f in &args.feeds {
        match feed::load(f) {
            Ok(feed) => feeds.push(feed),
            Err(e) => {
                eprintln!("error: feed `{}`: {e}", f.display());
                return Exit::BadInput;
            }
        }
    }
    let advisories: Vec<feed::Advisory> = feeds.iter().flat_map(|f| f.advisories.clone()).collect();
    let unmatched = vuln::unmatched_ecosystems(&advisories);
    for (eco, n) in &unmatched {
        eprintln!(
            "note: {n} feed record(s) of ecosystem `{eco}` not matched: kiln matches OS packages of Debian, Ubuntu, Alpine, Wolfi, Chainguard and RPM distributions (docs/rescan.md)"
        );
    }
    let mut keys = vec![];
    for k in &args.vex_keys {
        match vex::VexKey::load(k) {
            Ok(key) => keys.push(key),
            Err(e) => {
                eprintln!("error: VEX key `{}`: {e}", k.display());
                return Exit::BadInput;
            }
        }
    }
    let now = SystemTime::now();
    let mut documents = vec![];
    for f in &args.vex {
        match vex::load(f, now, &keys) {
            Ok(d) => documents.push(d),
            Err(e) => {
                eprintln!("error: VEX `{}`: {e}", f.display());
                return Exit::BadInput;
            }
        }
    }
    for d in documents.iter().filter(|d| d.signed_by.is_none()) {
        eprintln!(
            "warning: VEX `{}` is not signed: its statements are taken as given (give `--vex-key PUB` to require signed VEX)",
            d.file
        );
    }
    let statements: Vec<vex::Statement> = documents
        .iter()
        .flat_map(|d| d.statements.clone())
        .collect();
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
    let mut records = vec![];
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
            let results: Vec<Result<Option<Vec<Finding>>, String>> = v
                .registration
                .artifacts
                .iter()
                .map(|a| artifact_findings(a, &advisories, &statements))
                .collect();
            broken |= results.iter().any(Result::is_err);
            let outcomes: Vec<ArtifactOutcome<'_>> = v
                .registration
                .artifacts
                .iter()
                .zip(&results)
                .map(|(a, result)| ArtifactOutcome {
                    job: &a.job,
                    artifact: &a.id,
                    result,
                })
                .collect();
            let rec = record::version_record(name, ver, &outcomes, &feeds, &documents);
            let counts = json!(rec.counts);
            let arts: Vec<Value> = outcomes
                .iter()
                .map(|o| {
                    json!({
                        "job": o.job,
                        "artifact": o.artifact,
                        "scanned": matches!(o.result, Ok(Some(_))),
                        "error": o.result.as_ref().err(),
                        "findings": o.result.as_ref().ok().cloned().flatten().unwrap_or_default(),
                    })
                })
                .collect();
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
            records.push(rec);
        }
    }
    let recorded = if args.no_record || records.is_empty() {
        None
    } else {
        match log_rescans(&cat, records).await {
            Ok(r) => Some(r),
            Err(e) => return fail(&e),
        }
    };
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
        "feeds": feeds.iter().map(|f| json!({ "path": f.path, "digest": f.digest, "modified": f.modified })).collect::<Vec<_>>(),
        "advisories": advisories.len(),
        "unmatched_ecosystems": unmatched,
        "vex": documents.iter().map(|d| json!({ "path": d.file, "digest": d.digest, "signed_by": d.signed_by })).collect::<Vec<_>>(),
        "vex_statements": statements.len(),
        "expired_vex_statements": statements.iter().filter(|s| s.expired).map(|s| &s.at).collect::<Vec<_>>(),
        "fail_on": threshold.map(Severity::name),
        "failed": over || broken,
        "versions": versions,
        "channels": channels,
        "recorded": recorded,
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

/// Appends one signed `rescan` entry per version, in one locked change;
/// returns `{image, version, seq}` of each.
async fn log_rescans(
    cat: &catalog::Catalog,
    records: Vec<catalog::rescan::RescanRecord>,
) -> Result<Vec<Value>, catalog::CatalogError> {
    let (key, note) = cat.operator_key_noting()?;
    if let Some(n) = note {
        eprintln!("note: {n}");
    }
    let actor = catalog::actor();
    let mut w = cat.writer().await?;
    let mut out = vec![];
    for r in records {
        let (image, version) = (r.image.clone(), r.version.clone());
        let seq = w
            .record(catalog::Action::Rescan(r), &actor, &key)
            .await?
            .seq;
        out.push(json!({ "image": image, "version": version, "seq": seq }));
    }
    w.commit().await?;
    Ok(out)
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
    let signed = r["vex"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["signed_by"].is_string())
        .count();
    println!(
        "{} advisories from {} feed(s), {} VEX statement(s) ({signed} of {} VEX document(s) signed)",
        r["advisories"],
        r["feeds"].as_array().map_or(0, Vec::len),
        r["vex_statements"],
        r["vex"].as_array().map_or(0, Vec::len),
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
                        " [VEX {st} by {} until {}{}]",
                        f["vex"]["author"].as_str().unwrap_or_default(),
                        f["vex"]["expires"].as_str().unwrap_or_default(),
                        f["vex"]["signed_by"]
                            .as_str()
                            .map(|k| format!(", signed by {k}"))
                            .unwrap_or_default()
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
    for rec in r["recorded"].as_array().into_iter().flatten() {
        println!(
            "logged: rescan of {} {} is catalog entry #{}",
            rec["image"].as_str().unwrap_or_default(),
            rec["version"].as_str().unwrap_or_default(),
            rec["seq"]
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
