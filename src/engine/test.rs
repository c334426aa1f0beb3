//! The test step, after `snapshot`: each distinct artifact of a job is
//! started fresh by its builder (never the build instance), the job's
//! `[[build.test]]` run in it, and the report kept on the artifact for
//! the records. A failed test fails the job, so nothing is registered or
//! published; `--keep-on-failure` leaves the failed test instance,
//! journaled, for inspection and `kiln cleanup`.

use std::path::Path;

use crate::builder::{Builder, Builders};
use crate::imagetest::{run_tests, TestReport};
use crate::job::{sanitize, scratch::build_work_dir, JobContext, Journal, Undo};
use crate::template::plan::{BuildPlan, JobPlan, TestPlan};
use crate::ui::{ArtifactInfo, EventBus};

/// Tests every artifact (once per digest) and records the reports on
/// them; `Err` when a test could not run, or failed.
pub(super) async fn test_artifacts(
    ctx: &JobContext,
    builder: &dyn Builder,
    undo: &Undo,
    artifacts: &mut [ArtifactInfo],
) -> Result<(), super::JobError> {
    let mut done: Vec<(TestReport, Option<serde_json::Value>)> = vec![];
    for a in artifacts.iter_mut() {
        let seen = done
            .iter()
            .find(|(r, _)| r.digest.is_some() && r.digest == a.digest)
            .cloned();
        let (report, inventory) = match seen {
            Some(r) => r,
            None => {
                // `[build.sbom]`: the package databases are read in the
                // same instance, after the checks (which only look).
                let sbom = ctx.plan.sbom && super::sbom::readable(&a.kind);
                let (r, inv) = test_artifact_with(ctx, builder, undo, a, &ctx.plan.tests, sbom)
                    .await
                    .map_err(super::JobError::Test)?;
                let inv = inv
                    .transpose()
                    .map_err(|e| super::JobError::Sbom(format!("`{}`: {e}", a.id)))?
                    .map(|i| serde_json::to_value(&i).expect("JSON serializes"));
                done.push((r.clone(), inv.clone()));
                (r, inv)
            }
        };
        if inventory.is_some() {
            a.sbom = inventory;
        }
        a.tests = Some(serde_json::to_value(&report).expect("JSON serializes"));
        if report.failed() {
            let failed = report.named(crate::imagetest::Outcome::Fail);
            return Err(super::JobError::TestFailed(format!(
                "{} of {} tests of `{}` failed: {}",
                failed.len(),
                report.tests.len(),
                a.id,
                failed.join("; ")
            )));
        }
    }
    Ok(())
}

/// Starts a fresh instance of `artifact` on `undo` and runs `tests` in it.
/// The instance stays on `undo` for the caller to unwind or keep.
pub async fn test_artifact(
    ctx: &JobContext,
    builder: &dyn Builder,
    undo: &Undo,
    artifact: &ArtifactInfo,
    tests: &[TestPlan],
) -> Result<TestReport, String> {
    test_artifact_with(ctx, builder, undo, artifact, tests, false)
        .await
        .map(|(r, _)| r)
}

/// [`test_artifact`], and with `sbom` the package inventory read from the
/// same instance after the tests (`Some(Err)` when it cannot be read).
#[allow(clippy::type_complexity)]
async fn test_artifact_with(
    ctx: &JobContext,
    builder: &dyn Builder,
    undo: &Undo,
    artifact: &ArtifactInfo,
    tests: &[TestPlan],
    sbom: bool,
) -> Result<(TestReport, Option<Result<crate::sbom::Inventory, String>>), String> {
    let scratch = ctx
        .scratch_dir(undo, "test-files", "files copied out of the test instance")
        .await
        .map_err(|e| format!("journal: {e}"))?;
    ctx.message(format!(
        "testing `{}` in a fresh instance{}",
        artifact.id,
        artifact
            .digest
            .as_deref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default()
    ));
    let instance = builder
        .launch_artifact(ctx, undo, artifact)
        .await
        .map_err(|e| e.to_string())?;
    let tests = run_tests(
        tests,
        instance.communicator(),
        (&scratch, &ctx.template_dir),
        &|m| ctx.message(m),
    )
    .await;
    let inventory = if sbom {
        ctx.message(format!(
            "reading the package databases of `{}` in the test instance",
            artifact.id
        ));
        let inv = crate::sbom::collect(instance.communicator(), &scratch).await;
        if let Ok(i) = &inv {
            ctx.message(format!(
                "{} packages in `{}` ({})",
                i.packages.len(),
                artifact.id,
                i.databases.join(", ")
            ));
        }
        Some(inv)
    } else {
        None
    };
    Ok((
        TestReport {
            artifact: artifact.id.clone(),
            digest: instance.digest().or_else(|| artifact.digest.clone()),
            tests,
        },
        inventory,
    ))
}

/// What `kiln test` produced: the report, and the files of its signed
/// test-result attestation (none without `[build.sign]` or a digest).
pub struct TestedArtifact {
    pub report: TestReport,
    pub attestation: Vec<std::path::PathBuf>,
}

/// `kiln test`: `job`'s tests against an existing artifact, in a fresh
/// instance journaled like a build's (`kiln cleanup` reaps what a killed
/// run leaves), removed afterwards unless `keep_on_failure` and a test
/// failed; then, when the job signs (`[build.sign]`), the result signed
/// like a build's (see [`sign_result`]). Messages go to `bus`.
pub async fn test_existing(
    plan: &BuildPlan,
    job: &JobPlan,
    builders: &Builders,
    state_dir: &Path,
    artifact: &ArtifactInfo,
    keep_on_failure: bool,
    bus: std::sync::Arc<EventBus>,
) -> Result<TestedArtifact, String> {
    let build_id = format!("test-{}", uuid::Uuid::new_v4());
    let report = run_existing(
        plan,
        job,
        builders,
        state_dir,
        artifact,
        keep_on_failure,
        (&build_id, bus.clone()),
    )
    .await?;
    let attestation = sign_result(plan, job, state_dir, &build_id, artifact, &report, &bus).await?;
    Ok(TestedArtifact {
        report,
        attestation,
    })
}

/// The signed test-result statement of a `kiln test` run, with the job's
/// `[build.sign]` key, written where a build writes it:
/// `STATE/manifests/test-ID/JOB-1.tests.intoto.json`, attached to a
/// registry image as a cosign attestation, beside an OCI layout. Nothing
/// without a key; without a content digest (an AMI) the report is not
/// signed, and that is said.
async fn sign_result(
    plan: &BuildPlan,
    job: &JobPlan,
    state_dir: &Path,
    build_id: &str,
    artifact: &ArtifactInfo,
    report: &TestReport,
    bus: &EventBus,
) -> Result<Vec<std::path::PathBuf>, String> {
    if job.sign.is_none() {
        return Ok(vec![]);
    }
    let Some(digest) = report.digest.clone().or_else(|| artifact.digest.clone()) else {
        bus.emit(crate::ui::Event::Message {
            job: Some(job.name()),
            text: format!(
                "no signed test attestation for `{}`: an in-toto statement needs the artifact's content digest, which a {} has not",
                artifact.id, artifact.kind
            ),
        });
        return Ok(vec![]);
    };
    let mut keys = Default::default();
    let key = super::keys::signing_key(job, plan, &plan.template_dir(), &mut keys)
        .await
        .map_err(|e| e.to_string())?;
    let mut tested = ArtifactInfo {
        digest: Some(digest),
        tests: Some(serde_json::to_value(report).expect("JSON serializes")),
        ..artifact.clone()
    };
    let mut plan = plan.clone();
    plan.build_id = build_id.to_string();
    let dir = state_dir.join("manifests").join(sanitize(build_id));
    fs_err::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let say = |text: String| {
        bus.emit(crate::ui::Event::Message {
            job: Some(job.name()),
            text,
        })
    };
    let stem = crate::manifest::stem(job, 1);
    Ok(super::records::write_test_attestation(
        &dir,
        &stem,
        &plan,
        &mut tested,
        key.as_deref(),
        &say,
    )
    .await?
    .unwrap_or_default())
}

/// [`test_existing`]'s test run, under `build_id`.
async fn run_existing(
    plan: &BuildPlan,
    job: &JobPlan,
    builders: &Builders,
    state_dir: &Path,
    artifact: &ArtifactInfo,
    keep_on_failure: bool,
    (build_id, bus): (&str, std::sync::Arc<EventBus>),
) -> Result<TestReport, String> {
    let builder = builders
        .get(&job.source_type)
        .ok_or_else(|| format!("no builder for source type `{}`", job.source_type))?;
    if !builder.can_test() {
        return Err(format!(
            "testing `{}` artifacts is not supported yet (OCI images, QEMU disks and AMIs only)",
            job.source_type
        ));
    }
    let build_id = build_id.to_string();
    let name = job.name();
    let ctx = JobContext {
        undo: Undo::new(
            Journal::new(state_dir),
            builders.reapers(),
            &build_id,
            &name,
        ),
        name,
        plan: job.clone(),
        build_id: build_id.clone(),
        image: plan.image.clone(),
        template_digest: plan.template_digest.clone(),
        secrets: std::sync::Arc::new(vec![]),
        template_dir: plan.template_dir(),
        state_dir: state_dir.to_path_buf(),
        cancel: tokio_util::sync::CancellationToken::new(),
        interactive: false,
        vault: plan.vault.clone(),
        hardening_reports: Default::default(),
        bus,
    };
    let undo = ctx.undo.sibling("test").await;
    let result = test_artifact(&ctx, builder.as_ref(), &undo, artifact, &job.tests).await;
    let keep = keep_on_failure && result.as_ref().is_ok_and(TestReport::failed);
    if keep {
        let kept = undo.abandon().await;
        ctx.message(format!(
            "kept the failed test instance for inspection: {}; remove with `kiln cleanup`",
            kept.join(", ")
        ));
        return result;
    }
    let unwound = undo.unwind().await;
    let _ = std::fs::remove_dir_all(build_work_dir(state_dir, &build_id));
    if !unwound.failed.is_empty() {
        return Err(format!(
            "cleanup failed: {}; `kiln cleanup` will retry",
            unwound.failed.join("; ")
        ));
    }
    result
}
