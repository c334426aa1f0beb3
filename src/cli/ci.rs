//! `kiln ci github|gitlab`: prints a pipeline for the CI a team already
//! has — nightly and on push. One job gets kiln once (a cached binary, a
//! released one from `KILN_DOWNLOAD_URL`, or one `cargo install`) and hands
//! it to one parallel job per template running `kiln build
//! --skip-unchanged`, with root (sudo) when an OCI or QEMU source needs it
//! or a clear error; the template's `env` secrets and the signing key's
//! password come from the CI's secret store, Vault and AWS are reached with
//! the CI's OIDC identity, the shared catalog from a CI variable, manifests
//! are uploaded. What cannot be wired is a warning naming the template
//! line (see [`crate::lifecycle::pipeline`]).

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::{load_plan, print_diagnostics, Exit, VarArgs};
use crate::lifecycle::pipeline::{self, Needs};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CiSystem {
    Github,
    Gitlab,
}

#[derive(Args, Debug)]
pub struct CiArgs {
    /// The CI system to write a pipeline for.
    #[arg(value_enum)]
    pub system: CiSystem,
    /// The templates to build (default: `templates/*.toml`).
    #[arg(value_name = "TEMPLATE")]
    pub templates: Vec<PathBuf>,
    /// The nightly schedule (cron, UTC).
    #[arg(long, default_value = "17 3 * * *")]
    pub cron: String,
    #[command(flatten)]
    pub vars: VarArgs,
}

/// Where the pipeline's `cargo install` gets kiln from.
const KILN_GIT: &str = "https://github.com/kiln-build/kiln";

/// A YAML double-quoted string.
fn q(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// A shell word: bare when safe, else single-quoted.
fn sh(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./+=:@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

pub fn exec(args: CiArgs) -> Exit {
    let mut templates: Vec<String> = args
        .templates
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    if templates.is_empty() {
        let mut found: Vec<String> = std::fs::read_dir("templates")
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                    .map(|p| p.display().to_string())
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        templates = found;
    }
    if templates.is_empty() {
        eprintln!(
            "error: no templates: give them as arguments, or run where `templates/*.toml` exist"
        );
        return Exit::BadInput;
    }
    if args.cron.split_whitespace().count() != 5 {
        eprintln!(
            "error: `--cron {}` is not a five-field cron expression",
            args.cron
        );
        return Exit::BadInput;
    }
    let mut all: Vec<Needs> = vec![];
    let mut bad = false;
    for t in &templates {
        match load_plan(
            std::path::Path::new(t),
            &args.vars,
            &[],
            &[],
            &crate::secrets::unresolved,
        ) {
            Ok(plan) => {
                let taken: Vec<String> = all.iter().map(|n| n.slug.clone()).collect();
                all.push(pipeline::needs(t, &plan, &taken));
            }
            Err(d) => {
                print_diagnostics(&d);
                bad = true;
            }
        }
    }
    if bad {
        eprintln!("help: `kiln ci` reads each template as the pipeline will (give variables without a default with `--var`)");
        return Exit::BadInput;
    }
    for w in all.iter().flat_map(|n| &n.warnings) {
        eprintln!("warning: {w}");
    }
    match args.system {
        CiSystem::Github => print!("{}", github(&all, &args.cron)),
        CiSystem::Gitlab => print!("{}", gitlab(&all, &args.cron)),
    }
    Exit::Success
}

/// The header comment: what to configure, and what could not be wired.
fn header(out: &mut String, all: &[Needs], secrets_where: &str) {
    let vault = all.iter().any(|n| n.vault);
    let aws = all.iter().any(|n| n.aws);
    out.push_str("# Variables (not secrets):\n");
    out.push_str(
        "#   KILN_CATALOG        postgres://… of the shared catalog (empty: a catalog per job)\n",
    );
    out.push_str(
        "#   KILN_DOWNLOAD_URL   optional: a released kiln binary (then no job compiles kiln)\n",
    );
    out.push_str("#   KILN_SHA256         optional: its sha256, checked\n");
    if vault {
        out.push_str(
            "#   VAULT_ADDR, VAULT_JWT_ROLE   Vault, logged in with the job's OIDC token\n",
        );
    }
    if aws {
        out.push_str("#   AWS_ROLE_ARN, AWS_REGION     AWS, assumed with the job's OIDC token\n");
    }
    let mut listed = vec![];
    for n in all {
        for s in &n.secrets {
            if !listed.contains(&s.env) {
                if listed.is_empty() {
                    let _ = writeln!(out, "# {secrets_where}:");
                }
                let _ = writeln!(out, "#   {:<18}  {}: {}", s.env, n.template, s.why);
                listed.push(s.env.clone());
            }
        }
    }
    for w in all.iter().flat_map(|n| &n.warnings) {
        let _ = writeln!(out, "# NOT WIRED: {w}");
    }
}

/// The shell lines that set `KILN_AS_ROOT` (empty as root, `sudo …`
/// otherwise) through `export_to`, or fail naming the template.
fn root_script(template: &str, export: &dyn Fn(&str) -> String, error: &str) -> Vec<String> {
    vec![
        "if [ \"$(id -u)\" = 0 ]; then".into(),
        format!("  {}", export("")),
        "elif sudo -n true 2>/dev/null; then".into(),
        format!("  {}", export("sudo -E env PATH=$PATH")),
        "else".into(),
        format!(
            "  echo \"{error}kiln needs root for the OCI and QEMU builds of {}: run this job as root, or where sudo works without a password (GitHub-hosted runners and privileged GitLab runners do)\"",
            template.replace(['"', '$', '`', '\\'], "_")
        ),
        "  exit 1".into(),
        "fi".into(),
    ]
}

/// The shell lines that fail early, naming the template line, when a
/// required secret is empty.
fn secrets_script(n: &Needs, store: &str) -> Vec<String> {
    n.secrets
        .iter()
        .filter(|s| s.required)
        .map(|s| {
            format!(
                "[ -n \"${{{0}:-}}\" ] || {{ echo \"error: {0} is not set in the {store}, needed for {1}\" >&2; exit 1; }}",
                s.env,
                s.why.replace(['"', '$', '`', '\\'], "'")
            )
        })
        .collect()
}

fn push_run(out: &mut String, indent: &str, name: &str, lines: &[String]) {
    let _ = writeln!(out, "{indent}- name: {name}");
    let _ = writeln!(out, "{indent}  run: |");
    for l in lines {
        let _ = writeln!(out, "{indent}    {l}");
    }
}

fn github(all: &[Needs], cron: &str) -> String {
    let oidc = all.iter().any(|n| n.vault || n.aws);
    let mut out = String::new();
    out.push_str(&format!(
        "# Generated by `kiln ci github` (kiln {}). Nightly patch rebuilds and builds on
# push: the `kiln` job gets kiln once (cache, released binary or one build)
# and hands it to one parallel job per template, which builds only when its
# inputs, its base or its age say so (`[build.rebuild]`), registers the image
# in the catalog and uploads the build manifests.
",
        env!("CARGO_PKG_VERSION")
    ));
    header(
        &mut out,
        all,
        "Repository secrets (Settings → Secrets and variables → Actions)",
    );
    let _ = write!(
        out,
        r#"name: kiln images
on:
  push:
    branches: [main]
  schedule:
    - cron: {cron}
  workflow_dispatch: {{}}
permissions:
  contents: read
{oidc}concurrency:
  group: kiln-${{{{ github.ref }}}}
  cancel-in-progress: false
env:
  KILN_CATALOG: ${{{{ vars.KILN_CATALOG }}}}
  KILN_STATE_DIR: ${{{{ github.workspace }}}}/.kiln
  KILN_ACTOR: github:${{{{ github.actor }}}}
jobs:
  kiln:
    name: kiln (once for every job)
    runs-on: ubuntu-latest
    timeout-minutes: 60
    steps:
      - name: Cache the kiln binary
        uses: actions/cache@v4
        with:
          path: ${{{{ runner.temp }}}}/kiln
          key: kiln-${{{{ runner.os }}}}-{version}-${{{{ vars.KILN_DOWNLOAD_URL }}}}
      - name: Get kiln (cached, released, or built once)
        env:
          KILN_DOWNLOAD_URL: ${{{{ vars.KILN_DOWNLOAD_URL }}}}
          KILN_SHA256: ${{{{ vars.KILN_SHA256 }}}}
        run: |
          bin="$RUNNER_TEMP/kiln/bin"
          mkdir -p "$bin"
          if [ -x "$bin/kiln" ]; then
            echo "kiln from the cache"
          elif [ -n "$KILN_DOWNLOAD_URL" ]; then
            curl -sSfL --retry 3 "$KILN_DOWNLOAD_URL" -o "$bin/kiln"
            if [ -n "$KILN_SHA256" ]; then echo "$KILN_SHA256  $bin/kiln" | sha256sum -c -; fi
            chmod +x "$bin/kiln"
          else
            cargo install --locked --root "$RUNNER_TEMP/kiln" --git {git} kiln
          fi
          "$bin/kiln" --version
      - name: Hand kiln to the build jobs
        uses: actions/upload-artifact@v4
        with:
          name: kiln-binary
          path: ${{{{ runner.temp }}}}/kiln/bin/kiln
          retention-days: 1
"#,
        cron = q(cron),
        oidc = if oidc { "  id-token: write\n" } else { "" },
        version = env!("CARGO_PKG_VERSION"),
        git = KILN_GIT,
    );
    for n in all {
        let t = sh(&n.template);
        let _ = write!(
            out,
            "  {slug}:\n    name: {name}\n    needs: kiln\n    runs-on: ubuntu-latest\n    timeout-minutes: 90\n",
            slug = n.slug,
            name = q(&n.template)
        );
        let mut env = vec![];
        for s in &n.secrets {
            env.push(format!("{0}: ${{{{ secrets.{0} }}}}", s.env));
        }
        if n.vault {
            env.push("VAULT_ADDR: ${{ vars.VAULT_ADDR }}".into());
            env.push("VAULT_JWT_ROLE: ${{ vars.VAULT_JWT_ROLE }}".into());
            env.push("KILN_VAULT_AUTH: jwt".into());
        }
        if !env.is_empty() {
            out.push_str("    env:\n");
            for e in env {
                let _ = writeln!(out, "      {e}");
            }
        }
        out.push_str("    steps:\n      - uses: actions/checkout@v4\n");
        out.push_str("      - name: kiln from the kiln job\n        uses: actions/download-artifact@v4\n        with:\n          name: kiln-binary\n          path: ${{ runner.temp }}/kiln-bin\n");
        push_run(
            &mut out,
            "      ",
            "Put kiln on PATH",
            &[
                "chmod +x \"$RUNNER_TEMP/kiln-bin/kiln\"".into(),
                "echo \"$RUNNER_TEMP/kiln-bin\" >> \"$GITHUB_PATH\"".into(),
            ],
        );
        let check = secrets_script(n, "repository's secret store");
        if !check.is_empty() {
            push_run(&mut out, "      ", "Secrets from the secret store", &check);
        }
        if n.root {
            push_run(
                &mut out,
                "      ",
                "Root for the OCI and QEMU builds",
                &root_script(
                    &n.template,
                    &|v| format!("echo \"KILN_AS_ROOT={v}\" >> \"$GITHUB_ENV\""),
                    "::error title=kiln needs root::",
                ),
            );
        }
        if n.aws {
            out.push_str("      - name: AWS credentials from the workflow's OIDC identity\n        uses: aws-actions/configure-aws-credentials@v4\n        with:\n          role-to-assume: ${{ vars.AWS_ROLE_ARN }}\n          aws-region: ${{ vars.AWS_REGION }}\n");
        }
        if n.vault {
            push_run(
                &mut out,
                "      ",
                "Vault login token from the workflow's OIDC identity",
                &[
                    "curl -sSf -H \"Authorization: bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN\" \\".into(),
                    "  \"$ACTIONS_ID_TOKEN_REQUEST_URL&audience=vault\" | jq -r .value > \"$RUNNER_TEMP/vault.jwt\"".into(),
                    "echo \"VAULT_JWT_FILE=$RUNNER_TEMP/vault.jwt\" >> \"$GITHUB_ENV\"".into(),
                ],
            );
        }
        push_run(
            &mut out,
            "      ",
            "Validate",
            &[format!("kiln validate {t}")],
        );
        push_run(&mut out, "      ", "Plan", &[format!("kiln plan {t}")]);
        let build = if n.root {
            format!("$KILN_AS_ROOT kiln build --skip-unchanged {t}")
        } else {
            format!("kiln build --skip-unchanged {t}")
        };
        push_run(
            &mut out,
            "      ",
            "Build (skipped when nothing is due)",
            &[build],
        );
        let _ = write!(
            out,
            "      - name: Upload build manifests\n        if: always()\n        uses: actions/upload-artifact@v4\n        with:\n          name: kiln-manifests-{slug}\n          path: .kiln/manifests/\n          if-no-files-found: ignore\n",
            slug = n.slug
        );
    }
    out
}

/// A YAML single-quoted string (for list items holding shell).
fn sq(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn gitlab(all: &[Needs], cron: &str) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "# Generated by `kiln ci gitlab` (kiln {}). Run it from a pipeline schedule
# (nightly: {cron}) and on pushes to the default branch: `kiln-binary` gets
# kiln once (cache, released binary or one build) and hands it to one
# parallel job per template, which builds only when `[build.rebuild]` says
# so, registers the image in the catalog and keeps the build manifests.
# OCI and QEMU builds need root: a privileged runner (the job fails clearly
# otherwise).
",
        env!("CARGO_PKG_VERSION")
    );
    header(
        &mut out,
        all,
        "Masked CI/CD variables (Settings → CI/CD → Variables)",
    );
    let _ = write!(
        out,
        r#"workflow:
  rules:
    - if: $CI_PIPELINE_SOURCE == "schedule"
    - if: $CI_PIPELINE_SOURCE == "web"
    - if: $CI_PIPELINE_SOURCE == "push" && $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH

stages: [kiln, build]

variables:
  KILN_STATE_DIR: $CI_PROJECT_DIR/.kiln
  KILN_ACTOR: gitlab:$GITLAB_USER_LOGIN

kiln-binary:
  stage: kiln
  image: rust:1-bookworm
  timeout: 60m
  cache:
    key: kiln-{version}
    paths:
      - .kiln-install/
  script:
    - mkdir -p .kiln-install/bin kiln-bin
    - |
      if [ -x .kiln-install/bin/kiln ]; then
        echo "kiln from the cache"
      elif [ -n "${{KILN_DOWNLOAD_URL:-}}" ]; then
        curl -sSfL --retry 3 "$KILN_DOWNLOAD_URL" -o .kiln-install/bin/kiln
        if [ -n "${{KILN_SHA256:-}}" ]; then echo "$KILN_SHA256  .kiln-install/bin/kiln" | sha256sum -c -; fi
        chmod +x .kiln-install/bin/kiln
      else
        cargo install --locked --root .kiln-install --git {git} kiln
      fi
    - cp .kiln-install/bin/kiln kiln-bin/kiln
    - kiln-bin/kiln --version
  artifacts:
    paths:
      - kiln-bin/kiln
    expire_in: 1 day
"#,
        version = env!("CARGO_PKG_VERSION"),
        git = KILN_GIT,
    );
    for n in all {
        let t = sh(&n.template);
        let _ = write!(
            out,
            "\n{slug}:\n  stage: build\n  image: debian:bookworm\n  needs: [kiln-binary]\n  timeout: 90m\n",
            slug = n.slug
        );
        if n.vault || n.aws {
            out.push_str("  id_tokens:\n");
            if n.vault {
                out.push_str("    VAULT_ID_TOKEN:\n      aud: vault\n");
            }
            if n.aws {
                out.push_str("    AWS_ID_TOKEN:\n      aud: sts.amazonaws.com\n");
            }
        }
        if n.vault || n.aws {
            out.push_str("  variables:\n");
            if n.vault {
                out.push_str("    KILN_VAULT_AUTH: jwt\n");
            }
            if n.aws {
                out.push_str(
                    "    AWS_WEB_IDENTITY_TOKEN_FILE: $CI_PROJECT_DIR/.aws-web-identity\n",
                );
            }
        }
        out.push_str("  before_script:\n    - export PATH=\"$CI_PROJECT_DIR/kiln-bin:$PATH\"\n");
        for l in secrets_script(n, "project's CI/CD variables") {
            let _ = writeln!(out, "    - {}", sq(&l));
        }
        if n.root {
            out.push_str("    - |\n");
            for l in root_script(
                &n.template,
                &|v| format!("export KILN_AS_ROOT=\"{v}\""),
                "error: ",
            ) {
                let _ = writeln!(out, "      {l}");
            }
        }
        if n.vault {
            out.push_str("    - export VAULT_JWT=\"$VAULT_ID_TOKEN\"\n");
        }
        if n.aws {
            out.push_str("    - printf '%s' \"$AWS_ID_TOKEN\" > \"$AWS_WEB_IDENTITY_TOKEN_FILE\"\n    - export AWS_ROLE_ARN\n");
        }
        let build = if n.root {
            format!("$KILN_AS_ROOT kiln build --skip-unchanged {t}")
        } else {
            format!("kiln build --skip-unchanged {t}")
        };
        let _ = write!(
            out,
            "  script:\n    - {}\n    - {}\n    - {}\n  artifacts:\n    when: always\n    paths:\n      - .kiln/manifests/\n",
            sq(&format!("kiln validate {t}")),
            sq(&format!("kiln plan {t}")),
            sq(&build)
        );
    }
    out
}
