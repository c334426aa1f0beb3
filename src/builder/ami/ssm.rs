//! The SSM communicator: runs scripts on an EC2 instance with
//! `SendCommand` (`AWS-RunShellScript`) and reads their output by polling
//! `GetCommandInvocation` — no SSH, no open port, no session-manager
//! plugin. Files travel in chunks through commands.
//!
//! SSM keeps every command's parameters in its history, so no secret value
//! may ever be in one: a provisioner's secret environment reaches the
//! instance as a single-use, short-lived Vault response-wrapping token that
//! the instance unwraps itself (`provisioners/vault-unwrap.sh`), and every
//! command is checked for secret values (in the encodings the redactor
//! knows) before it is sent — a hit refuses the command.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_ssm::types::{CommandInvocationStatus, InstanceInformationStringFilter, PingStatus};
use base64::Engine as _;
use sha2::Digest as _;
use tokio::sync::OnceCell;

use super::aws::{code, describe, not_implemented, wait_for};
use crate::communicator::{CommError, Communicator, OutputFn, RemoteCommand};
use crate::template::plan::VaultSettings;
use crate::ui::redact::Redactor;
use crate::ui::Stream;

/// How long a command may run when its provisioner sets no timeout.
const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(2 * 60 * 60);
/// How often the boot id is asked while a command that may reboot the
/// instance runs.
const REBOOT_PROBE_EVERY: Duration = Duration::from_secs(10);
/// Raw bytes per upload command (base64 makes it a third larger; SSM
/// parameters hold far more, but smaller commands fail and retry cheaply).
const UPLOAD_CHUNK: usize = 24 * 1024;
/// Raw bytes per download command: SSM returns at most 24,000 characters
/// of a command's output.
const DOWNLOAD_CHUNK: usize = 16 * 1024;
/// What `GetCommandInvocation` returns of each stream at most.
const SSM_OUTPUT_CAP: usize = 24_000;
const UNWRAP_SCRIPT: &str = include_str!("../../../provisioners/vault-unwrap.sh");

/// How secrets in a provisioner's environment reach the instance.
#[derive(Clone)]
pub struct VaultDelivery {
    pub settings: VaultSettings,
    /// The Vault address as the instance reaches it (default: kiln's).
    pub instance_address: Option<String>,
    /// Lifetime of each wrapping token (`5m`).
    pub ttl: String,
}

/// Where to reach the instance and what must never be sent to it.
pub struct SsmTarget {
    pub ssm: aws_sdk_ssm::Client,
    pub instance: String,
    /// Set when `endpoint` points at an AWS-compatible emulator.
    pub emulator: bool,
    pub online_timeout: Duration,
    /// `(name, value)` of every secret of the build.
    pub secrets: Arc<Vec<(String, String)>>,
    pub vault: VaultDelivery,
    /// Shown in the SSM console next to each command.
    pub comment: String,
    /// Tells the user something (e.g. how readiness was checked).
    pub message: Arc<dyn Fn(String) + Send + Sync>,
}

pub struct SsmCommunicator {
    t: SsmTarget,
    online: OnceCell<()>,
    redactor: Redactor,
}

/// Cancels a command whose caller went away (timeout, Ctrl-C, a dropped
/// future) so it does not run on unseen.
struct CancelOnDrop {
    ssm: aws_sdk_ssm::Client,
    command: String,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (ssm, id) = (self.ssm.clone(), self.command.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = ssm.cancel_command().command_id(id).send().await;
            });
        }
    }
}

impl SsmCommunicator {
    pub fn new(t: SsmTarget) -> SsmCommunicator {
        let redactor = Redactor::new(t.secrets.iter().map(|(_, v)| v.clone()));
        SsmCommunicator {
            t,
            online: OnceCell::new(),
            redactor,
        }
    }

    /// True when `text` holds a secret value in any encoding the redactor
    /// knows.
    fn holds_secret(&self, text: &str) -> bool {
        !self.redactor.is_empty() && self.redactor.redact(text) != text
    }

    /// Waits until the instance's SSM agent is online (once).
    async fn ensure_online(&self) -> Result<(), CommError> {
        self.online
            .get_or_try_init(|| async {
                let start = Instant::now();
                let how = self.wait_registered().await?;
                if how == Readiness::Probe {
                    (self.t.message)(
                        "this endpoint does not implement SSM DescribeInstanceInformation; readiness is checked by running `true` on the instance".into(),
                    );
                    self.wait_probe().await?;
                }
                (self.t.message)(format!(
                    "SSM agent of {} online after {:.1}s",
                    self.t.instance,
                    start.elapsed().as_secs_f64()
                ));
                Ok(())
            })
            .await
            .map(drop)
    }

    async fn wait_registered(&self) -> Result<Readiness, CommError> {
        let inst = &self.t.instance;
        wait_for(
            &format!("instance {inst} to be online in SSM"),
            self.t.online_timeout,
            || async {
                // One attempt: this call is itself in a polling loop.
                let out = self
                    .t
                    .ssm
                    .describe_instance_information()
                    .filters(
                        InstanceInformationStringFilter::builder()
                            .key("InstanceIds")
                            .values(inst)
                            .build()
                            .expect("key and values are set"),
                    )
                    .customize()
                    .config_override(
                        aws_sdk_ssm::config::Builder::default().retry_config(super::aws::retry(1)),
                    )
                    .send()
                    .await;
                match out {
                    Ok(o) => Ok(o
                        .instance_information_list()
                        .iter()
                        .any(|i| i.ping_status() == Some(&PingStatus::Online))
                        .then_some(Readiness::Registered)),
                    // Only an emulator may lack the call; against AWS an
                    // answer like this is an error like any other.
                    Err(e) if self.t.emulator && not_implemented(&e) => Ok(Some(Readiness::Probe)),
                    Err(e) if is_permanent(code(&e)) => {
                        Err(format!("SSM DescribeInstanceInformation: {}", describe(&e)))
                    }
                    // Throttling and 5xx the SDK's retries did not absorb.
                    Err(_) => Ok(None),
                }
            },
        )
        .await
        .map_err(CommError::Refused)
    }

    /// Readiness by running `true`: SSM refuses commands for instances
    /// whose agent has not registered yet.
    async fn wait_probe(&self) -> Result<(), CommError> {
        self.wait_probe_for(self.t.online_timeout).await
    }

    /// [`Self::wait_probe`] for at most `limit`.
    async fn wait_probe_for(&self, limit: Duration) -> Result<(), CommError> {
        let inst = &self.t.instance;
        wait_for(
            &format!("instance {inst} to run an SSM command"),
            limit,
            || async {
                match self
                    .send(vec!["true".into()], Duration::from_secs(60))
                    .await
                {
                    Ok(id) => {
                        let mut sink = |_: Stream, _: String| {};
                        match self
                            .follow(&id, Duration::from_secs(120), &mut sink, false)
                            .await
                        {
                            Ok(0) => Ok(Some(())),
                            _ => Ok(None),
                        }
                    }
                    Err(e) if e.contains("InvalidInstanceId") => Ok(None),
                    Err(e) => Err(e),
                }
            },
        )
        .await
        .map_err(CommError::Refused)
    }

    /// Sends a script; returns the command id.
    async fn send(&self, commands: Vec<String>, timeout: Duration) -> Result<String, String> {
        let out = self
            .t
            .ssm
            .send_command()
            .instance_ids(&self.t.instance)
            .document_name("AWS-RunShellScript")
            .parameters("commands", commands)
            .parameters(
                "executionTimeout",
                // AWS-RunShellScript accepts 1 s to 48 h.
                vec![timeout.as_secs().clamp(1, 172_800).to_string()],
            )
            .comment(&self.t.comment)
            .send()
            .await
            .map_err(|e| format!("SSM SendCommand: {}", describe(&e)))?;
        out.command()
            .and_then(|c| c.command_id())
            .map(str::to_string)
            .ok_or_else(|| "SSM SendCommand returned no command id".into())
    }

    /// Polls a command until it ends, streaming new output lines; returns
    /// its exit code.
    async fn follow(
        &self,
        command: &str,
        limit: Duration,
        output: &mut OutputFn<'_>,
        may_reboot: bool,
    ) -> Result<i32, CommError> {
        let start = Instant::now();
        let mut delay = Duration::from_millis(200);
        let (mut out_seen, mut err_seen) = (0usize, 0usize);
        loop {
            if start.elapsed() > limit {
                let _ = self.t.ssm.cancel_command().command_id(command).send().await;
                return Err(CommError::Timeout(limit));
            }
            let r = self
                .t
                .ssm
                .get_command_invocation()
                .command_id(command)
                .instance_id(&self.t.instance)
                .send()
                .await;
            let inv = match r {
                Ok(inv) => inv,
                // Right after SendCommand the invocation may not exist yet.
                Err(e) if code(&e) == Some("InvocationDoesNotExist") => {
                    tokio::time::sleep(delay).await;
                    continue;
                }
                // Throttling and 5xx the SDK's retries did not absorb:
                // the command runs on; keep asking until the limit.
                Err(e) if !is_permanent(code(&e)) && e.raw_response().is_some() => {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
                Err(e) => {
                    return Err(CommError::Refused(format!(
                        "SSM GetCommandInvocation: {}",
                        describe(&e)
                    )))
                }
            };
            let status = inv.status().cloned();
            let done = matches!(
                status,
                Some(
                    CommandInvocationStatus::Success
                        | CommandInvocationStatus::Failed
                        | CommandInvocationStatus::TimedOut
                        | CommandInvocationStatus::Cancelled
                )
            );
            emit(
                inv.standard_output_content().unwrap_or_default(),
                &mut out_seen,
                done,
                Stream::Stdout,
                output,
            );
            emit(
                inv.standard_error_content().unwrap_or_default(),
                &mut err_seen,
                done,
                Stream::Stderr,
                output,
            );
            if done {
                for (stream, text) in [
                    (Stream::Stdout, inv.standard_output_content()),
                    (Stream::Stderr, inv.standard_error_content()),
                ] {
                    if text.is_some_and(|t| t.chars().count() >= SSM_OUTPUT_CAP) {
                        output(
                            Stream::Stderr,
                            format!("kiln: SSM keeps only the first {SSM_OUTPUT_CAP} characters of {stream:?}; the rest was cut off"),
                        );
                    }
                }
            }
            match status {
                Some(CommandInvocationStatus::Success) => return Ok(inv.response_code()),
                Some(CommandInvocationStatus::Failed) => {
                    return match inv.response_code() {
                        code if code > 0 => Ok(code),
                        // No exit code: the agent lost the command, as a
                        // reboot under it makes it do.
                        _ if may_reboot => Err(CommError::Disconnected(format!(
                            "SSM command {command} ended without an exit code: {}",
                            inv.status_details().unwrap_or("no details")
                        ))),
                        _ => Err(CommError::Refused(format!(
                            "SSM command {command} failed: {}",
                            inv.status_details().unwrap_or("no details")
                        ))),
                    };
                }
                Some(CommandInvocationStatus::TimedOut) => return Err(CommError::Timeout(limit)),
                Some(CommandInvocationStatus::Cancelled | CommandInvocationStatus::Cancelling) => {
                    return Err(CommError::Refused(format!(
                        "SSM command {command} was cancelled"
                    )))
                }
                _ => {}
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 3 / 2).min(Duration::from_secs(2));
        }
    }

    /// The instance's boot id, asked with a command of its own; `None`
    /// when no answer came within `limit` (the agent is away: the
    /// command is cancelled).
    async fn boot_id(&self, limit: Duration) -> Option<String> {
        let id = self
            .send(vec![crate::communicator::BOOT_ID_SCRIPT.into()], limit)
            .await
            .ok()?;
        let mut guard = CancelOnDrop {
            ssm: self.t.ssm.clone(),
            command: id.clone(),
            armed: true,
        };
        let mut out = String::new();
        let mut sink = |s: Stream, line: String| {
            if s == Stream::Stdout {
                out.push_str(line.trim());
            }
        };
        let r = self.follow(&id, limit, &mut sink, false).await;
        guard.armed = !matches!(r, Ok(_) | Err(CommError::Timeout(_)));
        (matches!(r, Ok(0)) && !out.is_empty()).then_some(out)
    }

    /// [`Self::follow`] for a command that may reboot the instance. SSM
    /// does not reliably report the end of a command whose instance
    /// rebooted under it (AWS documents `exit 194` for reboots the agent
    /// knows of; a plain `reboot` can leave the command `InProgress`), so
    /// while it runs the boot id is asked every [`REBOOT_PROBE_EVERY`]:
    /// a new one means the command was cut off by a reboot, which is
    /// [`CommError::Disconnected`], as a dropped SSH connection is.
    async fn follow_or_reboot(
        &self,
        command: &str,
        limit: Duration,
        output: &mut OutputFn<'_>,
        before: &str,
    ) -> Result<i32, CommError> {
        let watch = async {
            loop {
                tokio::time::sleep(REBOOT_PROBE_EVERY).await;
                if let Some(now) = self.boot_id(REBOOT_PROBE_EVERY * 2).await {
                    if now != before {
                        return now;
                    }
                }
            }
        };
        tokio::select! {
            r = self.follow(command, limit, output, true) => r,
            now = watch => Err(CommError::Disconnected(format!(
                "the instance rebooted under SSM command {command} (boot id {before} → {now}); SSM did not report the command's end"
            ))),
        }
    }

    /// The script SSM runs: the provisioner's script from a private temp
    /// file, with its environment exported (non-secret values) or unwrapped
    /// from Vault on the instance (secret values).
    async fn render(&self, cmd: &RemoteCommand) -> Result<String, CommError> {
        if self.holds_secret(&cmd.script) {
            return Err(CommError::Refused(
                "the script holds a secret value; SSM keeps command parameters in its history"
                    .into(),
            ));
        }
        if let Some((bad, _)) = cmd.env.iter().find(|(k, _)| !is_env_name(k)) {
            return Err(CommError::Refused(format!(
                "`{bad}` is not an environment variable name (letters, digits and `_`, not starting with a digit)"
            )));
        }
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let q = |s: &str| shell_words::quote(s).into_owned();
        let mut lines = vec![
            "kiln_dir=$(mktemp -d /tmp/kiln.XXXXXX) || exit 1".to_string(),
            "trap 'rm -rf \"$kiln_dir\"' EXIT".into(),
            format!(
                "printf '%s' {} | base64 -d > \"$kiln_dir/script\" || exit 1",
                q(&b64(&cmd.script))
            ),
            "chmod 700 \"$kiln_dir/script\"".into(),
        ];
        let secret_env = cmd.env.iter().any(|(_, v)| self.holds_secret(v));
        if secret_env {
            let (token, addr) = self.wrap(&cmd.env).await?;
            lines.push(format!("VAULT_ADDR={}; export VAULT_ADDR", q(&addr)));
            lines.push(format!(
                "kiln_env=$(KILN_WRAPPED_TOKEN={} sh -c \"$(printf '%s' {} | base64 -d)\") || exit 1",
                q(&token),
                q(&b64(UNWRAP_SCRIPT))
            ));
            lines.push("eval \"$kiln_env\"; unset kiln_env".into());
        } else {
            for (k, v) in &cmd.env {
                lines.push(format!("{k}={}; export {k}", q(v)));
            }
        }
        if let Some(dir) = &cmd.workdir {
            lines.push(format!("cd {} || exit 1", q(dir)));
        }
        if cmd.script.starts_with("#!") {
            lines.push("\"$kiln_dir/script\"".into());
        } else {
            lines.push("/bin/sh -e \"$kiln_dir/script\"".into());
        }
        let text = lines.join("\n");
        if self.holds_secret(&text) {
            return Err(CommError::Refused(
                "refusing to send an SSM command that holds a secret value".into(),
            ));
        }
        Ok(text)
    }

    /// Wraps the environment in a single-use Vault token; returns it with
    /// the Vault address the instance should use.
    async fn wrap(&self, env: &[(String, String)]) -> Result<(String, String), CommError> {
        let refused = |e: crate::secrets::vault::VaultError| {
            CommError::Refused(format!(
                "secrets reach SSM instances only as a Vault response-wrapping token: {e}"
            ))
        };
        let cfg = crate::secrets::vault::VaultConfig::from_env_and(&self.t.vault.settings)
            .map_err(refused)?;
        let vault = crate::secrets::vault::Vault::connect(&cfg)
            .await
            .map_err(refused)?;
        let values: BTreeMap<String, String> = env.iter().cloned().collect();
        let token = vault.wrap(&values, &self.t.vault.ttl).await;
        vault.finish().await;
        let addr = self
            .t
            .vault
            .instance_address
            .clone()
            .unwrap_or_else(|| cfg.addr.clone());
        Ok((token.map_err(refused)?, addr))
    }

    /// Runs a helper script of the communicator itself, collecting stdout.
    async fn run_collect(&self, script: String, what: &str) -> Result<String, CommError> {
        let mut out = String::new();
        let mut sink = |s: Stream, line: String| {
            if s == Stream::Stdout {
                out.push_str(&line);
                out.push('\n');
            }
        };
        let cmd = RemoteCommand {
            script,
            ..Default::default()
        };
        match self.exec(&cmd, &mut sink).await? {
            0 => Ok(out),
            code => Err(CommError::Refused(format!(
                "{what} failed (exit code {code})"
            ))),
        }
    }
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Readiness {
    Registered,
    Probe,
}

fn is_env_name(k: &str) -> bool {
    let mut chars = k.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The scripts that move `bytes` to `remote`: create a private partial
/// file, append base64 chunks, check the sha256, set the mode and move it
/// into place (the partial file is removed if the check fails).
fn upload_scripts(bytes: &[u8], remote: &str, mode: Option<u32>) -> Vec<String> {
    let q = |s: &str| shell_words::quote(s).into_owned();
    let part = format!("{remote}.kiln-part");
    let mut scripts = vec![format!(
        "umask 077\nmkdir -p -- \"$(dirname -- {r})\"\n: > {p}",
        r = q(remote),
        p = q(&part)
    )];
    for chunk in bytes.chunks(UPLOAD_CHUNK) {
        let b64 = base64::engine::general_purpose::STANDARD.encode(chunk);
        scripts.push(format!(
            "printf '%s' {} | base64 -d >> {}",
            q(&b64),
            q(&part)
        ));
    }
    let sha = hex::encode(sha2::Sha256::digest(bytes));
    let chmod = mode
        .map(|m| format!("chmod {m:o} -- {}\n", q(&part)))
        .unwrap_or_default();
    scripts.push(format!(
        "printf '%s  %s\\n' {sha} {p} | sha256sum -c --quiet - || {{ rm -f -- {p}; exit 1; }}\n{chmod}mv -f -- {p} {r}",
        p = q(&part),
        r = q(remote)
    ));
    scripts
}

/// Errors that waiting will not mend.
fn is_permanent(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "AccessDeniedException"
                | "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "ExpiredTokenException"
                | "InvalidFilterKey"
        )
    )
}

/// Emits the complete lines of `text` past `seen` (and the rest when the
/// command has ended).
fn emit(text: &str, seen: &mut usize, done: bool, stream: Stream, output: &mut OutputFn<'_>) {
    let Some(new) = text.get(*seen..) else {
        return;
    };
    let upto = if done {
        new.len()
    } else {
        new.rfind('\n').map(|i| i + 1).unwrap_or(0)
    };
    for line in new[..upto].lines() {
        output(stream, line.to_string());
    }
    *seen += upto;
}

#[async_trait]
impl Communicator for SsmCommunicator {
    async fn exec(&self, cmd: &RemoteCommand, output: &mut OutputFn<'_>) -> Result<i32, CommError> {
        self.ensure_online().await?;
        let before = match cmd.may_reboot {
            true => self.boot_id(Duration::from_secs(60)).await,
            false => None,
        };
        let script = self.render(cmd).await?;
        let timeout = cmd.timeout.unwrap_or(DEFAULT_EXEC_TIMEOUT);
        let id = self
            // One element: splitting into lines would lose `\r` in values.
            .send(vec![script], timeout)
            .await
            .map_err(CommError::Refused)?;
        let mut guard = CancelOnDrop {
            ssm: self.t.ssm.clone(),
            command: id.clone(),
            armed: true,
        };
        // SSM ends the command at `executionTimeout`; kiln gives it a
        // minute more to say so before cancelling it itself.
        let limit = timeout + Duration::from_secs(60);
        let r = match &before {
            Some(before) => self.follow_or_reboot(&id, limit, output, before).await,
            None => self.follow(&id, limit, output, false).await,
        };
        // A command that ended needs no cancel; one kiln gave up on, or
        // one a reboot cut off, does.
        guard.armed = matches!(r, Err(CommError::Refused(_) | CommError::Disconnected(_)));
        match r {
            Err(CommError::Timeout(_)) => Err(CommError::Timeout(timeout)),
            other => other,
        }
    }

    /// After a reboot: the agent answers commands again.
    async fn reconnect(&self, limit: Duration) -> Result<(), CommError> {
        self.wait_probe_for(limit).await
    }

    fn can_reboot(&self) -> bool {
        true
    }

    async fn upload(&self, local: &Path, remote: &str, mode: Option<u32>) -> Result<(), CommError> {
        let bytes = fs_err::tokio::read(local)
            .await
            .map_err(CommError::io("cannot read the file to upload"))?;
        if self.holds_secret(&String::from_utf8_lossy(&bytes)) {
            return Err(CommError::Refused(format!(
                "`{}` holds a secret value; files sent over SSM stay in its command history",
                local.display()
            )));
        }
        for script in upload_scripts(&bytes, remote, mode) {
            self.run_collect(script, &format!("uploading `{remote}`"))
                .await?;
        }
        Ok(())
    }

    async fn download(&self, remote: &str, local: &Path) -> Result<(), CommError> {
        let q = |s: &str| shell_words::quote(s).into_owned();
        let head = self
            .run_collect(
                format!("wc -c < {r}\nsha256sum < {r}", r = q(remote)),
                "reading the file's size",
            )
            .await?;
        let mut fields = head.split_whitespace();
        let (Some(size), Some(sha)) = (
            fields.next().and_then(|s| s.parse::<usize>().ok()),
            fields.next(),
        ) else {
            return Err(CommError::Refused(format!(
                "cannot download `{remote}`: the instance's answer had no size and checksum (output: {head:?})"
            )));
        };
        // The size is the instance's word: checked before anything is
        // allocated or asked for, and the chunks are counted as they come.
        let limit = crate::communicator::download_limit()?;
        if size as u64 > limit {
            return Err(crate::communicator::too_large(remote, limit));
        }
        let mut bytes = Vec::with_capacity(size.min(1 << 20));
        for i in 0..size.div_ceil(DOWNLOAD_CHUNK) {
            let b64 = self
                .run_collect(
                    format!(
                        "dd if={} bs={DOWNLOAD_CHUNK} skip={i} count=1 2>/dev/null | base64 -w0",
                        q(remote)
                    ),
                    "downloading a chunk",
                )
                .await?;
            let chunk = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| CommError::Refused(format!("downloading `{remote}`: {e}")))?;
            if bytes.len() + chunk.len() > size {
                return Err(CommError::Refused(format!(
                    "downloading `{remote}`: the instance sent more than the {size} bytes it announced"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        if hex::encode(sha2::Sha256::digest(&bytes)) != sha {
            return Err(CommError::Refused(format!(
                "downloading `{remote}`: the checksum does not match"
            )));
        }
        fs_err::tokio::write(local, &bytes)
            .await
            .map_err(CommError::io("cannot write the downloaded file"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_emitted_line_by_line_as_it_grows() {
        let mut got = vec![];
        let mut sink = |s: Stream, l: String| got.push((s, l));
        let mut seen = 0;
        emit("one\ntw", &mut seen, false, Stream::Stdout, &mut sink);
        emit("one\ntwo\nthr", &mut seen, false, Stream::Stdout, &mut sink);
        emit(
            "one\ntwo\nthree",
            &mut seen,
            true,
            Stream::Stdout,
            &mut sink,
        );
        let lines: Vec<_> = got.into_iter().map(|(_, l)| l).collect();
        assert_eq!(lines, ["one", "two", "three"]);
    }

    fn communicator(secrets: Vec<(String, String)>) -> SsmCommunicator {
        let conf = aws_sdk_ssm::Config::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .build();
        SsmCommunicator::new(SsmTarget {
            ssm: aws_sdk_ssm::Client::from_conf(conf),
            instance: "i-0".into(),
            emulator: false,
            online_timeout: Duration::from_secs(1),
            secrets: Arc::new(secrets),
            vault: VaultDelivery {
                settings: VaultSettings::default(),
                instance_address: None,
                ttl: "5m".into(),
            },
            comment: "test".into(),
            message: Arc::new(|_| {}),
        })
    }

    /// What an instance's `sh` does with a command kiln would send.
    fn run_sh(script: &str) -> std::process::Output {
        std::process::Command::new("sh")
            .args(["-c", script])
            .output()
            .unwrap()
    }

    #[tokio::test]
    async fn a_rendered_command_runs_the_script_with_its_interpreter_env_and_workdir() {
        let c = communicator(vec![]);
        let dir = tempfile::tempdir().unwrap();
        let cmd = RemoteCommand {
            script: "#!/bin/sh\nprintf '%s|%s' \"$GREETING\" \"$(pwd)\"\nexit 3\n".into(),
            env: vec![(
                "GREETING".into(),
                "it's \"quoted\" $(not run)\r\nline".into(),
            )],
            workdir: Some(dir.path().display().to_string()),
            timeout: None,
            may_reboot: false,
        };
        let text = c.render(&cmd).await.unwrap();
        let out = run_sh(&text);
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!(
                "it's \"quoted\" $(not run)\r\nline|{}",
                dir.path().display()
            )
        );
        let bad = RemoteCommand {
            env: vec![("X;reboot".into(), "1".into())],
            ..cmd
        };
        assert!(c.render(&bad).await.is_err(), "a bad env name is refused");
    }

    #[tokio::test]
    async fn a_secret_in_a_script_or_an_env_without_vault_is_never_rendered() {
        let c = communicator(vec![("db".into(), "hunter2-secret".into())]);
        let in_script = RemoteCommand {
            script: "echo hunter2-secret".into(),
            ..Default::default()
        };
        assert!(c.render(&in_script).await.is_err());
        // With no Vault configured, a secret env cannot be wrapped: refused.
        std::env::remove_var("VAULT_ADDR");
        let in_env = RemoteCommand {
            script: "true".into(),
            env: vec![("DB".into(), "hunter2-secret".into())],
            ..Default::default()
        };
        let err = c.render(&in_env).await.unwrap_err().to_string();
        assert!(
            err.contains("response-wrapping") && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn upload_scripts_rebuild_the_file_with_its_mode_and_refuse_a_bad_copy() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("sub/dir/file.bin");
        // More than two chunks, every byte value.
        let bytes: Vec<u8> = (0..60_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let scripts = upload_scripts(&bytes, &dest.display().to_string(), Some(0o640));
        assert_eq!(scripts.len(), 2 + bytes.len().div_ceil(UPLOAD_CHUNK));
        for s in &scripts {
            let out = run_sh(s);
            assert!(out.status.success(), "{s}: {out:?}");
        }
        assert_eq!(std::fs::read(&dest).unwrap(), bytes);
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        // A lost chunk fails the checksum and leaves no partial file.
        let dest2 = dir.path().join("other");
        let scripts = upload_scripts(&bytes, &dest2.display().to_string(), None);
        let last = scripts.len() - 1;
        for (i, s) in scripts.iter().enumerate() {
            if i == 1 {
                continue;
            }
            let ok = run_sh(s).status.success();
            assert_eq!(ok, i != last, "script {i}");
        }
        assert!(!dest2.exists());
        assert!(!dir.path().join("other.kiln-part").exists());
    }

    #[test]
    fn only_unfixable_errors_stop_the_wait_for_the_agent() {
        assert!(is_permanent(Some("AccessDeniedException")));
        assert!(!is_permanent(Some("ThrottlingException")));
        assert!(!is_permanent(None));
    }
}
