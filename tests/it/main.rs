//! End-to-end tests: the real `kiln` binary on real templates, and the
//! engine driven through a test-only builder. One binary, shared helpers.

#[cfg(feature = "ami")]
mod ami;
#[cfg(feature = "ami")]
mod ami_launch;
#[cfg(feature = "ami")]
mod ami_sbom;
#[cfg(feature = "ami")]
mod ami_ssh;
#[cfg(feature = "ami")]
mod ami_tests;
mod artifact_tests;
#[cfg(feature = "ami")]
mod aws;
mod build;
mod catalog;
#[allow(dead_code)]
mod checkers;
mod cli;
mod engine;
#[cfg(feature = "oci")]
mod expressions;
#[cfg(feature = "oci")]
mod hardening;
mod hostile;
mod import;
mod layers;
mod lifecycle;
#[cfg(feature = "oci")]
mod oci;
#[cfg(feature = "oci")]
mod pipeline;
#[cfg(feature = "oci")]
mod policy;
mod ported;
mod provisioners;
#[cfg(feature = "qemu")]
mod qemu;
#[cfg(feature = "qemu")]
mod qemu_fetch;
#[cfg(feature = "qemu")]
mod qemu_iso;
#[cfg(feature = "qemu")]
mod qemu_net;
mod readme;
#[cfg(feature = "oci")]
mod registry_auth;
#[cfg(feature = "oci")]
mod rescan;
#[cfg(feature = "oci")]
mod sbom;
mod sbom_check;
#[cfg(feature = "qemu")]
mod sbom_qemu;
#[cfg(feature = "oci")]
mod sign;
#[cfg(any(feature = "qemu", feature = "ami"))]
mod ssh_download;
#[cfg(any(feature = "qemu", feature = "ami"))]
mod sshd;
mod templates;
mod vault;
mod vercmp;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch directory with a template in it and its own state dir.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn state(&self) -> PathBuf {
        self.path().join("state")
    }

    /// `sh -c SCRIPT` in this scratch dir, with its state dir.
    pub fn kiln_shell(&self, script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script])
            .current_dir(self.path())
            .env("KILN_STATE_DIR", self.state())
            .env("NO_COLOR", "1");
        c
    }

    /// `kiln keygen --out PREFIX` here, with `password` for the private key.
    #[track_caller]
    pub fn keygen(&self, prefix: &str, password: &str) {
        let o = self
            .kiln()
            .args(["keygen", "--out"])
            .arg(self.path().join(prefix))
            .env("KILN_PASSWORD", password)
            .output()
            .unwrap();
        assert_exit(&o, 0);
    }

    /// `kiln` with this scratch dir's state dir, run in it.
    pub fn kiln(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
        c.current_dir(self.path())
            .env("KILN_STATE_DIR", self.state())
            .env("NO_COLOR", "1");
        c
    }
}

/// Every file below `dir` (none when it is missing).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The repository root (for shipped templates).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn kiln() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.env("NO_COLOR", "1");
    c
}

pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[track_caller]
pub fn assert_exit(o: &Output, code: i32) {
    let (out, err) = text(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit code\n--- stdout\n{out}\n--- stderr\n{err}"
    );
}

/// The final `summary` event of a `kiln … --json` run (panics, showing
/// both streams, when there is none).
pub fn json_summary(o: &Output) -> serde_json::Value {
    let (out, err) = text(o);
    out.lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .filter(|v| v["event"] == "summary")
        })
        .unwrap_or_else(|| panic!("no summary in\n{out}\n{err}"))
}

/// True when `tools` (and root, if `root`) are here. Otherwise the test
/// fails in CI (`CI=true`: .ci/run installs them) and skips, loudly,
/// elsewhere.
pub fn require(what: &str, tools: &[&str], root: bool) -> bool {
    let mut missing: Vec<String> = tools
        .iter()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|t| t.to_string())
        .collect();
    if root && !nix::unistd::geteuid().is_root() {
        missing.push("root".into());
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "{what} tests need {} (installed by .ci/run)",
        missing.join(", ")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

/// A loopback address with a port nobody listens on right now.
pub fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// Waits (bounded) until something accepts connections on `addr`.
pub fn wait_listening(addr: &str, what: &str) {
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "{what} did not start on {addr}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
