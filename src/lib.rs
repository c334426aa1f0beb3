//! kiln bakes golden machine images from TOML templates.
//!
//! The binary (`src/main.rs`) only calls [`cli::main`]; everything else is
//! this library. See `docs/ARCHITECTURE.md` for the map.

pub mod builder;
pub mod catalog;
pub mod cli;
pub mod communicator;
pub mod engine;
pub mod imagetest;
pub mod import;
pub mod job;
pub mod lifecycle;
pub mod manifest;
pub mod policy;
pub mod provisioner;
pub mod sbom;
pub mod secrets;
pub mod sign;
pub mod template;
pub mod ui;
pub mod vuln;
