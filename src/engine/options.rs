//! How a run is shaped: parallelism, fail-fast, what happens to a failed
//! job's resources, where state lives, and the catalog builds register in.

use std::path::PathBuf;
use std::sync::Arc;

/// What to do with a failed job's resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnError {
    /// Undo everything (the default).
    Cleanup,
    /// Leave the failed job's instance for inspection; `kiln cleanup` reaps it.
    Abort,
}

/// How to run a plan.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub parallel: usize,
    pub on_error: OnError,
    /// Keep a failed `[[build.test]]` instance for inspection (journaled;
    /// `kiln cleanup` reaps it).
    pub keep_on_failure: bool,
    /// Cancel the other jobs when one fails.
    pub fail_fast: bool,
    pub state_dir: PathBuf,
    /// May a provisioner wait for a person (breakpoints)?
    pub interactive: bool,
    /// Where successful builds are registered (none: not registered).
    pub catalog: Option<Arc<crate::catalog::Catalog>>,
    /// `--override-policy REASON`: move `[build.register]` channels even
    /// where `[build.policy]` denies (logged as an override).
    pub override_policy: Option<String>,
}
