//! Runs a profile on a system through its [`Communicator`]: detects the
//! distribution from `/etc/os-release`, applies the rules that apply (in a
//! build), then runs every check and collects the compliance report. Used
//! by the `hardening` provisioner and by `kiln check` alike.

use std::time::Duration;

use super::profile::{Profile, Rule, PRELUDE};
use super::report::{ComplianceReport, Distro, Outcome, RuleResult};
use crate::communicator::{CommError, Communicator, OutputFn, RemoteCommand};
use crate::ui::Stream;

/// Apply and check (a build), or only check (an existing image).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    ApplyAndCheck,
    CheckOnly,
}

/// Why running a profile stopped before it had a report.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Comm(#[from] CommError),
    #[error("rule `{rule}`: the apply script exited with code {code}")]
    Apply { rule: String, code: i32 },
}

const APPLY_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const CHECK_TIMEOUT: Duration = Duration::from_secs(2 * 60);
/// How much of a check's output is kept as evidence.
const EVIDENCE_LINES: usize = 30;
const EVIDENCE_CHARS: usize = 4000;

/// Rules to skip, with the reason recorded in the report.
#[derive(Debug, Clone, Default)]
pub struct Skips {
    pub ids: Vec<String>,
    pub reason: String,
}

/// Runs `profile` on the system behind `comm`. Apply output streams to
/// `output`; check output becomes evidence. An apply script that fails
/// stops the run (it is a broken rule or system, not a finding).
pub async fn run_profile(
    profile: &Profile,
    comm: &dyn Communicator,
    mode: Mode,
    skips: &Skips,
    output: &mut OutputFn<'_>,
) -> Result<ComplianceReport, RunError> {
    let distro = detect_distro(comm).await?;
    let env = distro_env(distro.as_ref());
    let mode_name = match mode {
        Mode::ApplyAndCheck => "apply+check",
        Mode::CheckOnly => "check",
    };
    let mut report = ComplianceReport::new(profile, distro.clone(), mode_name);
    if !skips.ids.is_empty() {
        report.skip_reason = Some(skips.reason.clone());
    }
    // Decided before running anything: skipped and wrong-distro rules.
    let mut decided: Vec<Option<(Outcome, String)>> = profile
        .rules
        .iter()
        .map(|r| {
            if skips.ids.contains(&r.id) {
                Some((Outcome::Skipped, format!("skipped: {}", skips.reason)))
            } else {
                match &distro {
                    Some(d) if d.matches(&r.distros) => None,
                    Some(d) => Some((
                        Outcome::NotApplicable,
                        format!("for {}, not `{}`", r.distros.join(", "), d.id),
                    )),
                    None => Some((
                        Outcome::NotApplicable,
                        format!(
                            "no /etc/os-release: the system is none of {}",
                            r.distros.join(", ")
                        ),
                    )),
                }
            }
        })
        .collect();
    // Rules found not applicable by their `applies_if` during the apply
    // pass: a later rule may make them relevant (install cron).
    let mut by_condition = vec![false; profile.rules.len()];
    if mode == Mode::ApplyAndCheck {
        for (i, (rule, slot)) in profile.rules.iter().zip(decided.iter_mut()).enumerate() {
            if slot.is_some() {
                continue;
            }
            if let Some(why) = not_applicable(comm, rule, &env).await? {
                *slot = Some((Outcome::NotApplicable, why));
                by_condition[i] = true;
                continue;
            }
            apply(comm, rule, &env, "", output).await?;
        }
    }
    let mut results = check_all(profile, comm, mode, &env, &decided).await?;
    if mode == Mode::ApplyAndCheck {
        // The checks must hold after *all* rules applied, whatever their
        // order: a rule that a later one undid (a package install creating
        // `/etc/cron.weekly` 755 after `cron-permissions`) is applied once
        // more, in profile order, and then every check runs again (so a
        // re-apply that breaks another rule is caught too). Apply scripts
        // are idempotent, which the profile format asks of them.
        // A rule whose `applies_if` became true (a later rule installed
        // what it configures) is applied now, in the same pass.
        let mut again = false;
        for (i, rule) in profile.rules.iter().enumerate() {
            let failed = decided[i].is_none() && results[i].0 == Outcome::Fail;
            let now_relevant = by_condition[i] && not_applicable(comm, rule, &env).await?.is_none();
            if !(failed || now_relevant) {
                continue;
            }
            let note = if failed {
                " again: its check failed after all rules were applied"
            } else {
                ": a later rule made its `applies_if` true"
            };
            apply(comm, rule, &env, note, output).await?;
            decided[i] = None;
            report.reapplied.push(rule.id.clone());
            again = true;
        }
        if again {
            results = check_all(profile, comm, mode, &env, &decided).await?;
        }
    }
    for (rule, (result, evidence)) in profile.rules.iter().zip(results) {
        report.push(RuleResult {
            id: rule.id.clone(),
            title: rule.title.clone(),
            severity: rule.severity,
            result,
            evidence,
        });
    }
    Ok(report)
}

/// Runs one rule's apply script; a non-zero exit stops the run.
async fn apply(
    comm: &dyn Communicator,
    rule: &Rule,
    env: &[(String, String)],
    note: &str,
    output: &mut OutputFn<'_>,
) -> Result<(), RunError> {
    let cmd = command(&rule.apply, true, env, APPLY_TIMEOUT);
    let id = rule.id.clone();
    if !note.is_empty() {
        output(Stream::Stdout, format!("[{id}] applying{note}"));
    }
    let code = comm
        .exec(&cmd, &mut |stream, line| {
            output(stream, format!("[{id}] {line}"))
        })
        .await?;
    if code != 0 {
        return Err(RunError::Apply {
            rule: rule.id.clone(),
            code,
        });
    }
    Ok(())
}

/// Every rule's outcome and evidence: decided ones as decided, the others
/// by their check.
async fn check_all(
    profile: &Profile,
    comm: &dyn Communicator,
    mode: Mode,
    env: &[(String, String)],
    decided: &[Option<(Outcome, String)>],
) -> Result<Vec<(Outcome, String)>, CommError> {
    let mut out = Vec::with_capacity(profile.rules.len());
    for (rule, slot) in profile.rules.iter().zip(decided) {
        out.push(match slot {
            Some(decided) => decided.clone(),
            None => {
                // In a build, applicability was decided before applying.
                let skip = match mode {
                    Mode::CheckOnly => not_applicable(comm, rule, env).await?,
                    Mode::ApplyAndCheck => None,
                };
                match skip {
                    Some(why) => (Outcome::NotApplicable, why),
                    None => check(comm, rule, env).await?,
                }
            }
        });
    }
    Ok(out)
}

/// Reads `/etc/os-release` (or `/usr/lib/os-release`).
async fn detect_distro(comm: &dyn Communicator) -> Result<Option<Distro>, CommError> {
    let mut text = String::new();
    let cmd = RemoteCommand {
        script: "cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null || true\n"
            .into(),
        timeout: Some(CHECK_TIMEOUT),
        ..Default::default()
    };
    comm.exec(&cmd, &mut |stream, line| {
        if stream == Stream::Stdout {
            text.push_str(&line);
            text.push('\n');
        }
    })
    .await?;
    Ok(Distro::parse(&text))
}

fn distro_env(d: Option<&Distro>) -> Vec<(String, String)> {
    let d = d.cloned().unwrap_or_default();
    vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        ("KILN_DISTRO_ID".into(), d.id),
        ("KILN_DISTRO_LIKE".into(), d.id_like.join(" ")),
        ("KILN_DISTRO_CODENAME".into(), d.codename),
        ("LC_ALL".into(), "C".into()),
    ]
}

/// A rule script with kiln's prelude in front, run by `/bin/sh`.
fn command(
    body: &str,
    exit_on_error: bool,
    env: &[(String, String)],
    timeout: Duration,
) -> RemoteCommand {
    let set = if exit_on_error { "set -e\n" } else { "" };
    RemoteCommand {
        script: format!("#!/bin/sh\n{PRELUDE}\n{set}{body}\n"),
        env: env.to_vec(),
        workdir: Some("/".into()),
        timeout: Some(timeout),
        may_reboot: false,
    }
}

/// `Some(reason)` when the rule's `applies_if` says it is not relevant.
async fn not_applicable(
    comm: &dyn Communicator,
    rule: &Rule,
    env: &[(String, String)],
) -> Result<Option<String>, CommError> {
    let Some(cond) = &rule.applies_if else {
        return Ok(None);
    };
    let code = comm
        .exec(&command(cond, false, env, CHECK_TIMEOUT), &mut |_, _| {})
        .await?;
    Ok((code != 0).then(|| format!("`{}` is false here", cond.trim())))
}

/// Runs a check: exit 0 passes, 1 fails, 2 means the check does not apply
/// here (it says why), anything else fails too (the check broke); its
/// output is the evidence.
async fn check(
    comm: &dyn Communicator,
    rule: &Rule,
    env: &[(String, String)],
) -> Result<(Outcome, String), CommError> {
    let mut lines: Vec<String> = vec![];
    let code = comm
        .exec(
            &command(&rule.check, false, env, CHECK_TIMEOUT),
            &mut |_, line| lines.push(line),
        )
        .await?;
    let keep = lines.len().saturating_sub(EVIDENCE_LINES);
    let mut evidence = lines[keep..].join("\n");
    if evidence.len() > EVIDENCE_CHARS {
        let mut cut = EVIDENCE_CHARS;
        while !evidence.is_char_boundary(cut) {
            cut -= 1;
        }
        evidence.truncate(cut);
        evidence.push_str(" …");
    }
    Ok(match code {
        0 => (Outcome::Pass, evidence),
        1 => (Outcome::Fail, evidence),
        2 => (Outcome::NotApplicable, evidence),
        other => (
            Outcome::Fail,
            format!("the check exited with code {other}\n{evidence}")
                .trim_end()
                .to_string(),
        ),
    })
}
