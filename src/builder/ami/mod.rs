//! `[source.ami.NAME]`: AWS AMIs built from a throw-away EC2 instance that
//! nothing can reach — no key pair, a security group with no ingress rule,
//! IMDSv2 only — provisioned over SSM (or, with `communicator = "ssh"`,
//! over SSH from `ssh_source_cidrs` only, with the run's own key pair), snapshotted into an encrypted AMI,
//! copied to other regions, shared, and published to SSM parameters per
//! channel.
//!
//! Modules: [`aws`] (clients, retries, waiters), [`source`] (the base AMI by
//! id, filter or SSM parameter), [`network`] (subnet, VPC and security
//! group filters), [`volumes`] (block device mappings), [`spot`] (spot
//! pricing and fallback), [`launch`] (security group and instance), [`image`]
//! (create, copy, share, publish, deprecate, delete) and [`reap`] (what the
//! undo stack and `kiln cleanup` remove, found by the `kiln:*` tags, for the
//! kinds in [`resources`]). The builder's own communicator is [`ssm`];
//! `communicator = "ssh"` ([`sshconf`] checks its settings) reaches bases
//! without the SSM agent through the generic SSH transport instead, set up
//! by `ssh` (run key pair, port-22 ingress, address, host keys from the
//! console, `console`). `tester` starts a fresh instance of a new AMI for
//! its tests.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use super::{BuildError, Builder};
use crate::template::plan::JobPlan;
use crate::template::schema::{Field, Kind, STR_LIST, STR_MAP};

#[cfg(feature = "ami")]
pub mod aws;
#[cfg(feature = "ami")]
mod build;
#[cfg(feature = "ami")]
mod console;
#[cfg(feature = "ami")]
pub mod image;
#[cfg(feature = "ami")]
mod launch;
pub mod network;
#[cfg(feature = "ami")]
pub mod reap;
pub mod resources;
#[cfg(feature = "ami")]
pub mod source;
pub mod spot;
#[cfg(feature = "ami")]
mod ssh;
pub mod sshconf;
#[cfg(feature = "ami")]
pub mod ssm;
#[cfg(feature = "ami")]
mod tester;
pub mod volumes;

pub use resources::reaper;

const FROM_FILTER: &[Field] = &[
    Field::opt("owners", STR_LIST),
    Field::opt("name", Kind::Str),
    Field::opt("most_recent", Kind::Bool),
    Field::opt("architecture", Kind::Enum(&["x86_64", "arm64"])),
];

/// The settings of an AMI source (see `../shared/spec/template.md` and
/// docs/templates.md).
pub const FIELDS: &[Field] = &[
    Field::req("region", Kind::Str),
    Field::req("from", Kind::StrOrTable(FROM_FILTER)),
    Field::opt("instance_type", Kind::Str),
    Field::opt("iam_instance_profile", Kind::Str),
    Field::opt("subnet_id", Kind::Str),
    Field::opt("security_group_id", Kind::Str),
    Field::opt("encrypted", Kind::Bool),
    Field::opt("kms_key_id", Kind::Str),
    Field::opt("volume_size", Kind::Int),
    Field::opt("copy_kms_key_ids", STR_MAP),
    Field::opt("ami_name", Kind::Str),
    Field::opt("ami_description", Kind::Str),
    Field::opt("copy_to", STR_LIST),
    Field::opt("share_with", STR_LIST),
    Field::opt("tags", STR_MAP),
    Field::opt("deregistration_protection", Kind::Bool),
    Field::opt("endpoint", Kind::Str),
    Field::opt("max_attempts", Kind::Int),
    Field::opt("launch_timeout", Kind::Duration),
    Field::opt("ssm_timeout", Kind::Duration),
    Field::opt("image_timeout", Kind::Duration),
    Field::opt("vault_address", Kind::Str),
    Field::opt("vault_wrap_ttl", Kind::Duration),
    Field::opt("s3_bucket", Kind::Str),
    Field::opt("user_data", Kind::Str),
    Field::opt("user_data_file", Kind::InputFile),
    Field::opt("associate_public_ip_address", Kind::Bool),
    Field::opt("run_tags", STR_MAP),
    Field::opt("run_volume_tags", STR_MAP),
    Field::opt("snapshot_tags", STR_MAP),
    Field::opt("share_with_orgs", STR_LIST),
    Field::opt("share_with_ous", STR_LIST),
    Field::opt("public", Kind::Bool),
    Field::opt("communicator", Kind::Enum(&["ssm", "ssh"])),
    Field::opt("ssh_source_cidrs", STR_LIST),
    Field::opt("ssh_allow_world", Kind::Bool),
    Field::opt("ssh_interface", Kind::Enum(&["public_ip", "private_ip"])),
    Field::opt("ssh_username", Kind::Str),
    Field::opt("ssh_timeout", Kind::Duration),
    Field::opt("ssh_host_key_timeout", Kind::Duration),
    Field::opt("spot_price", Kind::Str),
    Field::opt("spot_instance_types", STR_LIST),
    Field::opt("spot_fallback_on_demand", Kind::Bool),
    Field::opt("subnet_filter", Kind::Table(network::SUBNET_FILTER)),
    Field::opt("vpc_filter", Kind::Table(network::FILTER)),
    Field::opt("security_group_filter", Kind::Table(network::FILTER)),
    Field::opt("launch_block_device_mappings", volumes::DEVICES),
    Field::opt("ami_block_device_mappings", volumes::DEVICES),
];

/// The instance type when the template gives none.
pub const DEFAULT_INSTANCE_TYPE: &str = "t3.micro";

/// Settings the schema knows (so templates ported from Packer read) but
/// the builder does not do yet: each is refused in preflight, by name.
const NOT_YET: &[(&str, &str)] = &[];

/// `from`: an AMI id, or a filter that picks one.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum From {
    Id(String),
    Filter {
        #[serde(default)]
        owners: Vec<String>,
        name: Option<String>,
        #[serde(default)]
        most_recent: bool,
        architecture: Option<String>,
    },
}

/// An AMI source's settings, parsed from the resolved plan.
#[derive(Debug, Clone, Deserialize)]
pub struct AmiSettings {
    pub region: String,
    pub from: From,
    pub instance_type: Option<String>,
    pub iam_instance_profile: Option<String>,
    pub subnet_id: Option<String>,
    pub security_group_id: Option<String>,
    pub encrypted: Option<bool>,
    pub kms_key_id: Option<String>,
    /// Root volume size in GiB (default: the source image's).
    pub volume_size: Option<i32>,
    #[serde(default)]
    pub copy_kms_key_ids: BTreeMap<String, String>,
    pub ami_name: Option<String>,
    pub ami_description: Option<String>,
    #[serde(default)]
    pub copy_to: Vec<String>,
    #[serde(default)]
    pub share_with: Vec<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub deregistration_protection: bool,
    pub endpoint: Option<String>,
    pub max_attempts: Option<u32>,
    pub launch_timeout: Option<String>,
    pub ssm_timeout: Option<String>,
    pub image_timeout: Option<String>,
    pub vault_address: Option<String>,
    pub vault_wrap_ttl: Option<String>,
    pub s3_bucket: Option<String>,
    /// Rendered with the template's expressions; never holds a secret.
    pub user_data: Option<String>,
    pub user_data_file: Option<String>,
    pub associate_public_ip_address: Option<bool>,
    /// Tags on the build instance (beside the `kiln:*` ones).
    #[serde(default)]
    pub run_tags: BTreeMap<String, String>,
    /// Tags on the build instance's volumes.
    #[serde(default)]
    pub run_volume_tags: BTreeMap<String, String>,
    /// Extra tags on the image's snapshots (beside `tags`).
    #[serde(default)]
    pub snapshot_tags: BTreeMap<String, String>,
    /// Organization ARNs the image is shared with.
    #[serde(default)]
    pub share_with_orgs: Vec<String>,
    /// Organizational unit ARNs the image is shared with.
    #[serde(default)]
    pub share_with_ous: Vec<String>,
    /// Launch permission for everyone; only when set explicitly.
    #[serde(default)]
    pub public: bool,
    /// `ssm` (the default) or `ssh`; see [`sshconf`].
    pub communicator: Option<String>,
    /// Where the temporary group lets SSH in from (`communicator = "ssh"`).
    #[serde(default)]
    pub ssh_source_cidrs: Vec<String>,
    /// Allows `0.0.0.0/0` / `::/0` in `ssh_source_cidrs`.
    #[serde(default)]
    pub ssh_allow_world: bool,
    /// `public_ip` or `private_ip` (default: public when there is one).
    pub ssh_interface: Option<String>,
    pub ssh_username: Option<String>,
    pub ssh_timeout: Option<String>,
    pub ssh_host_key_timeout: Option<String>,
    pub subnet_filter: Option<network::NetFilter>,
    pub vpc_filter: Option<network::NetFilter>,
    pub security_group_filter: Option<network::NetFilter>,
    /// Extra or changed volumes of the build instance.
    #[serde(default)]
    pub launch_block_device_mappings: Vec<volumes::BlockDevice>,
    /// Volumes of the image, as CreateImage takes them.
    #[serde(default)]
    pub ami_block_device_mappings: Vec<volumes::BlockDevice>,
    pub spot_price: Option<String>,
    #[serde(default)]
    pub spot_instance_types: Vec<String>,
    pub spot_fallback_on_demand: Option<bool>,
    #[serde(flatten)]
    pub not_yet: BTreeMap<String, serde_json::Value>,
}

impl AmiSettings {
    pub fn from_plan(job: &JobPlan) -> Result<AmiSettings, BuildError> {
        let s: AmiSettings = super::source_settings(job)?;
        if let From::Id(id) = &s.from {
            if !id.starts_with("ami-") && !id.starts_with("ssm:") {
                return Err(BuildError::Config(format!(
                    "`from = \"{id}\"` is not an AMI id (`ami-…`) or an SSM parameter (`ssm:/aws/service/…`); use a filter table to pick one by name"
                )));
            }
        }
        if let From::Filter { owners, name, .. } = &s.from {
            if owners.is_empty() || name.is_none() {
                return Err(BuildError::Config(
                    "a `from` filter needs `owners` and `name` (e.g. `{ owners = [\"amazon\"], name = \"al2023-ami-*-x86_64\", most_recent = true }`)".into(),
                ));
            }
        }
        if let Some((field, why)) = NOT_YET.iter().find(|(f, _)| s.not_yet.contains_key(*f)) {
            return Err(BuildError::NotSupported(format!("`{field}`: {why}")));
        }
        sshconf::check(&s)?;
        s.check_network()?;
        volumes::check_all(
            "launch_block_device_mappings",
            &s.launch_block_device_mappings,
        )
        .map_err(BuildError::Config)?;
        volumes::check_all("ami_block_device_mappings", &s.ami_block_device_mappings)
            .map_err(BuildError::Config)?;
        s.spot().map_err(BuildError::Config)?;
        if s.user_data.is_some() && s.user_data_file.is_some() {
            return Err(BuildError::Config(
                "`user_data` and `user_data_file` are both set: give one".into(),
            ));
        }
        for org in &s.share_with_orgs {
            if !(org.starts_with("arn:") && org.contains(":organization/")) {
                return Err(BuildError::Config(format!(
                    "`share_with_orgs`: `{org}` is not an organization ARN (`arn:aws:organizations::ACCOUNT:organization/o-…`)"
                )));
            }
        }
        for ou in &s.share_with_ous {
            if !(ou.starts_with("arn:") && ou.contains(":ou/")) {
                return Err(BuildError::Config(format!(
                    "`share_with_ous`: `{ou}` is not an organizational unit ARN (`arn:aws:organizations::ACCOUNT:ou/o-…/ou-…`)"
                )));
            }
        }
        if s.public && s.encrypted() {
            return Err(BuildError::Config(
                "`public = true` with an encrypted image: AWS does not make AMIs with encrypted snapshots public; set `encrypted = false` as well (and be sure: anyone can launch it)".into(),
            ));
        }
        if let From::Id(id) = &s.from {
            if let Some(name) = id.strip_prefix("ssm:") {
                if !name.starts_with('/') {
                    return Err(BuildError::Config(format!(
                        "`from = \"{id}\"`: an SSM parameter name starts with `/` (e.g. `ssm:/aws/service/debian/release/12/latest/amd64`)"
                    )));
                }
            }
        }
        if s.s3_bucket.is_some() {
            return Err(BuildError::NotSupported(
                "`s3_bucket` is not supported yet: files reach the instance in chunks through SSM commands".into(),
            ));
        }
        if s.copy_to.contains(&s.region) {
            return Err(BuildError::Config(format!(
                "`copy_to` names the build region `{}` itself",
                s.region
            )));
        }
        for region in s.copy_kms_key_ids.keys() {
            if !s.copy_to.contains(region) {
                return Err(BuildError::Config(format!(
                    "`copy_kms_key_ids` names `{region}`, which is not in `copy_to`"
                )));
            }
        }
        if s.kms_key_id.is_some() && !s.encrypted() {
            return Err(BuildError::Config(
                "`kms_key_id` is set but `encrypted = false`".into(),
            ));
        }
        // Snapshots encrypted with the default `aws/ebs` key cannot be
        // shared: say so now rather than after the whole build.
        if s.shares() && s.encrypted() {
            let missing: Vec<&str> = std::iter::once(&s.region)
                .filter(|_| s.kms_key_id.is_none())
                .chain(
                    s.copy_to
                        .iter()
                        .filter(|r| !s.copy_kms_key_ids.contains_key(*r)),
                )
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                return Err(BuildError::Config(format!(
                    "`share_with` needs a customer-managed KMS key in every region (snapshots encrypted with the default `aws/ebs` key cannot be shared); none for {}: set `kms_key_id` / `copy_kms_key_ids`",
                    missing.join(", ")
                )));
            }
        }
        if let Some(ep) = &s.endpoint {
            if !(ep.starts_with("http://") || ep.starts_with("https://")) {
                return Err(BuildError::Config(format!(
                    "`endpoint = \"{ep}\"` must be an http:// or https:// URL"
                )));
            }
        }
        Ok(s)
    }

    /// The filters against the ids they stand for, and each filter's own
    /// rules.
    fn check_network(&self) -> Result<(), BuildError> {
        let both = |a: &str, b: &str, why: &str| {
            Err(BuildError::Config(format!(
                "`{a}` and `{b}` are both set: give one ({why})"
            )))
        };
        if self.subnet_id.is_some() && self.subnet_filter.is_some() {
            return both("subnet_id", "subnet_filter", "the filter looks a subnet up");
        }
        if self.subnet_id.is_some() && self.vpc_filter.is_some() {
            return both("subnet_id", "vpc_filter", "the subnet's VPC is used");
        }
        if self.security_group_id.is_some() && self.security_group_filter.is_some() {
            return both(
                "security_group_id",
                "security_group_filter",
                "the filter looks groups up",
            );
        }
        for (name, f) in [
            ("subnet_filter", &self.subnet_filter),
            ("vpc_filter", &self.vpc_filter),
            ("security_group_filter", &self.security_group_filter),
        ] {
            let Some(f) = f else { continue };
            if f.filters.is_empty() {
                return Err(BuildError::Config(format!(
                    "`{name}` has no `filters`: give at least one (e.g. `filters = {{ \"tag:Class\" = \"build\" }}`)"
                )));
            }
            if f.most_free && f.random {
                return Err(BuildError::Config(format!(
                    "`{name}`: `most_free` and `random` are both true: choose one"
                )));
            }
        }
        Ok(())
    }

    /// How the build instance is bought: `None` on demand.
    pub fn spot(&self) -> Result<Option<spot::SpotPlan>, String> {
        spot::SpotSettings {
            spot_price: self.spot_price.clone(),
            spot_instance_types: self.spot_instance_types.clone(),
            spot_fallback_on_demand: self.spot_fallback_on_demand,
        }
        .plan(self.instance_type.as_deref())
    }

    pub fn encrypted(&self) -> bool {
        self.encrypted.unwrap_or(true)
    }

    /// Whether the image is shared with anyone (accounts, organizations,
    /// organizational units).
    pub fn shares(&self) -> bool {
        !(self.share_with.is_empty()
            && self.share_with_orgs.is_empty()
            && self.share_with_ous.is_empty())
    }

    #[cfg(feature = "ami")]
    pub fn target(&self) -> aws::Target {
        let mut t = aws::Target::new(&self.region, self.endpoint.as_deref());
        if let Some(n) = self.max_attempts {
            t.max_attempts = n;
        }
        t
    }
}

#[cfg(feature = "ami")]
pub(super) fn builder() -> Arc<dyn Builder> {
    Arc::new(build::AmiBuilder)
}

#[cfg(not(feature = "ami"))]
pub(super) fn builder() -> Arc<dyn Builder> {
    super::unavailable("ami", false, "issue #8")
}

/// The AMI behind an artifact record, if it is one: its region, its id
/// and the clients of that region (and of the endpoint it was built
/// against).
#[cfg(feature = "ami")]
pub async fn artifact(
    kind: &str,
    id: &str,
    endpoint: Option<&str>,
) -> Option<(String, String, aws::Clients)> {
    let (region, ami) = parse_artifact_id(id).filter(|_| kind == "ami")?;
    let clients = aws::Clients::connect(&aws::Target::new(region, endpoint)).await;
    Some((region.to_string(), ami.to_string(), clients))
}

/// An AMI artifact id: `REGION:ami-…`, as Packer prints them.
pub fn artifact_id(region: &str, image_id: &str) -> String {
    format!("{region}:{image_id}")
}

/// Splits an artifact id into region and AMI id.
pub fn parse_artifact_id(id: &str) -> Option<(&str, &str)> {
    let (region, ami) = id.split_once(':')?;
    (ami.starts_with("ami-") && !region.is_empty()).then_some((region, ami))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_ids_round_trip_and_reject_other_ids() {
        assert_eq!(
            parse_artifact_id(&artifact_id("eu-west-1", "ami-0abc")),
            Some(("eu-west-1", "ami-0abc"))
        );
        assert_eq!(parse_artifact_id("registry:host/x:1"), None);
        assert_eq!(parse_artifact_id("ami-0abc"), None);
    }
}
