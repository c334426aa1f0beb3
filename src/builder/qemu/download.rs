//! The cache of downloaded bases (`STATE/qemu/bases/<algo>-<hex>`) and
//! the downloads into it: a lock per digest (`flock`) makes concurrent
//! builds download a base once; a download is hashed as it is written and
//! named only once it matches; a broken transfer leaves a `.part` file
//! that the next attempt (in this build or a later one) resumes with a
//! `Range` request, conditional (`If-Range`) on the validator of the
//! answer it started with, kept beside it — or restarts, when the file
//! changed on the server, the server ignores `Range` or the result does
//! not verify. Progress goes to a callback at a bounded rate
//! (the progress bar and `--json` `download` events).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::fetch::{client, http_error, Checksum, Hasher, CACHE};
use crate::builder::BuildError;

/// A download's progress: for the progress bar and `--json` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress<'a> {
    pub url: &'a str,
    /// Bytes of the file on disk so far (a resumed download starts at
    /// what the earlier attempt wrote).
    pub bytes: u64,
    /// The file's size, when the server says.
    pub total: Option<u64>,
    /// The last report of this download: complete (not yet verified).
    pub done: bool,
}

/// How a download reports: messages for the log, and progress (at most
/// every [`PROGRESS_EVERY`], plus a first and a last report).
pub struct Report<'a> {
    pub say: &'a (dyn Fn(String) + Sync),
    pub progress: &'a (dyn Fn(Progress<'_>) + Sync),
}

/// The least time between two progress reports of one download.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// How often one mirror is tried again when its connection breaks after
/// it sent part of the file (each try resumes where the last stopped).
const RETRIES: u32 = 3;

/// The cached base for `want`, downloaded from the first of `urls` that
/// serves it (each download verified before it is named). Returns the
/// path and whether it was downloaded (and so verified) just now.
pub async fn cached_base(
    urls: &[String],
    want: &Checksum,
    state_dir: &Path,
    report: &Report<'_>,
) -> Result<(PathBuf, bool), BuildError> {
    let dir = state_dir.join(CACHE);
    crate::builder::cache::private_dir(&dir).map_err(BuildError::io(format!(
        "cannot create the base cache `{}`",
        dir.display()
    )))?;
    let name = format!("{}-{}", want.algo.name(), want.hex);
    let target = dir.join(&name);
    // One download per digest: others wait here, then find the file.
    let lock = lock_digest(&dir.join(format!(".{name}.lock")), want, report).await?;
    if target.is_file() {
        (report.say)(format!("base {want} is cached (`{}`)", target.display()));
        return Ok((target, false));
    }
    // What an interrupted download left: resumed by the next attempt,
    // in this run or a later one (the lock makes it ours alone).
    let part = dir.join(format!(".{name}.part"));
    let mut failures = vec![];
    for url in urls {
        match fetch_from(url, want, &part, report).await {
            Ok(()) => {
                fs_err::tokio::rename(&part, &target)
                    .await
                    .map_err(BuildError::io("cannot move the download into the cache"))?;
                set_validator(&part, None).await?;
                drop(lock);
                return Ok((target, true));
            }
            Err(e) => {
                (report.say)(format!("`{url}`: {e}"));
                failures.push(format!("`{url}`: {e}"));
            }
        }
    }
    Err(BuildError::Config(format!(
        "no mirror served the base with {want}; nothing was launched:\n  {}",
        failures.join("\n  ")
    )))
}

/// Takes the digest's lock (`flock`: the kernel drops it when its holder
/// dies, so a crashed build never blocks the next), saying so when
/// another build holds it.
async fn lock_digest(
    path: &Path,
    want: &Checksum,
    report: &Report<'_>,
) -> Result<std::fs::File, BuildError> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(BuildError::io("cannot open the base cache's lock"))?;
    match f.try_lock() {
        Ok(()) => return Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => (report.say)(format!(
            "another build is downloading the base with {want}: waiting for it"
        )),
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(BuildError::io("cannot lock the base cache")(e))
        }
    }
    tokio::task::spawn_blocking(move || f.lock().map(|()| f))
        .await
        .map_err(|e| BuildError::io("lock")(std::io::Error::other(e)))?
        .map_err(BuildError::io("cannot lock the base cache"))
}

/// Why one attempt at a mirror failed, and what to do next.
enum Failure {
    /// Give this mirror up (no answer, an HTTP error, a local file that
    /// cannot be read); a partial file stays for the next mirror.
    Mirror(BuildError),
    /// The transfer broke after it started: try again, resuming.
    Broken(BuildError),
    /// What was written is no prefix of the file: drop it and start over.
    Restart(String),
    /// The whole file arrived with another digest.
    Mismatch(BuildError),
}

/// Downloads `url` into `part` until it verifies: a broken transfer is
/// resumed (up to [`RETRIES`] times), a partial file that turns out not
/// to match is dropped and the file downloaded once more from the start.
async fn fetch_from(
    url: &str,
    want: &Checksum,
    part: &Path,
    report: &Report<'_>,
) -> Result<(), BuildError> {
    let mut broken = 0;
    let mut restarted = false;
    loop {
        let resumed = part_len(part) > 0;
        match download(url, want, part, report).await {
            Ok(()) => return Ok(()),
            Err(Failure::Broken(e)) if broken + 1 < RETRIES => {
                broken += 1;
                (report.say)(format!(
                    "`{url}`: {e}; trying again from byte {}",
                    part_len(part)
                ));
                tokio::time::sleep(Duration::from_millis(500 * u64::from(broken))).await;
            }
            Err(Failure::Broken(e) | Failure::Mirror(e)) => return Err(e),
            Err(Failure::Restart(why)) if !restarted => {
                restarted = true;
                (report.say)(format!("`{url}`: {why}: downloading from the start"));
                remove_part(part).await?;
            }
            Err(Failure::Mismatch(e)) if resumed && !restarted => {
                restarted = true;
                (report.say)(format!(
                    "`{url}`: the resumed download does not verify ({e}): downloading from the start"
                ));
                remove_part(part).await?;
            }
            Err(Failure::Restart(why)) => {
                remove_part(part).await?;
                return Err(BuildError::Config(why));
            }
            Err(Failure::Mismatch(e)) => {
                remove_part(part).await?;
                return Err(e);
            }
        }
    }
}

fn part_len(part: &Path) -> u64 {
    std::fs::metadata(part).map(|m| m.len()).unwrap_or(0)
}

async fn remove_part(part: &Path) -> Result<(), BuildError> {
    match fs_err::tokio::remove_file(part).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(BuildError::io("cannot remove a partial download")(e))
        }
        _ => set_validator(part, None).await,
    }
}

/// Where the validator of `part`'s answer is kept: `<part>.validator`.
fn validator_path(part: &Path) -> PathBuf {
    let mut p = part.as_os_str().to_owned();
    p.push(".validator");
    PathBuf::from(p)
}

/// The longest validator kept (an entity tag or an HTTP date is far
/// shorter; a server's longer header is not used).
const VALIDATOR_MAX: usize = 512;

/// The `If-Range` value for an answer's headers: its entity tag when it
/// is a strong one (RFC 9110 §13.1.5 forbids weak ones there), else its
/// `Last-Modified` date; `None` when it has neither or they are unusable.
pub fn validator(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let usable = |v: &reqwest::header::HeaderValue| {
        v.to_str()
            .ok()
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= VALIDATOR_MAX)
            .map(str::to_string)
    };
    headers
        .get(reqwest::header::ETAG)
        .and_then(usable)
        .filter(|e| e.starts_with('"') && e.ends_with('"') && e.len() >= 2)
        .or_else(|| headers.get(reqwest::header::LAST_MODIFIED).and_then(usable))
}

/// The validator kept for `part`, if any (a stored value that is not a
/// header value is ignored: the resume is then unconditional).
fn read_validator(part: &Path) -> Option<String> {
    let bytes = std::fs::read(validator_path(part)).ok()?;
    let text = std::str::from_utf8(&bytes).ok()?.trim();
    (!text.is_empty()
        && text.len() <= VALIDATOR_MAX
        && text
            .bytes()
            .all(|b| b == b'\t' || (0x20..0x7f).contains(&b)))
    .then(|| text.to_string())
}

/// Keeps (or, with `None`, drops) the validator of the answer `part`
/// holds the start of.
async fn set_validator(part: &Path, value: Option<&str>) -> Result<(), BuildError> {
    let path = validator_path(part);
    match value {
        Some(v) => fs_err::tokio::write(&path, v)
            .await
            .map_err(BuildError::io("cannot keep the download's validator")),
        None => match fs_err::tokio::remove_file(&path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(BuildError::io("cannot remove the download's validator")(e))
            }
            _ => Ok(()),
        },
    }
}

/// `Content-Range: bytes START-END/TOTAL` (TOTAL may be `*`): the start
/// and the total.
pub fn content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let (start, end): (u64, u64) = (start.trim().parse().ok()?, end.trim().parse().ok()?);
    if end < start {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start, total))
}

/// Progress reports of one download, at most every [`PROGRESS_EVERY`].
struct Meter<'a> {
    url: &'a str,
    total: Option<u64>,
    last: Option<Instant>,
    progress: &'a (dyn Fn(Progress<'_>) + Sync),
}

impl Meter<'_> {
    fn tick(&mut self, bytes: u64) {
        if self.last.is_some_and(|t| t.elapsed() < PROGRESS_EVERY) {
            return;
        }
        self.last = Some(Instant::now());
        self.report(bytes, false);
    }

    fn report(&self, bytes: u64, done: bool) {
        (self.progress)(Progress {
            url: self.url,
            bytes,
            total: self.total,
            done,
        });
    }
}

/// The file to write from `offset` on: appended to (its bytes hashed
/// first) when resuming, else made empty.
async fn open_part(
    part: &Path,
    offset: u64,
    hasher: &mut Hasher,
) -> Result<fs_err::tokio::File, BuildError> {
    if offset == 0 {
        return fs_err::tokio::File::create(part)
            .await
            .map_err(BuildError::io("cannot start the download"));
    }
    let mut file = fs_err::tokio::OpenOptions::new()
        .read(true)
        .append(true)
        .open(part)
        .await
        .map_err(BuildError::io("cannot resume the download"))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .await
            .map_err(BuildError::io("cannot read the partial download"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(file)
}

/// One attempt: streams `url` into `part` (resuming it with a `Range`
/// request when it has bytes and the server honours that), hashing as it
/// writes; fails unless the digest matches.
async fn download(
    url: &str,
    want: &Checksum,
    part: &Path,
    report: &Report<'_>,
) -> Result<(), Failure> {
    let started = Instant::now();
    let mut hasher = Hasher::new(want.algo);
    let have = part_len(part);
    let write_err = |e| Failure::Mirror(BuildError::io("cannot write the download")(e));
    let (mut file, mut bytes, mut meter);
    if let Some(path) = url.strip_prefix("file://") {
        (report.say)(format!("copying base `{path}`"));
        let mut src = fs_err::tokio::File::open(path)
            .await
            .map_err(|e| Failure::Mirror(BuildError::io("cannot read the base")(e)))?;
        let total = src.metadata().await.ok().map(|m| m.len());
        file = open_part(part, 0, &mut hasher)
            .await
            .map_err(Failure::Mirror)?;
        set_validator(part, None).await.map_err(Failure::Mirror)?;
        bytes = 0;
        meter = Meter {
            url,
            total,
            last: None,
            progress: report.progress,
        };
        meter.tick(0);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = src
                .read(&mut buf)
                .await
                .map_err(|e| Failure::Mirror(BuildError::io("cannot read the base")(e)))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).await.map_err(write_err)?;
            bytes += n as u64;
            meter.tick(bytes);
        }
    } else {
        let mut req = client().map_err(Failure::Mirror)?.get(url);
        // Resume only the same file: with `If-Range`, a server whose file
        // changed since the part was written answers 200 with all of it.
        let if_range = read_validator(part).filter(|_| have > 0);
        if have > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        if let Some(v) = &if_range {
            req = req.header(reqwest::header::IF_RANGE, v.as_str());
        }
        let mut resp = req
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| match e.status() {
                Some(reqwest::StatusCode::RANGE_NOT_SATISFIABLE) => Failure::Restart(format!(
                    "it cannot send what follows the {have} bytes downloaded before (416)"
                )),
                _ => Failure::Mirror(http_error(url)(e)),
            })?;
        let (offset, total) = if resp.status() == reqwest::StatusCode::PARTIAL_CONTENT {
            let range = resp
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(content_range);
            match range {
                Some((start, total)) if start == have => (have, total),
                _ => {
                    return Err(Failure::Restart(format!(
                        "it answered a request for the bytes from {have} on with another range"
                    )))
                }
            }
        } else {
            match (have > 0, &if_range) {
                (true, Some(v)) => (report.say)(format!(
                    "`{url}` changed since the partial download (`If-Range: {v}` answered {}): downloading from the start",
                    resp.status().as_u16()
                )),
                (true, None) => (report.say)(format!(
                    "`{url}` ignores `Range` (answered {}): downloading from the start",
                    resp.status().as_u16()
                )),
                _ => {}
            }
            // Kept before the body arrives: a transfer that breaks leaves
            // the part and what identifies its file.
            set_validator(part, validator(resp.headers()).as_deref())
                .await
                .map_err(Failure::Mirror)?;
            (0, resp.content_length())
        };
        (report.say)(format!(
            "downloading base `{url}`{}{}",
            total
                .map(|n| format!(" ({})", crate::builder::cache::human_bytes(n)))
                .unwrap_or_default(),
            if offset > 0 {
                format!(", resuming at byte {offset}")
            } else {
                String::new()
            }
        ));
        file = open_part(part, offset, &mut hasher)
            .await
            .map_err(Failure::Mirror)?;
        bytes = offset;
        meter = Meter {
            url,
            total,
            last: None,
            progress: report.progress,
        };
        meter.tick(bytes);
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    // Keep what arrived, for the next attempt to resume.
                    let _ = file.flush().await;
                    let _ = file.sync_all().await;
                    return Err(Failure::Broken(http_error(url)(e)));
                }
            };
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(write_err)?;
            bytes += chunk.len() as u64;
            meter.tick(bytes);
        }
    }
    file.flush().await.map_err(write_err)?;
    file.sync_all()
        .await
        .map_err(|e| Failure::Mirror(BuildError::io("cannot sync the download")(e)))?;
    meter.report(bytes, true);
    let actual = hasher.hex();
    if actual != want.hex {
        return Err(Failure::Mismatch(BuildError::Config(format!(
            "it served {}:{actual}, not {want}",
            want.algo.name()
        ))));
    }
    (report.say)(format!(
        "downloaded {} in {:.1}s, {want} verified",
        crate::builder::cache::human_bytes(bytes),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_if_range_validator_is_a_strong_etag_or_the_date() {
        use reqwest::header::{HeaderMap, HeaderValue, ETAG, LAST_MODIFIED};
        let mut h = HeaderMap::new();
        assert_eq!(validator(&h), None);
        let date = "Wed, 21 Oct 2015 07:28:00 GMT";
        h.insert(LAST_MODIFIED, HeaderValue::from_static(date));
        assert_eq!(validator(&h).as_deref(), Some(date));
        h.insert(ETAG, HeaderValue::from_static("W/\"weak\""));
        assert_eq!(validator(&h).as_deref(), Some(date), "weak tags never");
        h.insert(ETAG, HeaderValue::from_static("\"abc-1\""));
        assert_eq!(validator(&h).as_deref(), Some("\"abc-1\""));
        let long = format!("\"{}\"", "x".repeat(VALIDATOR_MAX));
        h.insert(ETAG, HeaderValue::from_str(&long).unwrap());
        h.remove(LAST_MODIFIED);
        assert_eq!(validator(&h), None, "an overlong tag is not kept");
    }

    /// A stored validator that is no header value (a torn or hostile
    /// file) is not sent.
    #[tokio::test]
    async fn qemu_a_stored_validator_is_read_back_only_when_sane() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join(".sha256-x.part");
        assert_eq!(read_validator(&part), None);
        set_validator(&part, Some("\"abc\"")).await.unwrap();
        assert_eq!(read_validator(&part).as_deref(), Some("\"abc\""));
        std::fs::write(validator_path(&part), "\"a\"\r\nX-Evil: 1").unwrap();
        assert_eq!(read_validator(&part), None);
        std::fs::write(validator_path(&part), vec![b'a'; VALIDATOR_MAX + 1]).unwrap();
        assert_eq!(read_validator(&part), None);
        set_validator(&part, None).await.unwrap();
        assert!(!validator_path(&part).exists());
    }

    #[test]
    fn qemu_content_range_gives_start_and_total() {
        assert_eq!(content_range("bytes 100-199/200"), Some((100, Some(200))));
        assert_eq!(content_range("bytes 0-9/*"), Some((0, None)));
        assert_eq!(content_range("bytes */200"), None);
        assert_eq!(content_range("bytes 9-1/20"), None);
        assert_eq!(content_range("items 0-1/2"), None);
    }

    /// Another process holds the digest's lock (Python's `fcntl.flock`,
    /// as a concurrent kiln would): the download waits, says so, and goes
    /// on the moment the holder dies, without any clean-up of the lock
    /// file. Needs python3 (installed by .ci/run).
    #[tokio::test]
    async fn qemu_a_dead_lock_holder_does_not_block_the_download() {
        use std::io::BufRead;
        use std::sync::Mutex;
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.img");
        std::fs::write(&base, b"abc").unwrap();
        let want =
            Checksum::literal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
                .unwrap()
                .unwrap();
        let state = dir.path().join("state");
        let cache = state.join(CACHE);
        crate::builder::cache::private_dir(&cache).unwrap();
        let lock = cache.join(format!(".sha256-{}.lock", want.hex));
        let mut holder = std::process::Command::new("python3")
            .args([
                "-c",
                "import fcntl, sys, time\nf = open(sys.argv[1], 'w')\nfcntl.flock(f, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)",
            ])
            .arg(&lock)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "held");
        let said = Mutex::new(vec![]);
        let say = |m: String| said.lock().unwrap().push(m);
        let progress = |_: Progress<'_>| {};
        let report = Report {
            say: &say,
            progress: &progress,
        };
        let urls = [format!("file://{}", base.display())];
        let fut = cached_base(&urls, &want, &state, &report);
        tokio::pin!(fut);
        let waited = tokio::time::timeout(Duration::from_millis(500), &mut fut).await;
        assert!(waited.is_err(), "it waits while the holder lives");
        assert!(
            said.lock().unwrap()[0].contains("another build is downloading"),
            "{:?}",
            said.lock().unwrap()
        );
        holder.kill().unwrap();
        holder.wait().unwrap();
        let (path, fresh) = tokio::time::timeout(Duration::from_secs(10), fut)
            .await
            .expect("the lock of a dead process is free")
            .unwrap();
        assert!(fresh);
        assert_eq!(std::fs::read(path).unwrap(), b"abc");
    }
}
