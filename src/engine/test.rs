//! The test step, after `snapshot`: each distinct artifact of a job is
//! started fresh by its builder (never the build instance), the job's
//! `[[build.test]]` run in it, and the report kept on the artifact for
//! the records. A failed test fails the job, so nothing is registered or
//! published; `--keep-on-failure` leaves the failed test instance,
//! journaled, for inspection and `kiln cleanup`.

use std::path::Path;

use crate::builder::{Builder, Builders};
use crate::imagetest::{run_tests, TestReport};
use crate::job::{sanitize, scratch::build_work_dir, JobContext, Journal, Resource, Undo};
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
                let sbom = ctx.plan.sbom && a.kind == "oci";
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
    let scratch = build_work_dir(&ctx.state_dir, &ctx.build_id)
        .join(sanitize(&ctx.name))
        .join(format!("test-files-{}", uuid::Uuid::new_v4()));
    undo.register(
        Resource::TempDir {
            path: scratch.clone(),
        },
        "files copied out of the test instance",
    )
    .await
    .map_err(|e| format!("journal: {e}"))?;
    fs_err::create_dir_all(&scratch).map_err(|e| e.to_string())?;
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
    let tests = run_tests(tests, instance.communicator(), &scratch, &|m| {
        ctx.message(m)
    })
    .await;
    let inventory = if sbom {
        ctx.message(format!(
            "reading the package databases of `{}` in the test instance",
            artifact.id
        ));
        let inv = crate::sbom::collect(instance.communicator()).await;
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

/// `kiln test`: `job`'s tests against an existing artifact, in a fresh
/// instance journaled like a build's (`kiln cleanup` reaps what a killed
/// run leaves), removed afterwards unless `keep_on_failure` and a test
/// failed. Messages go to `bus`.
pub async fn test_existing(
    plan: &BuildPlan,
    job: &JobPlan,
    builders: &Builders,
    state_dir: &Path,
    artifact: &ArtifactInfo,
    keep_on_failure: bool,
    bus: std::sync::Arc<EventBus>,
) -> Result<TestReport, String> {
    let builder = builders
        .get(&job.source_type)
        .ok_or_else(|| format!("no builder for source type `{}`", job.source_type))?;
    if !builder.can_test() {
        return Err(format!(
            "testing `{}` artifacts is not supported yet (OCI images only)",
            job.source_type
        ));
    }
    let build_id = format!("test-{}", uuid::Uuid::new_v4());
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
