//! The build engine: runs each job (build × source) through its steps —
//! launch, provision…, snapshot — in parallel up to `--parallel`, with
//! fail-fast cancellation of siblings, Ctrl-C/SIGTERM cancellation, and an
//! undo stack per job that always unwinds (unless `--on-error=abort`).
//!
//! Architecture invariant: the engine only sees a resolved `BuildPlan`, and
//! reports only through events; it knows no builder's internals.

mod cleanup;
mod error;
mod keys;
mod options;
mod probe;
mod records;
mod register;
mod run;
mod sbom;
mod steps;
mod test;

pub use cleanup::{cleanup, CleanupReport};
pub use error::JobError;
pub use options::{OnError, RunOptions};
pub use probe::{probe, ProbeOutput};
pub use run::run;
pub use test::{test_existing, TestedArtifact};

// A test or an embedder drives the engine with its own builder, which
// needs the job runtime's types.
pub use crate::job::{JobContext, Journal, Resource};
