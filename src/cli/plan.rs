//! `kiln plan`: for each template, whether a build is due and why, from
//! `[build.rebuild]` and the catalog — the base resolved, nothing
//! launched. Exit 0 whatever the answer (it is information); 2 on bad
//! input; 1 when the catalog or a base cannot be read.

use std::path::{Path, PathBuf};

use clap::Args;

use super::{load_plan, print_diagnostics, Exit, VarArgs};
use crate::builder::Builders;

#[derive(Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub vars: VarArgs,
    /// One JSON object per template.
    #[arg(long)]
    pub json: bool,
    #[arg(value_name = "TEMPLATE", required = true)]
    pub templates: Vec<PathBuf>,
}

pub async fn exec(args: PlanArgs, state_dir: &Path, catalog: Option<&str>) -> Exit {
    let cat = match crate::catalog::open(catalog, state_dir).await {
        Ok(c) => c,
        Err(e) => return super::images::fail(&e),
    };
    let mut exit = Exit::Success;
    for t in &args.templates {
        let plan = match load_plan(t, &args.vars, &[], &[], &crate::secrets::fetch) {
            Ok(p) => p,
            Err(d) => {
                print_diagnostics(&d);
                exit = Exit::BadInput;
                continue;
            }
        };
        match crate::lifecycle::rebuild::decide(&plan, &cat, &Builders::standard(), state_dir).await
        {
            Ok(d) if args.json => {
                println!("{}", serde_json::to_string(&d).expect("serializes"))
            }
            Ok(d) => {
                println!(
                    "{}: {}",
                    t.display(),
                    if d.rebuild { "REBUILD" } else { "up to date" }
                );
                for j in &d.jobs {
                    for r in &j.reasons {
                        println!("  {}: {r}", j.job);
                    }
                }
            }
            Err(e) => {
                eprintln!("error: {}: {e}", t.display());
                if exit == Exit::Success {
                    exit = Exit::Failure;
                }
            }
        }
    }
    exit
}
