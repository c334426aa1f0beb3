//! The on-disk journal of live resources: one JSON file per resource under
//! `<state>/journal/<build-id>/<job>/`, written atomically (temp file,
//! fsync, rename) before the call that creates the resource returns, and
//! removed once the resource is undone. `kiln cleanup` reads it to reap
//! what a SIGKILLed build left behind.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Something outside the kiln process that a build created.
///
/// Builders add their own variants (container, mount, VM, cloud resource)
/// together with how [`Resource::reap`] removes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Resource {
    /// A directory kiln created (workspaces, scratch space).
    TempDir { path: PathBuf },
    /// A file kiln created.
    TempFile { path: PathBuf },
    /// A child process (a provisioner's shell); `start_time` guards against
    /// pid reuse, `group` kills its whole process group.
    Process {
        pid: i32,
        start_time: u64,
        group: bool,
    },
    /// A mount point (the OCI builder's overlayfs).
    Mount { target: PathBuf },
    /// A container of an OCI runtime (`runtime --root ROOT … ID`).
    Container {
        runtime: String,
        root: PathBuf,
        id: String,
    },
    /// Everything tagged `kiln:run = RUN` in an AWS region: the build
    /// instance and its temporary security group.
    AwsRun {
        region: String,
        endpoint: Option<String>,
        run: String,
    },
    /// An AMI being made (by its unique name) and the run's snapshots in
    /// that region; released once the image is complete.
    AwsImage {
        region: String,
        endpoint: Option<String>,
        run: String,
        name: String,
    },
}

impl Resource {
    /// A short human description for logs.
    pub fn describe(&self) -> String {
        match self {
            Resource::TempDir { path } => format!("directory `{}`", path.display()),
            Resource::TempFile { path } => format!("file `{}`", path.display()),
            Resource::Process { pid, .. } => format!("process {pid}"),
            Resource::Mount { target } => format!("mount `{}`", target.display()),
            Resource::Container { runtime, id, .. } => format!("{runtime} container `{id}`"),
            Resource::AwsRun { region, run, .. } => {
                format!("EC2 instances and security groups tagged kiln:run={run} in {region}")
            }
            Resource::AwsImage { region, name, .. } => format!("AMI `{name}` in {region}"),
        }
    }

    /// Removes the resource; succeeds when it is already gone.
    pub async fn reap(&self) -> Result<(), String> {
        match self {
            Resource::TempDir { path } => match tokio::fs::remove_dir_all(path).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(format!("cannot remove `{}`: {e}", path.display()))
                }
                _ => Ok(()),
            },
            Resource::TempFile { path } => match tokio::fs::remove_file(path).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(format!("cannot remove `{}`: {e}", path.display()))
                }
                _ => Ok(()),
            },
            Resource::Process {
                pid,
                start_time,
                group,
            } => {
                kill_process(*pid, *start_time, *group);
                Ok(())
            }
            Resource::Mount { target } => {
                use nix::mount::{umount2, MntFlags};
                match umount2(target, MntFlags::MNT_DETACH) {
                    Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {
                        Ok(())
                    }
                    Err(e) => Err(format!("cannot unmount `{}`: {e}", target.display())),
                }
            }
            Resource::Container { runtime, root, id } => {
                let out = tokio::process::Command::new(runtime)
                    .arg("--root")
                    .arg(root)
                    .args(["delete", "--force", id])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .output()
                    .await;
                match out {
                    Ok(o) if o.status.success() || !root.join(id).exists() => Ok(()),
                    Ok(o) => Err(format!(
                        "cannot delete container `{id}`: {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    )),
                    // No runtime installed: no container can exist.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(format!("cannot run `{runtime}`: {e}")),
                }
            }
            #[cfg(feature = "ami")]
            Resource::AwsRun {
                region,
                endpoint,
                run,
            } => crate::builder::ami::reap::run(region, endpoint.as_deref(), run).await,
            #[cfg(feature = "ami")]
            Resource::AwsImage {
                region,
                endpoint,
                run,
                name,
            } => crate::builder::ami::reap::image(region, endpoint.as_deref(), run, name).await,
            #[cfg(not(feature = "ami"))]
            Resource::AwsRun { .. } | Resource::AwsImage { .. } => Err(
                "this kiln was compiled without the `ami` feature and cannot remove AWS resources"
                    .into(),
            ),
        }
    }
}

/// Kills a process (or its group) if it is still the one we started.
pub fn kill_process(pid: i32, start_time: u64, group: bool) {
    use nix::sys::signal::{kill, killpg, Signal};
    use nix::unistd::Pid;
    if process_start_time(pid) != Some(start_time) {
        // Gone, or the pid now belongs to someone else (reuse, a reboot):
        // killing by that number could hit an unrelated process group.
        return;
    }
    if group {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
}

/// The start time of a process in clock ticks since boot (`/proc/PID/stat`
/// field 22), which with the pid identifies a process uniquely.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: skip past the last `)`.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// True when the kiln process that wrote an entry is still running.
pub fn owner_alive(pid: u32, start_time: u64) -> bool {
    process_start_time(pid as i32) == Some(start_time)
}

/// One journal file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalEntry {
    pub resource: Resource,
    pub build_id: String,
    pub job: String,
    pub description: String,
    /// The kiln process that created it, to tell a live build from a dead one.
    pub owner_pid: u32,
    pub owner_start_time: u64,
    /// Seconds since the Unix epoch.
    pub created: u64,
}

/// The journal directory.
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    /// The journal under a state directory (created on first write).
    pub fn new(state_dir: &Path) -> Journal {
        Journal {
            dir: state_dir.join("journal"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Durably records a resource; returns the entry's path.
    pub fn record(
        &self,
        build_id: &str,
        job: &str,
        seq: u64,
        resource: &Resource,
        description: &str,
    ) -> std::io::Result<PathBuf> {
        let dir = self.dir.join(sanitize(build_id)).join(sanitize(job));
        fs_err::create_dir_all(&dir)?;
        let me = std::process::id();
        let entry = JournalEntry {
            resource: resource.clone(),
            build_id: build_id.to_string(),
            job: job.to_string(),
            description: description.to_string(),
            owner_pid: me,
            owner_start_time: process_start_time(me as i32).unwrap_or(0),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let path = dir.join(format!("{seq:06}.json"));
        let tmp = dir.join(format!(".{seq:06}.json.tmp"));
        {
            let mut f = fs_err::File::create(&tmp)?;
            serde_json::to_writer_pretty(&mut f, &entry)?;
            f.sync_all()?;
        }
        fs_err::rename(&tmp, &path)?;
        // The rename is durable only once the directory is synced.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(path)
    }

    /// Forgets a resource that no longer exists; prunes empty directories.
    pub fn remove(&self, entry: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(entry) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut dir = entry.parent();
        while let Some(d) = dir {
            if d == self.dir || std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }

    /// Every entry, oldest build first, in creation order within a job.
    pub fn entries(&self) -> std::io::Result<Vec<(PathBuf, JournalEntry)>> {
        let mut out = vec![];
        let Ok(builds) = std::fs::read_dir(&self.dir) else {
            return Ok(out);
        };
        for b in builds.flatten() {
            for j in std::fs::read_dir(b.path())?.flatten() {
                if !j.path().is_dir() {
                    continue;
                }
                for e in std::fs::read_dir(j.path())?.flatten() {
                    let p = e.path();
                    if p.extension().is_some_and(|x| x == "json")
                        && !p
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                    {
                        let text = fs_err::read_to_string(&p)?;
                        let entry: JournalEntry = serde_json::from_str(&text).map_err(|err| {
                            std::io::Error::new(
                                std::io::ErrorKind::InvalidData,
                                format!("{}: {err}", p.display()),
                            )
                        })?;
                        out.push((p, entry));
                    }
                }
            }
        }
        out.sort_by(|a, b| (a.1.created, &a.0).cmp(&(b.1.created, &b.0)));
        Ok(out)
    }
}

/// A job or build name as a safe single path component.
pub fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_list_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let j = Journal::new(tmp.path());
        let r = Resource::TempDir {
            path: tmp.path().join("w"),
        };
        let p = j.record("b1", "web.null.x", 1, &r, "workspace").unwrap();
        let entries = j.entries().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].1.resource, r);
        assert!(owner_alive(
            entries[0].1.owner_pid,
            entries[0].1.owner_start_time
        ));
        j.remove(&p).unwrap();
        assert!(j.entries().unwrap().is_empty());
        assert!(
            !tmp.path().join("journal/b1").exists(),
            "empty directories are pruned"
        );
    }

    #[test]
    fn start_time_identifies_this_process() {
        let me = std::process::id() as i32;
        assert!(process_start_time(me).is_some());
        assert_eq!(process_start_time(i32::MAX), None);
    }
}
