//! The AMI builder's own resource kinds — a run (everything tagged
//! `kiln:run` in a region) and a half-made AMI — and their reaper, which
//! the undo stack and `kiln cleanup` dispatch to. Without the `ami` feature
//! the kinds are still known, so `kiln cleanup` says why it cannot remove
//! them.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::job::{OwnedResource, Reap, ResourceKind};

/// Everything tagged `kiln:run = RUN` in an AWS region: the build instance,
/// its temporary security group and (`communicator = "ssh"`) its key pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AwsRun {
    pub region: String,
    pub endpoint: Option<String>,
    pub run: String,
}

impl ResourceKind for AwsRun {
    const KIND: &'static str = "aws_run";
}

/// An AMI being made (by its unique name) and the run's snapshots in that
/// region; released once the image is complete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AwsImage {
    pub region: String,
    pub endpoint: Option<String>,
    pub run: String,
    pub name: String,
}

impl ResourceKind for AwsImage {
    const KIND: &'static str = "aws_image";
}

/// Removes AWS runs and half-made AMIs.
pub struct AwsReaper;

/// The AMI builder's reaper.
pub fn reaper() -> Arc<dyn Reap> {
    Arc::new(AwsReaper)
}

#[async_trait]
impl Reap for AwsReaper {
    fn kinds(&self) -> &'static [&'static str] {
        &[AwsRun::KIND, AwsImage::KIND]
    }

    fn describe(&self, r: &OwnedResource) -> String {
        if let Ok(AwsRun { region, run, .. }) = r.parse() {
            return format!(
                "EC2 instances, spot requests, volumes, key pairs and security groups tagged kiln:run={run} in {region}"
            );
        }
        match r.parse::<AwsImage>() {
            Ok(AwsImage { region, name, .. }) => format!("AMI `{name}` in {region}"),
            Err(e) => e,
        }
    }

    #[cfg(feature = "ami")]
    async fn reap(&self, r: &OwnedResource) -> Result<(), String> {
        if r.kind == AwsRun::KIND {
            let AwsRun {
                region,
                endpoint,
                run,
            } = r.parse()?;
            return super::reap::run(&region, endpoint.as_deref(), &run).await;
        }
        let AwsImage {
            region,
            endpoint,
            run,
            name,
        } = r.parse()?;
        super::reap::image(&region, endpoint.as_deref(), &run, &name).await
    }

    #[cfg(not(feature = "ami"))]
    async fn reap(&self, _r: &OwnedResource) -> Result<(), String> {
        Err(
            "this kiln was compiled without the `ami` feature and cannot remove AWS resources"
                .into(),
        )
    }
}
