//! `kiln check PROFILE ARTIFACT`: runs a hardening profile's checks
//! against an existing image without changing it, prints the compliance
//! report, and exits 0 when no rule failed, 1 when one did, 2 on bad input.

use std::path::Path;

use clap::Args;

use super::Exit;
use crate::provisioner::hardening::{profile, report};

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Which failed rules make the check fail.
    #[arg(long, value_enum, default_value_t = FailOnArg::Any)]
    pub fail_on: FailOnArg,
    /// Print the compliance report as JSON.
    #[arg(long)]
    pub json: bool,
    /// A shipped profile (`cis-level1`, `ssh`, `sysctl`, `auditd`, `cleanup`) or a profile `.toml` file.
    #[arg(value_name = "PROFILE")]
    pub profile: String,
    /// `registry:REF`, `oci-layout:DIR[:TAG]`, `rootfs:FILE.tar` or an OCI layout folder.
    #[arg(value_name = "ARTIFACT")]
    pub artifact: String,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FailOnArg {
    Any,
    High,
}

pub async fn exec(args: CheckArgs, state_dir: &Path) -> Exit {
    let cwd = std::env::current_dir().unwrap_or_default();
    let profile = match profile::load(&args.profile, &cwd) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::BadInput;
        }
    };
    run(args, profile, &cwd, state_dir).await
}

#[cfg(feature = "oci")]
async fn run(args: CheckArgs, profile: profile::Profile, cwd: &Path, state_dir: &Path) -> Exit {
    use crate::builder::oci::check::{check_image, parse_artifact, CheckImageError};
    let result = match parse_artifact(&args.artifact, cwd) {
        Ok(base) => check_image(&base, &profile, state_dir).await,
        Err(e) => Err(e),
    };
    let mut rep = match result {
        Ok(r) => r,
        Err(e @ (CheckImageError::Input(_) | CheckImageError::NotSupported(_))) => {
            eprintln!("error: {e}");
            return Exit::BadInput;
        }
        Err(e) => {
            eprintln!("error: cannot check `{}`: {e}", args.artifact);
            return Exit::Failure;
        }
    };
    rep.fail_on = match args.fail_on {
        FailOnArg::Any => report::FailOn::Any,
        FailOnArg::High => report::FailOn::High,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rep).expect("reports serialize")
        );
    } else {
        print!("{}", report::render(&rep));
    }
    if rep.blocking_failures(rep.fail_on).is_empty() {
        Exit::Success
    } else {
        Exit::Failure
    }
}

#[cfg(not(feature = "oci"))]
async fn run(args: CheckArgs, _: profile::Profile, _: &Path, _: &Path) -> Exit {
    eprintln!(
        "error: `{}`: this kiln was compiled without the `oci` feature, so it cannot open images",
        args.artifact
    );
    Exit::BadInput
}
