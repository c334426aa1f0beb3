//! How kiln talks to a running instance: run a script with streamed output
//! and an exit code, upload and download files. Each builder provides its
//! own communicator: the generic transports live here (local process, SSH),
//! a builder's own one with the builder (`builder::oci::runc`,
//! `builder::ami::ssm`); provisioners only ever see this trait.

pub mod inroot;
pub mod local;
pub mod process;
#[cfg(any(feature = "qemu", feature = "ami"))]
pub mod ssh;
pub mod way_in;

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;

use crate::ui::Stream;

/// A script to run inside the instance.
#[derive(Clone, Default)]
pub struct RemoteCommand {
    /// Script text. A first line `#!…` picks the interpreter, otherwise
    /// `/bin/sh -e` runs it. Never contains a secret (the template engine
    /// refuses sensitive values in scripts).
    pub script: String,
    /// Environment for the process: the only place secrets are delivered.
    pub env: Vec<(String, String)>,
    /// Working directory inside the instance.
    pub workdir: Option<String>,
    pub timeout: Option<Duration>,
    /// The script may reboot the instance (`expect_disconnect`): a
    /// communicator that cannot see the connection drop (SSM) watches the
    /// instance's boot id while the command runs and reports
    /// [`CommError::Disconnected`] when it changed.
    pub may_reboot: bool,
}

/// The longest output line a communicator hands on: a longer one (output
/// without newlines, `/dev/zero` through `cat`) comes in pieces of this
/// size, so no buffer of the host grows with what the instance prints.
pub const MAX_LINE: usize = 64 << 10;

/// Prints the instance's boot id: a new one after every boot.
pub const BOOT_ID_SCRIPT: &str = "cat /proc/sys/kernel/random/boot_id";

impl std::fmt::Debug for RemoteCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Environment values may be secrets: show names only.
        f.debug_struct("RemoteCommand")
            .field("script", &self.script)
            .field(
                "env",
                &self.env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            )
            .field("workdir", &self.workdir)
            .field("timeout", &self.timeout)
            .field("may_reboot", &self.may_reboot)
            .finish()
    }
}

/// Receives output lines as they are produced.
pub type OutputFn<'a> = dyn FnMut(Stream, String) + Send + 'a;

/// What went wrong talking to an instance.
#[derive(Debug, thiserror::Error)]
pub enum CommError {
    #[error("command timed out after {0:?}")]
    Timeout(Duration),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Refused(String),
    /// The connection to the instance was lost (it rebooted, or its
    /// network or SSH server went away): the command may or may not have
    /// finished. A provisioner with `expect_disconnect` tolerates it.
    #[error("the connection to the instance was lost: {0}")]
    Disconnected(String),
}

impl CommError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CommError {
        let what = what.into();
        move |source| CommError::Io { what, source }
    }
}

/// A single-quoted `sh` word: what scripts sent to an instance use for
/// any path or value they name.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Talks to one instance.
///
/// Contract: `exec` streams every output line to `output` before it
/// returns and yields the exit code; a timeout or a dropped future kills
/// the process. Anything a call creates outside kiln is registered with the
/// job's undo stack by the communicator itself.
#[async_trait]
pub trait Communicator: Send + Sync {
    async fn exec(&self, cmd: &RemoteCommand, output: &mut OutputFn<'_>) -> Result<i32, CommError>;
    async fn upload(&self, local: &Path, remote: &str, mode: Option<u32>) -> Result<(), CommError>;
    /// Copies the instance's file `remote` to the host file `local`, at
    /// most [`download_limit`] bytes (or the limit the communicator was
    /// given): a larger file, or one that never ends, fails naming the path
    /// and the limit, and nothing of it stays at `local`. The size is
    /// counted as the bytes arrive, never taken from the instance's word.
    async fn download(&self, remote: &str, local: &Path) -> Result<(), CommError>;

    /// Waits, up to `limit`, until the instance answers again after the
    /// connection was lost (a reboot). Communicators whose instance
    /// cannot drop the connection (a container, the host) return at once.
    async fn reconnect(&self, _limit: Duration) -> Result<(), CommError> {
        Ok(())
    }

    /// Whether the instance can reboot and come back (a VM, a cloud
    /// instance), so `expect_disconnect` waits for it.
    fn can_reboot(&self) -> bool {
        false
    }

    /// Opens a way for a tool on the host (the `ansible` provisioner) to
    /// reach the instance; `None` when this communicator has none.
    /// [`Communicator::close_host_access`] ends it.
    async fn host_access(&self) -> Result<Option<HostAccess>, CommError> {
        Ok(None)
    }

    /// Ends what [`Communicator::host_access`] opened.
    async fn close_host_access(&self) {}
}

/// How a tool on the host reaches the instance.
#[derive(Clone)]
pub enum HostAccess {
    /// Over SSH, as the build does.
    Ssh(SshEndpoint),
    /// By running a command inside it: the command's words follow these
    /// (a container runtime's `exec` into a session container).
    Exec(Vec<String>),
}

/// What a host tool needs to connect to the instance as the build does.
#[derive(Clone)]
pub struct SshEndpoint {
    pub host: String,
    pub port: u16,
    pub username: String,
    /// The private key in OpenSSH format (never written outside a tmpfs).
    pub private_key: Option<String>,
    /// The host key the build pinned, as an `authorized_keys`-style line.
    pub host_key: Option<String>,
}

/// The largest file [`Communicator::download`] copies out of an instance
/// by default: as large as one file of an OCI base may be
/// (`KILN_OCI_MAX_FILE`'s default). `KILN_MAX_DOWNLOAD` changes it.
pub const DOWNLOAD_LIMIT: u64 = 16 << 30;

/// [`DOWNLOAD_LIMIT`], or `KILN_MAX_DOWNLOAD` (a size such as `32GiB`)
/// when set; a value that is no size is an error naming it.
pub fn download_limit() -> Result<u64, CommError> {
    match std::env::var("KILN_MAX_DOWNLOAD") {
        Err(_) => Ok(DOWNLOAD_LIMIT),
        Ok(v) => crate::template::schema::parse_size(&v)
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                CommError::Refused(format!(
                    "KILN_MAX_DOWNLOAD = `{v}`: expected a size such as \"32GiB\""
                ))
            }),
    }
}

/// The error of a download past its limit.
pub fn too_large(remote: &str, limit: u64) -> CommError {
    CommError::Refused(format!(
        "`{remote}` in the instance is larger than the download limit of {limit} bytes: not copied (raise it with KILN_MAX_DOWNLOAD)"
    ))
}

/// Writes what `from` (the instance's file `remote`) yields into a new
/// host file `local`, refusing it once it passes `limit` bytes: never a
/// byte past the limit is written, and the partial copy is removed.
pub(crate) async fn save_capped<R>(
    from: R,
    remote: &str,
    local: &Path,
    limit: u64,
) -> Result<(), CommError>
where
    R: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    if let Some(parent) = local.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs_err::tokio::create_dir_all(parent)
            .await
            .map_err(CommError::io("cannot create the destination folder"))?;
    }
    let mut dest = fs_err::tokio::File::create(local)
        .await
        .map_err(CommError::io("cannot write the downloaded file"))?;
    let mut from = from.take(limit);
    let copied = async {
        tokio::io::copy(&mut from, &mut dest)
            .await
            .map_err(CommError::io(format!("cannot download `{remote}`")))?;
        // One byte more than the limit allows: refused, not written.
        let mut probe = [0u8; 1];
        let more = from
            .into_inner()
            .read(&mut probe)
            .await
            .map_err(CommError::io(format!("cannot download `{remote}`")))?;
        if more > 0 {
            return Err(too_large(remote, limit));
        }
        tokio::io::AsyncWriteExt::flush(&mut dest)
            .await
            .map_err(CommError::io("cannot write the downloaded file"))
    }
    .await;
    if copied.is_err() {
        drop(dest);
        let _ = fs_err::tokio::remove_file(local).await;
    }
    copied
}

/// [`save_capped`] for a blocking reader (a file opened on the host).
pub(crate) fn save_capped_blocking(
    from: impl std::io::Read,
    remote: &str,
    local: &Path,
    limit: u64,
) -> Result<(), CommError> {
    if let Some(parent) = local.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs_err::create_dir_all(parent)
            .map_err(CommError::io("cannot create the destination folder"))?;
    }
    let mut dest =
        fs_err::File::create(local).map_err(CommError::io("cannot write the downloaded file"))?;
    let mut from = from.take(limit);
    let copied = std::io::copy(&mut from, &mut dest)
        .map_err(CommError::io(format!("cannot download `{remote}`")))
        .and_then(|_| {
            let mut probe = [0u8; 1];
            match from.into_inner().read(&mut probe) {
                Ok(0) => Ok(()),
                Ok(_) => Err(too_large(remote, limit)),
                Err(e) => Err(CommError::io(format!("cannot download `{remote}`"))(e)),
            }
        });
    if copied.is_err() {
        drop(dest);
        let _ = fs_err::remove_file(local);
    }
    copied
}

/// Copies `from` to `to` for communicators that reach the instance's
/// files directly: parent folders created, then the mode set when given.
pub(crate) async fn copy_file(
    from: &Path,
    to: &Path,
    mode: Option<u32>,
    what: &str,
) -> Result<(), CommError> {
    if let Some(parent) = to.parent() {
        fs_err::tokio::create_dir_all(parent)
            .await
            .map_err(CommError::io("cannot create the destination folder"))?;
    }
    fs_err::tokio::copy(from, to)
        .await
        .map_err(CommError::io(format!("cannot {what}")))?;
    if let Some(m) = mode {
        use std::os::unix::fs::PermissionsExt;
        fs_err::tokio::set_permissions(to, std::fs::Permissions::from_mode(m))
            .await
            .map_err(CommError::io("cannot set the file mode"))?;
    }
    Ok(())
}
