//! The test step, after `snapshot`: each distinct artifact of a job is
//! started fresh by its builder (never the build instance), the job's
//! `[[build.test]]` run in it, and the report kept on the artifact for
//! the records. A failed test fails the job, so nothing is registered or
//! published; `--keep-on-failure` leaves the failed test instance,
//! journaled, for inspection and `kiln cleanup`.

use crate::builder::Builder;
use crate::imagetest::{run_tests, TestReport};
use crate::job::{sanitize, scratch::build_work_dir, JobContext, Resource, Undo};
use crate::template::plan::TestPlan;
use crate::ui::ArtifactInfo;

/// Tests every artifact (once per digest) and records the reports on
/// them; `Err` when a test could not run, or failed.
pub(super) async fn test_artifacts(
    ctx: &JobContext,
    builder: &dyn Builder,
    undo: &Undo,
    artifacts: &mut [ArtifactInfo],
) -> Result<(), super::JobError> {
    let mut done: Vec<TestReport> = vec![];
    for a in artifacts.iter_mut() {
        let seen = done
            .iter()
            .find(|r| r.digest.is_some() && r.digest == a.digest)
            .cloned();
        let report = match seen {
            Some(r) => r,
            None => {
                let r = test_artifact(ctx, builder, undo, a, &ctx.plan.tests)
                    .await
                    .map_err(super::JobError::Test)?;
                done.push(r.clone());
                r
            }
        };
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
    Ok(TestReport {
        artifact: artifact.id.clone(),
        digest: artifact.digest.clone(),
        tests,
    })
}
