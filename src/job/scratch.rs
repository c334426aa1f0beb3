//! Where a job keeps its working files: `STATE/work/<build>/<job>/`, and
//! scratch files in it that the undo stack removes.

use std::path::{Path, PathBuf};

use super::context::JobContext;
use super::journal::sanitize;
use super::resource::Resource;

/// The work folder of a build (its jobs' folders are inside).
pub fn build_work_dir(state_dir: &Path, build_id: &str) -> PathBuf {
    state_dir.join("work").join(sanitize(build_id))
}

impl JobContext {
    /// A fresh path for a scratch file of this job, registered for undo.
    pub async fn scratch_file(&self, what: &str) -> std::io::Result<PathBuf> {
        let dir = build_work_dir(&self.state_dir, &self.build_id)
            .join(sanitize(&self.name))
            .join("scratch");
        fs_err::tokio::create_dir_all(&dir).await?;
        let path = dir.join(format!("{what}-{}", uuid::Uuid::new_v4()));
        self.undo
            .register(Resource::TempFile { path: path.clone() }, what)
            .await?;
        Ok(path)
    }
}
