//! `type = "shell"`: run inline commands or script files in the instance,
//! with an environment (where secrets go), a working directory and a
//! timeout. Inline commands run as one `sh -e` script, as in Packer.
//!
//! Packer's shell options live here too: `execute_command` (the script is
//! uploaded to `remote_folder` and run by that command, with `{path}` and
//! `{vars}` filled in), `valid_exit_codes`, `pause_before`, `max_retries`,
//! and reboots: with `expect_disconnect` a lost connection is not a
//! failure, and on an instance that can reboot kiln waits until it answers
//! again (its boot id changed, or the connection came back) for at most
//! `start_retry_timeout` before the next script or provisioner runs.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;

use super::{text, ProvisionError, Provisioner};
use crate::communicator::{sh_quote, CommError, Communicator, RemoteCommand};
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
    Field::opt("execute_command", Kind::Str),
    Field::opt("remote_folder", Kind::Str),
    Field::opt("valid_exit_codes", Kind::List(&Kind::Int)),
    Field::opt("expect_disconnect", Kind::Bool),
    Field::opt("pause_before", Kind::Duration),
    Field::opt("max_retries", Kind::Int),
    Field::opt("start_retry_timeout", Kind::Duration),
];

/// How long to wait for a reboot to begin after a script with
/// `expect_disconnect` returned normally (`sudo reboot` returns at once).
const REBOOT_GRACE: Duration = Duration::from_secs(30);
/// Packer's default `start_retry_timeout`.
const START_RETRY: Duration = Duration::from_secs(300);

/// Problems with a shell provisioner's settings beyond their types.
pub fn settings_problems(
    config: &std::collections::BTreeMap<String, Value>,
) -> Vec<(&'static str, String)> {
    let mut out = vec![];
    if let Some(c) = config
        .get("execute_command")
        .and_then(Value::as_interpolated)
    {
        if !c.contains("{path}") {
            out.push(("execute_command", format!("`{c}` does not run the script: write `{{path}}` where its path goes (and `{{vars}}` for the environment), e.g. `sudo -E sh {{path}}`")));
        }
    }
    if let Some(f) = config.get("remote_folder").and_then(Value::as_interpolated) {
        if !f.starts_with('/') {
            out.push((
                "remote_folder",
                format!("`{f}` is not an absolute path in the instance"),
            ));
        }
    }
    if let Some(Value::List(codes)) = config.get("valid_exit_codes") {
        for c in codes {
            if let Value::Num(n) = c {
                if !(0.0..=255.0).contains(n) || n.fract() != 0.0 {
                    out.push((
                        "valid_exit_codes",
                        format!("{n} is not an exit code (0 to 255)"),
                    ));
                }
            }
        }
    }
    if let Some(Value::Num(n)) = config.get("max_retries") {
        if !(0.0..=100.0).contains(n) || n.fract() != 0.0 {
            out.push((
                "max_retries",
                format!("{n}: give a whole number from 0 to 100"),
            ));
        }
    }
    out
}

/// A resolved shell provisioner.
/// The stderr line an inline script's exit trap writes when a command
/// fails: `MARKER<n>` names the command (taken out of the output).
const FAILED_MARKER: &str = "kiln-inline-command-failed:";

/// One `inline` command, for messages.
#[derive(Clone)]
struct Inline {
    command: String,
    at: String,
}

#[derive(Clone)]
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
    /// `execute_command`, with `{path}` and `{vars}` still in it.
    execute_command: Option<String>,
    remote_folder: String,
    valid_exit_codes: Vec<i32>,
    expect_disconnect: bool,
    pause_before: Option<Duration>,
    max_retries: u32,
    start_retry_timeout: Duration,
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
        let duration = |k: &str| text(plan, k).and_then(|t| parse_duration(&t));
        let number = |k: &str| match c.get(k) {
            Some(Value::Num(n)) => Some(*n),
            _ => None,
        };
        let valid_exit_codes = match c.get("valid_exit_codes") {
            Some(Value::List(l)) => l
                .iter()
                .filter_map(|v| match v {
                    Value::Num(n) => Some(*n as i32),
                    _ => None,
                })
                .collect(),
            _ => vec![0],
        };
        Ok(Shell {
            scripts,
            inline,
            at: plan.at.clone(),
            env,
            workdir: text(plan, "workdir"),
            timeout: duration("timeout"),
            execute_command: text(plan, "execute_command"),
            remote_folder: text(plan, "remote_folder").unwrap_or_else(|| "/tmp".into()),
            valid_exit_codes,
            expect_disconnect: matches!(c.get("expect_disconnect"), Some(Value::Bool(true))),
            pause_before: duration("pause_before"),
            max_retries: number("max_retries").unwrap_or(0.0) as u32,
            start_retry_timeout: duration("start_retry_timeout").unwrap_or(START_RETRY),
        })
    }

    /// The same provisioner with `env` entries put before its own (its
    /// own win: they come later).
    pub fn with_env_first(&self, env: impl IntoIterator<Item = (String, String)>) -> Shell {
        let mut s = self.clone();
        s.env = env.into_iter().chain(self.env.iter().cloned()).collect();
        s
    }

    /// `{vars}`: each environment name passed on as `NAME="$NAME"`, so a
    /// command such as `sudo env {vars} sh {path}` keeps the environment
    /// without any value in its text.
    fn vars(&self) -> String {
        self.env
            .iter()
            .map(|(k, _)| format!("{k}=\"${k}\""))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs one script: through `execute_command` when given (uploaded
    /// first, removed after), else as the communicator runs scripts.
    async fn run_script(
        &self,
        ctx: &JobContext,
        comm: &dyn Communicator,
        script: &str,
        failed: &mut Option<usize>,
    ) -> Result<i32, ProvisionError> {
        let mut out = |stream, line: String| match line.trim_end().strip_prefix(FAILED_MARKER) {
            Some(n) if !self.inline.is_empty() => *failed = n.parse().ok(),
            _ => ctx.output(stream, line),
        };
        let Some(exec) = &self.execute_command else {
            let cmd = RemoteCommand {
                script: script.to_string(),
                env: self.env.clone(),
                workdir: self.workdir.clone(),
                timeout: self.timeout,
                may_reboot: self.expect_disconnect,
            };
            return Ok(comm.exec(&cmd, &mut out).await?);
        };
        let remote = format!(
            "{}/kiln-script-{}.sh",
            self.remote_folder.trim_end_matches('/'),
            uuid::Uuid::new_v4().simple()
        );
        let body = if script.starts_with("#!") {
            script.to_string()
        } else {
            format!("#!/bin/sh -e\n{script}")
        };
        let local = ctx
            .scratch_file("script")
            .await
            .map_err(|source| ProvisionError::Io {
                what: "cannot create scratch file".into(),
                source,
            })?;
        fs_err::tokio::write(&local, body)
            .await
            .map_err(|source| ProvisionError::Io {
                what: "cannot write scratch file".into(),
                source,
            })?;
        let uploaded = comm.upload(&local, &remote, Some(0o755)).await;
        let _ = tokio::fs::remove_file(&local).await;
        uploaded?;
        let cmd = RemoteCommand {
            script: exec
                .replace("{path}", &sh_quote(&remote))
                .replace("{vars}", &self.vars()),
            env: self.env.clone(),
            workdir: self.workdir.clone(),
            timeout: self.timeout,
            may_reboot: self.expect_disconnect,
        };
        let code = comm.exec(&cmd, &mut out).await;
        if !matches!(code, Err(crate::communicator::CommError::Disconnected(_))) {
            let rm = RemoteCommand {
                script: format!("rm -f {}", sh_quote(&remote)),
                ..Default::default()
            };
            let _ = comm.exec(&rm, &mut |_, _| {}).await;
        }
        Ok(code?)
    }

    /// Every script once, in order.
    async fn run_all(
        &self,
        ctx: &JobContext,
        comm: &dyn Communicator,
    ) -> Result<(), ProvisionError> {
        for (what, script) in &self.scripts {
            let boot = if self.expect_disconnect && comm.can_reboot() {
                boot_id(comm).await
            } else {
                None
            };
            let mut failed: Option<usize> = None;
            let code = match self.run_script(ctx, comm, script, &mut failed).await {
                Err(ProvisionError::Comm(crate::communicator::CommError::Disconnected(why)))
                    if self.expect_disconnect =>
                {
                    ctx.message(format!(
                        "{what}: the connection was lost, as `expect_disconnect` allows ({why})"
                    ));
                    None
                }
                Err(e) => return Err(e),
                Ok(code) => Some(code),
            };
            if let Some(code) = code.filter(|c| !self.valid_exit_codes.contains(c)) {
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
            if self.expect_disconnect && comm.can_reboot() {
                self.wait_for_reboot(ctx, comm, what, boot, code.is_none())
                    .await?;
            }
        }
        Ok(())
    }

    /// After a script that may have rebooted the instance: wait until it
    /// is back (its boot id changed, or the lost connection returned), or
    /// until `REBOOT_GRACE` passed with the same boot and no disconnect.
    async fn wait_for_reboot(
        &self,
        ctx: &JobContext,
        comm: &dyn Communicator,
        what: &str,
        before: Option<String>,
        lost: bool,
    ) -> Result<(), ProvisionError> {
        let grace = tokio::time::Instant::now() + REBOOT_GRACE;
        let deadline = tokio::time::Instant::now() + self.start_retry_timeout;
        let mut lost = lost;
        loop {
            if tokio::time::Instant::now() >= deadline {
                return Err(ProvisionError::Comm(CommError::Refused(format!(
                    "{what}: the instance did not answer with its boot id within {} after the disconnect",
                    humantime::format_duration(self.start_retry_timeout)
                ))));
            }
            if lost {
                ctx.message(format!(
                    "{what}: waiting up to {} for the instance to answer again",
                    humantime::format_duration(self.start_retry_timeout)
                ));
                comm.reconnect(self.start_retry_timeout).await?;
                lost = false;
            }
            match boot_id(comm).await {
                Some(now) if before.as_ref().is_some_and(|b| *b != now) => {
                    ctx.message(format!("{what}: the instance rebooted and answers again"));
                    return Ok(());
                }
                Some(_) if tokio::time::Instant::now() >= grace => {
                    ctx.message(format!(
                        "{what}: the instance did not reboot within {}; going on",
                        humantime::format_duration(REBOOT_GRACE)
                    ));
                    return Ok(());
                }
                Some(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                None => lost = true,
            }
        }
    }
}

/// The instance's boot id; `None` when it cannot be read (the connection
/// is down, or it answered too late).
async fn boot_id(comm: &dyn Communicator) -> Option<String> {
    let cmd = RemoteCommand {
        script: crate::communicator::BOOT_ID_SCRIPT.into(),
        timeout: Some(Duration::from_secs(10)),
        ..Default::default()
    };
    let mut id = String::new();
    match comm
        .exec(&cmd, &mut |_, line| id.push_str(line.trim()))
        .await
    {
        Ok(0) if !id.is_empty() => Some(id),
        _ => None,
    }
}

#[async_trait]
impl Provisioner for Shell {
    async fn provision(
        &self,
        ctx: &JobContext,
        comm: &dyn Communicator,
    ) -> Result<(), ProvisionError> {
        if let Some(pause) = self.pause_before {
            ctx.message(format!(
                "pausing {} before the provisioner at {}",
                humantime::format_duration(pause),
                self.at
            ));
            // The engine drops this future when the build is cancelled.
            tokio::time::sleep(pause).await;
        }
        let mut attempt = 0;
        loop {
            match self.run_all(ctx, comm).await {
                Err(e) if attempt < self.max_retries && !matches!(e, ProvisionError::Config(_)) => {
                    attempt += 1;
                    ctx.message(format!(
                        "the provisioner at {} failed ({e}); retry {attempt} of {}",
                        self.at, self.max_retries
                    ));
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                r => return r,
            }
        }
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
