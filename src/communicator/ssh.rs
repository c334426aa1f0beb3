//! A communicator over SSH (russh): one authenticated connection per
//! instance, waited for with short bounded retries, the host key pinned
//! from the first connection; scripts and files travel over SFTP, the
//! environment (secrets) over the exec channel's stdin, never a command
//! line.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use russh::client::{self, Handle};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, Sig};
use tokio::io::AsyncWriteExt;

use super::{CommError, Communicator, OutputFn, RemoteCommand};
use crate::ui::Stream;

/// How kiln proves who it is.
#[derive(Clone)]
pub enum SshAuth {
    Key(Arc<PrivateKey>),
    /// Never shown: `Debug` is not derived.
    Password(String),
}

/// Where and as whom to connect.
#[derive(Clone)]
pub struct SshTarget {
    pub addr: std::net::SocketAddr,
    pub username: String,
    pub auth: SshAuth,
}

/// Accepts the first host key it sees and only that one afterwards; when
/// host keys are known in advance (a cloud instance's console printed
/// them), the first one must be among them.
struct PinnedHostKey {
    pinned: Arc<Mutex<Option<PublicKey>>>,
    expected: Arc<Vec<PublicKey>>,
}

impl client::Handler for PinnedHostKey {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = offered.public_key();
        let mut pinned = self.pinned.lock().unwrap_or_else(|p| p.into_inner());
        match pinned.as_ref() {
            Some(known) => Ok(known.key_data() == key.key_data()),
            None if !self.expected.is_empty()
                && !self.expected.iter().any(|e| e.key_data() == key.key_data()) =>
            {
                Ok(false)
            }
            None => {
                *pinned = Some(key);
                Ok(true)
            }
        }
    }
}

/// The longest pause between two connection attempts while waiting.
const ATTEMPT_EVERY: Duration = Duration::from_millis(500);
/// How many connection attempts may wait at once.
const ATTEMPTS_IN_FLIGHT: usize = 4;

/// Why one connection attempt failed.
#[derive(Debug)]
enum Attempt {
    /// Not up yet (refused, reset, handshake cut short): try again.
    NotReady(String),
    /// The guest answered and said no: retrying will not help.
    Rejected(String),
}

/// Talks to a guest over SSH.
pub struct SshCommunicator {
    target: SshTarget,
    pinned: Arc<Mutex<Option<PublicKey>>>,
    expected: Arc<Vec<PublicKey>>,
    session: tokio::sync::Mutex<Option<Handle<PinnedHostKey>>>,
    /// The largest file `download` copies; `None`: [`super::download_limit`].
    download_limit: Option<u64>,
}

impl SshCommunicator {
    /// Trusts the first host key offered (the caller knows the guest is
    /// its own, e.g. a VM on a loopback port) and pins it.
    pub fn new(target: SshTarget) -> SshCommunicator {
        SshCommunicator {
            target,
            pinned: Arc::new(Mutex::new(None)),
            expected: Arc::new(vec![]),
            session: tokio::sync::Mutex::new(None),
            download_limit: None,
        }
    }

    /// Downloads refuse files larger than `bytes` (instead of
    /// [`super::download_limit`]).
    pub fn with_download_limit(mut self, bytes: u64) -> SshCommunicator {
        self.download_limit = Some(bytes);
        self
    }

    /// Accepts only a host key among `keys` (learnt out of band, e.g. from
    /// a cloud instance's console); an empty list trusts the first one.
    pub fn expecting_host_keys(mut self, keys: Vec<PublicKey>) -> SshCommunicator {
        self.expected = Arc::new(keys);
        self
    }

    /// The pinned host key's SHA-256 fingerprint, once connected.
    pub fn host_key_fingerprint(&self) -> Option<String> {
        let pinned = self.pinned.lock().unwrap_or_else(|p| p.into_inner());
        pinned
            .as_ref()
            .map(|k| k.fingerprint(russh::keys::HashAlg::Sha256).to_string())
    }

    async fn attempt(&self) -> Result<Handle<PinnedHostKey>, Attempt> {
        let config = Arc::new(client::Config {
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(15)),
            ..Default::default()
        });
        let handler = PinnedHostKey {
            pinned: self.pinned.clone(),
            expected: self.expected.clone(),
        };
        // A handshake that never completes (user-mode networking accepts
        // before the guest listens) must not stall the retries.
        let connect = client::connect(config, self.target.addr, handler);
        let mut handle = match tokio::time::timeout(Duration::from_secs(20), connect).await {
            Err(_) => return Err(Attempt::NotReady("SSH handshake timed out".into())),
            Ok(Err(russh::Error::UnknownKey)) => {
                let first = self
                    .pinned
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_none();
                return Err(Attempt::Rejected(if first {
                    format!(
                        "{} offered an SSH host key that is not one of the {} it was expected to have: refusing to connect (someone may be in between)",
                        self.target.addr,
                        self.expected.len()
                    )
                } else {
                    "the guest's SSH host key changed since the first connection".into()
                }));
            }
            Ok(Err(e)) => return Err(Attempt::NotReady(e.to_string())),
            Ok(Ok(h)) => h,
        };
        let user = self.target.username.clone();
        let result = match &self.target.auth {
            SshAuth::Key(key) => {
                let hash = handle
                    .best_supported_rsa_hash()
                    .await
                    .ok()
                    .flatten()
                    .flatten();
                handle
                    .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key.clone(), hash))
                    .await
            }
            SshAuth::Password(p) => handle.authenticate_password(user, p.clone()).await,
        }
        .map_err(|e| Attempt::NotReady(e.to_string()))?;
        if result.success() {
            Ok(handle)
        } else {
            // cloud-init may not have installed the key yet: sshd runs
            // before cloud-init's config stage. Retried until the deadline.
            Err(Attempt::NotReady(format!(
                "authentication as `{}` refused",
                self.target.username
            )))
        }
    }

    /// Connects, retrying with short growing delays until `limit`;
    /// `alive` is checked between attempts (the VM may have died).
    ///
    /// Attempts overlap: a new one starts every [`ATTEMPT_EVERY`] at most
    /// even while earlier ones still wait (up to [`ATTEMPTS_IN_FLIGHT`]).
    /// User-mode networking accepts the TCP connection at once and holds
    /// it while the guest has no network, retrying its SYN with growing
    /// backoff, so a lone attempt can stay stuck for many seconds after
    /// sshd listens; the first attempt that gets through wins.
    pub async fn wait_ready(
        &self,
        limit: Duration,
        alive: &mut (dyn FnMut() -> Result<(), String> + Send),
    ) -> Result<(), CommError> {
        use futures_util::stream::{FuturesUnordered, StreamExt};
        let deadline = tokio::time::Instant::now() + limit;
        let mut delay = Duration::from_millis(100);
        let mut next = tokio::time::Instant::now();
        let mut last = String::from("no attempt finished");
        let mut pending = FuturesUnordered::new();
        loop {
            alive().map_err(CommError::Refused)?;
            let now = tokio::time::Instant::now();
            if now >= next && pending.len() < ATTEMPTS_IN_FLIGHT && now < deadline {
                pending.push(self.attempt());
                next = now + delay;
                delay = (delay * 3 / 2).min(ATTEMPT_EVERY);
            }
            if now >= deadline {
                return Err(CommError::Refused(format!(
                    "SSH on {} was not ready within {} (last attempt: {last})",
                    self.target.addr,
                    humantime::format_duration(limit)
                )));
            }
            // Wake for the next attempt, the deadline, or a result.
            let wake = next.max(now + Duration::from_millis(50)).min(deadline);
            tokio::select! {
                Some(result) = pending.next(), if !pending.is_empty() => match result {
                    Ok(handle) => {
                        *self.session.lock().await = Some(handle);
                        return Ok(());
                    }
                    Err(Attempt::Rejected(why)) => return Err(CommError::Refused(why)),
                    Err(Attempt::NotReady(why)) => last = why,
                },
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn channel(&self) -> Result<russh::Channel<client::Msg>, CommError> {
        let mut guard = self.session.lock().await;
        if guard.as_ref().is_none_or(|h| h.is_closed()) {
            let handle = self.attempt().await.map_err(|e| match e {
                Attempt::NotReady(why) => {
                    CommError::Disconnected(format!("cannot reconnect over SSH: {why}"))
                }
                Attempt::Rejected(why) => {
                    CommError::Refused(format!("cannot reconnect over SSH: {why}"))
                }
            })?;
            *guard = Some(handle);
        }
        let handle = guard.as_ref().expect("connected above");
        handle
            .channel_open_session()
            .await
            .map_err(|e| CommError::Disconnected(format!("cannot open an SSH channel: {e}")))
    }

    async fn sftp(&self) -> Result<russh_sftp::client::SftpSession, CommError> {
        let channel = self.channel().await?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| CommError::Refused(format!("the guest refused SFTP: {e}")))?;
        russh_sftp::client::SftpSession::new(channel.into_stream())
            .await
            .map_err(|e| CommError::Refused(format!("SFTP: {e}")))
    }

    /// Closes the connection (before the guest powers off).
    pub async fn disconnect(&self) {
        if let Some(h) = self.session.lock().await.take() {
            let _ = h
                .disconnect(russh::Disconnect::ByApplication, "", "en")
                .await;
        }
    }

    /// Runs `command` (no secrets in it), feeding `stdin`; streams output.
    async fn run(
        &self,
        command: &str,
        stdin: &[u8],
        output: &mut OutputFn<'_>,
        timeout: Option<Duration>,
    ) -> Result<i32, CommError> {
        let mut channel = self.channel().await?;
        channel
            .exec(true, command)
            .await
            .map_err(|e| CommError::Refused(format!("SSH exec: {e}")))?;
        channel
            .data_bytes(stdin.to_vec())
            .await
            .map_err(|e| CommError::Refused(format!("SSH stdin: {e}")))?;
        channel
            .eof()
            .await
            .map_err(|e| CommError::Refused(format!("SSH stdin: {e}")))?;
        let mut lines = LineSplitter::default();
        let run = async {
            let mut code = None;
            while let Some(msg) = channel.wait().await {
                match msg {
                    ChannelMsg::Data { data } => lines.push(Stream::Stdout, &data, output),
                    ChannelMsg::ExtendedData { data, ext: 1 } => {
                        lines.push(Stream::Stderr, &data, output)
                    }
                    ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status as i32),
                    ChannelMsg::ExitSignal { .. } => code = code.or(Some(128 + 9)),
                    _ => {}
                }
            }
            lines.flush(output);
            code
        };
        let code = match timeout {
            Some(t) => match tokio::time::timeout(t, run).await {
                Ok(code) => code,
                Err(_) => {
                    let _ = channel.signal(Sig::KILL).await;
                    let _ = channel.close().await;
                    return Err(CommError::Timeout(t));
                }
            },
            None => run.await,
        };
        code.ok_or_else(|| {
            CommError::Disconnected("the SSH channel closed without an exit status".into())
        })
    }
}

/// A fresh ed25519 key pair from the OS random source, kept in memory only.
pub fn ephemeral_key() -> Result<PrivateKey, CommError> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| CommError::Io {
        what: "cannot generate an SSH key".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let key = PrivateKey::from(russh::keys::ssh_key::private::Ed25519Keypair::from_seed(
        &seed,
    ));
    seed.fill(0);
    Ok(key)
}

/// The `authorized_keys` line of `key`'s public half.
pub fn authorized_key(key: &PrivateKey) -> Result<String, CommError> {
    key.public_key()
        .to_openssh()
        .map_err(|e| CommError::Refused(format!("cannot encode the SSH public key: {e}")))
}

/// Cuts streamed bytes into lines per stream.
#[derive(Default)]
struct LineSplitter {
    out: Vec<u8>,
    err: Vec<u8>,
}

impl LineSplitter {
    fn push(&mut self, stream: Stream, data: &[u8], output: &mut OutputFn<'_>) {
        let buf = match stream {
            Stream::Stdout => &mut self.out,
            Stream::Stderr => &mut self.err,
        };
        buf.extend_from_slice(data);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let text = String::from_utf8_lossy(&line)
                .trim_end_matches(['\n', '\r'])
                .to_string();
            output(stream, text);
        }
        while buf.len() >= super::MAX_LINE {
            let piece: Vec<u8> = buf.drain(..super::MAX_LINE).collect();
            output(stream, String::from_utf8_lossy(&piece).into_owned());
        }
    }

    fn flush(&mut self, output: &mut OutputFn<'_>) {
        for (stream, buf) in [
            (Stream::Stdout, &mut self.out),
            (Stream::Stderr, &mut self.err),
        ] {
            if !buf.is_empty() {
                output(stream, String::from_utf8_lossy(buf).into_owned());
                buf.clear();
            }
        }
    }
}

/// The stdin that sets up the environment: `export NAME='value'` lines,
/// read by the remote shell with `. /dev/stdin`.
fn env_script(env: &[(String, String)]) -> Result<String, CommError> {
    let mut out = String::new();
    for (k, v) in env {
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(CommError::Refused(format!(
                "`{k}` is not a valid environment variable name"
            )));
        }
        out.push_str(&format!("export {k}={}\n", super::sh_quote(v)));
    }
    Ok(out)
}

#[async_trait]
impl Communicator for SshCommunicator {
    async fn exec(&self, cmd: &RemoteCommand, output: &mut OutputFn<'_>) -> Result<i32, CommError> {
        let remote = format!("/tmp/kiln-script-{}", uuid::Uuid::new_v4().simple());
        let body = if cmd.script.starts_with("#!") {
            cmd.script.clone()
        } else {
            format!("#!/bin/sh -e\n{}", cmd.script)
        };
        {
            let sftp = self.sftp().await?;
            write_remote(&sftp, &remote, body.as_bytes(), 0o700).await?;
            let _ = sftp.close().await;
        }
        let cd = match &cmd.workdir {
            Some(w) => format!("cd {} && ", super::sh_quote(w)),
            None => String::new(),
        };
        // The environment arrives on stdin, so no secret is ever part of
        // the command line the guest's `ps` would show.
        let command = format!(
            "{cd}. /dev/stdin; {remote}; rc=$?; rm -f {remote}; exit $rc",
            remote = super::sh_quote(&remote)
        );
        let env = env_script(&cmd.env)?;
        self.run(
            &format!("/bin/sh -c {}", super::sh_quote(&command)),
            env.as_bytes(),
            output,
            cmd.timeout,
        )
        .await
    }

    async fn upload(&self, local: &Path, remote: &str, mode: Option<u32>) -> Result<(), CommError> {
        let data = fs_err::tokio::read(local)
            .await
            .map_err(CommError::io("cannot read the file to upload"))?;
        if let Some(parent) = Path::new(remote)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            let mut ignore = |_: Stream, _: String| {};
            let mkdir = format!("mkdir -p {}", super::sh_quote(&parent.to_string_lossy()));
            let code = self.run(&mkdir, b"", &mut ignore, None).await?;
            if code != 0 {
                return Err(CommError::Refused(format!(
                    "cannot create `{}` in the guest",
                    parent.display()
                )));
            }
        }
        let sftp = self.sftp().await?;
        let result = write_remote(&sftp, remote, &data, mode.unwrap_or(0o644)).await;
        let _ = sftp.close().await;
        result
    }

    async fn reconnect(&self, limit: Duration) -> Result<(), CommError> {
        if let Some(h) = self.session.lock().await.take() {
            let _ = h
                .disconnect(russh::Disconnect::ByApplication, "", "en")
                .await;
        }
        self.wait_ready(limit, &mut || Ok(())).await
    }

    fn can_reboot(&self) -> bool {
        true
    }

    async fn host_access(&self) -> Result<Option<super::HostAccess>, CommError> {
        let private_key = match &self.target.auth {
            SshAuth::Key(k) => Some(
                k.to_openssh(russh::keys::ssh_key::LineEnding::LF)
                    .map_err(|e| CommError::Refused(format!("cannot encode the SSH key: {e}")))?
                    .to_string(),
            ),
            SshAuth::Password(_) => None,
        };
        let pinned = self.pinned.lock().unwrap_or_else(|p| p.into_inner());
        Ok(Some(super::HostAccess::Ssh(super::SshEndpoint {
            host: self.target.addr.ip().to_string(),
            port: self.target.addr.port(),
            username: self.target.username.clone(),
            private_key,
            host_key: pinned.as_ref().and_then(|k| k.to_openssh().ok()),
        })))
    }

    async fn download(&self, remote: &str, local: &Path) -> Result<(), CommError> {
        let limit = match self.download_limit {
            Some(l) => l,
            None => super::download_limit()?,
        };
        let sftp = self.sftp().await?;
        let copied = async {
            let file = sftp.open(remote).await.map_err(|e| {
                CommError::Refused(format!("cannot open `{remote}` in the guest: {e}"))
            })?;
            super::save_capped(file, remote, local, limit).await
        }
        .await;
        let _ = sftp.close().await;
        copied
    }
}

async fn write_remote(
    sftp: &russh_sftp::client::SftpSession,
    remote: &str,
    data: &[u8],
    mode: u32,
) -> Result<(), CommError> {
    let refused = |what: &str, e: &dyn std::fmt::Display| {
        CommError::Refused(format!("cannot {what} `{remote}` in the guest: {e}"))
    };
    let mut file = sftp
        .create(remote)
        .await
        .map_err(|e| refused("create", &e))?;
    file.write_all(data)
        .await
        .map_err(|e| refused("write", &e))?;
    file.shutdown().await.map_err(|e| refused("write", &e))?;
    let mut attrs = russh_sftp::protocol::FileAttributes::empty();
    attrs.permissions = Some(mode);
    sftp.set_metadata(remote, attrs)
        .await
        .map_err(|e| refused("set the mode of", &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener that accepts and then says nothing, as QEMU's user-mode
    /// network does while the guest has no address: attempts must not
    /// queue behind the one it holds.
    #[tokio::test]
    async fn ssh_wait_keeps_trying_while_an_attempt_hangs() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        let server = tokio::spawn(async move {
            let mut held = vec![];
            while let Ok((sock, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(sock);
            }
        });
        let comm = SshCommunicator::new(SshTarget {
            addr,
            username: "root".into(),
            auth: SshAuth::Password("x".into()),
        });
        let started = std::time::Instant::now();
        let err = comm
            .wait_ready(Duration::from_millis(1500), &mut || Ok(()))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("was not ready within"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        let n = accepted.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            (3..=ATTEMPTS_IN_FLIGHT).contains(&n),
            "{n} connections: overlapping attempts, bounded"
        );
        server.abort();
    }

    #[test]
    fn ssh_env_is_quoted_for_the_shell() {
        let env = vec![("A".to_string(), "it's $HOME".to_string())];
        assert_eq!(env_script(&env).unwrap(), "export A='it'\\''s $HOME'\n");
        assert!(env_script(&[("A B".into(), "x".into())]).is_err());
    }

    #[test]
    fn ssh_output_is_split_into_lines_per_stream() {
        let mut got = vec![];
        let mut sink = |s: Stream, l: String| got.push((s, l));
        let mut lines = LineSplitter::default();
        lines.push(Stream::Stdout, b"one\ntw", &mut sink);
        lines.push(Stream::Stderr, b"err\n", &mut sink);
        lines.push(Stream::Stdout, b"o\nthree", &mut sink);
        lines.flush(&mut sink);
        // Output without newlines comes in bounded pieces.
        let mut long = LineSplitter::default();
        for _ in 0..3 {
            long.push(
                Stream::Stdout,
                &vec![b'z'; super::super::MAX_LINE],
                &mut sink,
            );
        }
        assert!(long.out.is_empty());
        let pieces = got.split_off(4);
        assert_eq!(pieces.len(), 3);
        assert!(pieces
            .iter()
            .all(|(_, l)| l.len() == super::super::MAX_LINE));
        assert_eq!(
            got,
            vec![
                (Stream::Stdout, "one".to_string()),
                (Stream::Stderr, "err".to_string()),
                (Stream::Stdout, "two".to_string()),
                (Stream::Stdout, "three".to_string()),
            ]
        );
    }
}
