//! The image lifecycle over the catalog: when a build is due
//! ([`rebuild`], `[build.rebuild]`, `kiln plan`, `--skip-unchanged`) and
//! which versions retire ([`prune`], `[image.retention]`, `kiln prune`),
//! and what a CI pipeline running them must provide ([`pipeline`], `kiln ci`).
//!
//! Architecture invariant: every retirement is a catalog entry, and a
//! version a channel points at is never deprecated or deleted.

pub mod pipeline;
pub mod prune;
pub mod rebuild;
