//! A communicator for an OCI build: each provisioner script runs as its own
//! short-lived container (`runc run`) on the build's root filesystem, as
//! buildah does; files are copied straight into and out of that rootfs.
//! The runtime config holds the provisioner's environment (secrets
//! included), so it is written only to a tmpfs and removed at once.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use super::container::{resolve_in_root, runtime_spec, write_bundle, ProcessSpec, SCRIPT_PATH};
use super::reap::Container;
use crate::communicator::{process, CommError, Communicator, HostAccess, OutputFn, RemoteCommand};
use crate::job::{Resource, ResourceKind as _, Undo};

/// Runs scripts in containers on one rootfs.
pub struct RuncCommunicator {
    pub runtime: String,
    /// `runc --root`: where the runtime keeps container state.
    pub state_root: PathBuf,
    /// A folder on a tmpfs for runtime configs.
    pub secret_dir: PathBuf,
    pub rootfs: PathBuf,
    pub hostname: String,
    pub host_network: bool,
    /// The image's `Env`, `WorkingDir` and user.
    pub image_env: Vec<String>,
    pub image_workdir: String,
    pub uid: u32,
    pub gid: u32,
    pub id_prefix: String,
    pub undo: Undo,
    pub counter: AtomicU64,
    /// Mount the rootfs read-only (`kiln check`: look, never change).
    pub readonly_root: bool,
    /// The long-lived container a host tool execs into
    /// ([`Communicator::host_access`]), while it is open.
    pub session: tokio::sync::Mutex<Option<Session>>,
}

/// A session container and what the undo stack holds for it.
pub struct Session {
    id: String,
    bundle: PathBuf,
    container_undo: crate::job::UndoHandle,
    bundle_undo: crate::job::UndoHandle,
}

/// Kills and deletes the container if the exec future is dropped early.
struct ContainerGuard {
    runtime: String,
    root: PathBuf,
    id: String,
    armed: bool,
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if self.armed {
            force_delete(&self.runtime, &self.root, &self.id);
        }
    }
}

/// `runtime delete --force` (kills the container first); synchronous so it
/// can run from `Drop` and from the journal's reaper alike.
pub fn force_delete(runtime: &str, root: &Path, id: &str) {
    let _ = std::process::Command::new(runtime)
        .arg("--root")
        .arg(root)
        .args(["delete", "--force", id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn merge_env(image: &[String], extra: &[(String, String)]) -> Vec<String> {
    let mut env: Vec<String> = image
        .iter()
        .filter(|e| !extra.iter().any(|(k, _)| e.split('=').next() == Some(k)))
        .cloned()
        .collect();
    env.extend(extra.iter().map(|(k, v)| format!("{k}={v}")));
    env
}

impl RuncCommunicator {
    /// A fresh bundle folder on the tmpfs, registered for undo.
    async fn bundle(&self, id: &str) -> Result<(PathBuf, crate::job::UndoHandle), CommError> {
        let bundle = self.secret_dir.join(id);
        let handle = self
            .undo
            .register(
                Resource::TempDir {
                    path: bundle.clone(),
                },
                "runtime bundle (tmpfs)",
            )
            .await
            .map_err(CommError::io("journal"))?;
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&bundle)
            .map_err(CommError::io("cannot create bundle"))?;
        Ok((bundle, handle))
    }

    /// Journals the container `id` before it is created, so a crash
    /// leaves it to `kiln cleanup`.
    async fn journal_container(
        &self,
        id: &str,
        what: &str,
    ) -> Result<crate::job::UndoHandle, CommError> {
        self.undo
            .register(
                Container {
                    runtime: self.runtime.clone(),
                    root: self.state_root.clone(),
                    id: id.to_string(),
                }
                .resource(),
                what,
            )
            .await
            .map_err(CommError::io("journal"))
    }

    /// Starts a detached container on the rootfs that only sleeps, for
    /// `runc exec` from the host; journaled like every container.
    async fn start_session(&self) -> Result<Session, CommError> {
        let id = format!("{}-session", self.id_prefix);
        let (bundle, bundle_undo) = self.bundle(&id).await?;
        let spec = runtime_spec(
            &self.rootfs,
            &self.hostname,
            self.host_network,
            &ProcessSpec {
                args: vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    "while :; do sleep 3600; done".into(),
                ],
                env: self.image_env.clone(),
                cwd: &self.image_workdir,
                uid: self.uid,
                gid: self.gid,
                script: None,
            },
        )
        .map_err(|e| CommError::Refused(e.to_string()))?;
        write_bundle(&bundle, &spec).map_err(|e| CommError::Refused(e.to_string()))?;
        let container_undo = self
            .journal_container(&id, "session container (host tools)")
            .await?;
        // The detached container inherits runc's stdio, so a pipe here would
        // never reach end-of-file: runc's errors go to a file in the bundle.
        let err_path = bundle.join("runc-run.err");
        let err_file =
            std::fs::File::create(&err_path).map_err(CommError::io("session error file"))?;
        let status = tokio::process::Command::new(&self.runtime)
            .arg("--root")
            .arg(&self.state_root)
            .args(["run", "--detach", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err_file))
            .status()
            .await
            .map_err(CommError::io(format!("cannot start `{}`", self.runtime)))?;
        let session = Session {
            id,
            bundle,
            container_undo,
            bundle_undo,
        };
        if !status.success() {
            let why = std::fs::read_to_string(&err_path)
                .unwrap_or_default()
                .trim()
                .to_string();
            self.end_session(session).await;
            return Err(CommError::Refused(format!(
                "cannot start a session container for host tools: {why}"
            )));
        }
        Ok(session)
    }

    async fn end_session(&self, s: Session) {
        force_delete(&self.runtime, &self.state_root, &s.id);
        self.undo.release(s.container_undo).await;
        let _ = tokio::fs::remove_dir_all(&s.bundle).await;
        self.undo.release(s.bundle_undo).await;
    }
}

#[async_trait]
impl Communicator for RuncCommunicator {
    async fn exec(&self, cmd: &RemoteCommand, output: &mut OutputFn<'_>) -> Result<i32, CommError> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n}", self.id_prefix);
        let (bundle, bundle_undo) = self.bundle(&id).await?;
        // A `#!` script runs from a read-only file bound under the
        // container's /dev tmpfs (stdin stays the process's own); anything
        // else is one `sh -e -c`.
        let script_file = bundle.join("script");
        let (args, script) = match cmd.script.strip_prefix("#!") {
            Some(rest) => {
                use std::io::Write as _;
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o500)
                    .open(&script_file)
                    .map_err(CommError::io("cannot write the script"))?;
                f.write_all(cmd.script.as_bytes())
                    .map_err(CommError::io("cannot write the script"))?;
                let mut args: Vec<String> = rest
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(String::from)
                    .collect();
                args.push(SCRIPT_PATH.into());
                (args, Some(script_file.as_path()))
            }
            None => (
                vec![
                    "/bin/sh".into(),
                    "-e".into(),
                    "-c".into(),
                    cmd.script.clone(),
                ],
                None,
            ),
        };
        let interpreter = args.first().cloned().unwrap_or_default();
        if !resolve_in_root(&self.rootfs, &interpreter)
            .map_err(|e| CommError::Refused(e.to_string()))?
            .exists()
        {
            let _ = std::fs::remove_dir_all(&bundle);
            self.undo.release(bundle_undo).await;
            return Err(CommError::Refused(format!(
                "the image has no `{interpreter}` to run the provisioner with"
            )));
        }
        let cwd = cmd
            .workdir
            .clone()
            .unwrap_or_else(|| self.image_workdir.clone());
        let mut spec = runtime_spec(
            &self.rootfs,
            &self.hostname,
            self.host_network,
            &ProcessSpec {
                args,
                env: merge_env(&self.image_env, &cmd.env),
                cwd: &cwd,
                uid: self.uid,
                gid: self.gid,
                script,
            },
        )
        .map_err(|e| CommError::Refused(e.to_string()))?;
        if let Some(root) = spec.root_mut() {
            root.set_readonly(Some(self.readonly_root));
        }
        write_bundle(&bundle, &spec).map_err(|e| CommError::Refused(e.to_string()))?;
        let container_undo = self.journal_container(&id, "provisioner container").await?;
        let mut guard = ContainerGuard {
            runtime: self.runtime.clone(),
            root: self.state_root.clone(),
            id: id.clone(),
            armed: true,
        };
        let mut child = tokio::process::Command::new(&self.runtime)
            .arg("--root")
            .arg(&self.state_root)
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(CommError::io(format!("cannot start `{}`", self.runtime)))?;
        // The runtime has read its config once the container exists; the
        // environment in it (secrets) must not outlive that.
        let cfg = bundle.join("config.json");
        let state_dir = self.state_root.join(&id);
        tokio::spawn(async move {
            for _ in 0..200 {
                if state_dir.exists() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            let _ = tokio::fs::remove_file(cfg).await;
        });
        let result = process::stream_child(&mut child, None, output, cmd.timeout).await;
        guard.armed = false;
        force_delete(&self.runtime, &self.state_root, &id);
        self.undo.release(container_undo).await;
        let _ = tokio::fs::remove_dir_all(&bundle).await;
        self.undo.release(bundle_undo).await;
        result
    }

    async fn upload(&self, local: &Path, remote: &str, mode: Option<u32>) -> Result<(), CommError> {
        // Resolved by the kernel inside the rootfs; regular files only.
        let (root, local, remote) = (self.rootfs.clone(), local.to_path_buf(), remote.to_string());
        tokio::task::spawn_blocking(move || {
            crate::communicator::inroot::upload(&root, &local, &remote, mode)
        })
        .await
        .map_err(|e| CommError::io("upload")(std::io::Error::other(e)))?
    }

    async fn host_access(&self) -> Result<Option<HostAccess>, CommError> {
        if self.readonly_root {
            return Ok(None);
        }
        let mut session = self.session.lock().await;
        if session.is_none() {
            *session = Some(self.start_session().await?);
        }
        let id = session.as_ref().map(|s| s.id.clone()).unwrap_or_default();
        Ok(Some(HostAccess::Exec(vec![
            self.runtime.clone(),
            "--root".into(),
            self.state_root.display().to_string(),
            "exec".into(),
            id,
        ])))
    }

    async fn close_host_access(&self) {
        let session = self.session.lock().await.take();
        if let Some(s) = session {
            self.end_session(s).await;
        }
    }

    async fn download(&self, remote: &str, local: &Path) -> Result<(), CommError> {
        let (root, local, remote) = (self.rootfs.clone(), local.to_path_buf(), remote.to_string());
        let limit = crate::communicator::download_limit()?;
        tokio::task::spawn_blocking(move || {
            crate::communicator::inroot::download(&root, &remote, &local, limit)
        })
        .await
        .map_err(|e| CommError::io("download")(std::io::Error::other(e)))?
    }
}
