//! `[source.ami.NAME]`: AWS AMIs built over SSM. The settings are checked
//! now; building lands with the AMI builder issue (which brings the AWS SDK
//! behind the `ami` cargo feature).

use std::sync::Arc;

use super::Builder;
use crate::template::schema::{Field, Kind, STR_LIST, STR_MAP};

const FROM_FILTER: &[Field] = &[
    Field::opt("owners", STR_LIST),
    Field::opt("name", Kind::Str),
    Field::opt("most_recent", Kind::Bool),
    Field::opt("architecture", Kind::Enum(&["x86_64", "arm64"])),
];

/// The settings of an AMI source (see `../shared/spec/template.md`).
pub const FIELDS: &[Field] = &[
    Field::req("region", Kind::Str),
    Field::req("from", Kind::StrOrTable(FROM_FILTER)),
    Field::opt("instance_type", Kind::Str),
    Field::opt("iam_instance_profile", Kind::Str),
    Field::opt("subnet_id", Kind::Str),
    Field::opt("security_group_id", Kind::Str),
    Field::opt("encrypted", Kind::Bool),
    Field::opt("kms_key_id", Kind::Str),
    Field::opt("ami_name", Kind::Str),
    Field::opt("copy_to", STR_LIST),
    Field::opt("share_with", STR_LIST),
    Field::opt("tags", STR_MAP),
    Field::opt("endpoint", Kind::Str),
];

pub(super) fn builder() -> Arc<dyn Builder> {
    super::unavailable("ami", cfg!(feature = "ami"), "issue #8")
}
