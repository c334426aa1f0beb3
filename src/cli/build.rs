//! `kiln build`: for each template, resolve it (fetching secrets), skip it
//! when `--skip-unchanged` and its rebuild policy say nothing is due, else
//! run every job through the engine with the chosen sinks. With several
//! templates a run summary closes (built, skipped, failed, durations).
//! Exit 0 only if every build succeeded or was skipped. Ctrl-C and SIGTERM
//! cancel the build and clean up.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::{print_diagnostics, Exit, VarArgs};
use crate::builder::Builders;
use crate::engine::{self, OnError, RunOptions};
use crate::ui::sinks::{HumanSink, JsonSink, LogFileSink};
use crate::ui::{Event, EventBus, JobStatus, Redactor, Sink};

#[derive(Args, Debug)]
pub struct BuildArgs {
    #[command(flatten)]
    pub vars: VarArgs,
    /// Build only these (`TYPE.NAME`, `BUILD.TYPE.NAME` or a build name).
    #[arg(long, value_name = "SRC")]
    pub only: Vec<String>,
    /// Build all but these.
    #[arg(long, value_name = "SRC")]
    pub except: Vec<String>,
    /// How many jobs run at once (0: all).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub parallel: usize,
    /// On failure: undo everything, or leave the failed instance for inspection.
    #[arg(long, value_enum, default_value_t = OnError::Cleanup)]
    pub on_error: OnError,
    /// When a `[[build.test]]` fails, keep its test instance for
    /// inspection (listed; removed with `kiln cleanup`).
    #[arg(long)]
    pub keep_on_failure: bool,
    /// Move `[build.register]` channels even where `[build.policy]`
    /// denies them; the override and this reason are logged.
    #[arg(long, value_name = "REASON")]
    pub override_policy: Option<String>,
    /// Let the other jobs finish when one fails.
    #[arg(long)]
    pub no_fail_fast: bool,
    /// Print events as JSON lines on stdout, and nothing else.
    #[arg(long)]
    pub json: bool,
    /// Build only what `[build.rebuild]` says is due (default: inputs or
    /// base changed since the newest active version); exit 0 otherwise.
    #[arg(long)]
    pub skip_unchanged: bool,
    /// Write the build log here (default: STATE_DIR/logs/BUILD_ID.log).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    #[arg(value_name = "TEMPLATE", required = true)]
    pub templates: Vec<PathBuf>,
}

/// How one template's build ended, for the run summary.
#[derive(Debug, serde::Serialize)]
struct Outcome {
    template: String,
    /// `built`, `skipped`, `failed`, `invalid`, `cancelled`.
    status: &'static str,
    detail: String,
    duration_ms: u64,
}

pub async fn exec(args: BuildArgs, state_dir: &Path, catalog: Option<&str>) -> Exit {
    if args
        .override_policy
        .as_deref()
        .is_some_and(|r| r.trim().is_empty())
    {
        eprintln!("error: `--override-policy` needs a reason");
        return Exit::BadInput;
    }
    let redactor = Arc::new(RwLock::new(Redactor::default()));
    crate::ui::init_tracing(redactor.clone());
    let catalog = match crate::catalog::open(catalog, state_dir).await {
        Ok(c) => Arc::new(c),
        Err(e) => return super::images::fail(&e),
    };
    let mut exit = Exit::Success;
    let mut outcomes = vec![];
    for template in &args.templates {
        let started = std::time::Instant::now();
        let (code, status, detail) =
            build_one(&args, template, state_dir, &catalog, &redactor).await;
        if (code as u8) > (exit as u8) {
            exit = code;
        }
        if code != Exit::Success && super::github_actions() && !args.json {
            super::github_error(
                Some((template.display().to_string(), 1, 1)),
                "kiln build failed",
                &detail,
            );
        }
        outcomes.push(Outcome {
            template: template.display().to_string(),
            status,
            detail,
            duration_ms: started.elapsed().as_millis() as u64,
        });
        if status == "cancelled" {
            break;
        }
    }
    if args.templates.len() > 1 {
        if args.json {
            let out = serde_json::json!({ "event": "run_summary", "templates": outcomes });
            println!("{}", crate::ui::sinks::json_line(&out));
        } else {
            eprintln!("\nrun summary:");
            for o in &outcomes {
                eprintln!(
                    "  {:<9} {} ({:.1} s){}",
                    o.status,
                    o.template,
                    o.duration_ms as f64 / 1000.0,
                    if o.detail.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", o.detail)
                    }
                );
            }
        }
    }
    exit
}

/// Builds one template: its exit code, status and a line saying why.
async fn build_one(
    args: &BuildArgs,
    template: &Path,
    state_dir: &Path,
    catalog: &Arc<crate::catalog::Catalog>,
    redactor: &Arc<RwLock<Redactor>>,
) -> (Exit, &'static str, String) {
    let plan = match super::load_plan_with_inputs(
        template,
        &args.vars,
        &args.only,
        &args.except,
        &crate::secrets::fetch,
    ) {
        Ok(p) => p,
        Err(diags) => {
            if args.json {
                for d in diags.iter() {
                    let loc = d.location();
                    let e = Event::Error {
                        job: None,
                        message: d.message.clone(),
                        file: loc.as_ref().map(|l| l.0.clone()),
                        line: loc.as_ref().map(|l| l.1),
                        column: loc.as_ref().map(|l| l.2),
                    };
                    println!("{}", crate::ui::sinks::json_line(&e));
                }
            } else {
                print_diagnostics(&diags);
            }
            return (
                Exit::BadInput,
                "invalid",
                format!("{} error(s) in the template", diags.len()),
            );
        }
    };
    // From here on every output passes the redactor, which knows the secrets.
    redactor
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .extend(plan.sensitive_strings());
    if args.skip_unchanged {
        let say = |text: String| {
            if args.json {
                let e = Event::Message { job: None, text };
                println!("{}", crate::ui::sinks::json_line(&e));
            } else {
                println!("{text}");
            }
        };
        match crate::lifecycle::rebuild::decide(&plan, catalog, &Builders::standard(), state_dir)
            .await
        {
            Ok(d) if !d.rebuild => {
                let text = format!(
                    "skipped: nothing due since {} {} ({})",
                    plan.image.name,
                    d.newest.as_deref().unwrap_or("-"),
                    d.jobs
                        .iter()
                        .flat_map(|j| j.reasons.iter().cloned())
                        .collect::<Vec<_>>()
                        .join("; ")
                );
                say(text.clone());
                return (Exit::Success, "skipped", text);
            }
            Ok(d) => say(d.summary()),
            Err(e) => {
                eprintln!("error: --skip-unchanged: {e}");
                return (Exit::Failure, "failed", e);
            }
        }
    }

    let log_path = args.log_file.clone().unwrap_or_else(|| {
        state_dir
            .join("logs")
            .join(format!("{}.log", plan.build_id))
    });
    let mut sinks: Vec<Box<dyn Sink>> = vec![];
    if args.json {
        sinks.push(Box::new(JsonSink));
    } else {
        sinks.push(Box::new(HumanSink::new()));
    }
    match LogFileSink::create(&log_path) {
        Ok(s) => sinks.push(Box::new(s)),
        Err(e) => {
            let msg = format!("cannot create the build log `{}`: {e}", log_path.display());
            eprintln!("error: {msg}");
            return (Exit::Failure, "failed", msg);
        }
    }
    let bus = EventBus::new(redactor.clone(), sinks);

    let cancel = CancellationToken::new();
    let signals = tokio::spawn(watch_signals(cancel.clone(), bus.clone()));
    let opts = RunOptions {
        parallel: if args.parallel == 0 {
            plan.jobs.len().max(1)
        } else {
            args.parallel
        },
        on_error: args.on_error,
        keep_on_failure: args.keep_on_failure,
        fail_fast: !args.no_fail_fast,
        state_dir: state_dir.to_path_buf(),
        interactive: !args.json && std::io::stdin().is_terminal(),
        catalog: Some(catalog.clone()),
        override_policy: args.override_policy.clone(),
    };
    let summary = engine::run(&plan, &Builders::standard(), &opts, bus.clone(), cancel).await;
    signals.abort();
    bus.finish();
    let failed: Vec<String> = summary
        .iter()
        .filter(|j| j.status != JobStatus::Succeeded)
        .map(|j| format!("{}: {}", j.job, j.error.as_deref().unwrap_or("failed")))
        .collect();
    if failed.is_empty() {
        (Exit::Success, "built", String::new())
    } else if summary.iter().all(|j| j.status == JobStatus::Cancelled) {
        (Exit::Failure, "cancelled", failed.join("; "))
    } else {
        (Exit::Failure, "failed", failed.join("; "))
    }
}

/// First Ctrl-C or SIGTERM: cancel and clean up. Second: leave now; the
/// journal still lists what is left for `kiln cleanup`.
async fn watch_signals(cancel: CancellationToken, bus: Arc<EventBus>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    for round in 0..2 {
        let name = tokio::select! {
            _ = int.recv() => "interrupt",
            _ = term.recv() => "terminate",
        };
        if round == 0 {
            bus.emit(Event::Message {
                job: None,
                text: format!(
                    "{name} received: cancelling and cleaning up (again to exit at once)"
                ),
            });
            cancel.cancel();
        } else {
            eprintln!("error: second {name}: exiting without cleanup; run `kiln cleanup` to reap what is left");
            std::process::exit(Exit::Failure as i32);
        }
    }
}
