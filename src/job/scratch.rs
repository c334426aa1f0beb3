//! Where a job keeps its working files: `STATE/work/<build>/<job>/`, and
//! scratch files in it that the undo stack removes.

use std::path::{Path, PathBuf};

use super::context::JobContext;
use super::journal::sanitize;
use super::resource::Resource;
use super::undo::Undo;

/// The work folder of a build (its jobs' folders are inside).
pub fn build_work_dir(state_dir: &Path, build_id: &str) -> PathBuf {
    state_dir.join("work").join(sanitize(build_id))
}

impl JobContext {
    /// This job's work folder, `STATE/work/<build>/<job>`.
    fn job_work_dir(&self) -> PathBuf {
        build_work_dir(&self.state_dir, &self.build_id).join(sanitize(&self.name))
    }

    /// A fresh path for a scratch file of this job, registered for undo.
    pub async fn scratch_file(&self, what: &str) -> std::io::Result<PathBuf> {
        let dir = self.job_work_dir().join("scratch");
        fs_err::tokio::create_dir_all(&dir).await?;
        let path = dir.join(format!("{what}-{}", uuid::Uuid::new_v4()));
        self.undo
            .register(Resource::TempFile { path: path.clone() }, what)
            .await?;
        Ok(path)
    }

    /// A fresh folder of this job (`<name>-<uuid>` in its work folder),
    /// registered on `undo` before it is made, so unwinding — or `kiln
    /// cleanup` after a SIGKILL — removes it with whatever is in it.
    pub async fn scratch_dir(
        &self,
        undo: &Undo,
        name: &str,
        what: &str,
    ) -> std::io::Result<PathBuf> {
        let path = self
            .job_work_dir()
            .join(format!("{name}-{}", uuid::Uuid::new_v4()));
        undo.register(Resource::TempDir { path: path.clone() }, what)
            .await?;
        fs_err::tokio::create_dir_all(&path).await?;
        Ok(path)
    }
}
