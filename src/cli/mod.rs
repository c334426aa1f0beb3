//! The command line: the clap definition, one file per command, and the
//! exit codes (0 success, 1 a build or check failed, 2 bad input). Each
//! command parses its arguments and calls into the library; none holds
//! logic of its own beyond presenting results.

mod audit;
mod build;
mod check;
mod ci;
mod cleanup;
mod console;
mod fmt;
mod generate;
mod images;
mod import;
mod init;
mod inspect;
mod keygen;
mod plan;
mod prune;
mod rescan;
mod sbom;
mod show_manifest;
mod test;
mod validate;
mod verify;
mod vex;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::builder::Builders;
use crate::template::plan::FetchSecrets;
use crate::template::{BuildPlan, Diagnostics, PlanOptions, Template, VarInputs};

/// Exit codes, as specified in the template contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    /// A build, a verification or a check failed.
    Failure = 1,
    /// Bad input: template, arguments, files.
    BadInput = 2,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

#[derive(Parser, Debug)]
#[command(name = "kiln", version, about = "Bake golden machine images from TOML templates", long_about = None)]
pub struct Cli {
    /// Where kiln keeps its journal, logs and work files.
    #[arg(
        long,
        global = true,
        env = "KILN_STATE_DIR",
        default_value = ".kiln",
        value_name = "DIR"
    )]
    pub state_dir: PathBuf,

    /// The image catalog: a folder, or a `postgres://` URL shared by many
    /// runners (default: STATE_DIR/catalog).
    #[arg(
        long,
        global = true,
        env = "KILN_CATALOG",
        hide_env_values = true,
        value_name = "DIR|URL"
    )]
    pub catalog: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build the images a template describes.
    Build(build::BuildArgs),
    /// Check templates and report every error at once.
    Validate(validate::ValidateArgs),
    /// Show the resolved plan of a template, secrets masked.
    Inspect(inspect::InspectArgs),
    /// Rewrite templates in the canonical layout.
    Fmt(fmt::FmtArgs),
    /// Reap what crashed or killed builds left behind.
    Cleanup(cleanup::CleanupArgs),
    /// Run a hardening profile's checks against an existing image, unchanged.
    Check(check::CheckArgs),
    /// Verify an artifact's signatures (images, disk files, manifests, AMIs).
    Verify(verify::VerifyArgs),
    /// Show a build manifest as a security reviewer reads it.
    ShowManifest(show_manifest::ShowManifestArgs),
    /// Print an artifact's SBOM after verifying it (images, disk files, AMIs, manifests).
    Sbom(sbom::SbomArgs),
    /// Rescan recorded SBOMs against offline vulnerability feeds, with OpenVEX.
    Rescan(rescan::RescanArgs),
    /// OpenVEX documents: sign one for `kiln rescan --vex-key`.
    Vex(vex::VexArgs),
    /// The image catalog: versions, channels, promote, rollback, revoke.
    Images(images::ImagesArgs),
    /// Create a cosign-compatible key pair.
    Keygen(keygen::KeygenArgs),
    /// Scaffold a template, a key pair and a .gitignore for a builder.
    Init(init::InitArgs),
    /// Evaluate `${…}` expressions against a template (stdin or --expr).
    Console(console::ConsoleArgs),
    /// Verify the catalog's signed log; show what was built, signed, promoted and revoked.
    Audit(audit::AuditArgs),
    /// Run a template's `[[build.test]]` against an existing image.
    Test(test::TestArgs),
    /// Say, per template, whether a build is due and why (nothing built).
    Plan(plan::PlanArgs),
    /// Retire old versions per `[image.retention]`: deprecate, then delete.
    Prune(prune::PruneArgs),
    /// Convert templates of another tool (Packer) to kiln templates, naming every gap.
    Import(import::ImportArgs),
    /// Print a scheduled CI pipeline (GitHub Actions, GitLab CI) for templates.
    Ci(ci::CiArgs),
    /// Print shell completions.
    Completions(generate::CompletionArgs),
    /// Print the man page (roff).
    Man,
}

/// Options shared by every command that reads a template's variables.
#[derive(Args, Debug, Clone, Default)]
pub struct VarArgs {
    /// Set a variable (highest precedence).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// Read variables from a TOML file of `name = value` lines.
    #[arg(long = "var-file", value_name = "FILE")]
    pub var_files: Vec<PathBuf>,
}

impl VarArgs {
    pub fn inputs(&self) -> VarInputs {
        VarInputs {
            var_files: self.var_files.clone(),
            env: vec![],
            cli: self.vars.clone(),
        }
        .with_process_env()
    }
}

/// Runs kiln with the process's arguments.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let args: Vec<String> = std::env::args().skip(1).collect();
            if let Some((given, long)) = packer_style_option(&args) {
                eprintln!("error: unexpected argument `{given}`");
                eprintln!("  help: did you mean `{long}`? kiln's long options take two dashes (Packer's take one)");
                return Exit::BadInput.into();
            }
            e.exit()
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return Exit::Failure.into();
        }
    };
    let exit = runtime.block_on(run(cli));
    // Do not wait for blocking tasks (e.g. a breakpoint reading stdin).
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    exit.into()
}

async fn run(cli: Cli) -> Exit {
    // Provisioners run in other working directories: paths must not be relative.
    let state_dir = std::path::absolute(&cli.state_dir).unwrap_or(cli.state_dir.clone());
    // An empty `KILN_CATALOG` (a CI variable that is not set) is no catalog URL.
    let catalog = cli.catalog.clone().filter(|c| !c.is_empty());
    let mut cli = Cli {
        state_dir,
        catalog,
        ..cli
    };
    let templates = match &mut cli.command {
        Command::Build(a) => Some(&mut a.templates),
        Command::Validate(a) => Some(&mut a.templates),
        Command::Fmt(a) => Some(&mut a.templates),
        Command::Plan(a) => Some(&mut a.templates),
        Command::Prune(a) => Some(&mut a.templates),
        Command::Ci(a) => Some(&mut a.templates),
        _ => None,
    };
    if let Some(t) = templates {
        match expand_templates(t) {
            Ok(all) => *t = all,
            Err(e) => {
                eprintln!("error: {e}");
                return Exit::BadInput;
            }
        }
    }
    // The state folder holds unpacked images (setuid files, device nodes):
    // root-only. Commands that write there create it; any command tightens it.
    let creates = matches!(
        cli.command,
        Command::Build(_) | Command::Check(_) | Command::Test(_)
    );
    match crate::builder::cache::secure_state(&cli.state_dir, creates) {
        Ok(notes) => {
            for n in notes {
                eprintln!("note: {n}");
            }
        }
        Err(e) => {
            eprintln!(
                "error: cannot secure the state folder `{}`: {e}",
                cli.state_dir.display()
            );
            return Exit::Failure;
        }
    }
    match cli.command {
        Command::Build(args) => build::exec(args, &cli.state_dir, cli.catalog.as_deref()).await,
        Command::Validate(args) => validate::exec(args),
        Command::Inspect(args) => inspect::exec(args),
        Command::Fmt(args) => fmt::exec(args),
        Command::Cleanup(args) => cleanup::exec(args, &cli.state_dir).await,
        Command::Completions(args) => generate::completions(args),
        Command::Man => generate::man(),
        Command::Verify(args) => verify::exec(args, &cli.state_dir, cli.catalog.as_deref()).await,
        Command::ShowManifest(args) => show_manifest::exec(args),
        Command::Sbom(args) => sbom::exec(args, &cli.state_dir, cli.catalog.as_deref()).await,
        Command::Rescan(args) => rescan::exec(args, &cli.state_dir, cli.catalog.as_deref()).await,
        Command::Vex(args) => vex::exec(args).await,
        Command::Check(args) => check::exec(args, &cli.state_dir).await,
        Command::Images(args) => images::exec(args, &cli.state_dir, cli.catalog.as_deref()).await,
        Command::Keygen(args) => keygen::exec(args),
        Command::Init(args) => init::exec(args),
        Command::Console(args) => console::exec(args),
        Command::Audit(args) => audit::exec(args, &cli.state_dir, cli.catalog.as_deref()).await,
        Command::Plan(args) => plan::exec(args, &cli.state_dir, cli.catalog.as_deref()).await,
        Command::Test(args) => test::exec(args, &cli.state_dir).await,
        Command::Prune(args) => prune::exec(args, &cli.state_dir, cli.catalog.as_deref()).await,
        Command::Ci(args) => ci::exec(args),
        Command::Import(args) => import::exec(args),
    }
}

/// The first argument written the Packer way (`-var`, `-only=x`,
/// `-on-error=abort`) whose two-dash form is one of kiln's long options:
/// (as given, the two-dash form).
fn packer_style_option(args: &[String]) -> Option<(String, String)> {
    use clap::CommandFactory;
    fn longs(c: &clap::Command, out: &mut Vec<String>) {
        out.extend(
            c.get_arguments()
                .filter_map(|a| a.get_long().map(String::from)),
        );
        for sub in c.get_subcommands() {
            longs(sub, out);
        }
    }
    let mut known = vec![];
    longs(&Cli::command(), &mut known);
    for a in args.iter().take_while(|a| *a != "--") {
        let Some(word) = a.strip_prefix('-').filter(|w| !w.starts_with('-')) else {
            continue;
        };
        let name = word.split_once('=').map_or(word, |(n, _)| n);
        if name.len() > 1 && known.iter().any(|k| k == name) {
            let value = word.strip_prefix(name).unwrap_or_default();
            return Some((a.clone(), format!("--{name}{value}")));
        }
    }
    None
}

/// Templates named on the command line, a folder standing for the `*.toml`
/// files in it (sorted), as Packer takes a folder. An empty folder is an
/// error naming it.
pub(crate) fn expand_templates(given: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = vec![];
    for p in given {
        if !p.is_dir() {
            out.push(p.clone());
            continue;
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(p)
            .map_err(|e| format!("cannot read the folder `{}`: {e}", p.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|f| f.is_file() && f.extension().is_some_and(|x| x == "toml"))
            .collect();
        if found.is_empty() {
            return Err(format!(
                "the folder `{}` has no templates (`*.toml` files)",
                p.display()
            ));
        }
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

/// Reads a template and resolves it into a plan.
pub(crate) fn load_plan(
    path: &Path,
    vars: &VarArgs,
    only: &[String],
    except: &[String],
    fetch: &FetchSecrets,
) -> Result<BuildPlan, Diagnostics> {
    read_plan(path, vars, only, except, fetch, false)
}

/// [`load_plan`], and every local file the build reads must exist
/// (`validate`, `build`).
pub(crate) fn load_plan_with_inputs(
    path: &Path,
    vars: &VarArgs,
    only: &[String],
    except: &[String],
    fetch: &FetchSecrets,
) -> Result<BuildPlan, Diagnostics> {
    read_plan(path, vars, only, except, fetch, true)
}

fn read_plan(
    path: &Path,
    vars: &VarArgs,
    only: &[String],
    except: &[String],
    fetch: &FetchSecrets,
    inputs: bool,
) -> Result<BuildPlan, Diagnostics> {
    let template = Template::read(path)?;
    let opts = PlanOptions {
        vars: vars.inputs(),
        only: only.to_vec(),
        except: except.to_vec(),
        build_id: uuid::Uuid::new_v4().to_string(),
    };
    let schema = Builders::standard().schema();
    let plan = template.plan(&schema, &opts, fetch)?;
    if inputs {
        let missing = template.missing_inputs(&plan, &schema);
        if !missing.is_empty() {
            return Err(missing);
        }
        let policies = policy_errors(&plan);
        if !policies.is_empty() {
            return Err(policies);
        }
    }
    Ok(plan)
}

/// Each `[build.policy]` that cannot be read or parsed (the Rego error
/// names its `file:line:col`), once per policy.
fn policy_errors(plan: &BuildPlan) -> Diagnostics {
    let mut diags = Diagnostics::default();
    let mut seen = vec![];
    for p in plan.jobs.iter().filter_map(|j| j.policy.as_ref()) {
        if seen.contains(&p) {
            continue;
        }
        seen.push(p);
        if let Err(e) = crate::policy::Policy::load(&p.files, &p.entrypoint) {
            let text = e.to_string();
            let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
            let mut d = crate::template::Diagnostic::new(format!(
                "{first} (the policy of `[build.policy]` at {})",
                p.at
            ));
            if !rest.trim().is_empty() {
                d = d.with_help(rest.to_string());
            }
            diags.push(d);
        }
    }
    diags
}

/// True inside a GitHub Actions job: errors are also printed as workflow
/// commands, which GitHub shows as annotations on the file and line.
pub(crate) fn github_actions() -> bool {
    std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true")
}

/// Escapes a GitHub workflow command's message (`property` also escapes
/// `:` and `,`).
fn gh_escape(s: &str, property: bool) -> String {
    let mut out = s
        .replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A");
    if property {
        out = out.replace(':', "%3A").replace(',', "%2C");
    }
    out
}

/// `::error file=…,line=…,col=…,title=…::message` on stdout.
pub(crate) fn github_error(location: Option<(String, usize, usize)>, title: &str, message: &str) {
    let mut props = vec![];
    if let Some((file, line, col)) = location {
        props.push(format!("file={}", gh_escape(&file, true)));
        props.push(format!("line={line}"));
        props.push(format!("col={col}"));
    }
    props.push(format!("title={}", gh_escape(title, true)));
    println!("::error {}::{}", props.join(","), gh_escape(message, false));
}

/// Prints input errors to stderr the way rustc does, then a count (and,
/// in GitHub Actions, an annotation per error on stdout).
pub(crate) fn print_diagnostics(diags: &Diagnostics) {
    if github_actions() {
        for d in diags.iter() {
            github_error(d.location(), "kiln: invalid template", &d.message);
        }
    }
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    for d in diags.iter() {
        eprintln!("{}", d.render(color));
    }
    let n = diags.len();
    eprintln!("error: {n} error{} found", if n == 1 { "" } else { "s" });
}
