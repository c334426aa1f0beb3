//! Downloads of QEMU bases end to end: `kiln build --json` against an
//! HTTP server started by the test that cuts its first answer off
//! half-way, honours `Range` or ignores it, and against a kiln killed in
//! the middle of a download. The download resumes (or starts over), is
//! verified, reports progress as `download` events and lands in the cache
//! that `kiln cleanup --caches` empties. The guest is
//! a disk with no OS under real QEMU (TCG) that never answers SSH: the
//! build fails after the download, which is what is looked at.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::qemu::{assert_nothing_left, build, cache_entries, sha256, TmpfsDir};
use crate::Scratch;

/// One request the server saw: path, `Range` header, answer's status.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    path: String,
    range: Option<String>,
    status: u16,
}

/// How the server behaves.
#[derive(Clone, Copy)]
struct Behaviour {
    /// Honour `Range: bytes=N-` (206, or 416 past the end); else 200.
    ranges: bool,
    /// Close the connection after this many body bytes of the first
    /// answer for each file (its `Content-Length` promised them all).
    cut_first_at: Option<usize>,
    /// A pause after every 64 KiB, so the download takes long enough for
    /// progress reports.
    pause: Duration,
}

/// A small HTTP/1.1 file server, written here because no stock server
/// can be told to cut an answer off or to ignore `Range`
/// (`python3 -m http.server` has no `Range` at all). One connection per
/// request (`Connection: close`); stopped when dropped.
struct RangeServer {
    addr: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl RangeServer {
    fn start(files: HashMap<String, Vec<u8>>, how: Behaviour) -> RangeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(vec![]));
        let stop = Arc::new(AtomicBool::new(false));
        let files = Arc::new(files);
        let (seen2, stop2) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (files, seen) = (files.clone(), seen2.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &files, &seen, how);
                });
            }
        });
        RangeServer { addr, seen, stop }
    }

    fn seen(&self, path: &str) -> Vec<Seen> {
        let all = self.seen.lock().unwrap();
        all.iter().filter(|s| s.path == path).cloned().collect()
    }
}

impl Drop for RangeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

fn serve(
    mut conn: TcpStream,
    files: &HashMap<String, Vec<u8>>,
    seen: &Mutex<Vec<Seen>>,
    how: Behaviour,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    let Some(data) = files.get(&path) else {
        seen.lock().unwrap().push(Seen {
            path,
            range,
            status: 404,
        });
        return conn.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    };
    let first = !seen.lock().unwrap().iter().any(|s| s.path == path);
    let from = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|_| how.ranges);
    let len = data.len();
    let (status, head, body) = match from {
        Some(n) if n >= len => (
            416,
            format!("HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\n"),
            &data[..0],
        ),
        Some(n) => (
            206,
            format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {n}-{}/{len}\r\nContent-Length: {}\r\n",
                len - 1,
                len - n
            ),
            &data[n..],
        ),
        None => (
            200,
            format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nAccept-Ranges: {}\r\n", if how.ranges { "bytes" } else { "none" }),
            &data[..],
        ),
    };
    seen.lock().unwrap().push(Seen {
        path,
        range,
        status,
    });
    conn.write_all(format!("{head}Connection: close\r\n\r\n").as_bytes())?;
    let cut = how.cut_first_at.filter(|_| first).unwrap_or(usize::MAX);
    let body = &body[..body.len().min(cut)];
    for chunk in body.chunks(64 << 10) {
        conn.write_all(chunk)?;
        std::thread::sleep(how.pause);
    }
    conn.flush()?;
    // Dropping the connection here ends a cut answer early.
    let mut rest = vec![];
    let _ = conn.shutdown(std::net::Shutdown::Write);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = conn.read_to_end(&mut rest);
    Ok(())
}

/// A 4 MiB raw disk of pseudo-random bytes (no boot sector: QEMU finds
/// nothing to boot), and its sha256.
fn base_disk(s: &Scratch) -> (Vec<u8>, String) {
    let mut data = vec![0u8; 4 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in data.iter_mut().skip(4096) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let p = s.path().join("base.img");
    std::fs::write(&p, &data).unwrap();
    let digest = sha256(&p);
    (data, digest)
}

fn url_template(s: &Scratch, url: &str, digest: &str) -> std::path::PathBuf {
    s.write(
        "url.toml",
        &format!(
            "[image]\nname = \"dl\"\nversion = \"1.0.0\"\n\n[source.qemu.vm]\naccelerator = \"tcg\"\nmemory = \"128MiB\"\ndisk_url = \"{url}\"\ndisk_checksum = \"sha256:{digest}\"\nssh_timeout = \"1s\"\noutput = \"out/vm.qcow2\"\n\n[[build]]\nname = \"b\"\nsources = [\"qemu.vm\"]\n"
        ),
    )
}

/// The `download` events of a `--json` run's stdout.
fn download_events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "download")
        .collect()
}

fn cached(state: &Path, digest: &str) -> std::path::PathBuf {
    state.join("qemu/bases").join(format!("sha256-{digest}"))
}

fn ready() -> bool {
    crate::require(
        "QEMU downloads",
        &["qemu-system-x86_64", "qemu-img", "sha256sum"],
        true,
    )
}

/// The first answer breaks off half-way; kiln tries again with
/// `Range: bytes=HALF-`, the server answers 206 with the rest, and the
/// whole file verifies. `--json` carries `download` events with the URL,
/// growing `bytes`, the `total`, and a last one with `done`. Then
/// `kiln cleanup --caches` empties the cache.
#[test]
fn qemu_download_resumes_after_a_dropped_connection() {
    if !ready() {
        return;
    }
    let s = Scratch::new();
    let tmpfs = TmpfsDir::new();
    let (data, digest) = base_disk(&s);
    let half = data.len() / 2;
    let server = RangeServer::start(
        HashMap::from([("/base.img".to_string(), data.clone())]),
        Behaviour {
            ranges: true,
            cut_first_at: Some(half),
            pause: Duration::from_millis(25),
        },
    );
    let url = format!("http://{}/base.img", server.addr);
    let t = url_template(&s, &url, &digest);
    let (code, summary, out) = build(&s, &tmpfs, &t);
    assert_eq!(code, 1, "no OS, so no SSH: {summary}\n{out}");
    let seen = server.seen("/base.img");
    assert_eq!(
        seen,
        vec![
            Seen {
                path: "/base.img".into(),
                range: None,
                status: 200
            },
            Seen {
                path: "/base.img".into(),
                range: Some(format!("bytes={half}-")),
                status: 206
            },
        ],
        "{out}"
    );
    assert!(out.contains(&format!("resuming at byte {half}")), "{out}");
    assert!(out.contains(&format!("sha256:{digest} verified")), "{out}");
    assert!(out.contains("booting `"), "the verified base boots: {out}");
    assert_eq!(sha256(&cached(&s.state(), &digest)), digest);

    let events = download_events(&out);
    assert!(
        events.len() >= 3,
        "a first, a resumed and a last: {events:?}"
    );
    let mut last = 0;
    for e in &events {
        assert_eq!(e["url"], url.as_str(), "{e}");
        assert_eq!(e["job"], "b.qemu.vm", "{e}");
        assert_eq!(e["total"], data.len() as u64, "{e}");
        let bytes = e["bytes"].as_u64().unwrap();
        assert!(bytes >= last, "bytes only grow when resuming: {events:?}");
        last = bytes;
        assert!(e["time"].is_string(), "{e}");
    }
    assert!(
        events
            .iter()
            .any(|e| e["bytes"] == half as u64 && e["done"] == false),
        "the resumed download reports from where it resumed: {events:?}"
    );
    // A bounded rate: besides each attempt's first report and the last,
    // at most one per 500 ms.
    let at = |e: &serde_json::Value| humantime::parse_rfc3339(e["time"].as_str().unwrap()).unwrap();
    let span = at(events.last().unwrap())
        .duration_since(at(&events[0]))
        .unwrap();
    assert!(
        events.len() as u128 <= 3 + span.as_millis() / 500 + 1,
        "{} events in {span:?}: {events:?}",
        events.len()
    );
    let end = events.last().unwrap();
    assert_eq!(end["done"], true, "{end}");
    assert_eq!(end["bytes"], data.len() as u64, "{end}");
    assert_eq!(
        events.iter().filter(|e| e["done"] == true).count(),
        1,
        "{events:?}"
    );
    assert_nothing_left(&s, &tmpfs);

    let o = s
        .kiln()
        .args(["cleanup", "--caches", "--json"])
        .output()
        .unwrap();
    crate::assert_exit(&o, 0);
    let left: Vec<_> = std::fs::read_dir(s.state().join("qemu/bases"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "`kiln cleanup --caches` empties it: {left:?}"
    );
}

/// A server that ignores `Range` answers the resumed request with the
/// whole file (200): kiln starts over and the file verifies. A partial
/// download left in the cache that is no prefix of the file (another
/// file, a torn write) is resumed, fails verification, and is downloaded
/// again from the start.
#[test]
fn qemu_download_starts_over_when_range_is_ignored_or_the_partial_is_wrong() {
    if !ready() {
        return;
    }
    let s = Scratch::new();
    let tmpfs = TmpfsDir::new();
    let (data, digest) = base_disk(&s);
    let half = data.len() / 2;
    let files = HashMap::from([("/base.img".to_string(), data.clone())]);
    let server = RangeServer::start(
        files.clone(),
        Behaviour {
            ranges: false,
            cut_first_at: Some(half),
            pause: Duration::ZERO,
        },
    );
    let t = url_template(&s, &format!("http://{}/base.img", server.addr), &digest);
    let (code, summary, out) = build(&s, &tmpfs, &t);
    assert_eq!(code, 1, "{summary}\n{out}");
    let seen = server.seen("/base.img");
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].range, Some(format!("bytes={half}-")));
    assert_eq!(seen[1].status, 200);
    assert!(out.contains("ignores `Range` (answered 200)"), "{out}");
    assert!(out.contains(&format!("sha256:{digest} verified")), "{out}");
    assert_eq!(sha256(&cached(&s.state(), &digest)), digest);
    let events = download_events(&out);
    assert_eq!(events.last().unwrap()["bytes"], data.len() as u64);
    assert_nothing_left(&s, &tmpfs);

    // A wrong partial file: resumed, refused by its digest, downloaded anew.
    std::fs::remove_file(cached(&s.state(), &digest)).unwrap();
    let part = s
        .state()
        .join("qemu/bases")
        .join(format!(".sha256-{digest}.part"));
    std::fs::write(&part, vec![0xa5u8; data.len() / 4]).unwrap();
    let server = RangeServer::start(
        files,
        Behaviour {
            ranges: true,
            cut_first_at: None,
            pause: Duration::ZERO,
        },
    );
    let t = url_template(&s, &format!("http://{}/base.img", server.addr), &digest);
    let (code, summary, out) = build(&s, &tmpfs, &t);
    assert_eq!(code, 1, "{summary}\n{out}");
    let seen = server.seen("/base.img");
    let ranges: Vec<_> = seen.iter().map(|s| (s.range.clone(), s.status)).collect();
    assert_eq!(
        ranges,
        vec![
            (Some(format!("bytes={}-", data.len() / 4)), 206),
            (None, 200)
        ],
        "{out}"
    );
    assert!(
        out.contains("the resumed download does not verify"),
        "{out}"
    );
    assert!(out.contains(&format!("sha256:{digest} verified")), "{out}");
    assert_eq!(sha256(&cached(&s.state(), &digest)), digest);
    assert!(!part.exists(), "the partial file became the cached base");
    assert_nothing_left(&s, &tmpfs);
}

/// kiln is killed (SIGKILL) in the middle of a download. The next build
/// is not blocked by the dead build's lock, and resumes the `.part` file
/// it left with `Range: bytes=<its size>-`.
#[test]
fn qemu_download_killed_midway_is_resumed_by_the_next_build() {
    if !ready() {
        return;
    }
    let s = Scratch::new();
    let tmpfs = TmpfsDir::new();
    let (data, digest) = base_disk(&s);
    let server = RangeServer::start(
        HashMap::from([("/base.img".to_string(), data.clone())]),
        Behaviour {
            ranges: true,
            cut_first_at: None,
            pause: Duration::from_millis(100),
        },
    );
    let t = url_template(&s, &format!("http://{}/base.img", server.addr), &digest);
    let mut child = s
        .kiln()
        .args(["build", "--json"])
        .arg(&t)
        .env("KILN_TMPFS", &tmpfs.0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let midway = lines.by_ref().map_while(Result::ok).any(|l| {
        serde_json::from_str::<serde_json::Value>(&l).is_ok_and(|e| {
            e["event"] == "download" && e["bytes"].as_u64().unwrap_or(0) > 0 && e["done"] == false
        })
    });
    assert!(midway, "kiln reported no progress before the end");
    child.kill().unwrap();
    child.wait().unwrap();
    drop(lines);
    let part = s
        .state()
        .join("qemu/bases")
        .join(format!(".sha256-{digest}.part"));
    let left = std::fs::metadata(&part)
        .expect("the partial download")
        .len();
    assert!(left > 0 && left < data.len() as u64, "{left}");
    crate::assert_exit(&s.kiln().arg("cleanup").output().unwrap(), 0);

    let (code, summary, out) = build(&s, &tmpfs, &t);
    assert_eq!(code, 1, "{summary}\n{out}");
    let seen = server.seen("/base.img");
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].range, Some(format!("bytes={left}-")), "{out}");
    assert_eq!(seen[1].status, 206);
    assert!(out.contains(&format!("resuming at byte {left}")), "{out}");
    assert_eq!(sha256(&cached(&s.state(), &digest)), digest);
    assert_nothing_left(&s, &tmpfs);
}

/// Werkzeug's file serving (its `send_file`, which implements `Range`,
/// `ETag`, `Last-Modified` and `If-Range` by RFC 9110 — not code of
/// this test's) behind a WSGI wrapper that breaks the first answer off
/// half-way and then replaces the file, as a mirror that publishes a new
/// image mid-download would. `argv`: folder, request log, `etag` or
/// `date` (Werkzeug then sends no `ETag`). The log has one JSON line per
/// request: `range`, `if_range`, `status`.
const IF_RANGE_SERVER: &str = r#"
import json, os, sys
from werkzeug.serving import make_server
from werkzeug.utils import send_file
from werkzeug.wrappers import Request

root, log, mode, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
served = []

def app(environ, start_response):
    path = os.path.join(root, "base.img")
    resp = send_file(path, environ, conditional=True, etag=(mode == "etag"), max_age=None)
    with open(log, "a") as f:
        f.write(json.dumps({"range": environ.get("HTTP_RANGE"), "if_range": environ.get("HTTP_IF_RANGE"),
                            "status": resp.status_code, "etag": resp.headers.get("ETag"),
                            "last_modified": resp.headers.get("Last-Modified")}) + "\n")
    body = resp(environ, start_response)
    if served:
        return body
    served.append(1)
    def cut():
        sent, half = 0, os.path.getsize(path) // 2
        for chunk in body:
            yield chunk[: max(0, half - sent)]
            sent += len(chunk)
            if sent >= half:
                break
        body.close()
        # The new file: other bytes, a later modification time.
        os.replace(os.path.join(root, "next.img"), path)
        st = os.stat(path)
        os.utime(path, (st.st_atime + 60, st.st_mtime + 60))
        raise ConnectionAbortedError("cut off half-way")
    return cut()

print("ready", flush=True)
make_server("127.0.0.1", port, app, threaded=True).serve_forever()
"#;

/// The mirror's file changes between the broken transfer and the
/// resume: kiln's resume carries `If-Range` with the first answer's
/// strong `ETag` (or, from a server without one, its `Last-Modified`),
/// kept beside the `.part`; the server sees the change and answers 200
/// with the whole new file, which kiln downloads from byte 0 — no
/// spliced file, no second download after a failed verification.
#[test]
fn qemu_download_resume_is_conditional_on_the_file_not_changing() {
    if !ready() || !crate::require("QEMU If-Range", &["python3"], true) {
        return;
    }
    let werkzeug = std::process::Command::new("python3")
        .args(["-c", "import werkzeug"])
        .status()
        .is_ok_and(|s| s.success());
    if !werkzeug {
        let msg = "QEMU If-Range tests need Python's werkzeug (moto[server], installed by scripts/ci/install-deps.sh)";
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "{msg}");
        eprintln!("SKIPPED: {msg}");
        return;
    }
    for mode in ["etag", "date"] {
        let s = Scratch::new();
        let tmpfs = TmpfsDir::new();
        let (data, digest) = base_disk(&s);
        let www = s.path().join("www");
        std::fs::create_dir_all(&www).unwrap();
        // The first file differs from the one that verifies in its first
        // half: spliced with the new second half, it would not verify.
        let mut old = data.clone();
        for b in &mut old[..data.len() / 2] {
            *b ^= 0x5a;
        }
        std::fs::write(www.join("base.img"), &old).unwrap();
        std::fs::write(www.join("next.img"), &data).unwrap();
        let log = s.path().join("requests.jsonl");
        let addr = crate::free_addr();
        let port = addr.rsplit(':').next().unwrap().to_string();
        let mut server = std::process::Command::new("python3")
            .args(["-c", IF_RANGE_SERVER])
            .arg(&www)
            .arg(&log)
            .args([mode, &port])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        crate::wait_listening(&addr, "werkzeug");
        let t = url_template(&s, &format!("http://{addr}/base.img"), &digest);
        let (code, summary, out) = build(&s, &tmpfs, &t);
        let _ = server.kill();
        let _ = server.wait();
        assert_eq!(code, 1, "{mode}: {summary}\n{out}");
        let seen: Vec<serde_json::Value> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(seen.len(), 2, "{mode}: {seen:?}\n{out}");
        let first = &seen[0];
        assert_eq!(
            (&first["range"], &first["status"]),
            (&serde_json::Value::Null, &200.into())
        );
        let validator = match mode {
            "etag" => first["etag"].as_str().expect("werkzeug sends an ETag"),
            _ => {
                assert!(first["etag"].is_null(), "{first}");
                first["last_modified"].as_str().unwrap()
            }
        };
        let half = data.len() / 2;
        assert_eq!(
            seen[1]["range"],
            format!("bytes={half}-"),
            "{mode}: {seen:?}"
        );
        assert_eq!(seen[1]["if_range"], validator, "{mode}: {seen:?}");
        assert_eq!(
            seen[1]["status"], 200,
            "the server saw the change: {seen:?}"
        );
        assert!(
            out.contains("changed since the partial download (`If-Range: "),
            "{mode}: {out}"
        );
        assert!(!out.contains("does not verify"), "{mode}: {out}");
        assert!(out.contains(&format!("sha256:{digest} verified")), "{out}");
        assert_eq!(sha256(&cached(&s.state(), &digest)), digest);
        let bases = cache_entries(&s.state().join("qemu/bases"));
        assert_eq!(
            bases,
            [format!("sha256-{digest}")],
            "no part or validator left"
        );
        assert_nothing_left(&s, &tmpfs);
    }
}
