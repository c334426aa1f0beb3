//! `kiln prune`: applies each template's `[image.retention]` to its image
//! in the catalog — deprecate, then delete what falls out, never a channel
//! target — and records every step in the catalog log. `--dry-run` only
//! says what it would do. Secrets are never read: retention needs none.

use std::path::{Path, PathBuf};

use clap::Args;

use super::{load_plan, print_diagnostics, Exit, VarArgs};

#[derive(Args, Debug)]
pub struct PruneArgs {
    #[command(flatten)]
    pub vars: VarArgs,
    /// Say what would be deprecated and deleted; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// One JSON object per template.
    #[arg(long)]
    pub json: bool,
    #[arg(value_name = "TEMPLATE", required = true)]
    pub templates: Vec<PathBuf>,
}

pub async fn exec(args: PruneArgs, state_dir: &Path, catalog: Option<&str>) -> Exit {
    let cat = match crate::catalog::open(catalog, state_dir).await {
        Ok(c) => c,
        Err(e) => return super::images::fail(&e),
    };
    let mut exit = Exit::Success;
    for t in &args.templates {
        let plan = match load_plan(t, &args.vars, &[], &[], &crate::secrets::unresolved) {
            Ok(p) => p,
            Err(d) => {
                print_diagnostics(&d);
                exit = Exit::BadInput;
                continue;
            }
        };
        let Some(retention) = &plan.image.retention else {
            eprintln!(
                "error: {}: no `[image.retention]`: nothing says what to prune",
                t.display()
            );
            exit = Exit::BadInput;
            continue;
        };
        let snap = match cat.snapshot().await {
            Ok(s) => s,
            Err(e) => return super::images::fail(&e),
        };
        let family = snap
            .state
            .family(&plan.image.name)
            .cloned()
            .unwrap_or_default();
        let verdicts =
            crate::lifecycle::prune::plan(&family, retention, std::time::SystemTime::now());
        if args.dry_run {
            if args.json {
                let out = serde_json::json!({ "image": plan.image.name, "dry_run": true, "verdicts": verdicts });
                println!("{out}");
            } else {
                for v in &verdicts {
                    let (what, version, why) = match v {
                        crate::lifecycle::prune::Verdict::Keep { version, why } => {
                            ("keep", version, why)
                        }
                        crate::lifecycle::prune::Verdict::Deprecate { version, why } => {
                            ("would deprecate", version, why)
                        }
                        crate::lifecycle::prune::Verdict::Delete { version, why } => {
                            ("would delete", version, why)
                        }
                    };
                    println!("{what} {} {version}: {why}", plan.image.name);
                }
            }
            continue;
        }
        let key = match cat.operator_key() {
            Ok(k) => k,
            Err(e) => return super::images::fail(&e),
        };
        match crate::lifecycle::prune::apply(
            &cat,
            &plan.image.name,
            &verdicts,
            &crate::catalog::actor(),
            &key,
        )
        .await
        {
            Ok(done) => {
                if args.json {
                    let out = serde_json::json!({ "image": plan.image.name, "dry_run": false, "done": done });
                    println!("{out}");
                } else if done.is_empty() {
                    println!("{}: nothing to prune", plan.image.name);
                } else {
                    for d in done {
                        println!("{d}");
                    }
                }
            }
            Err(e) => {
                eprintln!("error: {}: {e}", plan.image.name);
                exit = Exit::Failure;
            }
        }
    }
    exit
}
