//! `kiln build` end to end with the `null` source: real processes, real
//! signals, the real journal.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::{assert_exit, text, Scratch};

const SLEEPER: &str = r#"[image]
name = "s"
version = "1.0.0"

[source.null.a]

[[build]]
name = "b"
sources = ["null.a"]

[[build.provisioner]]
type = "shell"
inline = ["sleep 300 & echo $! > sleep.pid", "echo ready", "wait"]
"#;

/// Starts `kiln build --json` and waits until the provisioner says `ready`;
/// returns the child, the workspace and the pid of the provisioner's `sleep`.
fn start_sleeper(s: &Scratch, extra: &[&str]) -> (Child, PathBuf, i32) {
    let t = s.write("t.toml", SLEEPER);
    let mut child = s
        .kiln()
        .args(["build", "--json"])
        .args(extra)
        .arg(&t)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut workspace = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
        if v["event"] == "message" {
            if let Some(text) = v["text"]
                .as_str()
                .and_then(|t| t.strip_prefix("workspace `"))
            {
                workspace = Some(PathBuf::from(text.split('`').next().unwrap()));
            }
        }
        if v["event"] == "output" && v["line"] == "ready" {
            break;
        }
    }
    let ws = workspace.expect("the null source names its workspace");
    let pid = std::fs::read_to_string(ws.join("sleep.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (child, ws, pid)
}

fn alive(pid: i32) -> bool {
    // A zombie is dead for our purposes.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

fn journal_len(state: &Path) -> usize {
    kiln::job::Journal::new(state).entries().unwrap().len()
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("kiln did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigint_cancels_cleans_up_and_exits_within_seconds() {
    let s = Scratch::new();
    let (mut child, ws, sleep_pid) = start_sleeper(&s, &[]);
    assert!(ws.is_dir() && alive(sleep_pid));
    assert!(
        journal_len(&s.state()) >= 2,
        "workspace and process are journaled while they exist"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    // A liveness bound, not a performance target: cleanup must not hang.
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "an interrupted build has failed");
    assert!(!ws.exists(), "workspace removed");
    assert!(!alive(sleep_pid), "provisioner processes killed");
    assert_eq!(journal_len(&s.state()), 0, "nothing left in the journal");
}

#[test]
fn sigkilled_build_is_reaped_by_cleanup() {
    let s = Scratch::new();
    let (mut child, ws, sleep_pid) = start_sleeper(&s, &[]);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        ws.exists() && alive(sleep_pid),
        "SIGKILL leaves things behind"
    );
    assert!(journal_len(&s.state()) >= 2);

    let o = s.kiln().args(["cleanup", "--dry-run"]).output().unwrap();
    assert_exit(&o, 0);
    assert!(
        text(&o).0.contains("would reap b.null.a: null workspace"),
        "{}",
        text(&o).0
    );
    assert!(ws.exists(), "dry run touches nothing");

    let o = s.kiln().arg("cleanup").output().unwrap();
    assert_exit(&o, 0);
    assert!(!ws.exists());
    for _ in 0..50 {
        if !alive(sleep_pid) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !alive(sleep_pid),
        "the orphaned provisioner process group is killed"
    );
    assert_eq!(journal_len(&s.state()), 0);
}

#[test]
fn on_error_abort_keeps_the_instance_for_cleanup() {
    let s = Scratch::new();
    let t = s.write(
        "t.toml",
        "[image]\nname = \"s\"\nversion = \"1.0.0\"\n[source.null.a]\n[[build]]\nsources = [\"null.a\"]\n[[build.provisioner]]\ntype = \"shell\"\ninline = [\"touch left-here\", \"exit 7\"]\n",
    );
    let o = s
        .kiln()
        .args(["build", "--on-error", "abort"])
        .arg(&t)
        .output()
        .unwrap();
    assert_exit(&o, 1);
    let err = text(&o).1;
    assert!(err.contains("exited with code 7"), "{err}");
    assert!(err.contains("kiln cleanup"), "{err}");
    assert_eq!(journal_len(&s.state()), 1, "the workspace stays journaled");
    let o = s.kiln().arg("cleanup").output().unwrap();
    assert_exit(&o, 0);
    assert_eq!(journal_len(&s.state()), 0);

    let o = s.kiln().arg("build").arg(&t).output().unwrap();
    assert_exit(&o, 1);
    assert_eq!(journal_len(&s.state()), 0, "the default cleans up");
}

#[test]
fn secrets_reach_provisioners_but_no_output_or_log() {
    use base64::Engine as _;
    let secret = "hunter2-very-secret";
    let s = Scratch::new();
    let t = s.write(
        "t.toml",
        r#"[image]
name = "s"
version = "1.0.0"
[secrets.pw]
env = "KILN_TEST_PW"
[source.null.a]
[[build]]
sources = ["null.a"]
[[build.provisioner]]
type = "shell"
env = { PW = "${secret.pw}", PW_UPPER = "${upper(secret.pw)}" }
inline = [
  "test \"$PW\" = hunter2-very-secret",
  "echo plain=$PW",
  "printf %s \"$PW\" | base64",
  "echo upper=$PW_UPPER",
  "echo failing with $PW >&2",
  "exit 3",
]
"#,
    );
    let log = s.path().join("build.log");
    let o = s
        .kiln()
        .args(["build", "--json", "--log-file"])
        .arg(&log)
        .arg(&t)
        .env("KILN_TEST_PW", secret)
        .output()
        .unwrap();
    assert_exit(&o, 1);
    let (out, err) = text(&o);
    let log = std::fs::read_to_string(&log).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
    for sink in [&out, &err, &log] {
        assert!(
            sink.is_empty() || sink.contains("plain=<redacted>"),
            "the provisioner really got the secret: {sink}"
        );
        for form in [secret, b64.as_str(), &secret.to_uppercase()] {
            assert!(!sink.contains(form), "leaked {form}: {sink}");
        }
    }
    assert!(log.contains("failing with <redacted>") && out.contains("exited with code 3"));
    // stdout is only JSON lines.
    for line in out.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
    }
    assert!(out
        .lines()
        .last()
        .unwrap()
        .contains("\"event\":\"summary\""));
}

#[test]
fn missing_secret_and_unconfigured_vault_are_clear_input_errors() {
    let s = Scratch::new();
    let t = s.write(
        "t.toml",
        "[image]\nname = \"s\"\nversion = \"1.0.0\"\n[secrets.a]\nenv = \"KILN_TEST_UNSET_VAR\"\n[secrets.b]\nvault = \"secret/data/x#y\"\n[source.null.a]\n[[build]]\nsources = [\"null.a\"]\n",
    );
    let o = s
        .kiln()
        .arg("build")
        .arg(&t)
        .env_remove("KILN_TEST_UNSET_VAR")
        .env_remove("VAULT_ADDR")
        .output()
        .unwrap();
    assert_exit(&o, 2);
    let err = text(&o).1;
    assert!(
        err.contains("t.toml:4:10") && err.contains("`KILN_TEST_UNSET_VAR` is not set"),
        "{err}"
    );
    assert!(
        err.contains("t.toml:6:10") && err.contains("Vault is not configured: set VAULT_ADDR"),
        "{err}"
    );
}

#[test]
fn only_and_except_select_jobs() {
    let s = Scratch::new();
    let t = s.write(
        "t.toml",
        "[image]\nname = \"s\"\nversion = \"1.0.0\"\n[source.null.a]\n[source.null.b]\n[[build]]\nname = \"x\"\nsources = [\"null.a\", \"null.b\"]\n",
    );
    let jobs = |args: &[&str]| {
        let o = s
            .kiln()
            .args(["build", "--json"])
            .args(args)
            .arg(&t)
            .output()
            .unwrap();
        assert_exit(&o, 0);
        let last: serde_json::Value =
            serde_json::from_str(text(&o).0.lines().last().unwrap()).unwrap();
        last["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(jobs(&[]), vec!["x.null.a", "x.null.b"]);
    assert_eq!(jobs(&["--only", "null.b"]), vec!["x.null.b"]);
    assert_eq!(jobs(&["--except", "x.null.b"]), vec!["x.null.a"]);
    let o = s
        .kiln()
        .args(["build", "--only", "null.c"])
        .arg(&t)
        .output()
        .unwrap();
    assert_exit(&o, 2);
    assert!(text(&o).1.contains("did you mean"), "{}", text(&o).1);
}
