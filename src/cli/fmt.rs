//! `kiln fmt`: rewrite templates in the canonical layout; `--check` only
//! reports drift (exit 1) for CI.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::{print_diagnostics, Exit};
use crate::template::fmt::format_template;
use crate::template::{Diagnostic, Diagnostics, SourceFile};

#[derive(Args, Debug)]
pub struct FmtArgs {
    /// Do not write; exit 1 if any template is not formatted.
    #[arg(long)]
    pub check: bool,
    /// Templates to format.
    #[arg(required = true, value_name = "TEMPLATE")]
    pub templates: Vec<PathBuf>,
}

pub fn exec(args: FmtArgs) -> Exit {
    let mut exit = Exit::Success;
    for path in &args.templates {
        let text = match fs_err::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                print_diagnostics(&Diagnostics(vec![Diagnostic::new(e.to_string())]));
                exit = Exit::BadInput;
                continue;
            }
        };
        let formatted = match format_template(&text) {
            Ok(f) => f,
            Err((message, span)) => {
                let file = Arc::new(SourceFile {
                    path: path.clone(),
                    name: path.display().to_string(),
                    text,
                });
                print_diagnostics(&Diagnostics(vec![Diagnostic::at(
                    &file,
                    span,
                    format!("invalid TOML: {message}"),
                )]));
                exit = Exit::BadInput;
                continue;
            }
        };
        if formatted == text {
            continue;
        }
        if args.check {
            println!("would reformat {}", path.display());
            if exit == Exit::Success {
                exit = Exit::Failure;
            }
        } else {
            // Write beside and rename, so a crash never leaves half a template.
            let tmp = path.with_extension("toml.kiln-fmt");
            let written = fs_err::write(&tmp, &formatted).and_then(|_| fs_err::rename(&tmp, path));
            match written {
                Ok(()) => println!("formatted {}", path.display()),
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    eprintln!("error: {e}");
                    exit = Exit::Failure;
                }
            }
        }
    }
    exit
}
