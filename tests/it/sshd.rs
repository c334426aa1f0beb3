//! A real OpenSSH server (Debian's `sshd`) on a free loopback port, with a
//! host key the test generates: what the SSH communicator's tests and the
//! AMI builder's `communicator = "ssh"` tests connect to.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An OpenSSH server on a free loopback port, as root, accepting the keys
/// in its own `authorized_keys`; stopped with its process group on drop.
pub struct Sshd {
    child: Child,
    pub dir: tempfile::TempDir,
    pub addr: String,
}

impl Sshd {
    pub fn start() -> Option<Sshd> {
        if !crate::require("an OpenSSH server", &["sshd", "ssh-keygen"], true) {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("kiln-sshd-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let keygen = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "stand-in", "-f"])
            .arg(d.join("host_ed25519"))
            .output()
            .unwrap();
        assert!(keygen.status.success(), "{keygen:?}");
        std::fs::write(d.join("authorized_keys"), "").unwrap();
        let addr = crate::free_addr();
        let port = addr.rsplit(':').next().unwrap();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\nPidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\nLogLevel VERBOSE\n",
                d = d.display()
            ),
        )
        .unwrap();
        // sshd's privilege separation folder (the package's unit makes it).
        std::fs::create_dir_all("/run/sshd").unwrap();
        let sshd = which("sshd");
        let log = std::fs::File::create(d.join("sshd.log")).unwrap();
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("spawn sshd");
        let mut s = Sshd { child, dir, addr };
        let start = Instant::now();
        while std::net::TcpStream::connect(&s.addr).is_err() {
            let exited = s.child.try_wait().unwrap();
            assert!(
                exited.is_none() && start.elapsed() < Duration::from_secs(20),
                "sshd did not start on {}: {}",
                s.addr,
                s.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(s)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// The host key, as an `authorized_keys`-style line without comment.
    #[cfg_attr(not(feature = "ami"), allow(dead_code))]
    pub fn host_key(&self) -> String {
        let line = std::fs::read_to_string(self.dir.path().join("host_ed25519.pub")).unwrap();
        line.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// `SHA256:…`, as ssh-keygen (not kiln) computes it.
    #[cfg_attr(not(feature = "ami"), allow(dead_code))]
    pub fn host_fingerprint(&self) -> String {
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(self.dir.path().join("host_ed25519.pub"))
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    }

    pub fn authorize(&self, line: &str) {
        std::fs::write(self.dir.path().join("authorized_keys"), format!("{line}\n")).unwrap();
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

fn which(tool: &str) -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .unwrap();
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}
