//! `kiln plan`: for each template, whether a build is due and why, from
//! `[build.rebuild]` and the catalog — the base resolved, nothing
//! launched. Exit 0 whatever the answer (it is information); 2 on bad
//! input; 1 when the catalog or a base cannot be read. A secret that
//! cannot be read (Vault unreachable, variable unset) does not stop it:
//! secret values are not part of the input fingerprint, so the verdict
//! stands; the secret is named, with what that means for a build.

use std::path::{Path, PathBuf};

use clap::Args;

use super::{load_plan, print_diagnostics, Exit, VarArgs};
use crate::builder::Builders;

/// What an unreadable secret means for `kiln plan`'s verdict.
const UNREAD_MEANS: &str = "secret values are not part of the input fingerprint, so the verdict stands without them; `kiln build` will need them";

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
        // Secrets are fetched as a build would; those that cannot be read
        // are named below, and planned as unknown.
        let unread = std::rc::Rc::new(std::cell::RefCell::new(Vec::<String>::new()));
        let seen = unread.clone();
        let fetch: &crate::template::plan::FetchSecrets =
            &move |req| match crate::secrets::fetch(req) {
                Ok(v) => Ok(v),
                Err(d) => {
                    seen.borrow_mut()
                        .extend(d.iter().map(|d| match d.location() {
                            Some((f, l, c)) => format!("{f}:{l}:{c}: {}", d.message),
                            None => d.message.clone(),
                        }));
                    crate::secrets::unresolved(req)
                }
            };
        let plan = match load_plan(t, &args.vars, &[], &[], fetch) {
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
                let mut v = serde_json::to_value(&d).expect("serializes");
                v["unread_secrets"] = unread.borrow().clone().into();
                if !unread.borrow().is_empty() {
                    v["unread_secrets_mean"] = UNREAD_MEANS.into();
                }
                println!("{v}")
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
                for u in unread.borrow().iter() {
                    println!("  cannot read: {u}");
                }
                if !unread.borrow().is_empty() {
                    println!("  note: {UNREAD_MEANS}");
                }
            }
            Err(e) => {
                eprintln!("error: {}: {e}", t.display());
                for u in unread.borrow().iter() {
                    eprintln!("  (a secret could not be read, which may be why: {u})");
                }
                if exit == Exit::Success {
                    exit = Exit::Failure;
                }
            }
        }
    }
    exit
}
