//! The compliance report of one profile on one system: each rule's result
//! (pass, fail, not applicable, skipped) with its evidence, the policy
//! (`fail_on`) that judges it, and a plain-text rendering for people.
//! Reports go into the build manifest and the provenance's byproducts.

use serde::{Deserialize, Serialize};

use super::profile::Severity;

/// What a rule's check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Pass,
    Fail,
    NotApplicable,
    Skipped,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "FAIL",
            Outcome::NotApplicable => "n/a",
            Outcome::Skipped => "skipped",
        }
    }
}

/// Which failed rules fail the build (`fail_on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FailOn {
    /// Any failed rule.
    #[default]
    Any,
    /// Failed rules of high severity.
    High,
    /// Nothing: the report only records.
    None,
}

impl std::str::FromStr for FailOn {
    type Err = String;
    fn from_str(s: &str) -> Result<FailOn, String> {
        match s {
            "any" => Ok(FailOn::Any),
            "high" => Ok(FailOn::High),
            "none" => Ok(FailOn::None),
            other => Err(format!(
                "`fail_on = \"{other}\"`: expected `any`, `high` or `none`"
            )),
        }
    }
}

/// One rule's line in the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleResult {
    pub id: String,
    pub title: String,
    pub severity: Severity,
    pub result: Outcome,
    /// What the check printed (trimmed), or why the rule was not run.
    pub evidence: String,
}

/// The system a report is about, from `/etc/os-release`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Distro {
    pub id: String,
    pub id_like: Vec<String>,
    pub version_id: String,
    pub codename: String,
    pub pretty_name: String,
}

impl Distro {
    /// Parses os-release text; `None` when it names no `ID`.
    pub fn parse(os_release: &str) -> Option<Distro> {
        let mut d = Distro::default();
        for line in os_release.lines() {
            let Some((k, v)) = line.trim().split_once('=') else {
                continue;
            };
            let v = shell_words::split(v)
                .ok()
                .and_then(|w| w.into_iter().next())
                .unwrap_or_default();
            match k {
                "ID" => d.id = v,
                "ID_LIKE" => d.id_like = v.split_whitespace().map(String::from).collect(),
                "VERSION_ID" => d.version_id = v,
                "VERSION_CODENAME" => d.codename = v,
                "PRETTY_NAME" => d.pretty_name = v,
                _ => {}
            }
        }
        (!d.id.is_empty()).then_some(d)
    }

    /// Does a rule's `distros` list name this system (by `ID` or `ID_LIKE`)?
    pub fn matches(&self, distros: &[String]) -> bool {
        distros
            .iter()
            .any(|d| *d == self.id || self.id_like.contains(d))
    }
}

/// Counts by outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub pass: usize,
    pub fail: usize,
    pub not_applicable: usize,
    pub skipped: usize,
}

/// A profile's results on one system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComplianceReport {
    pub profile: String,
    /// `sha256:` of the profile files (and kiln's script prelude).
    pub profile_digest: String,
    /// `None` when the system has no `/etc/os-release`.
    pub distro: Option<Distro>,
    /// `apply+check` in a build, `check` for `kiln check`.
    pub mode: String,
    /// The image checked (`kiln check`), with its manifest digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub fail_on: FailOn,
    /// The reason given for `skip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
    pub summary: Summary,
    pub rules: Vec<RuleResult>,
    /// Rules applied a second time, in order, because their checks failed
    /// after every rule had been applied once (a later rule undid them,
    /// e.g. a package install that created a folder with its own mode).
    /// The results above are those of the checks after the re-apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reapplied: Vec<String>,
}

impl ComplianceReport {
    pub fn new(profile: &super::profile::Profile, distro: Option<Distro>, mode: &str) -> Self {
        ComplianceReport {
            profile: profile.name.clone(),
            profile_digest: profile.digest.clone(),
            distro,
            mode: mode.to_string(),
            image: None,
            fail_on: FailOn::default(),
            skip_reason: None,
            summary: Summary::default(),
            rules: vec![],
            reapplied: vec![],
        }
    }

    /// Adds a result and counts it.
    pub fn push(&mut self, r: RuleResult) {
        match r.result {
            Outcome::Pass => self.summary.pass += 1,
            Outcome::Fail => self.summary.fail += 1,
            Outcome::NotApplicable => self.summary.not_applicable += 1,
            Outcome::Skipped => self.summary.skipped += 1,
        }
        self.rules.push(r);
    }

    /// Failed rules that `fail_on` counts against the build.
    pub fn blocking_failures(&self, fail_on: FailOn) -> Vec<&RuleResult> {
        self.rules
            .iter()
            .filter(|r| r.result == Outcome::Fail)
            .filter(|r| match fail_on {
                FailOn::Any => true,
                FailOn::High => r.severity == Severity::High,
                FailOn::None => false,
            })
            .collect()
    }

    /// The one-line summary.
    pub fn headline(&self) -> String {
        let on = match &self.distro {
            Some(d) if !d.pretty_name.is_empty() => d.pretty_name.clone(),
            Some(d) => d.id.clone(),
            None => "a system without /etc/os-release".to_string(),
        };
        let s = &self.summary;
        let image = match &self.image {
            Some(i) => format!(" in `{i}`"),
            None => String::new(),
        };
        format!(
            "profile `{}` on {on}{image}: {} passed, {} failed, {} not applicable, {} skipped",
            self.profile, s.pass, s.fail, s.not_applicable, s.skipped
        )
    }
}

/// Renders reports as text: a headline and one line per rule, with the
/// evidence of failed rules indented below them. `kiln check` prints it;
/// `kiln audit` can print a manifest's reports with it.
pub fn render(report: &ComplianceReport) -> String {
    let mut out = report.headline();
    out.push('\n');
    let width = report.rules.iter().map(|r| r.id.len()).max().unwrap_or(4);
    for r in &report.rules {
        out.push_str(&format!(
            "  {:<7} {:<6} {:<width$}  {}\n",
            r.result.label(),
            r.severity.to_string(),
            r.id,
            r.title
        ));
        if matches!(r.result, Outcome::Fail | Outcome::Skipped) {
            for line in r.evidence.lines().take(10) {
                out.push_str(&format!("          | {line}\n"));
            }
        }
    }
    if !report.reapplied.is_empty() {
        out.push_str(&format!(
            "  applied again after all rules (a later rule had undone them, or made them relevant): {}\n",
            report.reapplied.join(", ")
        ));
    }
    out
}

/// Failed high-severity rules across the reports a build manifest holds
/// (its `hardening` list), as `profile/rule`: what `kiln verify --policy
/// no-failed-high` refuses.
pub fn failed_high_rules(manifest: &serde_json::Value) -> Result<Vec<String>, String> {
    let Some(list) = manifest.get("hardening") else {
        return Ok(vec![]);
    };
    let reports: Vec<ComplianceReport> = serde_json::from_value(list.clone())
        .map_err(|e| format!("the manifest's `hardening` reports are malformed: {e}"))?;
    Ok(reports
        .iter()
        .flat_map(|rep| {
            rep.blocking_failures(FailOn::High)
                .into_iter()
                .map(move |r| format!("{}/{}", rep.profile, r.id))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, severity: Severity, result: Outcome) -> RuleResult {
        RuleResult {
            id: id.into(),
            title: format!("title of {id}"),
            severity,
            result,
            evidence: format!("evidence of {id}"),
        }
    }

    fn report() -> ComplianceReport {
        let mut r = ComplianceReport {
            profile: "p".into(),
            profile_digest: "sha256:0".into(),
            distro: None,
            mode: "check".into(),
            image: None,
            fail_on: FailOn::Any,
            skip_reason: None,
            summary: Summary::default(),
            rules: vec![],
            reapplied: vec![],
        };
        r.push(rule("a", Severity::High, Outcome::Pass));
        r.push(rule("b", Severity::Medium, Outcome::Fail));
        r.push(rule("c", Severity::High, Outcome::Fail));
        r.push(rule("d", Severity::Low, Outcome::NotApplicable));
        r
    }

    #[test]
    fn fail_on_decides_which_failures_count() {
        let r = report();
        let ids = |f| {
            r.blocking_failures(f)
                .iter()
                .map(|x| x.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(FailOn::Any), ["b", "c"]);
        assert_eq!(ids(FailOn::High), ["c"]);
        assert!(ids(FailOn::None).is_empty());
        assert_eq!(r.summary.fail, 2);
        assert_eq!(r.summary.not_applicable, 1);
    }

    #[test]
    fn rendering_shows_failures_with_evidence() {
        let text = render(&report());
        assert!(text.contains("1 passed, 2 failed, 1 not applicable, 0 skipped"));
        assert!(text.contains("FAIL"));
        assert!(text.contains("| evidence of c"));
        assert!(!text.contains("evidence of a"), "{text}");
        assert!(!text.contains("applied again"), "{text}");
        let mut r = report();
        r.reapplied = vec!["a".into()];
        assert!(render(&r).contains("applied again after all rules"));
        // Reports from before `reapplied` existed still parse.
        let mut old = serde_json::to_value(report()).unwrap();
        old.as_object_mut().unwrap().remove("reapplied");
        let back: ComplianceReport = serde_json::from_value(old).unwrap();
        assert!(back.reapplied.is_empty());
    }

    #[test]
    fn failed_high_rules_are_read_from_a_manifest() {
        let m = serde_json::json!({ "hardening": [report()] });
        assert_eq!(failed_high_rules(&m).unwrap(), ["p/c"]);
        assert!(failed_high_rules(&serde_json::json!({}))
            .unwrap()
            .is_empty());
        assert!(failed_high_rules(&serde_json::json!({ "hardening": 3 })).is_err());
    }

    #[test]
    fn os_release_is_parsed_and_matched_by_id_and_id_like() {
        let d = Distro::parse("PRETTY_NAME=\"Rocky Linux 9.3\"\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.3\"\n").unwrap();
        assert_eq!(d.id, "rocky");
        assert!(d.matches(&["rhel".into()]));
        assert!(!d.matches(&["debian".into()]));
        let deb = Distro::parse("ID=debian\nVERSION_CODENAME=bookworm\n").unwrap();
        assert_eq!(deb.codename, "bookworm");
        assert!(deb.matches(&["debian".into(), "ubuntu".into()]));
        assert!(Distro::parse("NAME=busybox\n").is_none());
    }
}
