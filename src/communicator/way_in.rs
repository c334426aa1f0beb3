//! How a person enters an instance: the command to run on the build host
//! for a shell inside it, shown at a `breakpoint` and when
//! `--on-error=abort` keeps a failed instance. For SSH the command needs
//! the build's private key and pinned host key: they are written to a
//! folder on a tmpfs (never elsewhere) that the job's undo stack holds, so
//! it goes with the instance — when the build goes on, or at `kiln
//! cleanup` for a kept instance.

use std::path::{Path, PathBuf};

use super::{sh_quote, CommError, Communicator, HostAccess};
use crate::job::{JobContext, Resource, UndoHandle};

/// A way in: the command, and the private folder it uses (if any).
pub struct WayIn {
    pub command: String,
    pub folder: Option<(PathBuf, UndoHandle)>,
}

impl WayIn {
    /// Removes the private folder (the instance is going on without
    /// anyone inside).
    pub async fn close(self, ctx: &JobContext) {
        if let Some((dir, handle)) = self.folder {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            ctx.undo.release(handle).await;
        }
    }
}

/// The way into the instance `comm` reaches; `None` when it offers none a
/// person can use from the host (SSM: its builder says how instead).
pub async fn open(comm: &dyn Communicator, ctx: &JobContext) -> Result<Option<WayIn>, CommError> {
    match comm.host_access().await? {
        None => Ok(None),
        Some(HostAccess::Exec(prefix)) => Ok(Some(WayIn {
            command: exec_command(&prefix),
            folder: None,
        })),
        Some(HostAccess::Ssh(ssh)) => {
            let Some(key) = ssh.private_key.as_deref() else {
                // Password authentication: the template holds the password.
                return Ok(Some(WayIn {
                    command: format!("ssh -p {} {}@{}", ssh.port, ssh.username, ssh.host),
                    folder: None,
                }));
            };
            let tmpfs =
                crate::secrets::tmpfs_dir("the instance's SSH key").map_err(CommError::Refused)?;
            let id = uuid::Uuid::new_v4().simple().to_string();
            let dir = tmpfs.join(format!("kiln-enter-{}", &id[..12]));
            let handle = ctx
                .undo
                .register(
                    Resource::TempDir { path: dir.clone() },
                    "the key to enter the instance (tmpfs)",
                )
                .await
                .map_err(CommError::io("cannot journal the key folder"))?;
            let written = write_files(&dir, key, ssh.host_key.as_deref(), &ssh.host, ssh.port);
            if let Err(e) = written {
                let _ = std::fs::remove_dir_all(&dir);
                ctx.undo.release(handle).await;
                return Err(e);
            }
            let known = match ssh.host_key {
                Some(_) => format!(
                    "-o UserKnownHostsFile={} -o StrictHostKeyChecking=yes",
                    sh_quote(&dir.join("known_hosts").display().to_string())
                ),
                None => "-o StrictHostKeyChecking=accept-new".into(),
            };
            Ok(Some(WayIn {
                command: format!(
                    "ssh -i {} {known} -o IdentitiesOnly=yes -p {} {}@{}",
                    sh_quote(&dir.join("key").display().to_string()),
                    ssh.port,
                    ssh.username,
                    ssh.host
                ),
                folder: Some((dir, handle)),
            }))
        }
    }
}

/// `RUNTIME --root R exec ID` → an interactive shell in that container.
fn exec_command(prefix: &[String]) -> String {
    let mut words: Vec<String> = prefix.iter().map(|w| sh_quote(w)).collect();
    let id = words.pop().unwrap_or_default();
    words.extend(["-t".into(), id, "/bin/sh".into()]);
    words.join(" ")
}

fn write_files(
    dir: &Path,
    key: &str,
    host_key: Option<&str>,
    host: &str,
    port: u16,
) -> Result<(), CommError> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(CommError::io(format!("cannot create `{}`", dir.display())))?;
    let write = |name: &str, body: &str| {
        let path = dir.join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(body.as_bytes()))
            .map_err(CommError::io(format!("cannot write `{}`", path.display())))
    };
    write("key", key)?;
    if let Some(host_key) = host_key {
        write("known_hosts", &format!("[{host}]:{port} {host_key}\n"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exec_prefix_becomes_an_interactive_shell() {
        let prefix: Vec<String> = ["runc", "--root", "/run/kiln x", "exec", "job-session"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            exec_command(&prefix),
            "'runc' '--root' '/run/kiln x' 'exec' -t 'job-session' /bin/sh"
        );
    }
}
