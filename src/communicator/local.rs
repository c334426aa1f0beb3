//! A communicator for processes on the build host, rooted in a workspace
//! directory: scripts run with the workspace as their working directory,
//! and file paths are relative to it. Used by the `null` source.

use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use super::{CommError, Communicator, OutputFn, RemoteCommand};
use crate::job::process::process_start_time;
use crate::job::{Resource, Undo};

/// Variables of kiln's environment a host provisioner still sees.
const PASSED_ENV: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TERM", "TMPDIR", "SHELL", "TZ",
];

/// Runs commands on this host inside `root`.
pub struct LocalCommunicator {
    root: PathBuf,
    /// Where script files are written (outside `root`, so they never become
    /// part of what is built).
    scripts: PathBuf,
    undo: Undo,
    counter: AtomicU64,
}

impl LocalCommunicator {
    pub fn new(root: PathBuf, scripts: PathBuf, undo: Undo) -> Self {
        LocalCommunicator {
            root,
            scripts,
            undo,
            counter: AtomicU64::new(0),
        }
    }

    /// Maps an instance path into the workspace, refusing escapes.
    fn path_in_root(&self, remote: &str) -> Result<PathBuf, CommError> {
        let p = Path::new(remote);
        let clean = p
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !clean {
            return Err(CommError::Refused(format!(
                "`{remote}`: the null source runs on the build host, so paths must be relative to its workspace and stay inside it"
            )));
        }
        Ok(self.root.join(p))
    }
}

/// Kills the process group when dropped before the process was reaped,
/// which is what happens when a step is cancelled.
struct GroupGuard {
    pid: i32,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[async_trait]
impl Communicator for LocalCommunicator {
    async fn exec(&self, cmd: &RemoteCommand, output: &mut OutputFn<'_>) -> Result<i32, CommError> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        fs_err::tokio::create_dir_all(&self.scripts)
            .await
            .map_err(CommError::io("cannot create script directory"))?;
        let script = self.scripts.join(format!("script-{n}.sh"));
        let script_undo = self
            .undo
            .register(
                Resource::TempFile {
                    path: script.clone(),
                },
                "provisioner script",
            )
            .await
            .map_err(CommError::io("cannot journal script file"))?;
        let body = if cmd.script.starts_with("#!") {
            cmd.script.clone()
        } else {
            format!("#!/bin/sh -e\n{}", cmd.script)
        };
        write_mode(&script, body.as_bytes(), 0o700).await?;

        let workdir = match &cmd.workdir {
            Some(w) => self.path_in_root(w)?,
            None => self.root.clone(),
        };
        let mut child = tokio::process::Command::new(&script)
            .current_dir(&workdir)
            // Not kiln's own environment (VAULT_TOKEN, KILN_PASSWORD, …):
            // a few basics plus what the provisioner asked for.
            .env_clear()
            .envs(
                PASSED_ENV
                    .iter()
                    .filter_map(|k| std::env::var_os(k).map(|v| (*k, v))),
            )
            .envs(cmd.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("KILN_WORKSPACE", &self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(CommError::io(format!(
                "cannot start `{}`",
                script.display()
            )))?;
        let pid = child.id().map(|p| p as i32).unwrap_or_default();
        let guard = GroupGuard { pid, armed: true };
        let proc_undo = self
            .undo
            .register(
                Resource::Process {
                    pid,
                    start_time: process_start_time(pid).unwrap_or(0),
                    group: true,
                },
                "provisioner process",
            )
            .await
            .map_err(CommError::io("cannot journal process"))?;

        let code = match super::process::stream_child(&mut child, None, output, cmd.timeout).await {
            Ok(code) => code,
            Err(e) => {
                // The guard kills the group; the undo stack forgets it.
                drop(guard);
                self.undo.release(proc_undo).await;
                return Err(e);
            }
        };
        // The shell is gone; kill anything it left running in its group.
        drop(guard);
        self.undo.release(proc_undo).await;
        let _ = tokio::fs::remove_file(&script).await;
        self.undo.release(script_undo).await;
        Ok(code)
    }

    async fn upload(&self, local: &Path, remote: &str, mode: Option<u32>) -> Result<(), CommError> {
        let dest = self.path_in_root(remote)?;
        super::copy_file(local, &dest, mode, &format!("upload `{}`", local.display())).await
    }

    async fn download(&self, remote: &str, local: &Path) -> Result<(), CommError> {
        let src = self.path_in_root(remote)?;
        let file = fs_err::tokio::File::open(&src)
            .await
            .map_err(CommError::io(format!("cannot download `{remote}`")))?;
        super::save_capped(file, remote, local, super::download_limit()?).await
    }
}

async fn write_mode(path: &Path, data: &[u8], mode: u32) -> Result<(), CommError> {
    fs_err::tokio::write(path, data)
        .await
        .map_err(CommError::io("cannot write script"))?;
    set_mode(path, mode).await
}

async fn set_mode(path: &Path, mode: u32) -> Result<(), CommError> {
    use std::os::unix::fs::PermissionsExt;
    fs_err::tokio::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .await
        .map_err(CommError::io("cannot set file mode"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{Journal, Reapers};
    use crate::ui::Stream;

    fn setup() -> (tempfile::TempDir, LocalCommunicator, Journal) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("ws");
        std::fs::create_dir(&root).unwrap();
        let journal = Journal::new(&tmp.path().join("state"));
        let undo = Undo::new(journal.clone(), Reapers::default(), "b", "j");
        let c = LocalCommunicator::new(root, tmp.path().join("scripts"), undo);
        (tmp, c, journal)
    }

    #[tokio::test]
    async fn exec_streams_output_env_and_exit_code() {
        let (_tmp, c, journal) = setup();
        let mut lines = vec![];
        let cmd = RemoteCommand {
            script: "echo out-$FOO\necho err >&2\nexit 3".into(),
            env: vec![("FOO".into(), "bar".into())],
            ..Default::default()
        };
        let code = c.exec(&cmd, &mut |s, l| lines.push((s, l))).await.unwrap();
        assert_eq!(code, 3);
        assert!(lines.contains(&(Stream::Stdout, "out-bar".into())));
        assert!(lines.contains(&(Stream::Stderr, "err".into())));
        assert!(
            journal.entries().unwrap().is_empty(),
            "process and script are released once done"
        );
    }

    #[tokio::test]
    async fn timeout_kills_the_process() {
        let (_tmp, c, _j) = setup();
        let cmd = RemoteCommand {
            script: "sleep 30".into(),
            timeout: Some(std::time::Duration::from_millis(300)),
            ..Default::default()
        };
        let err = c.exec(&cmd, &mut |_, _| {}).await.unwrap_err();
        assert!(matches!(err, CommError::Timeout(_)));
    }

    #[tokio::test]
    async fn upload_download_and_escapes() {
        let (tmp, c, _j) = setup();
        let src = tmp.path().join("src.txt");
        std::fs::write(&src, "hello").unwrap();
        c.upload(&src, "etc/app.conf", Some(0o600)).await.unwrap();
        let back = tmp.path().join("back.txt");
        c.download("etc/app.conf", &back).await.unwrap();
        assert_eq!(std::fs::read_to_string(back).unwrap(), "hello");
        assert!(c.upload(&src, "/etc/passwd", None).await.is_err());
        assert!(c.upload(&src, "../escape", None).await.is_err());
    }

    #[tokio::test]
    async fn a_background_daemon_does_not_hang_the_step_and_bad_utf8_is_shown() {
        let (_tmp, c, _j) = setup();
        let mut lines = vec![];
        let cmd = RemoteCommand {
            script: "printf 'bad \\377 byte\\nafter\\n'\nsleep 60 &\necho started".into(),
            ..Default::default()
        };
        let t = std::time::Instant::now();
        let code = c.exec(&cmd, &mut |_, l| lines.push(l)).await.unwrap();
        assert_eq!(code, 0);
        assert!(
            t.elapsed() < std::time::Duration::from_secs(30),
            "returned while the daemon still holds the pipes"
        );
        assert!(
            lines.iter().any(|l| l.starts_with("bad ")) && lines.contains(&"after".to_string()),
            "{lines:?}"
        );
    }

    /// Output without newlines comes in pieces of at most `MAX_LINE`
    /// bytes, none lost, so no host buffer grows with it.
    #[tokio::test]
    async fn output_without_newlines_comes_in_bounded_pieces() {
        let (_tmp, c, _j) = setup();
        let cmd = RemoteCommand {
            script: "head -c 200000 /dev/zero".into(),
            ..Default::default()
        };
        let mut lines = vec![];
        let code = c.exec(&cmd, &mut |_, l| lines.push(l.len())).await.unwrap();
        assert_eq!(code, 0);
        assert!(
            lines.iter().all(|n| *n <= super::super::MAX_LINE),
            "{lines:?}"
        );
        assert_eq!(lines.iter().sum::<usize>(), 200000);
        assert_eq!(lines.len(), 200000usize.div_ceil(super::super::MAX_LINE));
    }
}
