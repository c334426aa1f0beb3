//! `type = "goss"`: a goss file (goss's own YAML, with optional `vars`)
//! validated in the test instance by the goss binary the user provides
//! (`goss_binary`, else `goss` on the host's `PATH`; kiln ships none). The
//! binary and the files are copied into the instance's `/tmp` under
//! names of their own, run as `goss --gossfile F [--vars V] validate
//! --format json`, and removed; each goss result becomes one check, with
//! what goss expected and found. Both JSON shapes goss has printed are
//! read: v0.4's `matcher-result` and v0.3's `expected`/`found`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{CheckResult, Outcome};
use crate::communicator::{sh_quote, Communicator};

/// The settings of a goss test.
#[derive(Deserialize)]
pub(super) struct GossTest {
    file: String,
    vars: Option<String>,
    goss_binary: Option<String>,
    timeout: Option<String>,
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs the goss file in the instance and returns goss's results as checks.
pub(super) async fn run(
    s: Result<GossTest, String>,
    comm: &dyn Communicator,
    template_dir: &Path,
) -> Result<Vec<CheckResult>, String> {
    let s = s?;
    let binary = binary(s.goss_binary.as_deref(), template_dir)?;
    let gossfile = template_dir.join(&s.file);
    let vars = s.vars.as_ref().map(|v| template_dir.join(v));
    let stem = format!("/tmp/kiln-goss-{}", uuid::Uuid::new_v4().simple());
    let (remote_bin, remote_file, remote_vars) = (
        format!("{stem}-goss"),
        format!("{stem}.yaml"),
        format!("{stem}-vars.yaml"),
    );
    let mut uploads = vec![
        (binary.clone(), remote_bin.clone(), Some(0o700)),
        (gossfile, remote_file.clone(), Some(0o600)),
    ];
    if let Some(v) = &vars {
        uploads.push((v.clone(), remote_vars.clone(), Some(0o600)));
    }
    let mut script = format!(
        "{} --gossfile {}",
        sh_quote(&remote_bin),
        sh_quote(&remote_file)
    );
    if vars.is_some() {
        script.push_str(&format!(" --vars {}", sh_quote(&remote_vars)));
    }
    script.push_str(" validate --format json --no-color");
    let mut result = Err(String::new());
    for (local, remote, mode) in &uploads {
        if let Err(e) = comm.upload(local, remote, *mode).await {
            result = Err(format!(
                "cannot copy `{}` into the instance: {e}",
                local.display()
            ));
            break;
        }
        result = Ok(());
    }
    let ran = match result {
        Ok(()) => {
            let t = s
                .timeout
                .as_deref()
                .and_then(crate::template::schema::parse_duration)
                .unwrap_or(DEFAULT_TIMEOUT);
            super::checks::sh(comm, &script, t).await
        }
        Err(e) => Err(e),
    };
    // Removed whatever happened (the instance is thrown away anyway).
    let rm = format!(
        "rm -f {} {} {}",
        sh_quote(&remote_bin),
        sh_quote(&remote_file),
        sh_quote(&remote_vars)
    );
    let _ = super::checks::sh(comm, &rm, Duration::from_secs(60)).await;
    let ran = ran?;
    let stdout = ran.stdout.join("\n");
    parse(&stdout).map_err(|e| {
        let tail: Vec<&String> = ran.stderr.iter().rev().take(3).collect();
        format!(
            "goss exited {} without a JSON report ({e}){}",
            ran.code,
            if tail.is_empty() {
                String::new()
            } else {
                format!(
                    ": {}",
                    tail.into_iter()
                        .rev()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(" | ")
                )
            }
        )
    })
}

/// The goss binary on the host: `goss_binary` (relative to the template),
/// else the first `goss` on `PATH`.
fn binary(given: Option<&str>, template_dir: &Path) -> Result<PathBuf, String> {
    if let Some(g) = given {
        let p = template_dir.join(g);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "`goss_binary = \"{g}\"`: no such file `{}`",
                p.display()
            ))
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("goss"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "no goss binary: kiln ships none; set `goss_binary = \"/path/to/goss\"` (a Linux build for the instance's architecture) or put `goss` on the PATH".into()
        })
}

/// One result of `goss validate --format json`.
#[derive(Deserialize)]
struct GossResult {
    #[serde(rename = "resource-type", default)]
    resource_type: String,
    #[serde(rename = "resource-id", default)]
    resource_id: String,
    #[serde(default)]
    property: String,
    #[serde(default)]
    title: String,
    /// 0 success, 1 failure, 2 skipped.
    result: Option<i64>,
    #[serde(default)]
    successful: bool,
    #[serde(default)]
    skipped: bool,
    err: Option<serde_json::Value>,
    /// v0.4 and later.
    #[serde(rename = "matcher-result")]
    matcher: Option<Matcher>,
    /// v0.3.
    expected: Option<serde_json::Value>,
    found: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Matcher {
    actual: Option<serde_json::Value>,
    expected: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct GossReport {
    results: Option<Vec<GossResult>>,
}

/// A JSON value as one short line (strings without quotes).
fn shown(v: &Option<serde_json::Value>) -> String {
    let text = match v {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .map(|x| match x {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", "),
        Some(other) => other.to_string(),
    };
    text.chars().take(200).collect()
}

/// goss's JSON report as checks; a report with no result at all is an
/// error (a goss file that checks nothing must not pass).
pub(super) fn parse(json: &str) -> Result<Vec<CheckResult>, String> {
    let report: GossReport =
        serde_json::from_str(json.trim()).map_err(|e| format!("not goss JSON: {e}"))?;
    let results = report.results.unwrap_or_default();
    if results.is_empty() {
        return Err("the goss file checked nothing (no results)".into());
    }
    Ok(results
        .into_iter()
        .map(|r| {
            let outcome = match r.result {
                Some(0) => Outcome::Pass,
                Some(2) => Outcome::Skip,
                Some(_) => Outcome::Fail,
                None if r.skipped => Outcome::Skip,
                None if r.successful => Outcome::Pass,
                None => Outcome::Fail,
            };
            let (expected, actual) = match &r.matcher {
                Some(m) => (shown(&m.expected), shown(&m.actual)),
                None => (shown(&r.expected), shown(&r.found)),
            };
            let observed = match (&r.err, outcome) {
                (Some(e), _) if !e.is_null() => format!("error: {}", shown(&Some(e.clone()))),
                (_, Outcome::Skip) => "skipped by goss".to_string(),
                _ => actual,
            };
            let title = if r.title.is_empty() {
                String::new()
            } else {
                format!(" ({})", r.title)
            };
            CheckResult {
                property: format!(
                    "{} {}: {}{title}",
                    r.resource_type, r.resource_id, r.property
                ),
                expected,
                observed,
                outcome,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// goss v0.4's JSON shape (`matcher-result`, `result` 0/1/2), as its
    /// `outputs` package writes it: one pass, one fail, one skip.
    const V04: &str = r#"{
      "results": [
        {"successful": true, "skipped": false, "resource-id": "/etc/passwd", "resource-type": "File",
         "property": "exists", "title": "", "meta": null, "result": 0, "err": null,
         "matcher-result": {"actual": true, "expected": true, "message": "to equal"},
         "start-time": "2024-01-01T00:00:00Z", "end-time": "2024-01-01T00:00:00Z", "duration": 31000,
         "summary-line": "File: /etc/passwd: exists: matches expectation: true"},
        {"successful": false, "skipped": false, "resource-id": "nginx", "resource-type": "Service",
         "property": "running", "title": "web server", "meta": null, "result": 1, "err": null,
         "matcher-result": {"actual": false, "expected": true, "message": "to equal"},
         "duration": 1200},
        {"successful": true, "skipped": true, "resource-id": "tcp:80", "resource-type": "Port",
         "property": "ip", "title": "", "meta": null, "result": 2, "err": null,
         "matcher-result": {}, "duration": 0}
      ],
      "summary": {"test-count": 3, "failed-count": 1, "skipped-count": 1,
                  "summary-line": "Count: 3, Failed: 1, Skipped: 1, Duration: 0.001s", "total-duration": 1000000}
    }"#;

    /// goss v0.3's shape (`expected`/`found` lists, `human`).
    const V03: &str = r#"{"results": [{"duration": 48248740, "err": null, "expected": ["true"],
      "found": ["false"], "human": "Expected\n    <bool>: false\nto equal\n    <bool>: true",
      "meta": null, "property": "reachable", "resource-id": "tcp://db:5432", "resource-type": "Addr",
      "result": 1, "successful": false, "summary-line": "Addr: tcp://db:5432: reachable", "test-type": 0, "title": ""}],
      "summary": {"failed-count": 1, "summary-line": "Count: 1, Failed: 1, Duration: 0.048s", "test-count": 1, "total-duration": 48441102}}"#;

    #[test]
    fn goss_v04_results_become_checks_with_their_values() {
        let c = parse(V04).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].property, "File /etc/passwd: exists");
        assert_eq!(
            (c[0].outcome, c[0].observed.as_str()),
            (Outcome::Pass, "true")
        );
        assert_eq!(c[1].property, "Service nginx: running (web server)");
        assert_eq!(c[1].outcome, Outcome::Fail);
        assert_eq!(
            (c[1].expected.as_str(), c[1].observed.as_str()),
            ("true", "false")
        );
        assert_eq!(
            (c[2].outcome, c[2].observed.as_str()),
            (Outcome::Skip, "skipped by goss")
        );
    }

    #[test]
    fn goss_v03_results_and_bad_reports() {
        let c = parse(V03).unwrap();
        assert_eq!(c[0].property, "Addr tcp://db:5432: reachable");
        assert_eq!(c[0].outcome, Outcome::Fail);
        assert_eq!(
            (c[0].expected.as_str(), c[0].observed.as_str()),
            ("true", "false")
        );
        // An error of goss's own is what was observed.
        let e = parse(r#"{"results":[{"resource-type":"Command","resource-id":"x","property":"exit-status","result":1,"err":"exec: not found"}]}"#).unwrap();
        assert_eq!(e[0].observed, "error: exec: not found");
        assert!(parse(r#"{"results": [], "summary": {}}"#)
            .unwrap_err()
            .contains("checked nothing"));
        assert!(parse("Error: yaml: line 3: mapping values are not allowed")
            .unwrap_err()
            .starts_with("not goss JSON"));
    }

    #[test]
    fn a_missing_goss_binary_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let e = binary(Some("bin/goss"), tmp.path()).unwrap_err();
        assert!(
            e.contains("`goss_binary = \"bin/goss\"`: no such file"),
            "{e}"
        );
    }
}
