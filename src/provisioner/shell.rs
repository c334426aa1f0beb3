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
/// The stderr line an inline script's exit trap writes when a command
/// fails: `MARKER<n>` names the command (taken out of the output).
const FAILED_MARKER: &str = "kiln-inline-command-failed:";

/// One `inline` command, for messages.
struct Inline {
    command: String,
    at: String,
}

pub struct Shell {
    /// `(what, script text)` in order.
    scripts: Vec<(String, String)>,
    /// The `inline` commands (empty for scripts).
    inline: Vec<Inline>,
    /// Where the provisioner is declared.
    at: String,
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
        let mut inline = vec![];
        if let Some(Value::List(lines)) = c.get("inline") {
            let body: Vec<String> = lines.iter().filter_map(Value::as_interpolated).collect();
            // Each command is numbered as it starts; a failing one (`sh -e`
            // stops there) is named by the exit trap.
            let mut script = format!(
                "kiln_inline=0\ntrap 'kiln_rc=$?; [ \"$kiln_rc\" = 0 ] || echo \"{FAILED_MARKER}$kiln_inline\" >&2' EXIT\n"
            );
            for (i, cmd) in body.iter().enumerate() {
                script.push_str(&format!("kiln_inline={}\n{cmd}\n", i + 1));
                inline.push(Inline {
                    command: cmd.clone(),
                    at: plan.inline_at.get(i).cloned().unwrap_or_default(),
                });
            }
            scripts.push(("inline commands".to_string(), script));
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
            inline,
            at: plan.at.clone(),
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
            let mut failed: Option<usize> = None;
            let code = comm
                .exec(
                    &cmd,
                    &mut |stream, line| match line.trim_end().strip_prefix(FAILED_MARKER) {
                        Some(n) if !self.inline.is_empty() => failed = n.parse().ok(),
                        _ => ctx.output(stream, line),
                    },
                )
                .await?;
            if code != 0 {
                let named = failed
                    .and_then(|n| Some((n, self.inline.get(n.checked_sub(1)?)?)))
                    .map(|(n, c)| {
                        format!(
                            "inline command {n} of {} `{}` ({})",
                            self.inline.len(),
                            short(&c.command),
                            c.at
                        )
                    });
                return Err(ProvisionError::ExitCode {
                    what: format!(
                        "{}, in the provisioner at {}",
                        named.unwrap_or_else(|| what.clone()),
                        self.at
                    ),
                    code,
                });
            }
        }
        Ok(())
    }
}

/// A command shortened to one line of at most 80 characters.
fn short(cmd: &str) -> String {
    let first = cmd.lines().next().unwrap_or_default();
    let mut out: String = first.chars().take(80).collect();
    if out.len() < cmd.len() {
        out.push('…');
    }
    out
}
