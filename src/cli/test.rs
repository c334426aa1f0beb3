//! `kiln test TEMPLATE --artifact REF`: runs a template's `[[build.test]]`
//! against an existing artifact (a nightly re-test of a channel's image)
//! in a fresh instance, prints each result, and exits 0 when nothing
//! failed, 1 when a test failed or could not run, 2 on bad input.

use std::path::{Path, PathBuf};

use clap::Args;

use super::{load_plan, print_diagnostics, Exit, VarArgs};
use crate::builder::Builders;
use crate::ui::ArtifactInfo;

#[derive(Args, Debug)]
pub struct TestArgs {
    #[command(flatten)]
    pub vars: VarArgs,
    /// The image to test: `registry:REF`, `oci-layout:DIR[:TAG]`, a disk
    /// image file (QEMU), `ami-…` (in the source's region) or
    /// `REGION:ami-…`.
    #[arg(long, value_name = "REF")]
    pub artifact: String,
    /// The job whose tests run (`TYPE.NAME` or `BUILD.TYPE.NAME`), when
    /// several have tests.
    #[arg(long, value_name = "SRC")]
    pub only: Vec<String>,
    /// Keep the test instance when a test fails (`kiln cleanup` removes it).
    #[arg(long)]
    pub keep_on_failure: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[arg(value_name = "TEMPLATE")]
    pub template: PathBuf,
}

pub async fn exec(args: TestArgs, state_dir: &Path) -> Exit {
    let plan = match load_plan(
        &args.template,
        &args.vars,
        &args.only,
        &[],
        &crate::secrets::fetch,
    ) {
        Ok(p) => p,
        Err(d) => {
            print_diagnostics(&d);
            return Exit::BadInput;
        }
    };
    let jobs: Vec<_> = plan.jobs.iter().filter(|j| !j.tests.is_empty()).collect();
    let job = match jobs.as_slice() {
        [job] => *job,
        [] => {
            eprintln!(
                "error: `{}` has no `[[build.test]]` for {}",
                args.template.display(),
                if args.only.is_empty() {
                    "any source".to_string()
                } else {
                    format!("`{}`", args.only.join("`, `"))
                }
            );
            return Exit::BadInput;
        }
        many => {
            eprintln!(
                "error: several jobs have tests ({}); pick one with `--only`",
                many.iter().map(|j| j.name()).collect::<Vec<_>>().join(", ")
            );
            return Exit::BadInput;
        }
    };
    let mut digest = None;
    let id = if job.source_type == "qemu" {
        // A disk image made by the QEMU builder (or one like it).
        let path = std::path::Path::new(&args.artifact);
        match std::path::absolute(path) {
            Ok(abs) if abs.is_file() => {
                // The content digest the signed result is about, taken
                // before the test (the test boots an overlay; the disk is
                // never written).
                match crate::sign::blob::sha256_file(&abs) {
                    Ok(d) => digest = Some(format!("sha256:{}", hex::encode(d))),
                    Err(e) => {
                        eprintln!("error: `{}`: {e}", abs.display());
                        return Exit::Failure;
                    }
                }
                abs.display().to_string()
            }
            _ => {
                eprintln!(
                    "error: `{}`: expected the path of a disk image (qcow2 or raw) for the QEMU source",
                    args.artifact
                );
                return Exit::BadInput;
            }
        }
    } else if job.source_type == "ami" {
        match ami_artifact(&args.artifact, job) {
            Ok(id) => id,
            Err(e) => {
                eprintln!("error: {e}");
                return Exit::BadInput;
            }
        }
    } else if args.artifact.starts_with("registry:") || args.artifact.starts_with("oci-layout:") {
        args.artifact.clone()
    } else {
        eprintln!(
            "error: `{}`: expected `registry:REF` or `oci-layout:DIR[:TAG]`",
            args.artifact
        );
        return Exit::BadInput;
    };
    let artifact = ArtifactInfo {
        kind: job.source_type.clone(),
        id,
        digest,
        base: None,
        endpoint: None,
        signatures: vec![],
        manifest: None,
        hardening: vec![],
        runs: vec![],
        tests: None,
        identity: None,
        sbom: None,
    };
    let redactor = std::sync::Arc::new(std::sync::RwLock::new(crate::ui::Redactor::new(
        plan.sensitive_strings(),
    )));
    let sinks: Vec<Box<dyn crate::ui::Sink>> = if args.json {
        vec![]
    } else {
        vec![Box::new(crate::ui::sinks::HumanSink::new())]
    };
    let bus = crate::ui::EventBus::new(redactor, sinks);
    let result = crate::engine::test_existing(
        &plan,
        job,
        &Builders::standard(),
        state_dir,
        &artifact,
        args.keep_on_failure,
        bus,
    )
    .await;
    let (report, attestation) = match result {
        Ok(t) => (t.report, t.attestation),
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Failure;
        }
    };
    if args.json {
        let mut v = serde_json::to_value(&report).expect("serializes");
        v["result"] = report.result().into();
        v["attestation"] = serde_json::json!(attestation);
        println!("{v}");
    } else {
        print!("{}", report.render());
        println!(
            "{}: {} ({})",
            report.artifact,
            report.result(),
            report.digest.as_deref().unwrap_or("no digest")
        );
    }
    if report.failed() {
        Exit::Failure
    } else {
        Exit::Success
    }
}

/// An AMI to test as an artifact id (`REGION:ami-…`): `ami-…` is in the
/// source's `region`.
fn ami_artifact(given: &str, job: &crate::template::plan::JobPlan) -> Result<String, String> {
    let id = if given.starts_with("ami-") {
        let region = job
            .source
            .get("region")
            .and_then(|v| v.as_interpolated())
            .ok_or_else(|| format!("`{given}`: the AMI source names no `region`"))?;
        crate::builder::ami::artifact_id(&region, given)
    } else {
        given.to_string()
    };
    match crate::builder::ami::parse_artifact_id(&id) {
        Some(_) => Ok(id),
        None => Err(format!(
            "`{given}`: expected `ami-…` or `REGION:ami-…` for the AMI source"
        )),
    }
}
