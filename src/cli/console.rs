//! `kiln console TEMPLATE`: evaluates expressions against a template, one
//! per line from stdin (or each `--expr`), printing each value (sensitive
//! ones masked, secrets unknown: they are never fetched here).

use std::io::BufRead;
use std::path::PathBuf;

use clap::Args;

use super::{print_diagnostics, Exit, VarArgs};
use crate::builder::Builders;
use crate::template::PlanOptions;

#[derive(Args, Debug)]
pub struct ConsoleArgs {
    #[command(flatten)]
    pub vars: VarArgs,
    /// Evaluate this expression (repeatable); without it, one per line of stdin.
    #[arg(long = "expr", value_name = "EXPR")]
    pub exprs: Vec<String>,
    #[arg(value_name = "TEMPLATE")]
    pub template: PathBuf,
}

pub fn exec(args: ConsoleArgs) -> Exit {
    let text = match std::fs::read_to_string(&args.template) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read `{}`: {e}", args.template.display());
            return Exit::BadInput;
        }
    };
    let opts = PlanOptions {
        vars: args.vars.inputs(),
        only: vec![],
        except: vec![],
        build_id: uuid::Uuid::new_v4().to_string(),
    };
    let schema = Builders::standard().schema();
    let mut exit = Exit::Success;
    let mut eval = |expr: &str| {
        let expr = expr.trim();
        let expr = expr
            .strip_prefix("${")
            .and_then(|e| e.strip_suffix('}'))
            .unwrap_or(expr);
        if expr.is_empty() {
            return;
        }
        match crate::template::console::evaluate(
            &args.template,
            &text,
            expr,
            &schema,
            &opts,
            &crate::secrets::unresolved,
        ) {
            Ok(v) => println!("{}", crate::template::value::display_value(&v)),
            Err(d) => {
                print_diagnostics(&d);
                exit = Exit::BadInput;
            }
        }
    };
    if args.exprs.is_empty() {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) => eval(&l),
                Err(_) => break,
            }
        }
    } else {
        for e in &args.exprs {
            eval(e);
        }
    }
    exit
}
