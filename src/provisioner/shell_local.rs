//! `type = "shell-local"`: commands on the build host, between steps that
//! change the instance (notifications, fetching a file for a later
//! upload), as Packer users write them. They run in the template's folder
//! with a clean environment: a few basics (`PATH`, `HOME`, …), the build's
//! names (`KILN_BUILD_NAME`, `KILN_BUILD_ID`, `KILN_SOURCE_TYPE`,
//! `KILN_SOURCE_NAME`, `KILN_IMAGE_NAME`, `KILN_IMAGE_VERSION`) and the
//! provisioner's `env`. Never kiln's own environment: a secret reaches
//! the command only when listed in `env`.
//!
//! The commands run like a `shell` provisioner's (same `inline`, scripts,
//! exit codes, retries), through a host communicator.

use async_trait::async_trait;

use super::shell::Shell;
use super::{ProvisionError, Provisioner};
use crate::communicator::local::LocalCommunicator;
use crate::communicator::Communicator;
use crate::job::JobContext;
use crate::template::plan::ProvisionerPlan;
use crate::template::schema::{Field, Kind, STR, STR_LIST};

const FILE_LIST: Kind = Kind::List(&Kind::ExistingFile);

pub const FIELDS: &[Field] = &[
    Field::opt("inline", STR_LIST),
    Field::opt("script", Kind::ExistingFile),
    Field::opt("scripts", FILE_LIST),
    Field::opt("env", Kind::Map(&STR)).sensitive_ok(),
    Field::opt("workdir", Kind::Str),
    Field::opt("timeout", Kind::Duration),
    Field::opt("valid_exit_codes", Kind::List(&Kind::Int)),
    Field::opt("pause_before", Kind::Duration),
    Field::opt("max_retries", Kind::Int),
];

pub struct ShellLocal {
    shell: Shell,
}

impl ShellLocal {
    pub fn from_plan(plan: &ProvisionerPlan) -> Result<ShellLocal, ProvisionError> {
        Ok(ShellLocal {
            shell: Shell::from_plan(plan)?,
        })
    }
}

#[async_trait]
impl Provisioner for ShellLocal {
    async fn provision(
        &self,
        ctx: &JobContext,
        _instance: &dyn Communicator,
    ) -> Result<(), ProvisionError> {
        let scripts = crate::job::scratch::build_work_dir(&ctx.state_dir, &ctx.build_id)
            .join(crate::job::journal::sanitize(&ctx.name))
            .join("shell-local");
        let host = LocalCommunicator::new(ctx.template_dir.clone(), scripts, ctx.undo.clone());
        let names = [
            ("KILN_BUILD_NAME", ctx.plan.build.clone()),
            ("KILN_BUILD_ID", ctx.build_id.clone()),
            ("KILN_SOURCE_TYPE", ctx.plan.source_type.clone()),
            ("KILN_SOURCE_NAME", ctx.plan.source_name.clone()),
            ("KILN_IMAGE_NAME", ctx.image.name.clone()),
            ("KILN_IMAGE_VERSION", ctx.image.version.clone()),
        ];
        let shell = self
            .shell
            .with_env_first(names.into_iter().map(|(k, v)| (k.to_string(), v)));
        shell.provision(ctx, &host).await
    }
}
