//! `kiln import packer PATH… [-o OUT] [--json]`: write the kiln template a
//! Packer template amounts to, and report what needs a person (exit 1
//! when anything does, 2 when the input cannot be read).

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{print_diagnostics, Exit};
use crate::import::import_packer;

#[derive(Args, Debug)]
pub struct ImportArgs {
    #[command(subcommand)]
    pub from: ImportFrom,
}

#[derive(Subcommand, Debug)]
pub enum ImportFrom {
    /// Convert Packer templates (`.pkr.hcl` files, a folder of them, or a legacy JSON template).
    Packer(PackerArgs),
}

#[derive(Args, Debug)]
pub struct PackerArgs {
    /// Write the kiln template here (default: standard output).
    #[arg(short = 'o', long = "out", value_name = "OUT")]
    pub out: Option<PathBuf>,
    /// Print the report as one JSON object on standard output (needs `-o`).
    #[arg(long)]
    pub json: bool,
    /// Packer files or folders.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

pub fn exec(args: ImportArgs) -> Exit {
    let ImportFrom::Packer(args) = args.from;
    if args.json && args.out.is_none() {
        eprintln!(
            "error: `--json` prints the report on standard output; give `-o OUT` for the template"
        );
        return Exit::BadInput;
    }
    let out_dir = match &args.out {
        Some(o) => o
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(".")),
        None => PathBuf::from("."),
    };
    let imported = match import_packer(&args.paths, &out_dir) {
        Ok(i) => i,
        Err(diags) => {
            if args.json {
                let errors: Vec<_> = diags.iter().map(|d| d.to_json()).collect();
                println!(
                    "{}",
                    serde_json::json!({ "converted": false, "errors": errors })
                );
            } else {
                print_diagnostics(&diags);
            }
            return Exit::BadInput;
        }
    };
    match &args.out {
        Some(o) => {
            // Write beside and rename, so a crash never leaves half a template.
            let tmp = o.with_extension("toml.kiln-import");
            let written =
                fs_err::write(&tmp, &imported.template).and_then(|_| fs_err::rename(&tmp, o));
            if let Err(e) = written {
                let _ = std::fs::remove_file(&tmp);
                eprintln!("error: {e}");
                return Exit::Failure;
            }
        }
        None => print!("{}", imported.template),
    }
    let needs_a_person = imported.report.needs_a_person();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "template": args.out,
                "converted": !needs_a_person,
                "findings": imported.report.to_json(),
            })
        );
    } else {
        let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        eprint!("{}", imported.report.render(color));
    }
    if needs_a_person {
        Exit::Failure
    } else {
        Exit::Success
    }
}
