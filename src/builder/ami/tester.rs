//! A fresh instance of a produced AMI, for `[[build.test]]` and `kiln
//! test`: started from the AMI itself (never the build instance) in the
//! AMI's region, the way the build instance was — its own security group
//! with no ingress rule, IMDSv2 only, no key pair — and reached over SSM
//! (with `communicator = "ssh"`: port 22 from `ssh_source_cidrs`, a key
//! pair of the test run's own, over SSH).
//! Everything carries a `kiln:run` tag of its own that is in the journal
//! (on the test's undo stack) before the first create call, so unwinding
//! terminates it and `kiln cleanup` finds it after a crash.

use super::aws::{Clients, Target};
use super::build::{access, connect, ingress_note, AmiComm, DEFAULT_LAUNCH_TIMEOUT};
use super::launch::{self, RunTags};
use super::resources::AwsRun;
use super::{network, source, AmiSettings, From};
use crate::builder::{register_on, ArtifactInstance, BuildError};
use crate::communicator::Communicator;
use crate::job::{JobContext, ResourceKind as _, Undo};
use crate::ui::ArtifactInfo;

/// The test instance, reached as the build instance was (SSM, or SSH with
/// a key pair of its own); terminated by its undo stack.
struct TestInstance {
    comm: AmiComm,
}

impl ArtifactInstance for TestInstance {
    fn communicator(&self) -> &dyn Communicator {
        self.comm.get()
    }
}

/// Starts an instance of `artifact` (`REGION:ami-…`) with the job's
/// settings, its resources on `undo`.
pub async fn launch_artifact(
    ctx: &JobContext,
    undo: &Undo,
    artifact: &ArtifactInfo,
) -> Result<Box<dyn ArtifactInstance>, BuildError> {
    let s = AmiSettings::from_plan(&ctx.plan)?;
    let (region, ami) = super::parse_artifact_id(&artifact.id).ok_or_else(|| {
        BuildError::Config(format!(
            "`{}` is not an AMI artifact (`REGION:ami-…`)",
            artifact.id
        ))
    })?;
    // Subnets and security groups belong to one region.
    if region != s.region && (s.subnet_id.is_some() || s.security_group_id.is_some()) {
        return Err(BuildError::NotSupported(format!(
            "testing an AMI in {region} with `subnet_id` or `security_group_id` of {} is not supported yet: test the image in its build region",
            s.region
        )));
    }
    let mut target = Target::new(region, s.endpoint.as_deref());
    target.max_attempts = s.target().max_attempts;
    let aws = Clients::connect(&target).await;
    let tags = RunTags {
        build_id: ctx.build_id.clone(),
        run: uuid::Uuid::new_v4().simple().to_string(),
        job: format!("{} test", ctx.name),
    };
    register_on(
        undo,
        AwsRun {
            region: region.to_string(),
            endpoint: s.endpoint.clone(),
            run: tags.run.clone(),
        }
        .resource(),
        "EC2 test instance and security group",
    )
    .await?;
    let image = source::resolve(&aws, &From::Id(ami.to_string())).await?;
    // The network filters are looked up in the test's region; the image
    // brings its own volumes (the build's `launch_block_device_mappings`
    // are in it); the test instance runs on demand.
    let placed = network::place(&aws, &s).await?;
    let s = AmiSettings {
        subnet_id: placed.subnet,
        launch_block_device_mappings: vec![],
        ..s
    };
    let (groups, key) = access(&aws, &s, &tags, ctx, None).await?;
    let limit = crate::builder::duration_or(&s.launch_timeout, DEFAULT_LAUNCH_TIMEOUT);
    let key_name = key.as_ref().map(|k| k.name.as_str());
    let instance = launch::instance(
        &aws, &s, &image, &groups, &tags, None, key_name, None, limit,
    )
    .await?
    .id;
    ctx.message(format!(
        "test instance {instance} running from {ami} in {region} (security group {}{}, IMDSv2 only)",
        groups.join(", "),
        ingress_note(&s)
    ));
    let comm = connect(ctx, &s, &aws, &instance, key.as_ref()).await?;
    Ok(Box::new(TestInstance { comm }))
}
