//! Base disks by URL and the checksums that pin them: `disk_checksum` as
//! `sha256:`/`sha512:` or `file:` a checksum file (path or URL, GNU or BSD
//! lines, matched by file name), hashing and verifying a file. The
//! download of `disk_url`/`disk_urls` into the cache is `download`'s.

use std::path::Path;

use crate::builder::BuildError;
use sha2::{Digest, Sha256, Sha512};

/// The cache of downloaded bases, relative to the state folder.
pub const CACHE: &str = "qemu/bases";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algo {
    Sha256,
    Sha512,
}

impl Algo {
    pub(super) fn name(self) -> &'static str {
        match self {
            Algo::Sha256 => "sha256",
            Algo::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algo::Sha256 => 64,
            Algo::Sha512 => 128,
        }
    }
}

/// An expected digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    pub algo: Algo,
    pub hex: String,
}

impl std::fmt::Display for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.algo.name(), self.hex)
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Checksum {
    /// `sha256:HEX`, `sha512:HEX` or a bare hex digest (its length says
    /// which); `None` for `file:…`.
    pub fn literal(spec: &str) -> Result<Option<Checksum>, BuildError> {
        let spec = spec.trim();
        if spec.starts_with("file:") {
            return Ok(None);
        }
        let (algo, hex) = match spec.split_once(':') {
            Some(("sha256", h)) => (Algo::Sha256, h),
            Some(("sha512", h)) => (Algo::Sha512, h),
            Some(_) => return Err(bad_checksum(spec)),
            None if spec.len() == 128 => (Algo::Sha512, spec),
            None => (Algo::Sha256, spec),
        };
        if !is_hex(hex, algo.hex_len()) {
            return Err(bad_checksum(spec));
        }
        Ok(Some(Checksum {
            algo,
            hex: hex.to_ascii_lowercase(),
        }))
    }
}

fn bad_checksum(spec: &str) -> BuildError {
    BuildError::Config(format!(
        "`disk_checksum = \"{spec}\"` is not `sha256:` + 64 hex digits, `sha512:` + 128, or `file:` a checksum file (path or URL)"
    ))
}

/// The digest a checksum file gives `name`: GNU lines (`HEX  name`,
/// `HEX *name`) or BSD lines (`SHA256 (name) = HEX`).
pub fn from_sums(text: &str, name: &str) -> Option<Checksum> {
    let by_len = |hex: &str| match hex.len() {
        64 => Some(Algo::Sha256),
        128 => Some(Algo::Sha512),
        _ => None,
    };
    let same = |n: &str| n.trim_start_matches("./") == name;
    for line in text.lines().map(str::trim) {
        if let Some((algo, rest)) = line.split_once(" (") {
            let Some((n, hex)) = rest.split_once(") = ") else {
                continue;
            };
            let algo = match algo {
                "SHA256" => Algo::Sha256,
                "SHA512" => Algo::Sha512,
                _ => continue,
            };
            if same(n) && is_hex(hex.trim(), algo.hex_len()) {
                return Some(Checksum {
                    algo,
                    hex: hex.trim().to_ascii_lowercase(),
                });
            }
        } else if let Some((hex, n)) = line.split_once(char::is_whitespace) {
            let n = n.trim_start().trim_start_matches('*');
            if let Some(algo) = by_len(hex).filter(|_| same(n) && is_hex(hex, hex.len())) {
                return Some(Checksum {
                    algo,
                    hex: hex.to_ascii_lowercase(),
                });
            }
        }
    }
    None
}

/// The last path segment of a URL or path: what a checksum file names.
pub fn file_name(location: &str) -> String {
    let path = location.split(['?', '#']).next().unwrap_or(location);
    path.rsplit('/').next().unwrap_or(path).to_string()
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://") || s.starts_with("file://")
}

pub(super) fn client() -> Result<reqwest::Client, BuildError> {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| BuildError::io("cannot make an HTTP client")(std::io::Error::other(e)))
}

pub(super) fn http_error(url: &str) -> impl Fn(reqwest::Error) -> BuildError + '_ {
    move |e| BuildError::Io {
        what: format!("cannot download `{url}`"),
        source: std::io::Error::other(e),
    }
}

/// A (small) file by URL or by path relative to the template's folder.
async fn read_small(location: &str, template_dir: &Path) -> Result<String, BuildError> {
    if let Some(path) = location.strip_prefix("file://") {
        return read_path(Path::new(path)).await;
    }
    if !is_url(location) {
        return read_path(&template_dir.join(location)).await;
    }
    let resp = client()?
        .get(location)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(http_error(location))?;
    resp.text().await.map_err(http_error(location))
}

async fn read_path(p: &Path) -> Result<String, BuildError> {
    fs_err::tokio::read_to_string(p)
        .await
        .map_err(BuildError::io("cannot read the checksum file"))
}

/// `disk_checksum` resolved for the base called `name` (its file name).
pub async fn checksum(spec: &str, name: &str, template_dir: &Path) -> Result<Checksum, BuildError> {
    if let Some(c) = Checksum::literal(spec)? {
        return Ok(c);
    }
    let location = spec.trim().trim_start_matches("file:");
    let text = read_small(location, template_dir).await?;
    from_sums(&text, name).ok_or_else(|| {
        BuildError::Config(format!(
            "the checksum file `{location}` has no sha256 or sha512 line for `{name}`"
        ))
    })
}

pub(super) enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub(super) fn new(algo: Algo) -> Hasher {
        match algo {
            Algo::Sha256 => Hasher::Sha256(Sha256::new()),
            Algo::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub(super) fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(b),
            Hasher::Sha512(h) => h.update(b),
        }
    }

    pub(super) fn hex(self) -> String {
        match self {
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

/// The digest of a file, read in chunks (images are gigabytes).
pub async fn hash_file(path: &Path, algo: Algo) -> Result<String, BuildError> {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        use std::io::Read;
        let mut file = fs_err::File::open(&p)?;
        let mut hasher = Hasher::new(algo);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(hasher.hex())
    })
    .await
    .map_err(|e| BuildError::io("hashing")(std::io::Error::other(e)))?
    .map_err(BuildError::io(format!("cannot hash `{}`", path.display())))
}

/// Fails unless the base at `path` has the digest `want`.
pub async fn verify(path: &Path, want: &Checksum) -> Result<(), BuildError> {
    let actual = hash_file(path, want.algo).await?;
    if actual != want.hex {
        return Err(BuildError::Config(format!(
            "the base image `{}` has {}:{actual}, but its checksum (`disk_checksum` or `iso_checksum`) says {want}\nhint: the file changed or the checksum is wrong; nothing was launched",
            path.display(),
            want.algo.name()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_checksum_literals() {
        let h256 = "AB".repeat(32);
        let c = Checksum::literal(&format!("sha256:{h256}"))
            .unwrap()
            .unwrap();
        assert_eq!(c.to_string(), format!("sha256:{}", h256.to_lowercase()));
        let h512 = "cd".repeat(64);
        let c = Checksum::literal(&format!("sha512:{h512}"))
            .unwrap()
            .unwrap();
        assert_eq!(c.algo, Algo::Sha512);
        assert_eq!(
            Checksum::literal(&h512).unwrap().unwrap().algo,
            Algo::Sha512
        );
        assert!(Checksum::literal("file:SHA256SUMS").unwrap().is_none());
        for bad in ["md5:abc", "sha256:1234", &format!("sha512:{h256}")] {
            let e = Checksum::literal(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn qemu_checksum_files_gnu_and_bsd_match_by_name() {
        let a = "1".repeat(64);
        let b = "2".repeat(64);
        let c = "3".repeat(128);
        let text = format!(
            "{a}  other.qcow2\n{b} *debian-12-genericcloud-amd64.qcow2\nSHA512 (bsd.img) = {c}\nSHA256 (./dot.img) = {a}\n"
        );
        let got = |n| from_sums(&text, n).map(|c| c.to_string());
        assert_eq!(
            got("debian-12-genericcloud-amd64.qcow2"),
            Some(format!("sha256:{b}"))
        );
        assert_eq!(got("other.qcow2"), Some(format!("sha256:{a}")));
        assert_eq!(got("bsd.img"), Some(format!("sha512:{c}")));
        assert_eq!(got("dot.img"), Some(format!("sha256:{a}")));
        assert_eq!(got("missing.img"), None);
        assert_eq!(got("other"), None);
        assert_eq!(file_name("https://m/x/debian.qcow2?sig=1"), "debian.qcow2");
    }

    #[tokio::test]
    async fn qemu_verify_names_both_digests() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("base.img");
        std::fs::write(&p, b"abc").unwrap();
        let good = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        verify(&p, &Checksum::literal(good).unwrap().unwrap())
            .await
            .unwrap();
        let e = verify(&p, &Checksum::literal(&"0".repeat(64)).unwrap().unwrap())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(good) && e.contains("nothing was launched"),
            "{e}"
        );
    }
}
