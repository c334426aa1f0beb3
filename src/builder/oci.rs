//! `[source.oci.NAME]`: container images built without a daemon. The
//! settings are checked now; building lands with the OCI builder issue.

use std::sync::Arc;

use super::Builder;
use crate::template::schema::{Field, Kind, STR_LIST, STR_MAP};

const CONFIG_FIELDS: &[Field] = &[
    Field::opt("env", STR_MAP),
    Field::opt("cmd", STR_LIST),
    Field::opt("entrypoint", STR_LIST),
    Field::opt("labels", STR_MAP),
    Field::opt("workdir", Kind::Str),
    Field::opt("user", Kind::Str),
    Field::opt("exposed_ports", STR_LIST),
];

/// The settings of an OCI source (see `../shared/spec/template.md`).
pub const FIELDS: &[Field] = &[
    Field::req("from", Kind::Str),
    Field::opt("to", STR_LIST),
    Field::opt("runtime", Kind::Str),
    Field::opt("network", Kind::Enum(&["host", "none"])),
    Field::opt("compression", Kind::Enum(&["gzip", "zstd"])),
    Field::opt("config", Kind::Table(CONFIG_FIELDS)),
];

pub(super) fn builder() -> Arc<dyn Builder> {
    super::unavailable("oci", cfg!(feature = "oci"), "issue #3")
}
