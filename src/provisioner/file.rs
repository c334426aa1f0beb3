//! `type = "file"`: copy files or folders (or literal `content`) into the
//! instance, or with `direction = "download"` copy them out.
//!
//! Folders follow Packer's trailing-slash rule: `src/` copies what is in
//! `src` into `destination`, `src` copies the folder itself (it becomes
//! `destination/src`). Modes (permission bits) are kept both ways; owners
//! are the communicator's user's, as in Packer. A download never brings a
//! setuid bit, a device, a link or a path outside `destination` to the
//! host: the instance's listing is not trusted.

use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;

use super::{text, ProvisionError, Provisioner};
use crate::communicator::{sh_quote, CommError, Communicator, RemoteCommand};
use crate::job::JobContext;
use crate::template::plan::ProvisionerPlan;
use crate::template::schema::{Field, Kind, STR_LIST};
use crate::template::Value;

pub const FIELDS: &[Field] = &[
    Field::opt("source", Kind::Str),
    Field::opt("sources", STR_LIST),
    Field::opt("content", Kind::Str),
    Field::req("destination", Kind::Str),
    Field::opt("mode", Kind::Mode),
    Field::opt("direction", Kind::Enum(&["upload", "download"])),
];

enum Direction {
    /// Local files or folders (or literal content) into the instance.
    Upload {
        from: Vec<Source>,
        to: String,
        mode: Option<u32>,
    },
    /// Instance files or folders to a local path.
    Download { from: Vec<String>, to: PathBuf },
}

enum Source {
    /// A local path and whether it was written with a trailing slash.
    Path(PathBuf, bool),
    Content(String),
}

pub struct FileCopy {
    direction: Direction,
    at: String,
}

/// Problems with a file provisioner's settings beyond their types.
pub fn settings_problems(
    config: &std::collections::BTreeMap<String, Value>,
) -> Vec<(&'static str, String)> {
    let mut out = vec![];
    let many = matches!(config.get("sources"), Some(Value::List(l)) if l.len() > 1);
    let dest = config.get("destination").and_then(Value::as_interpolated);
    if many && dest.as_deref().is_some_and(|d| !d.ends_with('/')) {
        out.push((
            "destination",
            "with several `sources` the destination is a folder: end it with `/`".into(),
        ));
    }
    if config.contains_key("source") && config.contains_key("sources") {
        out.push(("sources", "give `source` or `sources`, not both".into()));
    }
    out
}

impl FileCopy {
    /// Relative local paths resolve against `template_dir`.
    pub fn from_plan(
        plan: &ProvisionerPlan,
        template_dir: &Path,
    ) -> Result<FileCopy, ProvisionError> {
        let dest = text(plan, "destination").unwrap_or_default();
        let mode = text(plan, "mode").and_then(|m| u32::from_str_radix(&m, 8).ok());
        let mut sources: Vec<String> = text(plan, "source").into_iter().collect();
        if let Some(Value::List(l)) = plan.config.get("sources") {
            sources.extend(l.iter().filter_map(Value::as_interpolated));
        }
        let download = text(plan, "direction").as_deref() == Some("download");
        let content = text(plan, "content");
        let direction = match (download, sources.is_empty(), content) {
            (true, false, None) => Direction::Download {
                from: sources,
                to: template_dir.join(dest),
            },
            (false, false, None) => {
                let mut from = vec![];
                for src in sources {
                    let path = template_dir.join(&src);
                    let meta = std::fs::symlink_metadata(&path).map_err(|_| {
                        ProvisionError::Config(format!(
                            "file provisioner at {}: source `{}` does not exist",
                            plan.at,
                            path.display()
                        ))
                    })?;
                    if !meta.is_file() && !meta.is_dir() {
                        return Err(ProvisionError::Config(format!(
                            "file provisioner at {}: source `{}` is neither a file nor a folder",
                            plan.at,
                            path.display()
                        )));
                    }
                    from.push(Source::Path(path, src.ends_with('/')));
                }
                Direction::Upload { from, to: dest, mode }
            }
            (false, true, Some(content)) => Direction::Upload {
                from: vec![Source::Content(content)],
                to: dest,
                mode,
            },
            _ => {
                return Err(ProvisionError::Config(format!(
                    "provisioner {} (file) needs exactly one of `source`/`sources` or `content` (and `content` only for uploads)",
                    plan.index
                )))
            }
        };
        Ok(FileCopy {
            direction,
            at: plan.at.clone(),
        })
    }

    async fn upload_path(
        &self,
        comm: &dyn Communicator,
        path: &Path,
        slash: bool,
        to: &str,
        mode: Option<u32>,
    ) -> Result<(), ProvisionError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if path.is_file() {
            // A destination ending in `/` is a folder to put the file in.
            let remote = if to.ends_with('/') {
                format!("{to}{name}")
            } else {
                to.to_string()
            };
            let mode = mode.or_else(|| local_mode(path));
            return Ok(comm.upload(path, &remote, mode).await?);
        }
        let base = if slash {
            to.trim_end_matches('/').to_string()
        } else {
            format!("{}/{name}", to.trim_end_matches('/'))
        };
        upload_folder(comm, path, &base, mode, &self.at).await
    }

    async fn run(
        &self,
        comm: &dyn Communicator,
        script: &str,
        what: &str,
    ) -> Result<Vec<String>, ProvisionError> {
        run_quiet(comm, script, what, &self.at).await
    }

    async fn download_path(
        &self,
        comm: &dyn Communicator,
        from: &str,
        to: &Path,
        several: bool,
    ) -> Result<(), ProvisionError> {
        let q = sh_quote(from.trim_end_matches('/'));
        let kind = self
            .run(
                comm,
                &format!(
                    "if [ -d {q} ]; then echo d; elif [ -f {q} ]; then echo f; else echo n; fi"
                ),
                "look at the source",
            )
            .await?;
        let name = Path::new(from.trim_end_matches('/'))
            .file_name()
            .map(|n| n.to_owned())
            .unwrap_or_default();
        match kind.first().map(|s| s.trim()) {
            Some("f") => {
                let local = if several || to.as_os_str().to_string_lossy().ends_with('/') {
                    to.join(&name)
                } else {
                    to.to_path_buf()
                };
                Ok(comm.download(from, &local).await?)
            }
            Some("d") => {
                let base = if from.ends_with('/') {
                    to.to_path_buf()
                } else {
                    to.join(&name)
                };
                // `type|mode|path` for every entry; names with a newline
                // cannot be listed this way and are refused.
                let listing = self
                    .run(
                        comm,
                        &format!("cd {q} && find . -mindepth 1 -exec stat -c '%F|%a|%n' {{}} +"),
                        "list the folder",
                    )
                    .await?;
                std::fs::create_dir_all(&base).map_err(|source| ProvisionError::Io {
                    what: format!("cannot create `{}`", base.display()),
                    source,
                })?;
                for line in listing {
                    let (kind, mode, rel) = parse_entry(&line).ok_or_else(|| {
                        ProvisionError::Comm(CommError::Refused(format!(
                            "the instance listed `{line}` under `{from}`: not a path kiln copies out"
                        )))
                    })?;
                    let local = base.join(&rel);
                    match kind {
                        "directory" => std::fs::create_dir_all(&local).map_err(|source| ProvisionError::Io {
                            what: format!("cannot create `{}`", local.display()),
                            source,
                        })?,
                        "regular file" | "regular empty file" => {
                            comm.download(&format!("{}/{}", from.trim_end_matches('/'), rel.display()), &local)
                                .await?
                        }
                        other => {
                            return Err(ProvisionError::Comm(CommError::Refused(format!(
                                "`{}/{}` in the instance is a {other}: only files and folders are copied out",
                                from.trim_end_matches('/'),
                                rel.display()
                            ))))
                        }
                    }
                    // Permission bits only: never setuid, setgid or sticky on the host.
                    use std::os::unix::fs::PermissionsExt;
                    let _ = std::fs::set_permissions(
                        &local,
                        std::fs::Permissions::from_mode(mode & 0o777),
                    );
                }
                Ok(())
            }
            _ => Err(ProvisionError::Comm(CommError::Refused(format!(
                "`{from}` does not exist in the instance (or is not a file or folder)"
            )))),
        }
    }
}

/// Uploads the folder `path` as `base` in the instance: every file with
/// its mode (or `mode`), every folder (empty ones too) with its mode.
/// Links and special files are refused. `at` names the provisioner.
pub(super) async fn upload_folder(
    comm: &dyn Communicator,
    path: &Path,
    base: &str,
    mode: Option<u32>,
    at: &str,
) -> Result<(), ProvisionError> {
    let mut folders = vec![(base.to_string(), local_mode(path).unwrap_or(0o755))];
    for entry in walkdir::WalkDir::new(path).min_depth(1).sort_by_file_name() {
        let entry = entry.map_err(|e| {
            ProvisionError::Config(format!("cannot read `{}`: {e}", path.display()))
        })?;
        let rel = entry.path().strip_prefix(path).expect("walked below it");
        let remote = format!("{base}/{}", rel.to_string_lossy());
        let ty = entry.file_type();
        if ty.is_dir() {
            folders.push((remote, local_mode(entry.path()).unwrap_or(0o755)));
        } else if ty.is_file() {
            comm.upload(
                entry.path(),
                &remote,
                mode.or_else(|| local_mode(entry.path())),
            )
            .await?;
        } else {
            return Err(ProvisionError::NotSupported(format!(
                "file provisioner at {}: `{}` is a link or a special file; only files and folders are uploaded (not supported yet)",
                at,
                entry.path().display()
            )));
        }
    }
    // Folders exist (empty ones too) with their modes.
    let script = folders
        .iter()
        .map(|(f, m)| format!("mkdir -p {q} && chmod {m:o} {q}", q = sh_quote(f)))
        .collect::<Vec<_>>()
        .join("\n");
    run_quiet(comm, &script, "create the uploaded folders", at).await?;
    Ok(())
}

/// Runs a small script in the instance; its output is only shown on
/// failure. `at` names the provisioner.
pub(super) async fn run_quiet(
    comm: &dyn Communicator,
    script: &str,
    what: &str,
    at: &str,
) -> Result<Vec<String>, ProvisionError> {
    let cmd = RemoteCommand {
        script: script.to_string(),
        ..Default::default()
    };
    let mut lines = vec![];
    let code = comm.exec(&cmd, &mut |_, l| lines.push(l)).await?;
    if code != 0 {
        return Err(ProvisionError::ExitCode {
            what: format!(
                "cannot {what} ({}), in the provisioner at {at}",
                lines.join(" ")
            ),
            code,
        });
    }
    Ok(lines)
}

/// One line of the instance's folder listing: its type, its permission
/// bits and a relative path of plain names only (no `..`, no `/` start).
fn parse_entry(line: &str) -> Option<(&str, u32, PathBuf)> {
    let mut parts = line.splitn(3, '|');
    let (kind, mode, path) = (parts.next()?, parts.next()?, parts.next()?);
    let mode = u32::from_str_radix(mode, 8).ok()?;
    let rel = Path::new(path.strip_prefix("./")?);
    if rel.as_os_str().is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    Some((kind, mode, rel.to_path_buf()))
}

/// A local file's permission bits (without setuid, setgid, sticky).
fn local_mode(p: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
}

#[async_trait]
impl Provisioner for FileCopy {
    async fn provision(
        &self,
        ctx: &JobContext,
        comm: &dyn Communicator,
    ) -> Result<(), ProvisionError> {
        match &self.direction {
            Direction::Upload { from, to, mode } => {
                for source in from {
                    match source {
                        Source::Path(p, slash) => {
                            self.upload_path(comm, p, *slash, to, *mode).await?
                        }
                        Source::Content(c) => {
                            let io = |what: &str| {
                                let what = what.to_string();
                                move |source| ProvisionError::Io { what, source }
                            };
                            let tmp = ctx
                                .scratch_file("upload")
                                .await
                                .map_err(io("cannot create scratch file"))?;
                            fs_err::tokio::write(&tmp, c)
                                .await
                                .map_err(io("cannot write scratch file"))?;
                            let r = comm.upload(&tmp, to, *mode).await;
                            let _ = tokio::fs::remove_file(&tmp).await;
                            r?
                        }
                    }
                }
            }
            Direction::Download { from, to } => {
                for f in from {
                    self.download_path(comm, f, to, from.len() > 1).await?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instance_listing_cannot_name_paths_outside_the_destination() {
        assert_eq!(
            parse_entry("regular file|4755|./bin/tool"),
            Some(("regular file", 0o4755, PathBuf::from("bin/tool")))
        );
        for bad in [
            "regular file|644|../../etc/passwd",
            "regular file|644|./a/../../x",
            "regular file|644|/etc/passwd",
            "regular file|644|.//etc/passwd",
            "regular file|6x4|./a",
            "regular file|644|./",
            "no separators",
        ] {
            assert_eq!(parse_entry(bad), None, "{bad}");
        }
    }
}
