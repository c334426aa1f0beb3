//! Provisioners change a running instance through its communicator:
//! `shell`, `file`, `breakpoint`, `hardening` (profiles of rules with
//! apply and check scripts, and a compliance report), `ansible-local`;
//! `shell-local` and `ansible` run on the build host instead. Each is
//! a peer behind [`Provisioner`]; [`for_plan`] builds one from a resolved
//! `[[build.provisioner]]`.
//!
//! Architecture invariant: a provisioner only touches the instance through
//! the [`Communicator`]; secrets reach it only as environment values.

pub mod ansible;
pub mod breakpoint;
pub mod file;
pub mod hardening;
pub mod shell;
pub mod shell_local;

use async_trait::async_trait;

use crate::communicator::{CommError, Communicator};
use crate::job::JobContext;
use crate::template::plan::ProvisionerPlan;
use crate::template::schema::Field;

/// What went wrong provisioning.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("{0}")]
    NotSupported(String),
    #[error("{what} exited with code {code}")]
    ExitCode { what: String, code: i32 },
    #[error("invalid settings: {0}")]
    Config(String),
    #[error(transparent)]
    Comm(#[from] CommError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    NotInteractive(String),
    /// A hardening profile could not be applied, or its checks failed.
    #[error("{0}")]
    Compliance(String),
}

/// One provisioning step.
#[async_trait]
pub trait Provisioner: Send + Sync {
    /// Refuses, before anything launches, a source type this provisioner
    /// cannot work with.
    fn check_source(&self, _source_type: &str) -> Result<(), ProvisionError> {
        Ok(())
    }

    /// Runs against the instance; streams output as events through `ctx`.
    async fn provision(
        &self,
        ctx: &JobContext,
        comm: &dyn Communicator,
    ) -> Result<(), ProvisionError>;
}

/// Every provisioner type and its fields (besides `type`, `only`, `except`).
pub const SCHEMAS: &[(&str, &[Field])] = &[
    ("shell", shell::FIELDS),
    ("shell-local", shell_local::FIELDS),
    ("ansible", ansible::FIELDS),
    ("ansible-local", ansible::local::FIELDS),
    ("file", file::FIELDS),
    ("breakpoint", breakpoint::FIELDS),
    ("hardening", hardening::FIELDS),
];

/// Builds the provisioner for a resolved plan entry.
/// Relative local paths resolve against `template_dir`.
pub fn for_plan(
    plan: &ProvisionerPlan,
    template_dir: &std::path::Path,
) -> Result<Box<dyn Provisioner>, ProvisionError> {
    match plan.kind.as_str() {
        "shell" => Ok(Box::new(shell::Shell::from_plan(plan)?)),
        "shell-local" => Ok(Box::new(shell_local::ShellLocal::from_plan(plan)?)),
        "file" => Ok(Box::new(file::FileCopy::from_plan(plan, template_dir)?)),
        "ansible" => Ok(Box::new(ansible::Ansible::from_plan(plan, template_dir)?)),
        "ansible-local" => Ok(Box::new(ansible::local::AnsibleLocal::from_plan(
            plan,
            template_dir,
        )?)),
        "breakpoint" => Ok(Box::new(breakpoint::Breakpoint::from_plan(plan))),
        "hardening" => Ok(Box::new(hardening::Hardening::from_plan(
            plan,
            template_dir,
        )?)),
        other => Err(ProvisionError::Config(format!(
            "unknown provisioner type `{other}`"
        ))),
    }
}

/// Problems with a provisioner's settings beyond their types (as
/// `(key, message)`), for the template check to report as input errors.
pub fn settings_problems(
    kind: &str,
    config: &std::collections::BTreeMap<String, crate::template::Value>,
) -> Vec<(&'static str, String)> {
    match kind {
        "hardening" => hardening::settings_problems(config),
        "shell" | "shell-local" => shell::settings_problems(config),
        "file" => file::settings_problems(config),
        "ansible" => ansible::settings_problems(config),
        _ => vec![],
    }
}

/// A string setting of a plan.
pub(crate) fn text(plan: &ProvisionerPlan, key: &str) -> Option<String> {
    plan.config.get(key).and_then(|v| v.as_interpolated())
}

/// A list of strings setting (empty when unset).
pub(crate) fn list(plan: &ProvisionerPlan, key: &str) -> Vec<String> {
    match plan.config.get(key) {
        Some(crate::template::Value::List(l)) => l
            .iter()
            .filter_map(crate::template::Value::as_interpolated)
            .collect(),
        _ => vec![],
    }
}
