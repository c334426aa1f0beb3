//! The throw-away instance: a security group with no ingress rule (SSM
//! needs none) in the subnet's VPC, then one instance with IMDSv2 required
//! (hop limit 1), an encrypted root volume plus the template's extra
//! volumes, the given instance profile and no key pair (with `communicator =
//! "ssh"`, port 22 from `ssh_source_cidrs` and the run's own key pair) — on demand, or
//! spot type by type with the on-demand fallback the template allows.
//! Everything is tagged `kiln:build-id` / `kiln:run` (the spot request
//! too), and the run is in the journal before the first create call is
//! made.

use std::time::Duration;

use aws_sdk_ec2::operation::run_instances::builders::RunInstancesFluentBuilder;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState, IamInstanceProfileSpecification,
    InstanceInterruptionBehavior, InstanceMarketOptionsRequest, InstanceMetadataEndpointState,
    InstanceMetadataOptionsRequest, InstanceNetworkInterfaceSpecification, InstanceStateName,
    InstanceType, MarketType, ResourceType, SpotInstanceType, SpotMarketOptions, Tag,
    TagSpecification,
};

use super::aws::{code, describe, wait_for, Clients};
use super::source::SourceImage;
use super::spot::{is_capacity_error, SpotPlan, SpotPrice};
use super::{volumes, AmiSettings};
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
pub async fn vpc_of(aws: &Clients, subnet: Option<&str>) -> Result<String, BuildError> {
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

/// Creates the temporary security group in `vpc` ([`vpc_of`] the
/// instance's subnet): no ingress rule at all.
pub async fn security_group(
    aws: &Clients,
    s: &AmiSettings,
    tags: &RunTags,
    vpc: &str,
) -> Result<String, BuildError> {
    let name = format!("kiln-{}", tags.run);
    let out = aws
        .ec2
        .create_security_group()
        .group_name(&name)
        .description(group_description(s))
        .vpc_id(vpc)
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

/// The instance that runs, and how it was bought.
#[derive(Debug, Clone)]
pub struct Launched {
    pub id: String,
    pub instance_type: String,
    /// `on demand`, `spot`, or `on demand (no spot capacity: …)`.
    pub market: String,
}

/// Starts the instance and waits until it runs. `key_name`: the run's key
/// pair, only with `communicator = "ssh"`. `user_data` is sent as
/// given (base64-encoded here, as EC2 wants it). With a spot plan, each
/// spot type is tried in order and, when none has capacity and the
/// template allows it, the first type on demand ([`spot_or_on_demand`]).
#[allow(clippy::too_many_arguments)]
pub async fn instance(
    aws: &Clients,
    s: &AmiSettings,
    source: &SourceImage,
    groups: &[String],
    tags: &RunTags,
    user_data: Option<&[u8]>,
    key_name: Option<&str>,
    spot: Option<&SpotPlan>,
    limit: Duration,
) -> Result<Launched, BuildError> {
    let name = tag("Name", &format!("kiln {}", tags.job));
    let extra = |m: &std::collections::BTreeMap<String, String>| -> Vec<Tag> {
        std::iter::once(name.clone())
            .chain(m.iter().map(|(k, v)| tag(k, v)))
            .collect()
    };
    let mut req = aws
        .ec2
        .run_instances()
        .image_id(&source.id)
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
        .tag_specifications(tags.spec(ResourceType::Volume, &extra(&s.run_volume_tags)));
    // Only with `communicator = "ssh"`: the run's own key pair.
    req = req.set_key_name(key_name.map(str::to_string));
    req = match s.associate_public_ip_address {
        // The public address is a property of the network interface: the
        // subnet and the group move into its specification.
        Some(public) => req.network_interfaces(
            InstanceNetworkInterfaceSpecification::builder()
                .device_index(0)
                .associate_public_ip_address(public)
                .set_groups(Some(groups.to_vec()))
                .set_subnet_id(s.subnet_id.clone())
                .delete_on_termination(true)
                .build(),
        ),
        None => req
            .set_security_group_ids(Some(groups.to_vec()))
            .set_subnet_id(s.subnet_id.clone()),
    };
    if let Some(data) = user_data {
        use base64::Engine as _;
        req = req.user_data(base64::engine::general_purpose::STANDARD.encode(data));
    }
    req = req.set_block_device_mappings(Some(block_devices(s, source)));
    if let Some(p) = &s.iam_instance_profile {
        let spec = IamInstanceProfileSpecification::builder();
        req = req.iam_instance_profile(if p.starts_with("arn:") {
            spec.arn(p).build()
        } else {
            spec.name(p).build()
        });
    }
    let launched = match spot {
        Some(plan) => spot_or_on_demand(req, plan, tags).await?,
        None => {
            let t = s
                .instance_type
                .clone()
                .unwrap_or_else(|| super::DEFAULT_INSTANCE_TYPE.into());
            let id = run(req, &t, None, tags, 0).await.map_err(|(_, e)| e)?;
            Launched {
                id,
                instance_type: t,
                market: "on demand".into(),
            }
        }
    };
    wait_state(aws, &launched.id, InstanceStateName::Running, limit).await?;
    Ok(launched)
}

/// The instance's volumes: the root (encrypted, the image's size or
/// `volume_size`) unless `launch_block_device_mappings` names the root
/// device itself, and every entry of that list.
fn block_devices(s: &AmiSettings, source: &SourceImage) -> Vec<BlockDeviceMapping> {
    let root = source.root_device_name.as_deref();
    let is_root = |d: &volumes::BlockDevice| {
        root.is_some_and(|r| volumes::normalise(r) == volumes::normalise(&d.device_name))
    };
    let mut out = vec![];
    if let Some(root) = root.filter(|_| !s.launch_block_device_mappings.iter().any(is_root)) {
        let mut ebs = EbsBlockDevice::builder()
            .delete_on_termination(true)
            .encrypted(s.encrypted())
            // The image's own size, or larger when asked: the mapping
            // only exists to turn encryption on.
            .set_volume_size(s.volume_size.or(source.root_volume_size));
        if let Some(k) = &s.kms_key_id {
            ebs = ebs.kms_key_id(k);
        }
        out.push(
            BlockDeviceMapping::builder()
                .device_name(root)
                .ebs(ebs.build())
                .build(),
        );
    }
    for d in &s.launch_block_device_mappings {
        let mut d = d.clone();
        if is_root(&d) && !d.no_device {
            // The root keeps kiln's size rule when the entry gives none.
            d.volume_size = d.volume_size.or(s.volume_size).or(source.root_volume_size);
        }
        out.push(volumes::launch_mapping(
            &d,
            s.encrypted(),
            s.kms_key_id.as_deref(),
        ));
    }
    out
}

/// One RunInstances call of type `t`, spot when `price` is given; the
/// instance id, or the error code (for the fallback) with the error.
/// Each attempt has its own client token: a retried call never starts a
/// second instance, and a different attempt is not mistaken for a retry.
async fn run(
    req: RunInstancesFluentBuilder,
    t: &str,
    price: Option<&SpotPrice>,
    tags: &RunTags,
    attempt: usize,
) -> Result<String, (Option<String>, BuildError)> {
    let mut req = req
        .instance_type(InstanceType::from(t))
        .client_token(format!("{}-{attempt}", tags.run));
    if let Some(price) = price {
        let mut spot = SpotMarketOptions::builder()
            .spot_instance_type(SpotInstanceType::OneTime)
            .instance_interruption_behavior(InstanceInterruptionBehavior::Terminate);
        if let SpotPrice::Max(p) = price {
            spot = spot.max_price(p);
        }
        req = req
            .instance_market_options(
                InstanceMarketOptionsRequest::builder()
                    .market_type(MarketType::Spot)
                    .spot_options(spot.build())
                    .build(),
            )
            // The spot request is the run's too: `kiln cleanup` cancels it.
            .tag_specifications(tags.spec(ResourceType::SpotInstancesRequest, &[]));
    }
    let out = req.send().await.map_err(|e| {
        (
            code(&e).map(str::to_string),
            BuildError::Config(format!(
                "cannot start the instance ({t}{}): {}",
                if price.is_some() { ", spot" } else { "" },
                describe(&e)
            )),
        )
    })?;
    out.instances()
        .first()
        .and_then(|i| i.instance_id())
        .map(str::to_string)
        .ok_or_else(|| {
            (
                None,
                BuildError::Config("RunInstances returned no instance".into()),
            )
        })
}

/// Spot in each of the plan's types in order; on demand in the first when
/// none has capacity and the plan allows it. Only capacity errors move on.
async fn spot_or_on_demand(
    req: RunInstancesFluentBuilder,
    plan: &SpotPlan,
    tags: &RunTags,
) -> Result<Launched, BuildError> {
    let mut refused = vec![];
    for (n, t) in plan.types.iter().enumerate() {
        match run(req.clone(), t, Some(&plan.price), tags, n).await {
            Ok(id) => {
                return Ok(Launched {
                    id,
                    instance_type: t.clone(),
                    market: "spot".into(),
                })
            }
            Err((c, _)) if is_capacity_error(c.as_deref()) => {
                refused.push(format!("{t}: {}", c.unwrap_or_default()))
            }
            Err((_, e)) => return Err(e),
        }
    }
    if !plan.fallback_on_demand {
        return Err(BuildError::Config(format!(
            "no spot capacity ({}); set `spot_fallback_on_demand = true` to build on demand then",
            refused.join(", ")
        )));
    }
    let t = &plan.types[0];
    let id = run(req, t, None, tags, plan.types.len())
        .await
        .map_err(|(_, e)| e)?;
    Ok(Launched {
        id,
        instance_type: t.clone(),
        market: format!("on demand (no spot capacity: {})", refused.join(", ")),
    })
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
