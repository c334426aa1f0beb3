//! `kiln validate`: every error in every template at once, missing input
//! files included (unless `--syntax-only`); exit 2 if any.

use std::path::PathBuf;

use clap::Args;

use super::{load_plan, print_diagnostics, Exit, VarArgs};

#[derive(Args, Debug)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub vars: VarArgs,
    /// Print one JSON object per template instead of text.
    #[arg(long)]
    pub json: bool,
    /// Check the template only, not that the local files it reads (base
    /// disks, provisioner sources, the signing key) exist.
    #[arg(long)]
    pub syntax_only: bool,
    /// Templates to check.
    #[arg(required = true, value_name = "TEMPLATE")]
    pub templates: Vec<PathBuf>,
}

pub fn exec(args: ValidateArgs) -> Exit {
    let mut exit = Exit::Success;
    for t in &args.templates {
        let load = if args.syntax_only {
            load_plan
        } else {
            super::load_plan_with_inputs
        };
        match load(t, &args.vars, &[], &[], &crate::secrets::unresolved) {
            Ok(plan) => {
                if args.json {
                    println!(
                        "{}",
                        serde_json::json!({ "template": t, "valid": true, "jobs": plan.jobs.len(), "errors": [] })
                    );
                } else {
                    println!(
                        "{}: valid ({} job{})",
                        t.display(),
                        plan.jobs.len(),
                        if plan.jobs.len() == 1 { "" } else { "s" }
                    );
                }
            }
            Err(diags) => {
                exit = Exit::BadInput;
                if args.json {
                    let errors: Vec<_> = diags.iter().map(|d| d.to_json()).collect();
                    println!(
                        "{}",
                        serde_json::json!({ "template": t, "valid": false, "errors": errors })
                    );
                } else {
                    print_diagnostics(&diags);
                }
            }
        }
    }
    exit
}
