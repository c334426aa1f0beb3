//! `type = "hardening"`: applies a hardening profile's rules through the
//! communicator, runs every check, and records the compliance report in
//! the job (it ends up in the build manifest and the signed provenance).
//! `fail_on` decides which failed rules fail the build; `skip` needs a
//! `reason`, which the report keeps.

pub mod profile;
pub mod report;
pub mod run;

use async_trait::async_trait;

use super::{text, ProvisionError, Provisioner};
use crate::communicator::Communicator;
use crate::job::JobContext;
use crate::template::plan::ProvisionerPlan;
use crate::template::schema::{Field, Kind, STR_LIST};
use crate::template::Value;
use profile::Profile;
use report::FailOn;
use run::{Mode, Skips};

pub const FIELDS: &[Field] = &[
    Field::req("profile", Kind::Str),
    Field::opt("fail_on", Kind::Enum(&["any", "high", "none"])),
    Field::opt("skip", STR_LIST),
    Field::opt("reason", Kind::Str),
];

/// A resolved hardening provisioner.
pub struct Hardening {
    profile: Profile,
    fail_on: FailOn,
    skips: Skips,
}

/// Problems with a hardening provisioner's settings that the template
/// check reports (as `(key, message)`), so a bad `skip` is an input error.
pub fn settings_problems(
    config: &std::collections::BTreeMap<String, Value>,
) -> Vec<(&'static str, String)> {
    let get = |k: &str| config.get(k);
    let mut out = vec![];
    let skip: Vec<String> = match get("skip") {
        Some(Value::List(l)) => l.iter().filter_map(Value::as_interpolated).collect(),
        _ => vec![],
    };
    let reason = get("reason").and_then(Value::as_interpolated);
    if !skip.is_empty() && reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        out.push((
            "skip",
            "skipping rules needs a `reason`, which is recorded in the compliance report".into(),
        ));
    }
    if let Some(spec) = get("profile").and_then(Value::as_interpolated) {
        // Shipped profiles are checked here; profile files when the build loads them.
        if !profile::is_path(&spec) {
            match profile::load(&spec, std::path::Path::new(".")) {
                Ok(p) => {
                    let unknown = profile::unknown_ids(&p, &skip);
                    if !unknown.is_empty() {
                        out.push((
                            "skip",
                            format!(
                                "profile `{spec}` has no rule {}",
                                unknown
                                    .iter()
                                    .map(|u| format!("`{u}`"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        ));
                    }
                }
                Err(e) => out.push(("profile", e.to_string())),
            }
        }
    }
    out
}

impl Hardening {
    pub fn from_plan(
        plan: &ProvisionerPlan,
        template_dir: &std::path::Path,
    ) -> Result<Hardening, ProvisionError> {
        let spec = text(plan, "profile").unwrap_or_default();
        let profile = profile::load(&spec, template_dir)
            .map_err(|e| ProvisionError::Config(e.to_string()))?;
        let fail_on = match text(plan, "fail_on") {
            Some(f) => f.parse().map_err(ProvisionError::Config)?,
            None => FailOn::default(),
        };
        let ids: Vec<String> = match plan.config.get("skip") {
            Some(Value::List(l)) => l.iter().filter_map(Value::as_interpolated).collect(),
            _ => vec![],
        };
        let reason = text(plan, "reason").unwrap_or_default();
        if !ids.is_empty() && reason.trim().is_empty() {
            return Err(ProvisionError::Config(
                "skipping rules needs a `reason`".into(),
            ));
        }
        let unknown = profile::unknown_ids(&profile, &ids);
        if !unknown.is_empty() {
            return Err(ProvisionError::Config(format!(
                "profile `{}` has no rule {}",
                profile.name,
                unknown.join(", ")
            )));
        }
        Ok(Hardening {
            profile,
            fail_on,
            skips: Skips { ids, reason },
        })
    }
}

#[async_trait]
impl Provisioner for Hardening {
    async fn provision(
        &self,
        ctx: &JobContext,
        comm: &dyn Communicator,
    ) -> Result<(), ProvisionError> {
        ctx.message(format!(
            "hardening profile `{}`: {} rule(s)",
            self.profile.name,
            self.profile.rules.len()
        ));
        let mut report = run::run_profile(
            &self.profile,
            comm,
            Mode::ApplyAndCheck,
            &self.skips,
            &mut |stream, line| ctx.output(stream, line),
        )
        .await
        .map_err(|e| match e {
            run::RunError::Comm(c) => ProvisionError::Comm(c),
            other => ProvisionError::Compliance(other.to_string()),
        })?;
        report.fail_on = self.fail_on;
        for line in report::render(&report).lines() {
            ctx.message(line.to_string());
        }
        let blocking: Vec<String> = report
            .blocking_failures(self.fail_on)
            .iter()
            .map(|r| r.id.clone())
            .collect();
        ctx.add_hardening_report(serde_json::to_value(&report).expect("reports serialize"));
        if !blocking.is_empty() {
            return Err(ProvisionError::Compliance(format!(
                "profile `{}`: {} rule(s) failed (fail_on = \"{}\"): {}",
                self.profile.name,
                blocking.len(),
                serde_json::to_value(self.fail_on)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                blocking.join(", ")
            )));
        }
        Ok(())
    }
}
