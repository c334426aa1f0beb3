//! `JobError`: why a job did not succeed, by the step that failed.

use crate::builder::BuildError;
use crate::provisioner::ProvisionError;

/// Why a job did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{0}")]
    NotSupported(String),
    #[error("launch: {0}")]
    Launch(BuildError),
    #[error("provisioner {index} ({kind}): {source}")]
    Provision {
        index: usize,
        kind: String,
        source: ProvisionError,
    },
    #[error("snapshot: {0}")]
    Snapshot(BuildError),
    /// The artifact's tests could not run (no instance, not supported).
    #[error("test: {0}")]
    Test(String),
    /// A `[[build.test]]` failed: the artifact is not registered.
    #[error("test failed: {0}")]
    TestFailed(String),
    /// `[build.sbom]`: the artifact's package databases could not be read.
    #[error("sbom: {0}")]
    Sbom(String),
    /// Copying, sharing or protecting a tested artifact failed.
    #[error("distribute: {0}")]
    Distribute(BuildError),
    #[error("sign: {0}")]
    Sign(String),
    /// `[build.policy]` cannot be read or parsed (refused at preflight).
    #[error("policy ({at}): {message}")]
    Policy { at: String, message: String },
    #[error("cancelled")]
    Cancelled,
}
