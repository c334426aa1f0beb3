//! Support for the AMI tests: a real moto server per test ([`Moto`]), AWS
//! SDK clients pointed at it with static test credentials, small queries of
//! moto's state, and [`FaultProxy`], which sits in front of moto and answers
//! a seeded share of requests with throttling and server errors, the way a
//! busy AWS region does (and, when told, `GetConsoleOutput` with a given
//! console text).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// The region the tests use; moto accepts any.
pub const REGION: &str = "us-east-1";

/// An image in moto's default list (owner `amazon`); the only one whose name
/// matches [`SOURCE_NAME`].
pub const SOURCE_AMI: &str = "ami-785db401";
/// A name pattern that matches exactly one `amazon` image in moto: [`SOURCE_AMI`].
pub const SOURCE_NAME: &str = "ubuntu/images/hvm-ssd/ubuntu-xenial-16.04-amd64-server-*";

/// A moto server (`moto_server`, PyPI `moto[server]`) on a free loopback
/// port, with its own empty state. Killed, with its whole process group, on
/// drop.
pub struct Moto {
    addr: String,
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Moto {
    /// Starts moto and waits until it answers HTTP. `None` (the test skips)
    /// when `moto_server` is missing, except in CI, where that fails.
    pub fn start() -> Option<Moto> {
        Moto::start_program(Command::new("moto_server"), &[])
    }

    /// [`Moto::start`] with moto settings in its environment (e.g.
    /// `MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION`).
    pub fn start_with(env: &[(&str, &str)]) -> Option<Moto> {
        Moto::start_program(Command::new("moto_server"), env)
    }

    /// [`Moto::start`] with moto's recorder on: every request, body
    /// included, is kept (see [`Moto::recorded`]).
    pub fn start_recording() -> Option<Moto> {
        let mut c = Command::new("moto_server");
        // The file is named by `start_program`, in moto's own folder.
        c.env("MOTO_ENABLE_RECORDING", "True");
        Moto::start_program(c, &[])
    }

    /// moto with a test double of the SSM agent of a rebooting instance
    /// (`tests/fixtures/moto-ssm-agent.py`, which says what it models),
    /// logging what ran to `agent_log`.
    pub fn start_with_ssm_agent(agent_log: &std::path::Path) -> Option<Moto> {
        if !crate::require("AMI", &["moto_server", "python3"], false) {
            return None;
        }
        let mut c = Command::new("python3");
        c.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/moto-ssm-agent.py"
        ))
        .env("KILN_FAKE_AGENT_LOG", agent_log);
        Moto::start_program(c, &[])
    }

    fn start_program(mut program: Command, env: &[(&str, &str)]) -> Option<Moto> {
        if !crate::require("AMI", &["moto_server"], false) {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("kiln-moto-")
            .tempdir()
            .unwrap();
        let log = dir.path().join("moto.log");
        let addr = crate::free_addr();
        let port = addr.rsplit(':').next().unwrap().to_string();
        // moto logs every request on stderr: a file, never a pipe nobody reads.
        let out = std::fs::File::create(&log).unwrap();
        let child = program
            .env("MOTO_RECORDER_FILEPATH", dir.path().join("recording.jsonl"))
            .args(["-H", "127.0.0.1", "-p", &port])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .expect("spawn moto_server");
        let mut moto = Moto {
            addr,
            child: Some(child),
            log,
            _dir: dir,
        };
        moto.wait_ready();
        Some(moto)
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if http_get(&self.addr, "/moto-api/").is_some_and(|r| r.starts_with("HTTP/1.")) {
                return;
            }
            let exited = self.child.as_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none() && start.elapsed() < Duration::from_secs(60),
                "moto_server did not start on {} ({}):\n{}",
                self.addr,
                exited.map_or("still starting after 60 s".into(), |s| s.to_string()),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:PORT`, for `endpoint_url` and kiln's `endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The server's process id (also its process group id).
    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Every request moto received since it started (with
    /// [`Moto::start_recording`]): each as its URL and its body, decoded,
    /// one after the other. Search it for what must never reach AWS.
    pub fn recorded(&self) -> String {
        use base64::Engine as _;
        let path = self._dir.path().join("recording.jsonl");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut out = String::new();
        for line in text.lines() {
            let entry: serde_json::Value = serde_json::from_str(line).unwrap();
            let body = entry["body"].as_str().unwrap_or_default();
            let body = if entry["body_encoded"] == true {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(body)
                    .unwrap();
                String::from_utf8_lossy(&raw).into_owned()
            } else {
                body.to_string()
            };
            out.push_str(entry["url"].as_str().unwrap_or_default());
            out.push('\n');
            out.push_str(&body);
            out.push('\n');
        }
        out
    }

    /// What moto printed so far (one line per request), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = Pid::from_raw(child.id() as i32);
        let _ = killpg(group, Signal::SIGTERM);
        // Werkzeug exits on SIGTERM at once; a stuck one gets SIGKILL.
        let start = Instant::now();
        while child.try_wait().ok().flatten().is_none() {
            if start.elapsed() > Duration::from_secs(5) {
                let _ = killpg(group, Signal::SIGKILL);
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Anything else moto started in its group goes too.
        let _ = killpg(group, Signal::SIGKILL);
    }
}

/// One `GET` with `Connection: close`; the raw response, or `None` when
/// nothing answers.
fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

// ---------------------------------------------------------------------------
// SDK clients

fn credentials() -> Credentials {
    Credentials::new("test", "test", None, None, "kiln-tests")
}

/// An EC2 client for `endpoint` with the SDK's standard retries.
pub fn ec2(endpoint: &str, region: &str) -> aws_sdk_ec2::Client {
    ec2_with(endpoint, region, RetryConfig::standard())
}

/// An EC2 client for `endpoint`. Built from the service config alone, so
/// nothing comes from the environment (`AWS_*`, `~/.aws`, IMDS); the behavior
/// version must be set explicitly (the service crates are built without
/// their `behavior-version-latest` feature).
pub fn ec2_with(endpoint: &str, region: &str, retry: RetryConfig) -> aws_sdk_ec2::Client {
    let conf = aws_sdk_ec2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(region.to_string()))
        .credentials_provider(credentials())
        .retry_config(retry)
        .build();
    aws_sdk_ec2::Client::from_conf(conf)
}

/// An SSM client for `endpoint` with the SDK's standard retries.
pub fn ssm(endpoint: &str, region: &str) -> aws_sdk_ssm::Client {
    ssm_with(endpoint, region, RetryConfig::standard())
}

/// An SSM client for `endpoint`; see [`ec2_with`].
pub fn ssm_with(endpoint: &str, region: &str, retry: RetryConfig) -> aws_sdk_ssm::Client {
    let conf = aws_sdk_ssm::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(region.to_string()))
        .credentials_provider(credentials())
        .retry_config(retry)
        .build();
    aws_sdk_ssm::Client::from_conf(conf)
}

// ---------------------------------------------------------------------------
// What moto holds

/// Ids of every instance that is not terminated or shutting down.
pub async fn live_instances(ec2: &aws_sdk_ec2::Client) -> Vec<String> {
    use aws_sdk_ec2::types::InstanceStateName as S;
    let out = ec2
        .describe_instances()
        .send()
        .await
        .expect("DescribeInstances");
    let mut ids: Vec<String> = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter(|i| {
            !matches!(
                i.state().and_then(|s| s.name()),
                Some(S::Terminated | S::ShuttingDown)
            )
        })
        .filter_map(|i| i.instance_id().map(String::from))
        .collect();
    ids.sort();
    ids
}

/// `(id, name)` of every security group except the VPCs' `default` ones.
pub async fn security_groups(ec2: &aws_sdk_ec2::Client) -> Vec<(String, String)> {
    let out = ec2
        .describe_security_groups()
        .send()
        .await
        .expect("DescribeSecurityGroups");
    let mut groups: Vec<(String, String)> = out
        .security_groups()
        .iter()
        .filter(|g| g.group_name() != Some("default"))
        .map(|g| {
            (
                g.group_id().unwrap_or_default().to_string(),
                g.group_name().unwrap_or_default().to_string(),
            )
        })
        .collect();
    groups.sort();
    groups
}

/// An AMI registered by the tests' account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnImage {
    pub id: String,
    pub name: String,
    /// `available`, `pending`, `failed`, ...
    pub state: String,
    pub tags: BTreeMap<String, String>,
}

/// Every image owned by `self`, sorted by name.
pub async fn own_images(ec2: &aws_sdk_ec2::Client) -> Vec<OwnImage> {
    let out = ec2
        .describe_images()
        .owners("self")
        .send()
        .await
        .expect("DescribeImages");
    let mut images: Vec<OwnImage> = out
        .images()
        .iter()
        .map(|i| OwnImage {
            id: i.image_id().unwrap_or_default().to_string(),
            name: i.name().unwrap_or_default().to_string(),
            state: i
                .state()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            tags: i
                .tags()
                .iter()
                .map(|t| {
                    (
                        t.key().unwrap_or_default().to_string(),
                        t.value().unwrap_or_default().to_string(),
                    )
                })
                .collect(),
        })
        .collect();
    images.sort_by(|a, b| a.name.cmp(&b.name));
    images
}

/// The (decrypted) value of parameter `name`, or `None` when there is none.
pub async fn parameter(ssm: &aws_sdk_ssm::Client, name: &str) -> Option<String> {
    match ssm
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
    {
        Ok(out) => out.parameter().and_then(|p| p.value()).map(String::from),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_parameter_not_found()) =>
        {
            None
        }
        Err(e) => panic!("GetParameter {name}: {e:?}"),
    }
}

/// Every command sent with SSM `SendCommand`, oldest first, each as JSON
/// text: `{"document": …, "comment": …, "parameters": {name: [values]}}`.
/// Search it to prove a secret never reached SSM's command history.
pub async fn command_history(ssm: &aws_sdk_ssm::Client) -> Vec<String> {
    let out = ssm.list_commands().send().await.expect("ListCommands");
    let mut commands: Vec<_> = out.commands().to_vec();
    commands.sort_by_key(|c| c.requested_date_time().map(|t| t.as_nanos()));
    commands
        .iter()
        .map(|c| {
            let parameters: BTreeMap<&String, &Vec<String>> =
                c.parameters().into_iter().flatten().collect();
            serde_json::json!({
                "document": c.document_name(),
                "comment": c.comment(),
                "parameters": parameters,
            })
            .to_string()
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Fault injection

/// An HTTP/1.1 proxy on a free loopback port in front of moto. Each request
/// is read whole; with probability `p` (seeded, so a run repeats) it is
/// answered with an error and never forwarded, alternating a throttling
/// error and a server error, shaped as EC2 (query/XML) or SSM (JSON 1.1)
/// sends them so the SDK retries them. Otherwise it goes to moto on a fresh
/// connection. Every answer carries `Connection: close`. Stopped on drop.
pub struct FaultProxy {
    addr: String,
    shared: Arc<ProxyState>,
    accept: Option<JoinHandle<()>>,
}

struct ProxyState {
    upstream: String,
    /// `f64` bits of the fault probability.
    p: AtomicU64,
    rng: Mutex<u64>,
    requests: AtomicUsize,
    faults: AtomicUsize,
    stop: AtomicBool,
    /// Milliseconds every answer is held back (a slow endpoint).
    delay_ms: AtomicU64,
    /// What `GetConsoleOutput` answers instead of moto's canned text.
    console: Mutex<Option<String>>,
    /// Every request body, in arrival order (what kiln sent).
    bodies: Mutex<Vec<String>>,
    /// Scripted refusals: requests whose body holds all of `.0` get the
    /// EC2 error `.1` with message `.2` instead of reaching moto.
    refusals: Mutex<Vec<(Vec<String>, String, String)>>,
}

impl FaultProxy {
    /// A proxy to `upstream` (`http://HOST:PORT`, e.g. [`Moto::endpoint`])
    /// failing a share `p` (0.0 to 1.0) of requests, chosen by a PRNG seeded
    /// with `seed`.
    pub fn start(upstream: &str, p: f64, seed: u64) -> FaultProxy {
        let upstream = upstream
            .strip_prefix("http://")
            .expect("upstream is http://HOST:PORT")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let shared = Arc::new(ProxyState {
            upstream,
            p: AtomicU64::new(p.to_bits()),
            rng: Mutex::new(seed),
            requests: AtomicUsize::new(0),
            faults: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            console: Mutex::new(None),
            bodies: Mutex::new(vec![]),
            refusals: Mutex::new(vec![]),
        });
        let state = shared.clone();
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if state.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let state = state.clone();
                std::thread::spawn(move || {
                    let _ = state.serve(conn);
                });
            }
        });
        FaultProxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:PORT`: give this to the client instead of moto's.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes the fault probability from now on.
    pub fn set_probability(&self, p: f64) {
        self.shared.p.store(p.to_bits(), Ordering::SeqCst);
    }

    /// Holds every answer back by `d` from now on (a slow endpoint, so a
    /// test can catch a build in the middle).
    pub fn set_delay(&self, d: Duration) {
        self.shared
            .delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// From now on `GetConsoleOutput` answers `text` (what an instance's
    /// serial console shows; moto's is a fixed kernel log), as EC2 does:
    /// base64 in the `output` element.
    pub fn set_console_output(&self, text: &str) {
        *self.shared.console.lock().unwrap() = Some(text.to_string());
    }

    /// Requests received (faulted or forwarded).
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Requests answered with an injected error.
    pub fn faults(&self) -> usize {
        self.shared.faults.load(Ordering::SeqCst)
    }

    /// The EC2 (query protocol) calls of `action` kiln sent, each as its
    /// decoded parameters — how a test checks what moto ignores.
    pub fn sent(&self, action: &str) -> Vec<BTreeMap<String, String>> {
        self.shared
            .bodies
            .lock()
            .unwrap()
            .iter()
            .map(|b| query_params(b))
            .filter(|p| p.get("Action").map(String::as_str) == Some(action))
            .collect()
    }

    /// From now on, an EC2 request whose (form-encoded) body holds every
    /// one of `when` is answered with the EC2 error `code` (HTTP 400, which
    /// the SDK does not retry) and never reaches moto: a test double for
    /// the answers moto never gives (no spot capacity, for one).
    pub fn refuse(&self, when: &[&str], code: &str, message: &str) {
        self.shared.refusals.lock().unwrap().push((
            when.iter().map(|s| s.to_string()).collect(),
            code.to_string(),
            message.to_string(),
        ));
    }
}

/// `a=1&b=x%20y` as a map.
pub fn query_params(body: &str) -> BTreeMap<String, String> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// A request as read off the wire.
struct Request {
    line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// SSM and the other JSON-protocol services; EC2 speaks the query protocol.
    fn is_json(&self) -> bool {
        self.header("x-amz-target").is_some()
            || self
                .header("content-type")
                .is_some_and(|c| c.contains("amz-json"))
    }
}

impl ProxyState {
    fn serve(&self, mut conn: TcpStream) -> std::io::Result<()> {
        conn.set_read_timeout(Some(Duration::from_secs(30)))?;
        let Some(req) = read_request(&mut conn)? else {
            return Ok(());
        };
        self.requests.fetch_add(1, Ordering::SeqCst);
        let body = String::from_utf8_lossy(&req.body).into_owned();
        self.bodies.lock().unwrap().push(body.clone());
        std::thread::sleep(Duration::from_millis(self.delay_ms.load(Ordering::SeqCst)));
        let refusal = self
            .refusals
            .lock()
            .unwrap()
            .iter()
            .find(|(when, _, _)| when.iter().all(|w| body.contains(w.as_str())))
            .map(|(_, code, message)| (code.clone(), message.clone()));
        let console = self.console.lock().unwrap().clone();
        let asks_console = body.contains("Action=GetConsoleOutput");
        let response = if let Some(text) = console.filter(|_| asks_console) {
            console_response(&text)
        } else if let Some((code, message)) = refusal {
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>kiln-refusal</RequestID></Response>"
            );
            response(
                400,
                "Bad Request",
                &[("Content-Type", "text/xml;charset=UTF-8")],
                body.as_bytes(),
            )
        } else if self.roll() {
            let n = self.faults.fetch_add(1, Ordering::SeqCst);
            fault_response(&req, n)
        } else {
            self.forward(&req)
                .unwrap_or_else(|e| plain(502, "Bad Gateway", &format!("proxy upstream: {e}")))
        };
        conn.write_all(&response)?;
        conn.flush()?;
        conn.shutdown(Shutdown::Write)
    }

    /// True when this request gets a fault.
    fn roll(&self) -> bool {
        let p = f64::from_bits(self.p.load(Ordering::SeqCst));
        let mut state = self.rng.lock().unwrap();
        // splitmix64: small, seedable, good enough to spread faults.
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    fn forward(&self, req: &Request) -> std::io::Result<Vec<u8>> {
        let mut up = TcpStream::connect(&self.upstream)?;
        up.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut head = format!("{}\r\n", req.line);
        for (k, v) in &req.headers {
            if !is_hop_by_hop(k) {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        head.push_str("Connection: close\r\n\r\n");
        up.write_all(head.as_bytes())?;
        up.write_all(&req.body)?;
        let mut raw = Vec::new();
        up.read_to_end(&mut raw)?;
        Ok(with_connection_close(&raw))
    }
}

fn is_hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// Reads one request (head and `Content-Length` body); `None` on a
/// connection closed before a request line (the drop wake-up, a probe).
fn read_request(conn: &mut TcpStream) -> std::io::Result<Option<Request>> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let line = line.trim_end().to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim_end().is_empty() {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut req = Request {
        line,
        headers,
        body: Vec::new(),
    };
    if req
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        return Err(std::io::Error::other(
            "FaultProxy reads Content-Length bodies only, not chunked ones",
        ));
    }
    let len: usize = req
        .header("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    if req
        .header("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    req.body.resize(len, 0);
    reader.read_exact(&mut req.body)?;
    Ok(Some(req))
}

/// Fault `n` (0-based): even ones throttle, odd ones are server errors.
fn fault_response(req: &Request, n: usize) -> Vec<u8> {
    let id = format!("kiln-fault-{n}");
    let throttle = n.is_multiple_of(2);
    if req.is_json() {
        let (status, reason, body) = if throttle {
            (
                400,
                "Bad Request",
                r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
            )
        } else {
            (
                500,
                "Internal Server Error",
                r#"{"__type":"InternalServerError","message":"Internal server error (injected)"}"#,
            )
        };
        response(
            status,
            reason,
            &[
                ("Content-Type", "application/x-amz-json-1.1"),
                ("x-amzn-RequestId", &id),
            ],
            body.as_bytes(),
        )
    } else {
        let (status, reason, code, message) = if throttle {
            (
                503,
                "Service Unavailable",
                "RequestLimitExceeded",
                "Request limit exceeded.",
            )
        } else {
            (
                500,
                "Internal Server Error",
                "InternalError",
                "An internal error has occurred (injected).",
            )
        };
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>{id}</RequestID></Response>"
        );
        response(
            status,
            reason,
            &[("Content-Type", "text/xml;charset=UTF-8")],
            body.as_bytes(),
        )
    }
}

/// An EC2 `GetConsoleOutput` answer carrying `text`.
fn console_response(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<GetConsoleOutputResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>kiln-test-console</requestId><timestamp>2026-01-01T00:00:00.000Z</timestamp><output>{}</output></GetConsoleOutputResponse>",
        base64::engine::general_purpose::STANDARD.encode(text)
    );
    response(200, "OK", &[("Content-Type", "text/xml")], body.as_bytes())
}

fn plain(status: u16, reason: &str, text: &str) -> Vec<u8> {
    response(
        status,
        reason,
        &[("Content-Type", "text/plain")],
        text.as_bytes(),
    )
}

fn response(status: u16, reason: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// `raw` (a whole upstream response) with its connection headers replaced
/// by `Connection: close`.
fn with_connection_close(raw: &[u8]) -> Vec<u8> {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return raw.to_vec();
    };
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut out = String::new();
    for (i, line) in head.split("\r\n").enumerate() {
        let name = line.split(':').next().unwrap_or("");
        if i > 0 && is_hop_by_hop(name.trim()) {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(&raw[end + 4..]);
    out
}

// ---------------------------------------------------------------------------
// Tests of the support itself

use aws_sdk_ec2::error::ProvideErrorMetadata;

/// Retries fast: the tests prove the errors are retried, not how long the
/// SDK backs off.
fn patient(max_attempts: u32) -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(max_attempts)
        .with_initial_backoff(Duration::from_millis(10))
}

#[test]
fn moto_stops_with_its_process_group() {
    let Some(moto) = Moto::start() else { return };
    let (pid, addr) = (moto.pid(), moto.addr().to_string());
    assert!(http_get(&addr, "/moto-api/").is_some());
    drop(moto);
    assert!(
        killpg(Pid::from_raw(pid), None).is_err(),
        "moto's process group {pid} outlived Moto"
    );
    assert!(
        TcpStream::connect(&addr).is_err(),
        "something still listens on {addr}"
    );
}

#[tokio::test]
async fn helpers_see_what_was_done_in_moto() {
    use aws_sdk_ec2::types::{InstanceType, ResourceType, Tag, TagSpecification};
    let Some(moto) = Moto::start() else { return };
    let (ec2, ssm) = (ec2(&moto.endpoint(), REGION), ssm(&moto.endpoint(), REGION));
    assert_eq!(security_groups(&ec2).await, vec![], "fresh moto");
    assert!(own_images(&ec2).await.is_empty(), "fresh moto");

    let run = ec2
        .run_instances()
        .image_id(SOURCE_AMI)
        .instance_type(InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .expect("RunInstances");
    let id = run.instances()[0].instance_id().unwrap().to_string();
    assert_eq!(live_instances(&ec2).await, vec![id.clone()]);

    let sg = ec2
        .create_security_group()
        .group_name("kiln-test")
        .description("kiln test")
        .send()
        .await
        .expect("CreateSecurityGroup");
    assert_eq!(
        security_groups(&ec2).await,
        vec![(sg.group_id().unwrap().to_string(), "kiln-test".to_string())]
    );

    let tag = Tag::builder().key("kiln:build").value("b-1").build();
    let image = ec2
        .create_image()
        .instance_id(&id)
        .name("kiln-test-image")
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Image)
                .tags(tag)
                .build(),
        )
        .send()
        .await
        .expect("CreateImage");
    assert_eq!(
        own_images(&ec2).await,
        vec![OwnImage {
            id: image.image_id().unwrap().to_string(),
            name: "kiln-test-image".into(),
            state: "available".into(),
            tags: [("kiln:build".to_string(), "b-1".to_string())].into(),
        }]
    );

    ec2.terminate_instances()
        .instance_ids(&id)
        .send()
        .await
        .expect("TerminateInstances");
    assert_eq!(live_instances(&ec2).await, Vec::<String>::new());

    assert_eq!(parameter(&ssm, "/kiln/test/secret").await, None);
    ssm.put_parameter()
        .name("/kiln/test/secret")
        .value("hunter2")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .expect("PutParameter");
    assert_eq!(
        parameter(&ssm, "/kiln/test/secret").await.as_deref(),
        Some("hunter2")
    );

    ssm.send_command()
        .instance_ids(&id)
        .document_name("AWS-RunShellScript")
        .comment("kiln provision")
        .parameters("commands", vec!["echo provisioned".to_string()])
        .send()
        .await
        .expect("SendCommand");
    let history = command_history(&ssm).await;
    assert_eq!(history.len(), 1, "{history:?}");
    let cmd: serde_json::Value = serde_json::from_str(&history[0]).unwrap();
    assert_eq!(
        cmd,
        serde_json::json!({
            "document": "AWS-RunShellScript",
            "comment": "kiln provision",
            "parameters": {"commands": ["echo provisioned"]},
        })
    );
}

#[tokio::test]
async fn sdk_retries_through_injected_faults() {
    use aws_sdk_ec2::types::Filter;
    let Some(moto) = Moto::start() else { return };
    let proxy = FaultProxy::start(&moto.endpoint(), 0.2, 7);
    let ec2 = ec2_with(&proxy.endpoint(), REGION, patient(10));
    let ssm = ssm_with(&proxy.endpoint(), REGION, patient(10));
    ssm.put_parameter()
        .name("/kiln/test/p")
        .value("v")
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .send()
        .await
        .expect("PutParameter through the proxy");
    let calls = 1 + 60;
    for i in 0..60 {
        match i % 3 {
            0 => {
                let out = ec2
                    .describe_images()
                    .owners("amazon")
                    .filters(Filter::builder().name("name").values(SOURCE_NAME).build())
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("DescribeImages #{i}: {e:?}"));
                let ids: Vec<_> = out.images().iter().filter_map(|i| i.image_id()).collect();
                assert_eq!(ids, [SOURCE_AMI]);
            }
            1 => {
                let out = ec2
                    .describe_vpcs()
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("DescribeVpcs #{i}: {e:?}"));
                assert!(!out.vpcs().is_empty(), "moto has a default VPC");
            }
            _ => {
                let out = ssm
                    .get_parameter()
                    .name("/kiln/test/p")
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("GetParameter #{i}: {e:?}"));
                assert_eq!(out.parameter().and_then(|p| p.value()), Some("v"));
            }
        }
    }
    let faults = proxy.faults();
    assert!(faults > 0, "p = 0.2 over {calls} calls injected nothing");
    // Every call succeeded, so each fault cost exactly one extra attempt.
    assert_eq!(proxy.requests(), calls + faults);
}

#[tokio::test]
async fn injected_faults_are_throttling_and_server_errors() {
    let Some(moto) = Moto::start() else { return };
    let proxy = FaultProxy::start(&moto.endpoint(), 1.0, 1);
    let ec2 = ec2_with(&proxy.endpoint(), REGION, patient(1));
    let ssm = ssm_with(&proxy.endpoint(), REGION, patient(1));

    let mut codes = Vec::new();
    for _ in 0..2 {
        let e = ec2.describe_vpcs().send().await.unwrap_err();
        codes.push(e.code().map(String::from));
    }
    for _ in 0..2 {
        let e = ssm
            .put_parameter()
            .name("/kiln/test/never")
            .value("v")
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .send()
            .await
            .unwrap_err();
        codes.push(e.code().map(String::from));
    }
    assert_eq!(
        codes,
        [
            "RequestLimitExceeded",
            "InternalError",
            "ThrottlingException",
            "InternalServerError"
        ]
        .map(|c| Some(c.to_string()))
    );
    assert_eq!((proxy.requests(), proxy.faults()), (4, 4));

    // Both shapes are retryable: with 3 attempts, one call is 3 requests.
    let ec2 = ec2_with(&proxy.endpoint(), REGION, patient(3));
    let ssm = ssm_with(&proxy.endpoint(), REGION, patient(3));
    ec2.describe_vpcs().send().await.unwrap_err();
    assert_eq!(proxy.requests(), 7);
    ssm.get_parameter()
        .name("/kiln/test/never")
        .send()
        .await
        .unwrap_err();
    assert_eq!(proxy.requests(), 10);

    // A faulted request never reaches moto.
    let direct = self::ssm(&moto.endpoint(), REGION);
    assert_eq!(parameter(&direct, "/kiln/test/never").await, None);

    // Turned down to 0, the proxy forwards everything.
    proxy.set_probability(0.0);
    ec2.describe_vpcs()
        .send()
        .await
        .expect("DescribeVpcs at p = 0");
    assert_eq!((proxy.requests(), proxy.faults()), (11, 10));
}

#[tokio::test]
async fn shared_config_from_aws_config_reaches_moto_and_retries() {
    // The path a builder takes: `aws_config::defaults`, with the endpoint,
    // region and credentials set explicitly (they win over the environment).
    let Some(moto) = Moto::start() else { return };
    let proxy = FaultProxy::start(&moto.endpoint(), 1.0, 3);
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(proxy.endpoint())
        .region(Region::new(REGION))
        .credentials_provider(credentials())
        .retry_config(patient(3))
        .load()
        .await;
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let e = ec2.describe_vpcs().send().await.unwrap_err();
    assert_eq!(proxy.requests(), 3, "3 attempts: {e:?}");
    proxy.set_probability(0.0);
    let vpcs = ec2.describe_vpcs().send().await.expect("DescribeVpcs");
    assert!(!vpcs.vpcs().is_empty());
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    ssm.describe_parameters()
        .send()
        .await
        .expect("DescribeParameters");
    assert_eq!(proxy.requests(), 5);
}
