//! The AMI builder's steps: launch (resolve the base, security group,
//! instance, and the communicator: SSM, or SSH with the run's key pair)
//! and snapshot (stop, image, copies, shares).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::types::Tag;

use super::aws::Clients;
use super::launch::{self, tag, RunTags};
use super::resources::{AwsImage, AwsRun};
use super::ssm::{SsmCommunicator, SsmTarget, VaultDelivery};
use super::{image, network, source, ssh, sshconf, AmiSettings};
use crate::builder::{register, BuildError, Builder, Instance};
use crate::communicator::ssh::SshCommunicator;
use crate::communicator::Communicator;
use crate::job::{JobContext, ResourceKind as _, UndoHandle};
use crate::template::plan::JobPlan;
use crate::ui::ArtifactInfo;

pub(super) const DEFAULT_LAUNCH_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const DEFAULT_SSM_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const DEFAULT_IMAGE_TIMEOUT: Duration = Duration::from_secs(60 * 60);

pub struct AmiBuilder;

#[async_trait]
impl Builder for AmiBuilder {
    fn preflight(&self, job: &JobPlan) -> Result<(), BuildError> {
        AmiSettings::from_plan(job).map(drop)
    }

    async fn resolve_base(
        &self,
        job: &JobPlan,
        _template_dir: &std::path::Path,
        _state_dir: &std::path::Path,
    ) -> Result<Option<String>, BuildError> {
        let s = AmiSettings::from_plan(job)?;
        let aws = Clients::connect(&s.target()).await;
        Ok(Some(source::resolve(&aws, &s.from).await?.id))
    }

    fn can_test(&self) -> bool {
        true
    }

    async fn launch_artifact(
        &self,
        ctx: &JobContext,
        undo: &crate::job::Undo,
        artifact: &ArtifactInfo,
    ) -> Result<Box<dyn crate::builder::ArtifactInstance>, BuildError> {
        super::tester::launch_artifact(ctx, undo, artifact).await
    }

    async fn launch(&self, ctx: &JobContext) -> Result<Box<dyn Instance>, BuildError> {
        let s = AmiSettings::from_plan(&ctx.plan)?;
        let aws = Clients::connect(&s.target()).await;
        let tags = RunTags {
            build_id: ctx.build_id.clone(),
            run: uuid::Uuid::new_v4().simple().to_string(),
            job: ctx.name.clone(),
        };
        let spot = s.spot().map_err(BuildError::Config)?;
        let user_data = user_data(&s, ctx)?;
        // The base is only looked up (nothing is created), so it goes
        // alongside everything else up to the launch: the journal entry,
        // the network filters and the security group.
        let (base, access) = tokio::join!(source::resolve(&aws, &s.from), async {
            // The network lookups create nothing either: beside the
            // journal entry, which must be on disk before the group (the
            // first create call) is made — whatever carries the run's tag
            // is then found and removed on every exit path.
            let (registered, placed) = tokio::join!(
                register(
                    ctx,
                    AwsRun {
                        region: s.region.clone(),
                        endpoint: s.endpoint.clone(),
                        run: tags.run.clone(),
                    }
                    .resource(),
                    "EC2 instance and security group of this build",
                ),
                async {
                    // Filters become ids: the subnet (and so the VPC) first.
                    let placed = network::place(&aws, &s).await?;
                    let s = AmiSettings {
                        subnet_id: placed.subnet.clone(),
                        ..s.clone()
                    };
                    let vpc = vpc_for_groups(&aws, &s).await?;
                    Ok::<_, BuildError>((placed, s, vpc))
                }
            );
            registered?;
            let (placed, s, vpc) = placed?;
            if let Some(w) = sshconf::world_warning(&s) {
                ctx.message(w);
            }
            for line in &placed.said {
                ctx.message(line.clone());
            }
            access(&aws, &s, &tags, ctx, vpc.as_deref())
                .await
                .map(|a| (placed.subnet, a))
        });
        let (base, (subnet, (groups, key))) = (base?, access?);
        let s = AmiSettings {
            subnet_id: subnet,
            ..s
        };
        ctx.message(format!(
            "source AMI {} ({}) in {}{}",
            base.id,
            base.name,
            s.region,
            base.parameter
                .as_deref()
                .map(|p| format!(", from SSM parameter {p}"))
                .unwrap_or_default()
        ));
        let limit = crate::builder::duration_or(&s.launch_timeout, DEFAULT_LAUNCH_TIMEOUT);
        let key_name = key.as_ref().map(|k| k.name.as_str());
        let launched = launch::instance(
            &aws,
            &s,
            &base,
            &groups,
            &tags,
            user_data.as_deref(),
            key_name,
            spot.as_ref(),
            limit,
        )
        .await?;
        let instance = launched.id.clone();
        ctx.message(format!(
            "instance {instance} running ({}, {}; security group {}{}, IMDSv2 only)",
            launched.instance_type,
            launched.market,
            groups.join(", "),
            ingress_note(&s)
        ));
        let comm = connect(ctx, &s, &aws, &instance, key.as_ref()).await?;
        Ok(Box::new(AmiInstance {
            settings: s,
            aws,
            base: base.id,
            instance,
            tags,
            comm,
            made: None,
        }))
    }
}

/// The instance's security groups ([`groups`]) and, with
/// `communicator = "ssh"`, the run's key pair.
/// `vpc`: the VPC of the instance's subnet when already known
/// ([`vpc_for_groups`]), else it is looked up here.
pub(super) async fn access(
    aws: &Clients,
    s: &AmiSettings,
    tags: &RunTags,
    ctx: &JobContext,
    vpc: Option<&str>,
) -> Result<(Vec<String>, Option<ssh::RunKey>), BuildError> {
    let groups = groups(aws, s, tags, ctx, vpc).await?;
    let key = match sshconf::is_ssh(s) {
        true => Some(ssh::import_key(aws, tags).await?),
        false => None,
    };
    Ok((groups, key))
}

/// What the instance's groups let in, for the messages: kiln's own group
/// has no ingress, or (SSH) port 22 from `ssh_source_cidrs`; of groups the
/// template names kiln says nothing.
pub(super) fn ingress_note(s: &AmiSettings) -> String {
    if s.security_group_id.is_some() || s.security_group_filter.is_some() {
        String::new()
    } else if sshconf::is_ssh(s) {
        format!(", SSH from {} only", s.ssh_source_cidrs.join(", "))
    } else {
        ", no ingress".into()
    }
}

/// Reaches the running `instance`: over SSH with the run's `key`, else
/// over SSM.
pub(super) async fn connect(
    ctx: &JobContext,
    s: &AmiSettings,
    aws: &Clients,
    instance: &str,
    key: Option<&ssh::RunKey>,
) -> Result<AmiComm, BuildError> {
    Ok(match key {
        Some(key) => AmiComm::Ssh(ssh::connect(ctx, aws, s, instance, key).await?),
        None => AmiComm::Ssm(communicator(ctx, s, aws, instance)),
    })
}

/// The instance's security groups: `security_group_id`, the groups
/// `security_group_filter` finds in the instance's VPC (used as they are:
/// kiln cannot vouch for their rules, and says so), or a new group of the
/// run's with no ingress rule (with `communicator = "ssh"`: port 22 from
/// `ssh_source_cidrs` only).
pub(super) async fn groups(
    aws: &Clients,
    s: &AmiSettings,
    tags: &RunTags,
    ctx: &JobContext,
    vpc: Option<&str>,
) -> Result<Vec<String>, BuildError> {
    let vpc = match (vpc, &s.security_group_id) {
        (_, Some(g)) => return Ok(vec![g.clone()]),
        (Some(v), None) => v.to_string(),
        (None, None) => launch::vpc_of(aws, s.subnet_id.as_deref()).await?,
    };
    match &s.security_group_filter {
        Some(f) => {
            let found = network::security_groups(aws, f, &vpc).await?;
            ctx.message(format!(
                "warning: security groups {} from `security_group_filter` are used as they are: kiln makes no group of its own, so the instance is reachable as far as their ingress rules allow",
                found.join(", ")
            ));
            Ok(found)
        }
        None => {
            let group = launch::security_group(aws, s, tags, &vpc).await?;
            if sshconf::is_ssh(s) {
                ssh::allow_ingress(aws, &group, &sshconf::source_cidrs(s), tags).await?;
            }
            Ok(vec![group])
        }
    }
}

/// The VPC the instance's groups belong to ([`launch::vpc_of`] its
/// subnet), or `None` when the template names the group itself: a lookup
/// that creates nothing, so it need not wait for the journal.
pub(super) async fn vpc_for_groups(
    aws: &Clients,
    s: &AmiSettings,
) -> Result<Option<String>, BuildError> {
    match &s.security_group_id {
        Some(_) => Ok(None),
        None => launch::vpc_of(aws, s.subnet_id.as_deref()).await.map(Some),
    }
}

/// How commands reach `instance`: SSM, with the build's secrets and Vault
/// delivery, each command commented with the build and the job.
fn communicator(
    ctx: &JobContext,
    s: &AmiSettings,
    aws: &Clients,
    instance: &str,
) -> SsmCommunicator {
    SsmCommunicator::new(SsmTarget {
        ssm: aws.ssm.clone(),
        instance: instance.to_string(),
        emulator: s.endpoint.is_some(),
        online_timeout: crate::builder::duration_or(&s.ssm_timeout, DEFAULT_SSM_TIMEOUT),
        secrets: ctx.secrets.clone(),
        vault: VaultDelivery {
            settings: ctx.vault.clone(),
            instance_address: s.vault_address.clone(),
            ttl: s.vault_wrap_ttl.clone().unwrap_or_else(|| "5m".into()),
        },
        comment: format!("kiln {} {}", ctx.build_id, ctx.name)
            .chars()
            .take(100)
            .collect(),
        message: Arc::new(ctx.message_sink()),
    })
}

/// The instance's user data: `user_data` (a template string, already
/// rendered) or the bytes of `user_data_file`. EC2 keeps user data readable
/// to anyone who can describe the instance, and in the image's launch
/// history: one that holds a secret value (in any encoding the redactor
/// knows) is refused.
fn user_data(s: &AmiSettings, ctx: &JobContext) -> Result<Option<Vec<u8>>, BuildError> {
    let data = match (&s.user_data, &s.user_data_file) {
        (Some(text), _) => text.clone().into_bytes(),
        (None, Some(file)) => {
            let path = ctx.template_dir.join(file);
            std::fs::read(&path).map_err(|e| {
                BuildError::Config(format!(
                    "`user_data_file`: cannot read `{}`: {e}",
                    path.display()
                ))
            })?
        }
        (None, None) => return Ok(None),
    };
    if data.len() > 16 * 1024 {
        return Err(BuildError::Config(format!(
            "user data is {} bytes; EC2 takes at most 16 KiB",
            data.len()
        )));
    }
    let redactor = crate::ui::redact::Redactor::new(ctx.secrets.iter().map(|(_, v)| v.clone()));
    let text = String::from_utf8_lossy(&data);
    if !redactor.is_empty() && redactor.redact(&text) != text {
        return Err(BuildError::Config(
            "user data holds a secret value: EC2 shows user data to anyone who can describe the instance; pass secrets through a provisioner's `env` instead".into(),
        ));
    }
    Ok(Some(data))
}

struct AmiInstance {
    settings: AmiSettings,
    aws: Clients,
    base: String,
    instance: String,
    tags: RunTags,
    comm: AmiComm,
    /// The image `snapshot` made, waiting for `distribute`.
    made: Option<Made>,
}

/// How the build reaches its instance (`communicator`).
pub(super) enum AmiComm {
    Ssm(SsmCommunicator),
    Ssh(SshCommunicator),
}

impl AmiComm {
    pub(super) fn get(&self) -> &dyn Communicator {
        match self {
            AmiComm::Ssm(c) => c,
            AmiComm::Ssh(c) => c,
        }
    }
}

/// The image in the build region, made and tagged, not yet shared, copied
/// or protected; its handle keeps it on the undo stack until then.
struct Made {
    name: String,
    extra: Vec<Tag>,
    id: String,
    snapshots: Vec<String>,
    handle: UndoHandle,
}

/// An AMI name: 3–128 of letters, digits and `()[]./-'@_ `.
fn ami_name(wanted: Option<&str>, image: &str, version: &str, run: &str) -> String {
    let raw = match wanted {
        Some(n) => n.to_string(),
        None => format!("{image}-{version}-{}", &run[..8.min(run.len())]),
    };
    let raw = if raw.chars().count() < 3 {
        format!("{raw}-{}", &run[..8.min(run.len())])
    } else {
        raw
    };
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "()[]./-'@_ ".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(128)
        .collect()
}

#[async_trait]
impl Instance for AmiInstance {
    fn communicator(&self) -> &dyn Communicator {
        self.comm.get()
    }

    async fn keep_for_inspection(&mut self, _ctx: &JobContext) -> Option<String> {
        if let AmiComm::Ssh(_) = self.comm {
            // The run's key dies with kiln: EC2 Instance Connect pushes a
            // short-lived one, through the group's port 22.
            return Some(format!(
                "aws ec2-instance-connect ssh --instance-id {} --os-user {} --region {} (needs EC2 Instance Connect on the image: the build's own SSH key lived only in kiln's memory)",
                self.instance,
                self.settings.ssh_username.as_deref().unwrap_or_default(),
                self.settings.region
            ));
        }
        // The instance lives on by itself; Session Manager is the way in
        // that needs no ingress (the AWS CLI's session-manager-plugin).
        Some(format!(
            "aws ssm start-session --target {} --region {}",
            self.instance, self.settings.region
        ))
    }

    async fn snapshot(&mut self, ctx: &JobContext) -> Result<Vec<ArtifactInfo>, BuildError> {
        let s = &self.settings;
        let limit = crate::builder::duration_or(&s.image_timeout, DEFAULT_IMAGE_TIMEOUT);
        if let AmiComm::Ssh(c) = &self.comm {
            c.disconnect().await;
        }
        ctx.message(format!("stopping {}", self.instance));
        let name = ami_name(
            s.ami_name.as_deref(),
            &ctx.image.name,
            &ctx.image.version,
            &self.tags.run,
        );
        let mut extra: Vec<Tag> = vec![
            tag("Name", &name),
            tag("kiln:image", &ctx.image.name),
            tag("kiln:version", &ctx.image.version),
            tag("kiln:source-ami", &self.base),
        ];
        extra.extend(s.tags.iter().map(|(k, v)| tag(k, v)));
        // The image is journaled while the instance stops (its reaper finds
        // nothing to remove if it was never made). It stays on the undo
        // stack until `distribute` is done: a failed test (or anything
        // else) deregisters the image.
        let (stopped, handle) = tokio::join!(
            launch::stop(
                &self.aws,
                &self.instance,
                crate::builder::duration_or(&s.launch_timeout, DEFAULT_LAUNCH_TIMEOUT),
            ),
            register_image(ctx, s, &s.region, &self.tags.run, &name)
        );
        let handle = handle?;
        stopped?;
        let id = image::create(
            &self.aws,
            &self.instance,
            &name,
            s.ami_description.as_deref(),
            &s.ami_block_device_mappings,
            &self.tags,
            &extra,
        )
        .await?;
        ctx.message(format!("creating {id} (`{name}`) in {}", s.region));
        let snapshots = image::wait_available(&self.aws, &id, limit).await?;
        let all_tags: Vec<Tag> = self.tags.tags().into_iter().chain(extra.clone()).collect();
        let snapshot_tags: Vec<Tag> = all_tags
            .iter()
            .cloned()
            .chain(s.snapshot_tags.iter().map(|(k, v)| tag(k, v)))
            .collect();
        image::tag(&self.aws, &snapshots, snapshot_tags).await?;
        let artifact = self.artifact(&s.region, &id, &snapshots);
        ctx.message(format!(
            "AMI {id} in {} (copies, sharing and protection wait for its tests)",
            s.region
        ));
        self.made = Some(Made {
            name,
            extra,
            id,
            snapshots,
            handle,
        });
        Ok(vec![artifact])
    }

    fn distributes(&self) -> bool {
        true
    }

    /// Shares the image made by `snapshot`, copies it to `copy_to` (shared
    /// alike) and protects them all; then the images outlive the build.
    async fn distribute(
        &mut self,
        ctx: &JobContext,
        artifacts: Vec<ArtifactInfo>,
    ) -> Result<Vec<ArtifactInfo>, BuildError> {
        let Some(made) = self.made.take() else {
            return Err(BuildError::Config(
                "distribute before snapshot: no image was made".into(),
            ));
        };
        let s = &self.settings;
        let limit = crate::builder::duration_or(&s.image_timeout, DEFAULT_IMAGE_TIMEOUT);
        let Made {
            name,
            extra,
            id,
            snapshots,
            handle,
        } = made;
        let mut handles = vec![handle];
        let all_tags: Vec<Tag> = self.tags.tags().into_iter().chain(extra.clone()).collect();
        let snapshot_tags: Vec<Tag> = all_tags
            .iter()
            .cloned()
            .chain(s.snapshot_tags.iter().map(|(k, v)| tag(k, v)))
            .collect();
        let sharing = image::Sharing::of(s);
        if s.public {
            ctx.message(format!(
                "warning: {id} is made public (`public = true`): any AWS account can launch it"
            ));
        }
        image::share(&self.aws, &id, &snapshots, &sharing).await?;
        let mut made = vec![(self.aws.target.region.clone(), id.clone(), snapshots)];

        // Copies, all regions at once.
        let (run_tags, extra) = (&self.tags, &extra);
        let mut copies = vec![];
        for region in &s.copy_to {
            handles.push(register_image(ctx, s, region, &self.tags.run, &name).await?);
            let (target, name, all_tags, snapshot_tags, id, sharing) = (
                self.aws.target.in_region(region),
                name.clone(),
                all_tags.clone(),
                snapshot_tags.clone(),
                id.clone(),
                sharing.clone(),
            );
            let (from_region, kms) = (s.region.clone(), s.copy_kms_key_ids.get(region).cloned());
            ctx.message(format!("copying {id} to {region}"));
            copies.push(async move {
                let to = Clients::connect(&target).await;
                let copy = image::copy(
                    &to,
                    &from_region,
                    &id,
                    &name,
                    s.ami_description.as_deref(),
                    s.encrypted(),
                    kms.as_deref(),
                    run_tags,
                    extra,
                )
                .await?;
                let snaps = image::wait_available(&to, &copy, limit).await?;
                image::tag(&to, std::slice::from_ref(&copy), all_tags).await?;
                image::tag(&to, &snaps, snapshot_tags).await?;
                image::share(&to, &copy, &snaps, &sharing).await?;
                Ok::<_, BuildError>((to.target.region.clone(), copy, snaps))
            });
        }
        for r in futures_util::future::join_all(copies).await {
            made.push(r?);
        }
        // Protection last: until every copy is complete, the undo stack
        // must still be able to deregister them all.
        if s.deregistration_protection {
            for (region, ami, _) in &made {
                let aws = Clients::connect(&self.aws.target.in_region(region)).await;
                image::protect(&aws, ami).await?;
            }
        }
        // Complete: the images outlive the build.
        for h in handles {
            ctx.undo.release(h).await;
        }
        // The copies are the tested image's: they carry its test report
        // and its package inventory (each SBOM names its own copy).
        let first = artifacts.first();
        let tests = first.and_then(|a| a.tests.clone());
        let sbom = first.and_then(|a| a.sbom.clone());
        let copies = made.into_iter().skip(1).map(|(region, ami, snaps)| {
            ctx.message(format!("AMI {ami} in {region} (a copy of {id})"));
            ArtifactInfo {
                tests: tests.clone(),
                sbom: sbom.clone(),
                ..self.artifact(&region, &ami, &snaps)
            }
        });
        Ok(artifacts.into_iter().chain(copies).collect())
    }
}

impl AmiInstance {
    /// The record of one AMI of this build, identified by its region, id
    /// and snapshots (it has no content digest).
    fn artifact(&self, region: &str, ami: &str, snapshots: &[String]) -> ArtifactInfo {
        let identity = crate::sbom::AmiIdentity::new(region, ami, snapshots);
        ArtifactInfo {
            kind: "ami".into(),
            id: super::artifact_id(region, ami),
            digest: None,
            base: Some(self.base.clone()),
            endpoint: self.settings.endpoint.clone(),
            signatures: vec![],
            manifest: None,
            hardening: vec![],
            runs: vec![],
            tests: None,
            identity: Some(serde_json::to_value(identity).expect("JSON serializes")),
            sbom: None,
        }
    }
}

async fn register_image(
    ctx: &JobContext,
    s: &AmiSettings,
    region: &str,
    run: &str,
    name: &str,
) -> Result<UndoHandle, BuildError> {
    let image = AwsImage {
        region: region.to_string(),
        endpoint: s.endpoint.clone(),
        run: run.to_string(),
        name: name.to_string(),
    };
    register(ctx, image.resource(), "AMI being made (and its snapshots)").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ami_names_keep_to_the_allowed_characters() {
        assert_eq!(
            ami_name(None, "web", "1.4.0", "0123456789abcdef"),
            "web-1.4.0-01234567"
        );
        assert_eq!(
            ami_name(Some("golden web+1"), "x", "1", "r"),
            "golden web-1"
        );
    }
}
