//! `type = "breakpoint"`: pause the build until Enter is pressed, to look
//! at the instance by hand (as in Packer). Needs a terminal.

use std::io::IsTerminal;

use async_trait::async_trait;

use super::{text, ProvisionError, Provisioner};
use crate::communicator::Communicator;
use crate::job::JobContext;
use crate::template::plan::ProvisionerPlan;
use crate::template::schema::{Field, Kind};
use crate::template::Value;

pub const FIELDS: &[Field] = &[
    Field::opt("note", Kind::Str),
    Field::opt("disable", Kind::Bool),
];

pub struct Breakpoint {
    note: Option<String>,
    disabled: bool,
}

impl Breakpoint {
    pub fn from_plan(plan: &ProvisionerPlan) -> Breakpoint {
        Breakpoint {
            note: text(plan, "note"),
            disabled: plan.config.get("disable") == Some(&Value::Bool(true)),
        }
    }
}

#[async_trait]
impl Provisioner for Breakpoint {
    async fn provision(
        &self,
        ctx: &JobContext,
        comm: &dyn Communicator,
    ) -> Result<(), ProvisionError> {
        if self.disabled {
            ctx.message("breakpoint disabled".to_string());
            return Ok(());
        }
        if !ctx.interactive || !std::io::stdin().is_terminal() {
            return Err(ProvisionError::NotInteractive(
                "a breakpoint needs an interactive terminal on stdin; set `disable = true` to skip it".into(),
            ));
        }
        let note = self
            .note
            .as_deref()
            .map(|n| format!(": {n}"))
            .unwrap_or_default();
        let way = crate::communicator::way_in::open(comm, ctx)
            .await
            .unwrap_or_else(|e| {
                ctx.message(format!("no way into the instance: {e}"));
                None
            });
        let enter = way
            .as_ref()
            .map(|w| format!("; enter the instance with: {}", w.command))
            .unwrap_or_default();
        ctx.message(format!(
            "paused at breakpoint{note}{enter}; press Enter to continue"
        ));
        let read = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)
        })
        .await
        .map_err(|e| ProvisionError::Io {
            what: "breakpoint".into(),
            source: std::io::Error::other(e),
        })?
        .map_err(|source| ProvisionError::Io {
            what: "reading stdin".into(),
            source,
        });
        if let Some(w) = way {
            w.close(ctx).await;
        }
        comm.close_host_access().await;
        read.map(drop)
    }
}
