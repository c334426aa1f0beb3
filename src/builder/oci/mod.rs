//! `[source.oci.NAME]`: container images baked without a daemon. The base
//! is pulled into a content-addressed cache and unpacked once per digest;
//! the instance is an overlayfs mount of it where each provisioner runs in
//! a short-lived `runc` container; the snapshot is the overlay's upper
//! directory as one reproducible layer, pushed to registries and/or written
//! as an OCI layout.

#[cfg(feature = "oci")]
pub mod check;
#[cfg(feature = "oci")]
pub mod container;
#[cfg(feature = "oci")]
mod copydiff;
#[cfg(feature = "oci")]
pub mod image;
#[cfg(feature = "oci")]
pub mod layer;
pub mod reap;
#[cfg(feature = "oci")]
pub mod reference;
#[cfg(feature = "oci")]
pub mod runc;
#[cfg(feature = "oci")]
pub mod store;
#[cfg(feature = "oci")]
pub mod tester;
#[cfg(feature = "oci")]
pub mod unpack;

use std::sync::Arc;

pub use reap::reaper;

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
    // Mount points recorded as the image's `Volumes`.
    Field::opt("volumes", STR_LIST),
];

/// Credentials for one registry; the secret parts may (and must) be
/// sensitive: they only reach the registry's HTTP API, in memory.
const AUTH_FIELDS: &[Field] = &[
    Field::opt("username", Kind::Str).sensitive_ok(),
    Field::opt("password", Kind::Str).sensitive_ok(),
    Field::opt("token", Kind::Str).sensitive_ok(),
];

/// The settings of an OCI source (see `../shared/spec/template.md`).
pub const FIELDS: &[Field] = &[
    Field::req("from", Kind::Str),
    Field::opt("to", STR_LIST),
    Field::opt("runtime", Kind::Str),
    Field::opt("network", Kind::Enum(&["host", "none"])),
    Field::opt("compression", Kind::Enum(&["gzip", "zstd"])),
    // RFC 3339; the image's `created` and the clamp for file mtimes.
    Field::opt("created", Kind::Str),
    // `off` skips the scan for secrets and keys in the new layer (warned).
    Field::opt("leak_scan", Kind::Enum(&["on", "off"])),
    Field::opt("config", Kind::Table(CONFIG_FIELDS)),
    // Bounds on unpacking the (untrusted) base: decompression bombs.
    Field::opt("limits", Kind::Table(LIMIT_FIELDS)),
    // Credentials per registry host of `from` and `to`, before config.json.
    Field::opt("auth", Kind::Map(&Kind::Table(AUTH_FIELDS))),
];

const LIMIT_FIELDS: &[Field] = &[
    Field::opt("unpacked", Kind::Size),
    Field::opt("file", Kind::Size),
    Field::opt("ratio", Kind::Int),
];

#[cfg(not(feature = "oci"))]
pub(super) fn builder() -> Arc<dyn Builder> {
    super::unavailable("oci", false, "issue #3")
}

#[cfg(feature = "oci")]
pub(super) fn builder() -> Arc<dyn Builder> {
    Arc::new(build::OciBuilder)
}

#[cfg(feature = "oci")]
pub(crate) mod build;
