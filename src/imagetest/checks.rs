//! Each test type's checks: what it reads from the instance (through the
//! communicator: read-only commands and file copies) and how it compares
//! that with the template's expectations.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::parse;
use super::{CheckResult, Outcome};
use crate::communicator::{sh_quote, Communicator, RemoteCommand};
use crate::template::plan::TestPlan;
use crate::template::Value;
use crate::ui::Stream;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// What a command printed and how it ended.
pub(super) struct Ran {
    pub(super) code: i32,
    pub(super) stdout: Vec<String>,
    pub(super) stderr: Vec<String>,
}

pub(super) async fn sh(
    comm: &dyn Communicator,
    script: &str,
    timeout: Duration,
) -> Result<Ran, String> {
    let cmd = RemoteCommand {
        script: script.to_string(),
        timeout: Some(timeout),
        ..Default::default()
    };
    let (mut stdout, mut stderr) = (vec![], vec![]);
    let code = comm
        .exec(&cmd, &mut |s, line| match s {
            Stream::Stdout => stdout.push(line),
            Stream::Stderr => stderr.push(line),
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(Ran {
        code,
        stdout,
        stderr,
    })
}

/// Whether `path` exists in the instance (`test -e`).
pub async fn path_exists(comm: &dyn Communicator, path: &str) -> Result<bool, String> {
    let r = sh(
        comm,
        &format!("test -e {}", sh_quote(path)),
        DEFAULT_TIMEOUT,
    )
    .await?;
    Ok(r.code == 0)
}

/// The largest text file [`read_text`] reads out of an instance (a
/// package database, `/etc/passwd`); real ones are a few MiB.
pub const MAX_TEXT_BYTES: usize = 64 << 20;

/// A text file of the instance, `None` when it cannot be read; one larger
/// than [`MAX_TEXT_BYTES`] is an error naming it and the limit.
pub async fn read_text(comm: &dyn Communicator, path: &str) -> Result<Option<String>, String> {
    read_text_capped(comm, path, MAX_TEXT_BYTES).await
}

/// [`read_text`] with the limit given. `head -c` keeps an honest image
/// from sending more, and the bytes are counted here as they arrive (the
/// image's `head` may lie): past the limit nothing more is kept.
async fn read_text_capped(
    comm: &dyn Communicator,
    path: &str,
    cap: usize,
) -> Result<Option<String>, String> {
    let cmd = RemoteCommand {
        script: format!("head -c {} {} 2>/dev/null", cap + 1, sh_quote(path)),
        timeout: Some(DEFAULT_TIMEOUT),
        ..Default::default()
    };
    let (mut lines, mut size, mut over) = (Vec::new(), 0usize, false);
    let code = comm
        .exec(&cmd, &mut |s, line| {
            if s == Stream::Stdout && !over {
                size += line.len() + 1;
                if size > cap + 1 {
                    over = true;
                    lines = Vec::new();
                } else {
                    lines.push(line);
                }
            }
        })
        .await
        .map_err(|e| e.to_string())?;
    if over {
        return Err(format!(
            "`{path}` in the instance is larger than the limit of {cap} bytes: not read"
        ));
    }
    Ok((code == 0).then(|| lines.join("\n")))
}

fn check(
    property: &str,
    expected: impl ToString,
    observed: impl ToString,
    ok: bool,
) -> CheckResult {
    CheckResult {
        property: property.into(),
        expected: expected.to_string(),
        observed: observed.to_string(),
        outcome: if ok { Outcome::Pass } else { Outcome::Fail },
    }
}

fn skip(property: &str, expected: impl ToString, why: impl ToString) -> CheckResult {
    CheckResult {
        property: property.into(),
        expected: expected.to_string(),
        observed: why.to_string(),
        outcome: Outcome::Skip,
    }
}

fn settings<T: serde::de::DeserializeOwned>(config: &BTreeMap<String, Value>) -> Result<T, String> {
    let json = serde_json::Value::Object(
        config
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect(),
    );
    serde_json::from_value(json).map_err(|e| e.to_string())
}

fn timeout_of(t: &Option<String>) -> Duration {
    t.as_deref()
        .and_then(crate::template::schema::parse_duration)
        .unwrap_or(DEFAULT_TIMEOUT)
}

/// Runs one test: its display name and the result of each property.
pub async fn run(
    t: &TestPlan,
    comm: &dyn Communicator,
    scratch: &Path,
    template_dir: &Path,
) -> (String, Vec<CheckResult>) {
    let label = |key: &str| {
        t.config
            .get(key)
            .and_then(|v| {
                v.as_interpolated()
                    .or_else(|| Some(v.to_json().to_string()))
            })
            .unwrap_or_default()
    };
    let name = match t.kind.as_str() {
        "file" => format!("file {}", label("path")),
        "port" => format!("port {}", label("port")),
        "kernel_param" => format!("kernel_param {}", label("key")),
        "command" => format!("command {}", label("run")),
        "http" => format!("http {}", label("url")),
        "shell" => format!("shell test {}", t.index),
        "goss" => format!("goss {}", label("file")),
        k => format!("{k} {}", label("name")),
    };
    let result = match t.kind.as_str() {
        "file" => file(settings(&t.config), comm, scratch).await,
        "package" => package(settings(&t.config), comm).await,
        "service" => service(settings(&t.config), comm).await,
        "port" => port(settings(&t.config), comm).await,
        "user" => user(settings(&t.config), comm).await,
        "group" => group(settings(&t.config), comm).await,
        "kernel_param" => kernel_param(settings(&t.config), comm).await,
        "command" => command(settings(&t.config), comm).await,
        "http" => http(settings(&t.config), comm).await,
        "shell" => shell(settings(&t.config), comm).await,
        "goss" => super::goss::run(settings(&t.config), comm, template_dir).await,
        other => Err(format!("unknown test type `{other}`")),
    };
    let checks = match result {
        Ok(c) => c,
        Err(e) => vec![check("run", "the check to run", e, false)],
    };
    (name, checks)
}

#[derive(Deserialize)]
struct FileTest {
    path: String,
    exists: Option<bool>,
    mode: Option<String>,
    owner: Option<String>,
    group: Option<String>,
    #[serde(default)]
    contains: Vec<String>,
    sha256: Option<String>,
}

async fn file(
    s: Result<FileTest, String>,
    comm: &dyn Communicator,
    scratch: &Path,
) -> Result<Vec<CheckResult>, String> {
    let s = s?;
    let q = sh_quote(&s.path);
    let r = sh(
        comm,
        &format!(
            "if [ -e {q} ] || [ -L {q} ]; then stat -c '%a %U %G %F' {q}; else echo missing; fi"
        ),
        DEFAULT_TIMEOUT,
    )
    .await?;
    let line = r.stdout.first().cloned().unwrap_or_default();
    let exists = r.code == 0 && line != "missing" && !line.is_empty();
    let want = s.exists.unwrap_or(true);
    let mut out = vec![check("exists", want, exists, exists == want)];
    if !exists || !want {
        return Ok(out);
    }
    if r.code != 0 || line.split(' ').count() < 3 {
        out.push(check(
            "stat",
            "`stat -c` output",
            format!("exit {}: {}", r.code, r.stderr.join(" ")),
            false,
        ));
        return Ok(out);
    }
    let mut f = line.splitn(4, ' ');
    let (mode, owner, group) = (
        f.next().unwrap_or_default(),
        f.next().unwrap_or_default(),
        f.next().unwrap_or_default(),
    );
    if let Some(m) = &s.mode {
        out.push(check(
            "mode",
            m,
            format!("0{mode}"),
            parse::same_mode(m, mode),
        ));
    }
    if let Some(o) = &s.owner {
        out.push(check("owner", o, owner, o == owner));
    }
    if let Some(g) = &s.group {
        out.push(check("group", g, group, g == group));
    }
    if s.contains.is_empty() && s.sha256.is_none() {
        return Ok(out);
    }
    // The content crosses as a regular file into a host scratch folder.
    let local = scratch.join(format!("file-{}", uuid::Uuid::new_v4()));
    let copied = comm.download(&s.path, &local).await;
    let bytes = copied.and_then(|()| {
        std::fs::read(&local).map_err(crate::communicator::CommError::io("read the copy"))
    });
    let _ = std::fs::remove_file(&local);
    let bytes = match bytes {
        Ok(b) => b,
        Err(e) => {
            out.push(check("content", "a readable regular file", e, false));
            return Ok(out);
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    for c in &s.contains {
        out.push(check(
            "contains",
            format!("`{c}`"),
            if text.contains(c.as_str()) {
                "found"
            } else {
                "not found"
            },
            text.contains(c.as_str()),
        ));
    }
    if let Some(want) = &s.sha256 {
        use sha2::Digest;
        let got = hex::encode(sha2::Sha256::digest(&bytes));
        let want = want.trim_start_matches("sha256:").to_lowercase();
        out.push(check("sha256", &want, &got, want == got));
    }
    Ok(out)
}

#[derive(Deserialize)]
struct PackageTest {
    name: String,
    installed: Option<bool>,
    version: Option<String>,
}

async fn package(
    s: Result<PackageTest, String>,
    comm: &dyn Communicator,
) -> Result<Vec<CheckResult>, String> {
    let s = s?;
    let want = s.installed.unwrap_or(true);
    let version = if let Some(db) = read_text(comm, "/var/lib/dpkg/status").await? {
        parse::dpkg_version(&db, &s.name)
    } else if let Some(db) = read_text(comm, "/lib/apk/db/installed").await? {
        parse::apk_version(&db, &s.name)
    } else {
        return Ok(vec![check(
            "installed",
            want,
            "no package database (`/var/lib/dpkg/status`, `/lib/apk/db/installed`)",
            false,
        )]);
    };
    let mut out = vec![check(
        "installed",
        want,
        version.is_some(),
        version.is_some() == want,
    )];
    if let (Some(w), Some(v), true) = (&s.version, &version, want) {
        out.push(check("version", w, v, w == v));
    }
    Ok(out)
}

#[derive(Deserialize)]
struct ServiceTest {
    name: String,
    enabled: Option<bool>,
    running: Option<bool>,
}

async fn service(
    s: Result<ServiceTest, String>,
    comm: &dyn Communicator,
) -> Result<Vec<CheckResult>, String> {
    let s = s?;
    let unit = if s.name.contains('.') {
        s.name.clone()
    } else {
        format!("{}.service", s.name)
    };
    let mut out = vec![];
    if let Some(want) = s.enabled.or(s.running.is_none().then_some(true)) {
        // systemd's `*.wants/` symlinks, or an OpenRC runlevel entry.
        let script = format!(
            "for d in /etc/systemd/system/*.wants /usr/lib/systemd/system/*.wants /lib/systemd/system/*.wants; do [ -e \"$d\"/{u} ] || [ -L \"$d\"/{u} ] && echo \"$d\"; done; for d in /etc/runlevels/*; do [ -e \"$d\"/{n} ] && echo \"$d\"; done; true",
            u = sh_quote(&unit),
            n = sh_quote(&s.name)
        );
        let r = sh(comm, &script, DEFAULT_TIMEOUT).await?;
        let found: Vec<String> = r.stdout.into_iter().filter(|l| !l.is_empty()).collect();
        let observed = if found.is_empty() {
            "no `*.wants/` link or runlevel entry".to_string()
        } else {
            format!("enabled in {}", found.join(", "))
        };
        out.push(check("enabled", want, observed, found.is_empty() != want));
    }
    if let Some(want) = s.running {
        let r = sh(
            comm,
            &format!(
                "if [ -d /run/systemd/system ]; then systemctl is-active {}; else echo no-init; fi",
                sh_quote(&unit)
            ),
            DEFAULT_TIMEOUT,
        )
        .await?;
        let state = r.stdout.first().cloned().unwrap_or_default();
        if state == "no-init" {
            out.push(skip(
                "running",
                want,
                "no service manager runs in the test instance (a container runs no init)",
            ));
        } else {
            let active = state == "active";
            out.push(check("running", want, state, active == want));
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
struct PortTest {
    port: u16,
    protocol: Option<String>,
    listening: Option<bool>,
}

async fn port(
    s: Result<PortTest, String>,
    comm: &dyn Communicator,
) -> Result<Vec<CheckResult>, String> {
    let s = s?;
    let udp = s.protocol.as_deref() == Some("udp");
    let files = if udp {
        ["/proc/net/udp", "/proc/net/udp6"]
    } else {
        ["/proc/net/tcp", "/proc/net/tcp6"]
    };
    let mut text = String::new();
    let mut read_any = false;
    for f in files {
        if let Some(t) = read_text(comm, f).await? {
            read_any = true;
            text.push_str(&t);
            text.push('\n');
        }
    }
    let want = s.listening.unwrap_or(true);
    if !read_any {
        return Ok(vec![check(
            "listening",
            want,
            format!("cannot read {}", files.join(", ")),
            false,
        )]);
    }
    let on = parse::listening(&text, s.port, udp);
    let observed = if on.is_empty() {
        "not listening".to_string()
    } else {
        format!("listening on {}", on.join(", "))
    };
    Ok(vec![check(
        "listening",
        want,
        observed,
        on.is_empty() != want,
    )])
}

#[derive(Deserialize)]
struct UserTest {
    name: String,
    exists: Option<bool>,
    uid: Option<u64>,
    gid: Option<u64>,
    home: Option<String>,
    shell: Option<String>,
    groups: Option<Vec<String>>,
}

async fn user(
    s: Result<UserTest, String>,
    comm: &dyn Communicator,
) -> Result<Vec<CheckResult>, String> {
    let s = s?;
    let passwd = read_text(comm, "/etc/passwd").await?.unwrap_or_default();
    let entry = parse::passwd_entry(&passwd, &s.name);
    let want = s.exists.unwrap_or(true);
    let mut out = vec![check(
        "exists",
        want,
        entry.is_some(),
        entry.is_some() == want,
    )];
    let Some(e) = entry else { return Ok(out) };
    if let Some(u) = s.uid {
        out.push(check("uid", u, e.uid, u == e.uid));
    }
    if let Some(g) = s.gid {
        out.push(check("gid", g, e.gid, g == e.gid));
    }
    if let Some(h) = &s.home {
        out.push(check("home", h, &e.home, *h == e.home));
    }
    if let Some(sh) = &s.shell {
        out.push(check("shell", sh, &e.shell, *sh == e.shell));
    }
    if let Some(want) = &s.groups {
        let group = read_text(comm, "/etc/group").await?.unwrap_or_default();
        let have = parse::groups_of(&group, &e.name, e.gid);
        let missing: Vec<&String> = want.iter().filter(|g| !have.contains(g)).collect();
        out.push(check(
            "groups",
            want.join(","),
            have.join(","),
            missing.is_empty(),
        ));
    }
    Ok(out)
}

#[derive(Deserialize)]
struct GroupTest {
    name: String,
    exists: Option<bool>,
    gid: Option<u64>,
}

async fn group(
    s: Result<GroupTest, String>,
    comm: &dyn Communicator,
) -> Result<Vec<CheckResult>, String> {
    let s = s?;
    let group = read_text(comm, "/etc/group").await?.unwrap_or_default();
    let entry = parse::group_entry(&group, &s.name);
    let want = s.exists.unwrap_or(true);
    let mut out = vec![check(
        "exists",
        want,
        entry.is_some(),
        entry.is_some() == want,
    )];
    if let (Some(g), Some((gid, _))) = (s.gid, entry) {
        out.push(check("gid", g, gid, g == gid));
    }
    Ok(out)
}

#[derive(Deserialize)]
struct KernelParamTest {
    key: String,
    value: String,
}

async fn kernel_param(
    s: Result<KernelParamTest, String>,
    comm: &dyn Communicator,
) -> Result<Vec<CheckResult>, String> {
    let s = s?;
    if s.key.split('.').any(|p| p.is_empty() || p == "..") || s.key.contains('/') {
        return Err(format!(
            "`{}` is not a sysctl key such as `net.ipv4.ip_forward`",
            s.key
        ));
    }
    let path = format!("/proc/sys/{}", s.key.replace('.', "/"));
    let norm = |v: &str| v.split_whitespace().collect::<Vec<_>>().join(" ");
    Ok(vec![match read_text(comm, &path).await? {
        Some(v) => check("value", &s.value, norm(&v), norm(&v) == norm(&s.value)),
        None => skip(
            "value",
            &s.value,
            format!("`{path}` is not readable in the test instance"),
        ),
    }])
}

#[derive(Deserialize)]
struct CommandTest {
    run: String,
    exit_status: Option<i32>,
    #[serde(default)]
    stdout_contains: Vec<String>,
    stdout_matches: Option<String>,
    #[serde(default)]
    stderr_contains: Vec<String>,
    timeout: Option<String>,
}

async fn command(
    s: Result<CommandTest, String>,
    comm: &dyn Communicator,
) -> Result<Vec<CheckResult>, String> {
    let s = s?;
    let re = match &s.stdout_matches {
        Some(p) => Some(regex::Regex::new(p).map_err(|e| format!("`stdout_matches` `{p}`: {e}"))?),
        None => None,
    };
    let r = sh(comm, &s.run, timeout_of(&s.timeout)).await?;
    let want = s.exit_status.unwrap_or(0);
    let stdout = r.stdout.join("\n");
    let stderr = r.stderr.join("\n");
    let mut out = vec![check("exit_status", want, r.code, r.code == want)];
    let shown = |t: &str| {
        let t: String = t.chars().take(200).collect();
        format!("`{t}`")
    };
    for c in &s.stdout_contains {
        out.push(check(
            "stdout_contains",
            format!("`{c}`"),
            shown(&stdout),
            stdout.contains(c.as_str()),
        ));
    }
    if let Some(re) = re {
        out.push(check(
            "stdout_matches",
            format!("/{}/", re.as_str()),
            shown(&stdout),
            re.is_match(&stdout),
        ));
    }
    for c in &s.stderr_contains {
        out.push(check(
            "stderr_contains",
            format!("`{c}`"),
            shown(&stderr),
            stderr.contains(c.as_str()),
        ));
    }
    Ok(out)
}

#[derive(Deserialize)]
struct HttpTest {
    url: String,
    status: Option<u16>,
    timeout: Option<String>,
}

async fn http(
    s: Result<HttpTest, String>,
    comm: &dyn Communicator,
) -> Result<Vec<CheckResult>, String> {
    let s = s?;
    let want = s.status.unwrap_or(200);
    let t = timeout_of(&s.timeout);
    let u = sh_quote(&s.url);
    let secs = t.as_secs().max(1);
    // Whatever client the image has: curl, else (busybox) wget's headers.
    let script = format!(
        "if command -v curl >/dev/null 2>&1; then curl -s -o /dev/null -w '%{{http_code}}\\n' --max-time {secs} {u}; elif command -v wget >/dev/null 2>&1; then wget -S -q -O /dev/null -T {secs} {u} 2>&1 | sed -n 's/^ *HTTP\\/[0-9.]* \\([0-9][0-9][0-9]\\).*/\\1/p' | tail -n 1; else echo no-client; fi"
    );
    let r = sh(comm, &script, t + Duration::from_secs(5)).await?;
    let got = r.stdout.last().cloned().unwrap_or_default();
    if got == "no-client" {
        return Ok(vec![skip(
            "status",
            want,
            "not supported yet without an HTTP client (curl or wget) in the image",
        )]);
    }
    let observed = if got.is_empty() || got == "000" {
        "no response".to_string()
    } else {
        got.clone()
    };
    Ok(vec![check(
        "status",
        want,
        observed,
        got == want.to_string(),
    )])
}

#[derive(Deserialize)]
struct ShellTest {
    inline: Vec<String>,
    timeout: Option<String>,
}

async fn shell(
    s: Result<ShellTest, String>,
    comm: &dyn Communicator,
) -> Result<Vec<CheckResult>, String> {
    let s = s?;
    let r = sh(comm, &s.inline.join("\n"), timeout_of(&s.timeout)).await?;
    let observed = format!(
        "exit {}{}",
        r.code,
        last_lines(r.stdout.iter().chain(&r.stderr))
    );
    Ok(vec![check("exit_status", 0, observed, r.code == 0)])
}

/// `: a | b | c`, the last three of `lines`, or nothing: what a failed
/// command showed, in one line.
pub(super) fn last_lines<'a>(lines: impl DoubleEndedIterator<Item = &'a String>) -> String {
    let mut tail: Vec<&String> = lines.rev().take(3).collect();
    if tail.is_empty() {
        return String::new();
    }
    tail.reverse();
    format!(
        ": {}",
        tail.into_iter().cloned().collect::<Vec<_>>().join(" | ")
    )
}

#[cfg(test)]
mod tests {
    //! Each check evaluated for real through the local communicator, on
    //! files and commands of the host (the same reads an instance gets).
    use super::*;
    use crate::communicator::local::LocalCommunicator;
    use crate::job::{Journal, Reapers, Undo};

    fn plan(kind: &str, fields: &[(&str, Value)]) -> TestPlan {
        TestPlan {
            kind: kind.into(),
            index: 1,
            config: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            at: "t.toml:1:1".into(),
            inline_at: vec![],
        }
    }

    fn s(v: &str) -> Value {
        Value::Str(v.into())
    }

    fn list(v: &[&str]) -> Value {
        Value::List(v.iter().map(|x| s(x)).collect())
    }

    async fn outcomes(t: &TestPlan, dir: &Path) -> Vec<(String, Outcome, String)> {
        let undo = Undo::new(Journal::new(dir), Reapers::default(), "b", "j");
        // Relative paths resolve in `dir` (the local communicator copies
        // files out of its workspace only).
        let comm = LocalCommunicator::new(dir.into(), dir.join("scripts"), undo.clone());
        let scratch = dir.join("scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        let (_, checks) = run(t, &comm, &scratch, dir).await;
        undo.unwind().await;
        checks
            .into_iter()
            .map(|c| (c.property, c.outcome, c.observed))
            .collect()
    }

    #[tokio::test]
    async fn file_checks_report_what_they_observe() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("motd");
        std::fs::write(&f, "hello world\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"hello world\n"));
        let t = plan(
            "file",
            &[
                ("path", s("motd")),
                ("mode", s("0600")),
                ("contains", list(&["world", "nope"])),
                ("sha256", s(&sha)),
            ],
        );
        let got = outcomes(&t, tmp.path()).await;
        let find = |p: &str, o: &str| {
            got.iter()
                .find(|(prop, _, obs)| prop == p && (o.is_empty() || obs == o))
                .map(|(_, out, _)| *out)
        };
        assert_eq!(find("exists", "true"), Some(Outcome::Pass), "{got:?}");
        assert_eq!(find("mode", "0640"), Some(Outcome::Fail), "{got:?}");
        assert_eq!(find("contains", "found"), Some(Outcome::Pass), "{got:?}");
        assert_eq!(
            find("contains", "not found"),
            Some(Outcome::Fail),
            "{got:?}"
        );
        assert_eq!(find("sha256", &sha), Some(Outcome::Pass), "{got:?}");
        let t = plan(
            "file",
            &[("path", s("absent")), ("exists", Value::Bool(false))],
        );
        let got = outcomes(&t, tmp.path()).await;
        assert_eq!(got, vec![("exists".into(), Outcome::Pass, "false".into())]);
    }

    #[tokio::test]
    async fn commands_and_shell_tests_compare_exit_and_output() {
        let tmp = tempfile::tempdir().unwrap();
        let t = plan(
            "command",
            &[
                ("run", s("echo 42; echo oops >&2; exit 3")),
                ("exit_status", Value::Num(3.0)),
                ("stdout_matches", s("^42$")),
                ("stdout_contains", list(&["43"])),
                ("stderr_contains", list(&["oops"])),
            ],
        );
        let got = outcomes(&t, tmp.path()).await;
        let by = |p: &str| got.iter().find(|(x, _, _)| x == p).unwrap().1;
        assert_eq!(by("exit_status"), Outcome::Pass, "{got:?}");
        assert_eq!(by("stdout_matches"), Outcome::Pass, "{got:?}");
        assert_eq!(by("stdout_contains"), Outcome::Fail, "{got:?}");
        assert_eq!(by("stderr_contains"), Outcome::Pass, "{got:?}");
        let t = plan("shell", &[("inline", list(&["echo checking", "false"]))]);
        let got = outcomes(&t, tmp.path()).await;
        assert_eq!(got[0].1, Outcome::Fail);
        assert!(got[0].2.starts_with("exit 1: checking"), "{got:?}");
        // A bad regex is the template's error, named with its value.
        let t = plan("command", &[("run", s("true")), ("stdout_matches", s("("))]);
        let got = outcomes(&t, tmp.path()).await;
        assert_eq!(got[0].1, Outcome::Fail);
        assert!(got[0].2.contains("`(`"), "{got:?}");
    }

    #[tokio::test]
    async fn users_and_kernel_params_are_read_from_the_instance() {
        let tmp = tempfile::tempdir().unwrap();
        let t = plan("user", &[("name", s("root")), ("uid", Value::Num(0.0))]);
        let got = outcomes(&t, tmp.path()).await;
        assert!(got.iter().all(|(_, o, _)| *o == Outcome::Pass), "{got:?}");
        let t = plan("user", &[("name", s("no-such-user-4711"))]);
        assert_eq!(outcomes(&t, tmp.path()).await[0].1, Outcome::Fail);
        let t = plan(
            "kernel_param",
            &[("key", s("../etc/passwd")), ("value", s("x"))],
        );
        let got = outcomes(&t, tmp.path()).await;
        assert_eq!(got[0].1, Outcome::Fail);
        assert!(got[0].2.contains("not a sysctl key"), "{got:?}");
    }

    /// A text file larger than the limit, and one that never ends
    /// (`/dev/zero`: no newline either), are refused naming the path and
    /// the limit; nothing is held past it. One at the limit is read.
    #[tokio::test]
    async fn text_reads_are_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let undo = Undo::new(Journal::new(dir), Reapers::default(), "b", "j");
        let comm = LocalCommunicator::new(dir.into(), dir.join("scripts"), undo);
        let at = dir.join("at");
        std::fs::write(&at, "x".repeat(4095) + "\n").unwrap();
        let got = read_text_capped(&comm, at.to_str().unwrap(), 4096).await;
        assert_eq!(got.unwrap().unwrap(), "x".repeat(4095));
        let over = dir.join("over");
        std::fs::write(&over, "y\n".repeat(4096)).unwrap();
        for path in [over.to_str().unwrap(), "/dev/zero"] {
            let e = read_text_capped(&comm, path, 4096).await.unwrap_err();
            assert!(
                e.contains(&format!("`{path}`")) && e.contains("4096 bytes"),
                "{e}"
            );
        }
        assert_eq!(
            read_text_capped(&comm, dir.join("none").to_str().unwrap(), 10)
                .await
                .unwrap(),
            None
        );
    }
}
