//! The base AMI: by id, or the image a filter picks (owners, name pattern,
//! architecture, newest when `most_recent`), or the id an SSM parameter
//! holds (`ssm:/aws/service/…`, as AWS publishes its current images).
//! What the build records is the resolved id.

use aws_sdk_ec2::types::{Filter, Image};

use super::aws::{describe, Clients};
use super::From;
use crate::builder::BuildError;

/// The AMI a build starts from.
#[derive(Debug, Clone)]
pub struct SourceImage {
    pub id: String,
    pub name: String,
    pub root_device_name: Option<String>,
    pub architecture: Option<String>,
    /// The root volume's size (GiB) as the image defines it.
    pub root_volume_size: Option<i32>,
    /// The SSM parameter `from` named, when the id came from one.
    pub parameter: Option<String>,
}

impl SourceImage {
    fn of(img: &Image) -> SourceImage {
        SourceImage {
            id: img.image_id().unwrap_or_default().to_string(),
            name: img.name().unwrap_or_default().to_string(),
            root_device_name: img.root_device_name().map(str::to_string),
            architecture: img.architecture().map(|a| a.as_str().to_string()),
            root_volume_size: img
                .block_device_mappings()
                .iter()
                .find(|b| b.device_name() == img.root_device_name())
                .and_then(|b| b.ebs())
                .and_then(|e| e.volume_size()),
            parameter: None,
        }
    }
}

/// Resolves `from` in the build region.
pub async fn resolve(aws: &Clients, from: &From) -> Result<SourceImage, BuildError> {
    let region = &aws.target.region;
    match from {
        From::Id(param) if param.starts_with("ssm:") => {
            let name = &param["ssm:".len()..];
            let out = aws
                .ssm
                .get_parameter()
                .name(name)
                .send()
                .await
                .map_err(|e| {
                    BuildError::Config(format!(
                        "source AMI parameter `{name}` in {region}: {}",
                        describe(&e)
                    ))
                })?;
            let id = out
                .parameter()
                .and_then(|p| p.value())
                .unwrap_or_default()
                .to_string();
            if !id.starts_with("ami-") {
                return Err(BuildError::Config(format!(
                    "source AMI parameter `{name}` in {region} holds `{id}`, not an AMI id"
                )));
            }
            let mut img = Box::pin(resolve(aws, &From::Id(id.clone()))).await?;
            img.parameter = Some(name.to_string());
            Ok(img)
        }
        From::Id(id) => {
            let out = aws
                .ec2
                .describe_images()
                .image_ids(id)
                .send()
                .await
                .map_err(|e| {
                    BuildError::Config(format!("source AMI `{id}` in {region}: {}", describe(&e)))
                })?;
            out.images().first().map(SourceImage::of).ok_or_else(|| {
                BuildError::Config(format!("source AMI `{id}` does not exist in {region}"))
            })
        }
        From::Filter {
            owners,
            name,
            most_recent,
            architecture,
        } => {
            let mut req = aws
                .ec2
                .describe_images()
                .set_owners(Some(owners.clone()))
                .filters(Filter::builder().name("state").values("available").build());
            if let Some(n) = name {
                req = req.filters(Filter::builder().name("name").values(n).build());
            }
            if let Some(a) = architecture {
                req = req.filters(Filter::builder().name("architecture").values(a).build());
            }
            let out = req.send().await.map_err(|e| {
                BuildError::Config(format!("source AMI filter in {region}: {}", describe(&e)))
            })?;
            let shown = format!(
                "owners {:?}, name `{}`{}",
                owners,
                name.as_deref().unwrap_or("*"),
                architecture
                    .as_deref()
                    .map(|a| format!(", architecture {a}"))
                    .unwrap_or_default()
            );
            pick(out.images(), *most_recent)
                .map(SourceImage::of)
                .map_err(|n| match n {
                    0 => BuildError::Config(format!("no AMI in {region} matches {shown}")),
                    n => BuildError::Config(format!(
                        "{n} AMIs in {region} match {shown}; set `most_recent = true` or narrow the filter"
                    )),
                })
        }
    }
}

/// The one image a filter means: the only match, or the newest when
/// `most_recent`. `Err(n)`: `n` matches and no single answer.
fn pick(images: &[Image], most_recent: bool) -> Result<&Image, usize> {
    match images {
        [] => Err(0),
        [one] => Ok(one),
        many if most_recent => Ok(many
            .iter()
            .max_by(|a, b| {
                // ISO 8601 timestamps compare as text; ids break ties so
                // the answer never depends on the listing order.
                (a.creation_date(), a.image_id()).cmp(&(b.creation_date(), b.image_id()))
            })
            .expect("not empty")),
        many => Err(many.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(id: &str, created: &str) -> Image {
        Image::builder().image_id(id).creation_date(created).build()
    }

    #[test]
    fn most_recent_picks_the_newest_and_a_tie_is_broken_by_id() {
        let imgs = [
            img("ami-1", "2024-01-01T00:00:00.000Z"),
            img("ami-3", "2025-06-01T00:00:00.000Z"),
            img("ami-2", "2025-06-01T00:00:00.000Z"),
        ];
        assert_eq!(pick(&imgs, true).unwrap().image_id(), Some("ami-3"));
        assert_eq!(pick(&imgs, false).unwrap_err(), 3);
        assert_eq!(pick(&[], true).unwrap_err(), 0);
        assert_eq!(pick(&imgs[..1], false).unwrap().image_id(), Some("ami-1"));
    }
}
