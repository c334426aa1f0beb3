//! The image lifecycle over the catalog: when a build is due
//! ([`rebuild`], `[build.rebuild]`, `kiln plan`, `--skip-unchanged`) and
//! which versions retire ([`prune`], `[image.retention]`, `kiln prune`).
//!
//! Architecture invariant: every retirement is a catalog entry, and a
//! version a channel points at is never deprecated or deleted.

pub mod prune;
pub mod rebuild;
