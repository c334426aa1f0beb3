//! `type = "shell"`: run inline commands or script files in the instance,
//! with an environment (where secrets go), a working directory and a
//! timeout. Inline commands run as one `sh -e` script, as in Packer.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;

use super::{text, ProvisionError, Provisioner};
use crate::communicator::{Communicator, RemoteCommand};
use crate::job::JobContext;
use crate::template::plan::ProvisionerPlan;
use crate::template::schema::{parse_duration, Field, Kind, STR, STR_LIST};
use crate::template::Value;

const FILE_LIST: Kind = Kind::List(&Kind::ExistingFile);

pub const FIELDS: &[Field] = &[
    Field::opt("inline", STR_LIST),
    Field::opt("script", Kind::ExistingFile),
    Field::opt("scripts", FILE_LIST),
    Field::opt("env", Kind::Map(&STR)).sensitive_ok(),
    Field::opt("workdir", Kind::Str),
    Field::opt("timeout", Kind::Duration),
];

/// A resolved shell provisioner.
pub struct Shell {
    /// `(what, script text)` in order.
    scripts: Vec<(String, String)>,
    env: Vec<(String, String)>,
    workdir: Option<String>,
    timeout: Option<Duration>,
}

impl Shell {
    pub fn from_plan(plan: &ProvisionerPlan) -> Result<Shell, ProvisionError> {
        let c = &plan.config;
        let given = ["inline", "script", "scripts"]
            .into_iter()
            .filter(|k| c.contains_key(*k))
            .count();
        if given != 1 {
            return Err(ProvisionError::Config(format!(
                "provisioner {} (shell) needs exactly one of `inline`, `script` or `scripts`",
                plan.index
            )));
        }
        let mut scripts = vec![];
        if let Some(Value::List(lines)) = c.get("inline") {
            let body: Vec<String> = lines.iter().filter_map(Value::as_interpolated).collect();
            scripts.push(("inline commands".to_string(), body.join("\n") + "\n"));
        }
        let mut paths: Vec<PathBuf> = vec![];
        if let Some(p) = text(plan, "script") {
            paths.push(p.into());
        }
        if let Some(Value::List(list)) = c.get("scripts") {
            paths.extend(
                list.iter()
                    .filter_map(Value::as_interpolated)
                    .map(PathBuf::from),
            );
        }
        for p in paths {
            let body = fs_err::read_to_string(&p).map_err(|source| ProvisionError::Io {
                what: "cannot read script".into(),
                source,
            })?;
            scripts.push((format!("script `{}`", p.display()), body));
        }
        let env = match c.get("env") {
            Some(Value::Map(m)) => m
                .iter()
                .map(|(k, v)| (k.clone(), v.as_interpolated().unwrap_or_default()))
                .collect(),
            _ => vec![],
        };
        Ok(Shell {
            scripts,
            env,
            workdir: text(plan, "workdir"),
            timeout: text(plan, "timeout").and_then(|t| parse_duration(&t)),
        })
    }
}

#[async_trait]
impl Provisioner for Shell {
    async fn provision(
        &self,
        ctx: &JobContext,
        comm: &dyn Communicator,
    ) -> Result<(), ProvisionError> {
        for (what, script) in &self.scripts {
            let cmd = RemoteCommand {
                script: script.clone(),
                env: self.env.clone(),
                workdir: self.workdir.clone(),
                timeout: self.timeout,
            };
            let code = comm
                .exec(&cmd, &mut |stream, line| ctx.output(stream, line))
                .await?;
            if code != 0 {
                return Err(ProvisionError::ExitCode {
                    what: what.clone(),
                    code,
                });
            }
        }
        Ok(())
    }
}
