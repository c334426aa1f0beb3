//! The throw-away instance: a security group with no ingress rule (SSM
//! needs none; with `communicator = "ssh"`, `ssh` adds port 22) in the
//! subnet's VPC, then one instance with IMDSv2 required (hop limit 1), an
//! encrypted root volume, the given instance profile and no key pair but
//! the run's own with SSH. Everything is tagged `kiln:build-id` / `kiln:run`, and the
//! run is in the journal before the first create call is made.

use std::time::Duration;

use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState, IamInstanceProfileSpecification,
    InstanceMetadataEndpointState, InstanceMetadataOptionsRequest,
    InstanceNetworkInterfaceSpecification, InstanceStateName, InstanceType, ResourceType, Tag,
    TagSpecification,
};

use super::aws::{describe, wait_for, Clients};
use super::source::SourceImage;
use super::AmiSettings;
use crate::builder::BuildError;

/// The `kiln:*` tags every resource of one job carries.
#[derive(Debug, Clone)]
pub struct RunTags {
    pub build_id: String,
    /// Unique per job: what `kiln cleanup` looks resources up by.
    pub run: String,
    pub job: String,
}

impl RunTags {
    pub fn tags(&self) -> Vec<Tag> {
        vec![
            tag("kiln:build-id", &self.build_id),
            tag("kiln:run", &self.run),
            tag("kiln:job", &self.job),
        ]
    }

    pub fn spec(&self, kind: ResourceType, extra: &[Tag]) -> TagSpecification {
        TagSpecification::builder()
            .resource_type(kind)
            .set_tags(Some(
                self.tags()
                    .into_iter()
                    .chain(extra.iter().cloned())
                    .collect(),
            ))
            .build()
    }
}

pub fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().key(k).value(v).build()
}

/// The VPC new security groups go to: the subnet's, else the default VPC.
async fn vpc_of(aws: &Clients, subnet: Option<&str>) -> Result<String, BuildError> {
    let region = &aws.target.region;
    match subnet {
        Some(subnet) => {
            let out = aws
                .ec2
                .describe_subnets()
                .subnet_ids(subnet)
                .send()
                .await
                .map_err(|e| BuildError::Config(format!("subnet `{subnet}`: {}", describe(&e))))?;
            out.subnets()
                .first()
                .and_then(|s| s.vpc_id())
                .map(str::to_string)
                .ok_or_else(|| {
                    BuildError::Config(format!("subnet `{subnet}` does not exist in {region}"))
                })
        }
        None => {
            let out = aws
                .ec2
                .describe_vpcs()
                .filters(Filter::builder().name("isDefault").values("true").build())
                .send()
                .await
                .map_err(|e| BuildError::Config(format!("default VPC: {}", describe(&e))))?;
            out.vpcs()
                .first()
                .and_then(|v| v.vpc_id())
                .map(str::to_string)
                .ok_or_else(|| {
                    BuildError::Config(format!("{region} has no default VPC; set `subnet_id`"))
                })
        }
    }
}

/// Creates the temporary security group: no ingress rule at all.
pub async fn security_group(
    aws: &Clients,
    s: &AmiSettings,
    tags: &RunTags,
) -> Result<String, BuildError> {
    let vpc = vpc_of(aws, s.subnet_id.as_deref()).await?;
    let name = format!("kiln-{}", tags.run);
    let out = aws
        .ec2
        .create_security_group()
        .group_name(&name)
        .description(group_description(s))
        .vpc_id(&vpc)
        .tag_specifications(tags.spec(ResourceType::SecurityGroup, &[tag("Name", &name)]))
        .send()
        .await
        .map_err(|e| {
            BuildError::Config(format!("cannot create a security group: {}", describe(&e)))
        })?;
    out.group_id()
        .map(str::to_string)
        .ok_or_else(|| BuildError::Config("CreateSecurityGroup returned no group id".into()))
}

/// What the temporary group is for, as its description says.
fn group_description(s: &AmiSettings) -> &'static str {
    if super::sshconf::is_ssh(s) {
        "kiln build instance: SSH from ssh_source_cidrs only"
    } else {
        "kiln build instance: no ingress (provisioned over SSM)"
    }
}

/// Starts the instance and waits until it runs. `key_name`: the run's key
/// pair, only with `communicator = "ssh"`. `user_data` is sent as
/// given (base64-encoded here, as EC2 wants it).
#[allow(clippy::too_many_arguments)]
pub async fn instance(
    aws: &Clients,
    s: &AmiSettings,
    source: &SourceImage,
    group: &str,
    tags: &RunTags,
    user_data: Option<&[u8]>,
    key_name: Option<&str>,
    limit: Duration,
) -> Result<String, BuildError> {
    let name = tag("Name", &format!("kiln {}", tags.job));
    let extra = |m: &std::collections::BTreeMap<String, String>| -> Vec<Tag> {
        std::iter::once(name.clone())
            .chain(m.iter().map(|(k, v)| tag(k, v)))
            .collect()
    };
    let mut ebs = EbsBlockDevice::builder()
        .delete_on_termination(true)
        .encrypted(s.encrypted())
        // The image's own size, or larger when asked: the mapping only
        // exists to turn encryption on.
        .set_volume_size(s.volume_size.or(source.root_volume_size));
    if let Some(k) = &s.kms_key_id {
        ebs = ebs.kms_key_id(k);
    }
    let mut req = aws
        .ec2
        .run_instances()
        .image_id(&source.id)
        .instance_type(InstanceType::from(
            s.instance_type.as_deref().unwrap_or("t3.micro"),
        ))
        .min_count(1)
        .max_count(1)
        .metadata_options(
            InstanceMetadataOptionsRequest::builder()
                .http_tokens(HttpTokensState::Required)
                .http_put_response_hop_limit(1)
                .http_endpoint(InstanceMetadataEndpointState::Enabled)
                .build(),
        )
        .tag_specifications(tags.spec(ResourceType::Instance, &extra(&s.run_tags)))
        .tag_specifications(tags.spec(ResourceType::Volume, &extra(&s.run_volume_tags)))
        // Idempotency: a retried RunInstances must not start a second one.
        .client_token(&tags.run)
        // Only with `communicator = "ssh"`: the run's own key pair.
        .set_key_name(key_name.map(str::to_string));
    req = match s.associate_public_ip_address {
        // The public address is a property of the network interface: the
        // subnet and the group move into its specification.
        Some(public) => req.network_interfaces(
            InstanceNetworkInterfaceSpecification::builder()
                .device_index(0)
                .associate_public_ip_address(public)
                .groups(group)
                .set_subnet_id(s.subnet_id.clone())
                .delete_on_termination(true)
                .build(),
        ),
        None => req
            .security_group_ids(group)
            .set_subnet_id(s.subnet_id.clone()),
    };
    if let Some(data) = user_data {
        use base64::Engine as _;
        req = req.user_data(base64::engine::general_purpose::STANDARD.encode(data));
    }
    if let Some(root) = &source.root_device_name {
        req = req.block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name(root)
                .ebs(ebs.build())
                .build(),
        );
    }
    if let Some(p) = &s.iam_instance_profile {
        let spec = IamInstanceProfileSpecification::builder();
        req = req.iam_instance_profile(if p.starts_with("arn:") {
            spec.arn(p).build()
        } else {
            spec.name(p).build()
        });
    }
    let out = req
        .send()
        .await
        .map_err(|e| BuildError::Config(format!("cannot start the instance: {}", describe(&e))))?;
    let id = out
        .instances()
        .first()
        .and_then(|i| i.instance_id())
        .map(str::to_string)
        .ok_or_else(|| BuildError::Config("RunInstances returned no instance".into()))?;
    wait_state(aws, &id, InstanceStateName::Running, limit).await?;
    Ok(id)
}

/// Waits until the instance is in `want` (an instance that ends up
/// terminated or stopped on the way is an error).
pub async fn wait_state(
    aws: &Clients,
    id: &str,
    want: InstanceStateName,
    limit: Duration,
) -> Result<(), BuildError> {
    wait_for(
        &format!("instance {id} to be {}", want.as_str()),
        limit,
        || async {
            let out = aws.ec2.describe_instances().instance_ids(id).send().await;
            let out = match out {
                Ok(o) => o,
                // Eventual consistency: a new instance may not be listed yet.
                Err(e) if super::aws::code(&e) == Some("InvalidInstanceID.NotFound") => {
                    return Ok(None)
                }
                Err(e) => return Err(format!("describing instance {id}: {}", describe(&e))),
            };
            let state = out
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .find_map(|i| i.state().and_then(|s| s.name()).cloned());
            match state {
                Some(s) if s == want => Ok(Some(())),
                // States it cannot come back from on its own.
                Some(
                    s @ (InstanceStateName::Terminated
                    | InstanceStateName::ShuttingDown
                    | InstanceStateName::Stopped),
                ) if want == InstanceStateName::Running || s != InstanceStateName::Stopped => {
                    Err(format!(
                        "instance {id} is {} while kiln waits for it to be {}",
                        s.as_str(),
                        want.as_str()
                    ))
                }
                _ => Ok(None),
            }
        },
    )
    .await
    .map_err(BuildError::Config)
}

/// Stops the instance (for a consistent snapshot) and waits.
pub async fn stop(aws: &Clients, id: &str, limit: Duration) -> Result<(), BuildError> {
    aws.ec2
        .stop_instances()
        .instance_ids(id)
        .send()
        .await
        .map_err(|e| BuildError::Config(format!("cannot stop instance {id}: {}", describe(&e))))?;
    wait_state(aws, id, InstanceStateName::Stopped, limit).await
}
