//! Provisioners change a running instance through its communicator:
//! `shell`, `file`, `breakpoint`, and `hardening` (not built yet). Each is
//! a peer behind [`Provisioner`]; [`for_plan`] builds one from a resolved
//! `[[build.provisioner]]`.
//!
//! Architecture invariant: a provisioner only touches the instance through
//! the [`Communicator`]; secrets reach it only as environment values.

pub mod breakpoint;
pub mod file;
pub mod shell;

use async_trait::async_trait;

use crate::communicator::{CommError, Communicator};
use crate::engine::JobContext;
use crate::template::plan::ProvisionerPlan;
use crate::template::schema::{Field, Kind, STR_LIST};

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
}

/// One provisioning step.
#[async_trait]
pub trait Provisioner: Send + Sync {
    /// Runs against the instance; streams output as events through `ctx`.
    async fn provision(
        &self,
        ctx: &JobContext,
        comm: &dyn Communicator,
    ) -> Result<(), ProvisionError>;
}

const HARDENING_FIELDS: &[Field] = &[
    Field::req("profile", Kind::Str),
    Field::opt("fail_on", Kind::Enum(&["any", "high", "none"])),
    Field::opt("skip", STR_LIST),
    Field::opt("reason", Kind::Str),
];

/// Every provisioner type and its fields (besides `type`, `only`, `except`).
pub const SCHEMAS: &[(&str, &[Field])] = &[
    ("shell", shell::FIELDS),
    ("file", file::FIELDS),
    ("breakpoint", breakpoint::FIELDS),
    ("hardening", HARDENING_FIELDS),
];

/// Builds the provisioner for a resolved plan entry.
/// Relative local paths resolve against `template_dir`.
pub fn for_plan(
    plan: &ProvisionerPlan,
    template_dir: &std::path::Path,
) -> Result<Box<dyn Provisioner>, ProvisionError> {
    match plan.kind.as_str() {
        "shell" => Ok(Box::new(shell::Shell::from_plan(plan)?)),
        "file" => Ok(Box::new(file::FileCopy::from_plan(plan, template_dir)?)),
        "breakpoint" => Ok(Box::new(breakpoint::Breakpoint::from_plan(plan))),
        "hardening" => Err(ProvisionError::NotSupported(
            "the `hardening` provisioner is not supported yet (issue #10)".into(),
        )),
        other => Err(ProvisionError::Config(format!(
            "unknown provisioner type `{other}`"
        ))),
    }
}

/// A string setting of a plan.
pub(crate) fn text(plan: &ProvisionerPlan, key: &str) -> Option<String> {
    plan.config.get(key).and_then(|v| v.as_interpolated())
}
