//! AMIs after the build: create from the stopped instance, wait, tag with
//! their snapshots, copy to other regions (encrypted with each region's
//! key), share (launch permission and the snapshots' create-volume
//! permission); later, for the catalog: channel parameters in SSM,
//! deprecation on revoke, deletion on prune.

use std::time::Duration;

use aws_sdk_ec2::types::{
    CreateVolumePermission, CreateVolumePermissionModifications, ImageState, LaunchPermission,
    LaunchPermissionModifications, ResourceType, Tag,
};
use aws_sdk_ssm::types::ParameterType;

use super::aws::{code, describe, wait_for, Clients};
use crate::builder::BuildError;

/// Creates the image from the (stopped) instance; returns its id.
pub async fn create(
    aws: &Clients,
    instance: &str,
    name: &str,
    description: Option<&str>,
    devices: &[super::volumes::BlockDevice],
    tags: &super::launch::RunTags,
    extra: &[Tag],
) -> Result<String, BuildError> {
    let mappings: Vec<_> = devices.iter().map(super::volumes::ami_mapping).collect();
    let request = |snapshot_tags: bool| {
        let mut req = aws
            .ec2
            .create_image()
            .instance_id(instance)
            .name(name)
            .set_description(description.map(str::to_string))
            // `ami_block_device_mappings`: none means the instance's volumes as they are.
            .set_block_device_mappings((!mappings.is_empty()).then(|| mappings.clone()))
            .tag_specifications(tags.spec(ResourceType::Image, extra));
        if snapshot_tags {
            // Tagged from birth: a snapshot of a CreateImage cut off by a
            // SIGKILL is still found by `kiln cleanup`.
            req = req.tag_specifications(tags.spec(ResourceType::Snapshot, extra));
        }
        req.send()
    };
    let out = match request(true).await {
        // moto does not implement snapshot tag specifications here (its
        // snapshots are tagged once the image is available instead).
        Err(e) if aws.target.endpoint.is_some() && super::aws::not_implemented(&e) => {
            request(false).await
        }
        other => other,
    }
    .map_err(|e| BuildError::Config(format!("cannot create image `{name}`: {}", describe(&e))))?;
    out.image_id()
        .map(str::to_string)
        .ok_or_else(|| BuildError::Config("CreateImage returned no image id".into()))
}

/// Waits until the image is available; returns its snapshot ids.
pub async fn wait_available(
    aws: &Clients,
    id: &str,
    limit: Duration,
) -> Result<Vec<String>, BuildError> {
    wait_for(&format!("image {id} to be available"), limit, || async {
        let out = match aws.ec2.describe_images().image_ids(id).send().await {
            Ok(o) => o,
            Err(e) if code(&e) == Some("InvalidAMIID.NotFound") => return Ok(None),
            Err(e) => return Err(format!("describing image {id}: {}", describe(&e))),
        };
        let Some(img) = out.images().first() else {
            return Ok(None);
        };
        match img.state() {
            Some(ImageState::Available) => Ok(Some(
                img.block_device_mappings()
                    .iter()
                    .filter_map(|b| b.ebs().and_then(|e| e.snapshot_id()))
                    .map(str::to_string)
                    .collect(),
            )),
            Some(ImageState::Failed) | Some(ImageState::Error) | Some(ImageState::Invalid) => {
                Err(format!(
                    "image {id} failed: {}",
                    img.state_reason()
                        .and_then(|r| r.message())
                        .unwrap_or("no reason given")
                ))
            }
            _ => Ok(None),
        }
    })
    .await
    .map_err(BuildError::Config)
}

/// Tags resources (a copy's image and snapshots: CopyImage does not carry
/// the source's tags over).
pub async fn tag(aws: &Clients, ids: &[String], tags: Vec<Tag>) -> Result<(), BuildError> {
    if ids.is_empty() {
        return Ok(());
    }
    aws.ec2
        .create_tags()
        .set_resources(Some(ids.to_vec()))
        .set_tags(Some(tags))
        .send()
        .await
        .map(drop)
        .map_err(|e| BuildError::Config(format!("cannot tag {ids:?}: {}", describe(&e))))
}

/// Copies `source` (in `from_region`) into `to`'s region, encrypted;
/// returns the new image id.
#[allow(clippy::too_many_arguments)]
pub async fn copy(
    to: &Clients,
    from_region: &str,
    source: &str,
    name: &str,
    description: Option<&str>,
    encrypted: bool,
    kms_key_id: Option<&str>,
    tags: &super::launch::RunTags,
    extra: &[Tag],
) -> Result<String, BuildError> {
    let out = to
        .ec2
        .copy_image()
        .source_region(from_region)
        .source_image_id(source)
        .name(name)
        .set_description(description.map(str::to_string))
        .encrypted(encrypted)
        .set_kms_key_id(kms_key_id.map(str::to_string))
        // Tagged from birth, so a copy cut off half-way is found by its
        // run (moto ignores these; the copy is tagged again once ready).
        .tag_specifications(tags.spec(ResourceType::Image, extra))
        .tag_specifications(tags.spec(ResourceType::Snapshot, extra))
        // Idempotency across the SDK's retries (at most 64 characters).
        .client_token(format!("{}-{}", tags.run, to.target.region))
        .send()
        .await
        .map_err(|e| {
            BuildError::Config(format!(
                "cannot copy {source} to {}: {}",
                to.target.region,
                describe(&e)
            ))
        })?;
    out.image_id()
        .map(str::to_string)
        .ok_or_else(|| BuildError::Config("CopyImage returned no image id".into()))
}

/// Who an image is shared with: accounts, organizations, organizational
/// units, everyone.
#[derive(Debug, Clone, Default)]
pub struct Sharing {
    pub accounts: Vec<String>,
    pub orgs: Vec<String>,
    pub ous: Vec<String>,
    pub public: bool,
}

impl Sharing {
    pub fn of(s: &super::AmiSettings) -> Sharing {
        Sharing {
            accounts: s.share_with.clone(),
            orgs: s.share_with_orgs.clone(),
            ous: s.share_with_ous.clone(),
            public: s.public,
        }
    }
}

/// Shares the image: a launch permission for each account, organization
/// and organizational unit (and the group `all` when public), and the
/// snapshots' create-volume permission for each account (EC2 has no
/// organization form of it: organizations launch through the image).
pub async fn share(
    aws: &Clients,
    id: &str,
    snapshots: &[String],
    to: &Sharing,
) -> Result<(), BuildError> {
    let mut launch: Vec<LaunchPermission> = to
        .accounts
        .iter()
        .map(|a| LaunchPermission::builder().user_id(a).build())
        .collect();
    launch.extend(
        to.orgs
            .iter()
            .map(|o| LaunchPermission::builder().organization_arn(o).build()),
    );
    launch.extend(to.ous.iter().map(|o| {
        LaunchPermission::builder()
            .organizational_unit_arn(o)
            .build()
    }));
    if to.public {
        launch.push(
            LaunchPermission::builder()
                .group(aws_sdk_ec2::types::PermissionGroup::All)
                .build(),
        );
    }
    if launch.is_empty() {
        return Ok(());
    }
    aws.ec2
        .modify_image_attribute()
        .image_id(id)
        .launch_permission(
            LaunchPermissionModifications::builder()
                .set_add(Some(launch))
                .build(),
        )
        .send()
        .await
        .map_err(|e| BuildError::Config(format!("cannot share {id}: {}", describe(&e))))?;
    if to.accounts.is_empty() {
        return Ok(());
    }
    for snap in snapshots {
        let perms = to
            .accounts
            .iter()
            .map(|a| CreateVolumePermission::builder().user_id(a).build())
            .collect();
        aws.ec2
            .modify_snapshot_attribute()
            .snapshot_id(snap)
            .create_volume_permission(
                CreateVolumePermissionModifications::builder()
                    .set_add(Some(perms))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| {
                BuildError::Config(format!("cannot share snapshot {snap}: {}", describe(&e)))
            })?;
    }
    Ok(())
}

/// Turns on deregistration protection.
pub async fn protect(aws: &Clients, id: &str) -> Result<(), BuildError> {
    aws.ec2
        .enable_image_deregistration_protection()
        .image_id(id)
        .send()
        .await
        .map(drop)
        .map_err(|e| {
            BuildError::Config(format!(
                "cannot enable deregistration protection on {id}: {}",
                describe(&e)
            ))
        })
}

/// The SSM parameter that names a channel's AMI in a region.
pub fn channel_parameter(image: &str, channel: &str) -> String {
    format!("/kiln/{image}/{channel}")
}

/// An SSM parameter label for a kiln version: labels allow letters,
/// digits, `.`, `-` and `_`, and may not start with a digit.
pub fn version_label(version: &str) -> String {
    let cleaned: String = version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("v{cleaned}")
}

/// Points `/kiln/IMAGE/CHANNEL` at `ami` (data type `aws:ec2:image`) and
/// labels that parameter version with the kiln version.
pub async fn publish_channel(
    aws: &Clients,
    image: &str,
    channel: &str,
    ami: &str,
    version: &str,
) -> Result<String, String> {
    let name = channel_parameter(image, channel);
    let out = aws
        .ssm
        .put_parameter()
        .name(&name)
        .value(ami)
        .r#type(ParameterType::String)
        .data_type("aws:ec2:image")
        .overwrite(true)
        .description(format!("kiln: {image} {version} on channel {channel}"))
        .send()
        .await
        .map_err(|e| format!("cannot write SSM parameter `{name}`: {}", describe(&e)))?;
    let label = version_label(version);
    let labelled = aws
        .ssm
        .label_parameter_version()
        .name(&name)
        .parameter_version(out.version())
        .labels(&label)
        .send()
        .await
        .map_err(|e| format!("cannot label SSM parameter `{name}`: {}", describe(&e)))?;
    if !labelled.invalid_labels().is_empty() {
        return Err(format!(
            "SSM refused the label(s) {:?} on `{name}`",
            labelled.invalid_labels()
        ));
    }
    Ok(name)
}

/// Writes a plain text SSM parameter (overwriting it), such as the
/// catalog head kiln publishes beside an image's channel parameters.
pub async fn put_text_parameter(aws: &Clients, name: &str, value: &str) -> Result<(), String> {
    aws.ssm
        .put_parameter()
        .name(name)
        .value(value)
        .r#type(ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .map_err(|e| format!("cannot write SSM parameter `{name}`: {}", describe(&e)))?;
    Ok(())
}

/// Reads a plain text SSM parameter; `None` when it does not exist.
pub async fn get_text_parameter(aws: &Clients, name: &str) -> Result<Option<String>, String> {
    match aws.ssm.get_parameter().name(name).send().await {
        Ok(o) => Ok(o.parameter().and_then(|p| p.value()).map(str::to_string)),
        Err(e) if code(&e) == Some("ParameterNotFound") => Ok(None),
        Err(e) => Err(format!(
            "cannot read SSM parameter `{name}`: {}",
            describe(&e)
        )),
    }
}

/// Marks the image deprecated now (what `kiln images revoke` maps to).
pub async fn deprecate(aws: &Clients, id: &str) -> Result<(), String> {
    // EC2 rounds to the minute and refuses a time in the past: the next
    // whole minute but one.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let at = (now / 60 + 2) * 60;
    aws.ec2
        .enable_image_deprecation()
        .image_id(id)
        .deprecate_at(aws_smithy_types::DateTime::from_secs(at as i64))
        .send()
        .await
        .map(drop)
        .map_err(|e| format!("cannot deprecate {id}: {}", describe(&e)))
}

/// Deregisters the image and deletes its snapshots (named in the
/// answer); an image already gone is fine (and names none).
pub async fn delete(aws: &Clients, id: &str) -> Result<Vec<String>, String> {
    let out = match aws.ec2.describe_images().image_ids(id).send().await {
        Ok(o) => o,
        Err(e) if code(&e) == Some("InvalidAMIID.NotFound") => return Ok(vec![]),
        Err(e) => return Err(format!("cannot look up {id}: {}", describe(&e))),
    };
    let Some(img) = out.images().first() else {
        return Ok(vec![]);
    };
    let snapshots: Vec<String> = img
        .block_device_mappings()
        .iter()
        .filter_map(|b| b.ebs().and_then(|e| e.snapshot_id()))
        .map(str::to_string)
        .collect();
    if img
        .deregistration_protection()
        .is_some_and(|p| p.starts_with("enabled"))
    {
        aws.ec2
            .disable_image_deregistration_protection()
            .image_id(id)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "cannot lift deregistration protection of {id}: {}",
                    describe(&e)
                )
            })?;
    }
    match aws.ec2.deregister_image().image_id(id).send().await {
        Ok(_) => {}
        Err(e) if code(&e) == Some("InvalidAMIID.NotFound") => {}
        Err(e) => return Err(format!("cannot deregister {id}: {}", describe(&e))),
    }
    for s in &snapshots {
        delete_snapshot(aws, s).await?;
    }
    Ok(snapshots)
}

pub async fn delete_snapshot(aws: &Clients, id: &str) -> Result<(), String> {
    match aws.ec2.delete_snapshot().snapshot_id(id).send().await {
        Ok(_) => Ok(()),
        Err(e) if code(&e) == Some("InvalidSnapshot.NotFound") => Ok(()),
        Err(e) => Err(format!("cannot delete snapshot {id}: {}", describe(&e))),
    }
}

/// Launch templates (latest and every other version) that use `ami`:
/// prune keeps such an image.
pub async fn launch_template_users(aws: &Clients, ami: &str) -> Result<Vec<String>, String> {
    let mut users = vec![];
    let mut token = None;
    loop {
        let out = aws
            .ec2
            .describe_launch_templates()
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| format!("cannot list launch templates: {}", describe(&e)))?;
        for lt in out.launch_templates() {
            let Some(id) = lt.launch_template_id() else {
                continue;
            };
            let mut versions = vec![];
            let mut vtoken = None;
            loop {
                let page = aws
                    .ec2
                    .describe_launch_template_versions()
                    .launch_template_id(id)
                    .set_next_token(vtoken.take())
                    .send()
                    .await
                    .map_err(|e| {
                        format!(
                            "cannot list versions of launch template {id}: {}",
                            describe(&e)
                        )
                    })?;
                versions.extend(page.launch_template_versions().iter().cloned());
                match page.next_token() {
                    Some(t) if !t.is_empty() => vtoken = Some(t.to_string()),
                    _ => break,
                }
            }
            for v in &versions {
                let uses = v
                    .launch_template_data()
                    .and_then(|d| d.image_id())
                    .is_some_and(|i| i == ami);
                if uses {
                    users.push(format!(
                        "{} version {}",
                        lt.launch_template_name().unwrap_or(id),
                        v.version_number().unwrap_or_default()
                    ));
                }
            }
        }
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_labels_are_valid_ssm_labels() {
        assert_eq!(version_label("1.4.0+12"), "v1.4.0_12");
        assert_eq!(version_label("2.0.0-rc.1+3"), "v2.0.0-rc.1_3");
        assert_eq!(channel_parameter("web", "prod"), "/kiln/web/prod");
    }
}
