//! `type = "file"`: copy a file (or literal `content`) into the instance,
//! or with `direction = "download"` copy an instance file out.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{text, ProvisionError, Provisioner};
use crate::communicator::Communicator;
use crate::job::JobContext;
use crate::template::plan::ProvisionerPlan;
use crate::template::schema::{Field, Kind};

pub const FIELDS: &[Field] = &[
    Field::opt("source", Kind::Str),
    Field::opt("content", Kind::Str),
    Field::req("destination", Kind::Str),
    Field::opt("mode", Kind::Mode),
    Field::opt("direction", Kind::Enum(&["upload", "download"])),
];

enum Direction {
    /// Local file (or literal content) into the instance.
    Upload {
        from: Source,
        to: String,
        mode: Option<u32>,
    },
    /// Instance file to a local path.
    Download { from: String, to: PathBuf },
}

enum Source {
    File(PathBuf),
    Content(String),
}

pub struct FileCopy {
    direction: Direction,
}

impl FileCopy {
    /// Relative local paths resolve against `template_dir`.
    pub fn from_plan(
        plan: &ProvisionerPlan,
        template_dir: &Path,
    ) -> Result<FileCopy, ProvisionError> {
        let dest = text(plan, "destination").unwrap_or_default();
        let mode = text(plan, "mode").and_then(|m| u32::from_str_radix(&m, 8).ok());
        let source = text(plan, "source");
        let download = text(plan, "direction").as_deref() == Some("download");
        let dir = template_dir;
        let direction = match (download, source, text(plan, "content")) {
            (true, Some(src), None) => Direction::Download { from: src, to: dir.join(dest) },
            (false, Some(src), None) => {
                let path = dir.join(&src);
                if !path.is_file() {
                    return Err(ProvisionError::Config(format!("file provisioner: source `{}` does not exist", path.display())));
                }
                Direction::Upload { from: Source::File(path), to: dest, mode }
            }
            (false, None, Some(content)) => Direction::Upload { from: Source::Content(content), to: dest, mode },
            _ => {
                return Err(ProvisionError::Config(format!(
                    "provisioner {} (file) needs exactly one of `source` or `content` (and `content` only for uploads)",
                    plan.index
                )))
            }
        };
        Ok(FileCopy { direction })
    }
}

#[async_trait]
impl Provisioner for FileCopy {
    async fn provision(
        &self,
        ctx: &JobContext,
        comm: &dyn Communicator,
    ) -> Result<(), ProvisionError> {
        match &self.direction {
            Direction::Upload {
                from: Source::File(p),
                to,
                mode,
            } => comm.upload(p, to, *mode).await?,
            Direction::Upload {
                from: Source::Content(c),
                to,
                mode,
            } => {
                let tmp =
                    ctx.scratch_file("upload")
                        .await
                        .map_err(|source| ProvisionError::Io {
                            what: "cannot create scratch file".into(),
                            source,
                        })?;
                fs_err::tokio::write(&tmp, c)
                    .await
                    .map_err(|source| ProvisionError::Io {
                        what: "cannot write scratch file".into(),
                        source,
                    })?;
                let r = comm.upload(&tmp, to, *mode).await;
                let _ = tokio::fs::remove_file(&tmp).await;
                r?
            }
            Direction::Download { from, to } => comm.download(from, to).await?,
        }
        Ok(())
    }
}
