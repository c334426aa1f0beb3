//! `kiln build`: resolve the template (fetching secrets), then run every
//! job through the engine with the chosen sinks, and exit 0 only if all
//! jobs succeeded. Ctrl-C and SIGTERM cancel the build and clean up.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::{load_plan, print_diagnostics, Exit, VarArgs};
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
    /// Let the other jobs finish when one fails.
    #[arg(long)]
    pub no_fail_fast: bool,
    /// Print events as JSON lines on stdout, and nothing else.
    #[arg(long)]
    pub json: bool,
    /// Exit 0 without building when an active version in the catalog has
    /// the same input fingerprint for every job (the base is resolved).
    #[arg(long)]
    pub skip_unchanged: bool,
    /// Write the build log here (default: STATE_DIR/logs/BUILD_ID.log).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    #[arg(value_name = "TEMPLATE")]
    pub template: PathBuf,
}

pub async fn exec(args: BuildArgs, state_dir: &Path, catalog: Option<&str>) -> Exit {
    let redactor = Arc::new(RwLock::new(Redactor::default()));
    crate::ui::init_tracing(redactor.clone());
    let plan = match load_plan(
        &args.template,
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
                    println!("{}", serde_json::to_string(&e).expect("serializable"));
                }
            } else {
                print_diagnostics(&diags);
            }
            return Exit::BadInput;
        }
    };
    // From here on every output passes the redactor, which knows the secrets.
    redactor
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .extend(plan.sensitive_strings());
    let catalog = match crate::catalog::open(catalog, state_dir).await {
        Ok(c) => Arc::new(c),
        Err(e) => return super::images::fail(&e),
    };
    if args.skip_unchanged {
        match unchanged(&plan, &catalog, state_dir).await {
            Ok(Some(found)) => {
                let text = format!(
                    "skipped: nothing changed since {} {} (fingerprint {})",
                    plan.image.name, found.0, found.1
                );
                if args.json {
                    let e = Event::Message { job: None, text };
                    println!("{}", serde_json::to_string(&e).expect("serializable"));
                } else {
                    println!("{text}");
                }
                return Exit::Success;
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("error: --skip-unchanged: {e}");
                return Exit::Failure;
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
            eprintln!(
                "error: cannot create the build log `{}`: {e}",
                log_path.display()
            );
            return Exit::Failure;
        }
    }
    let bus = EventBus::new(redactor, sinks);

    let cancel = CancellationToken::new();
    let signals = tokio::spawn(watch_signals(cancel.clone(), bus.clone()));
    let opts = RunOptions {
        parallel: if args.parallel == 0 {
            plan.jobs.len().max(1)
        } else {
            args.parallel
        },
        on_error: args.on_error,
        fail_fast: !args.no_fail_fast,
        state_dir: state_dir.to_path_buf(),
        interactive: !args.json && std::io::stdin().is_terminal(),
        catalog: Some(catalog),
    };
    let summary = engine::run(&plan, &Builders::standard(), &opts, bus.clone(), cancel).await;
    signals.abort();
    bus.finish();
    if summary.iter().all(|j| j.status == JobStatus::Succeeded) {
        Exit::Success
    } else {
        Exit::Failure
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

/// The active version whose every job has the fingerprint this plan has
/// now (base resolved, nothing launched): `(version, first fingerprint)`.
async fn unchanged(
    plan: &crate::template::BuildPlan,
    catalog: &crate::catalog::Catalog,
    state_dir: &Path,
) -> Result<Option<(String, String)>, String> {
    let key = catalog.fingerprint_key().await.map_err(|e| e.to_string())?;
    let builders = Builders::standard();
    let template_dir = plan.template_dir();
    let mut wanted = vec![];
    for job in &plan.jobs {
        let Some(builder) = builders.get(&job.source_type) else {
            return Ok(None);
        };
        let base = builder
            .resolve_base(job, &template_dir, state_dir)
            .await
            .map_err(|e| format!("{}: cannot resolve the base: {e}", job.name()))?;
        wanted.push((
            job.name(),
            crate::engine::manifest::fingerprint(plan, job, base.as_deref(), &key),
        ));
    }
    if wanted.is_empty() {
        return Ok(None);
    }
    let snap = catalog.snapshot().await.map_err(|e| e.to_string())?;
    let Some(family) = snap.state.family(&plan.image.name) else {
        return Ok(None);
    };
    let found = family.versions.iter().rev().find(|v| {
        v.is_active()
            && wanted.iter().all(|(job, fp)| {
                v.registration
                    .artifacts
                    .iter()
                    .any(|a| &a.job == job && &a.fingerprint == fp)
            })
    });
    Ok(found.map(|v| (v.registration.version.clone(), wanted[0].1.clone())))
}
