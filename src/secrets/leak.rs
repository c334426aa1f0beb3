//! The leak scan: before an artifact is pushed, signed or registered, its
//! new content is searched for every secret and for what must not ship in
//! a golden image: shell histories, `authorized_keys` added during the
//! build, private keys.
//!
//! A secret is found as is, in base64 (standard and URL-safe, at all three
//! alignments: `base64("user:" + secret)`, a Docker `config.json` `auth`
//! field, puts it at an offset), in hex (lower and upper case, bare or
//! with spaces as `od -tx1` prints it), URL-encoded, and split across lines
//! (line breaks are ignored while matching: wrapped base64, an `od` dump).
//! gzip files and the members of tar and zip archives (stored or deflated)
//! are scanned inside, nested up to [`MAX_DEPTH`] deep and up to
//! [`MAX_EXPANDED`] bytes of decompressed data per file.
//!
//! Out of reach, by design: encrypted data (an encrypted zip, a GPG file,
//! an age or Vault-wrapped blob), custom or layered encodings (base64 of
//! gzip, XOR, ROT13, reversed text), other compressors (zstd, xz, bzip2
//! files are scanned as their compressed bytes), zip64 archives, and data
//! past the bounds above.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use aho_corasick::AhoCorasick;
use base64::Engine as _;

use crate::ui::redact::{hex, percent};

/// One thing that must not be in the image.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// Path inside the image (`a.tgz!/etc/x` for an archive member).
    pub path: PathBuf,
    /// What was found; names a secret, never shows it.
    pub what: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "/{}: {}", self.path.display(), self.what)
    }
}

const HISTORY_FILES: &[&str] = &[
    ".bash_history",
    ".ash_history",
    ".sh_history",
    ".zsh_history",
    ".python_history",
    ".mysql_history",
    ".psql_history",
];
/// A PEM armor line ends with a line break; the bare marker followed by a
/// NUL is a string constant in a TLS library (GLib's libgio), not a key.
const PRIVATE_KEY_MARKERS: &[&str] = &["PRIVATE KEY-----\n", "PRIVATE KEY-----\r\n"];
/// Secrets shorter than this are not searched for: they would match noise.
const MIN_SECRET_LEN: usize = 4;
/// Base64 at a non-zero offset keeps only the characters the secret alone
/// decides; below this length that is too short to tell from noise.
const MIN_ALIGNED_LEN: usize = 8;
/// How deep archives inside archives (a `.tgz` holds a tar) are opened.
pub const MAX_DEPTH: usize = 4;
/// Decompressed bytes scanned per gzip file or archive member.
pub const MAX_EXPANDED: u64 = 1 << 30;
/// A zip archive is read whole (its index is at its end): up to this size.
const MAX_ZIP: u64 = 256 << 20;

/// The characters of `base64(prefix + value)` that only `value` decides,
/// for a prefix of `k` bytes (mod 3): what to search for wherever the
/// secret sits in the encoded input.
fn base64_aligned(
    value: &[u8],
    k: usize,
    engine: &base64::engine::general_purpose::GeneralPurpose,
) -> String {
    let mut buf = vec![0u8; k];
    buf.extend_from_slice(value);
    let enc = engine.encode(&buf);
    let skip = [0, 2, 3][k];
    let full = 8 * buf.len() / 6;
    enc.get(skip..full).unwrap_or_default().to_string()
}

/// Every form of each secret: `(pattern, secret name, form name)`, line
/// breaks removed (contents are matched with theirs removed too).
fn patterns(secrets: &[(String, String)]) -> Vec<(Vec<u8>, String, &'static str)> {
    let mut out = vec![];
    for (name, value) in secrets.iter().filter(|(_, v)| v.len() >= MIN_SECRET_LEN) {
        let b = value.as_bytes();
        let mut forms: Vec<(&'static str, String)> = vec![
            ("value", value.clone()),
            ("hex", hex(b, false, "")),
            ("hex", hex(b, true, "")),
            ("hex", hex(b, false, " ")),
            ("hex", hex(b, true, " ")),
            (
                "URL-encoded",
                percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC)
                    .to_string(),
            ),
            ("URL-encoded", percent(b, b"", false)),
        ];
        let engines = [
            ("base64", &base64::engine::general_purpose::STANDARD_NO_PAD),
            (
                "base64url",
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ),
        ];
        for (form, engine) in engines {
            forms.push((form, base64_aligned(b, 0, engine)));
            if b.len() >= MIN_ALIGNED_LEN {
                forms.push((form, base64_aligned(b, 1, engine)));
                forms.push((form, base64_aligned(b, 2, engine)));
            }
        }
        for (form, p) in forms {
            let p: Vec<u8> = p.bytes().filter(|c| *c != b'\n' && *c != b'\r').collect();
            if p.len() < MIN_SECRET_LEN {
                continue;
            }
            if !out
                .iter()
                .any(|(q, n, _): &(Vec<u8>, String, &str)| *q == p && n == name)
            {
                out.push((p, name.clone(), form));
            }
        }
    }
    out
}

/// The compiled scan: secret forms (matched on content without line
/// breaks) and private key markers (matched on the content as is).
struct Scan {
    pats: Vec<(Vec<u8>, String, &'static str)>,
    secrets: Option<AhoCorasick>,
    markers: AhoCorasick,
    longest: usize,
}

impl Scan {
    fn new(secrets: &[(String, String)]) -> std::io::Result<Scan> {
        let pats = patterns(secrets);
        let secrets = if pats.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::new(pats.iter().map(|p| p.0.as_slice()))
                    .map_err(std::io::Error::other)?,
            )
        };
        let markers = AhoCorasick::new(PRIVATE_KEY_MARKERS).map_err(std::io::Error::other)?;
        let longest = pats
            .iter()
            .map(|p| p.0.len())
            .chain(PRIVATE_KEY_MARKERS.iter().map(|m| m.len()))
            .max()
            .unwrap_or(1);
        Ok(Scan {
            pats,
            secrets,
            markers,
            longest,
        })
    }

    /// Streams `r` through both matchers in chunks (with an overlap, so a
    /// match across chunks is found). Returns secret pattern indexes and
    /// whether a private key marker was seen.
    fn plain(&self, mut r: impl Read) -> std::io::Result<(BTreeSet<usize>, bool)> {
        let mut hits = BTreeSet::new();
        let mut key = false;
        let (mut raw_tail, mut flat_tail): (Vec<u8>, Vec<u8>) = (vec![], vec![]);
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            let n = match r.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            raw_tail.extend_from_slice(&chunk[..n]);
            flat_tail.extend(chunk[..n].iter().filter(|c| **c != b'\n' && **c != b'\r'));
            if self.markers.find(&raw_tail[..]).is_some() {
                key = true;
            }
            if let Some(m) = &self.secrets {
                for h in m.find_overlapping_iter(&flat_tail[..]) {
                    hits.insert(h.pattern().as_usize());
                }
            }
            let keep = self.longest.saturating_sub(1);
            for t in [&mut raw_tail, &mut flat_tail] {
                if t.len() > keep {
                    t.drain(..t.len() - keep);
                }
            }
        }
        Ok((hits, key))
    }

    /// Scans one file's content (`name` in findings), opening gzip, tar
    /// and zip inside up to the bounds.
    fn content(
        &self,
        name: &Path,
        r: &mut dyn Read,
        depth: usize,
        out: &mut Vec<Finding>,
    ) -> std::io::Result<()> {
        let mut r = std::io::BufReader::with_capacity(1 << 16, r);
        let mut head = vec![];
        (&mut r).take(512).read_to_end(&mut head)?;
        let rest = std::io::Cursor::new(head.clone()).chain(r);
        let nested = depth < MAX_DEPTH;
        if nested && head.starts_with(&[0x1f, 0x8b]) {
            let mut gz = flate2::read::MultiGzDecoder::new(rest).take(MAX_EXPANDED);
            // A damaged gzip file is scanned as far as it decompresses.
            let _ = self.content(name, &mut gz, depth + 1, out);
            return Ok(());
        }
        if nested && head.len() >= 262 && &head[257..262] == b"ustar" {
            let mut archive = tar::Archive::new(rest);
            let Ok(entries) = archive.entries() else {
                return Ok(());
            };
            for e in entries {
                let Ok(e) = e else { break };
                if !e.header().entry_type().is_file() {
                    continue;
                }
                let member = e.path().map(|p| p.into_owned()).unwrap_or_default();
                let inner = PathBuf::from(format!("{}!/{}", name.display(), member.display()));
                let _ = self.content(&inner, &mut e.take(MAX_EXPANDED), depth + 1, out);
            }
            return Ok(());
        }
        if nested && head.starts_with(b"PK\x03\x04") {
            let mut data = vec![];
            rest.take(MAX_ZIP).read_to_end(&mut data)?;
            for (member, mut bytes) in zip_members(&data) {
                let inner = PathBuf::from(format!("{}!/{member}", name.display()));
                let _ = self.content(&inner, &mut bytes, depth + 1, out);
            }
            return Ok(());
        }
        let (hits, key) = self.plain(rest)?;
        for i in hits {
            let (_, secret, form) = &self.pats[i];
            let what = format!("secret `{secret}` ({form})");
            if !out.iter().any(|f| f.path == name && f.what == what) {
                out.push(Finding {
                    path: name.to_path_buf(),
                    what,
                });
            }
        }
        if key {
            out.push(Finding {
                path: name.to_path_buf(),
                what: "a private key".into(),
            });
        }
        Ok(())
    }
}

/// The members of a zip archive (stored or deflated), each as a reader
/// bounded by [`MAX_EXPANDED`]; encrypted, zip64 and other methods skipped.
fn zip_members(data: &[u8]) -> Vec<(String, Box<dyn Read + '_>)> {
    let u16_at = |o: usize| {
        data.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |o: usize| {
        data.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let mut out: Vec<(String, Box<dyn Read + '_>)> = vec![];
    let Some(eocd) = (0..data.len().saturating_sub(21))
        .rev()
        .take(65_536 + 22)
        .find(|&i| data[i..].starts_with(b"PK\x05\x06"))
    else {
        return out;
    };
    let (Some(count), Some(mut at)) = (u16_at(eocd + 10), u32_at(eocd + 16)) else {
        return out;
    };
    for _ in 0..count {
        if !data.get(at..).is_some_and(|d| d.starts_with(b"PK\x01\x02")) {
            break;
        }
        let (
            Some(flags),
            Some(method),
            Some(csize),
            Some(nlen),
            Some(xlen),
            Some(clen),
            Some(local),
        ) = (
            u16_at(at + 8),
            u16_at(at + 10),
            u32_at(at + 20),
            u16_at(at + 28),
            u16_at(at + 30),
            u16_at(at + 32),
            u32_at(at + 42),
        )
        else {
            break;
        };
        let name = String::from_utf8_lossy(data.get(at + 46..at + 46 + nlen).unwrap_or_default())
            .into_owned();
        at += 46 + nlen + xlen + clen;
        if flags & 1 != 0 {
            continue; // encrypted
        }
        let (Some(lnlen), Some(lxlen)) = (u16_at(local + 26), u16_at(local + 28)) else {
            continue;
        };
        let start = local + 30 + lnlen + lxlen;
        let Some(body) = data.get(start..start.saturating_add(csize)) else {
            continue;
        };
        match method {
            0 => out.push((name, Box::new(body))),
            8 => out.push((
                name,
                Box::new(flate2::read::DeflateDecoder::new(body).take(MAX_EXPANDED)),
            )),
            _ => {}
        }
    }
    out
}

/// Scans the files under `root` (the new layer's content, or a mounted
/// disk). Whiteouts and special files are skipped.
pub fn scan_tree(root: &Path, secrets: &[(String, String)]) -> std::io::Result<Vec<Finding>> {
    let scan = Scan::new(secrets)?;
    let mut findings = vec![];
    walk(root, Path::new(""), &scan, &mut findings)?;
    Ok(findings)
}

fn walk(root: &Path, rel: &Path, scan: &Scan, out: &mut Vec<Finding>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(root.join(rel))?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = rel.join(e.file_name());
        let ft = e.file_type()?;
        if ft.is_dir() {
            walk(root, &path, scan, out)?;
            continue;
        }
        if !ft.is_file() {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        let len = e.metadata()?.len();
        if HISTORY_FILES.contains(&name.as_str()) && len > 0 {
            out.push(Finding {
                path: path.clone(),
                what: "shell history file".into(),
            });
        }
        if name == "authorized_keys" || name == "authorized_keys2" {
            out.push(Finding {
                path: path.clone(),
                what: "authorized_keys added or changed during the build".into(),
            });
        }
        // Streamed, so a large file never has to fit in memory.
        let mut file = std::fs::File::open(root.join(&path))?;
        scan.content(&path, &mut file, 0, out)?;
    }
    Ok(())
}

/// Scans one file's bytes for the secrets' forms: a disk image's
/// overlay, which holds every cluster the build wrote (deleted files'
/// data included). Streamed. A secret split across two clusters that are
/// not adjacent in the file is not found; file names are unknown at this
/// level, so findings name the file scanned.
pub fn scan_bytes(file: &Path, secrets: &[(String, String)]) -> std::io::Result<Vec<Finding>> {
    let scan = Scan::new(secrets)?;
    if scan.pats.is_empty() {
        return Ok(vec![]);
    }
    let reader = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(file)?);
    let (hits, _) = scan.plain(reader)?;
    Ok(hits
        .into_iter()
        .map(|i| {
            let (_, secret, form) = &scan.pats[i];
            Finding {
                path: file.file_name().map(PathBuf::from).unwrap_or_default(),
                what: format!("secret `{secret}` ({form}) in the data the build wrote"),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_overlay_is_scanned_byte_for_byte() {
        let tmp = tempfile::tempdir().unwrap();
        let disk = tmp.path().join("overlay.qcow2");
        let mut data = vec![0u8; 3 << 20];
        let secret = "s3cr3t-token-value";
        let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(secret);
        data[(2 << 20) - 5..(2 << 20) - 5 + encoded.len()].copy_from_slice(encoded.as_bytes());
        std::fs::write(&disk, &data).unwrap();
        let secrets = vec![("token".to_string(), secret.to_string())];
        let found = scan_bytes(&disk, &secrets).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].what.contains("`token` (base64)"));
        assert!(!found[0].to_string().contains(secret));
        std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
        assert!(scan_bytes(&disk, &secrets).unwrap().is_empty());
    }

    #[test]
    fn finds_aligned_base64_spaced_hex_split_lines_and_archive_members() {
        use std::io::Write as _;
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        let secret = "s3cr3t-value-42!";
        let b64 = |x: &str| base64::engine::general_purpose::STANDARD.encode(x);
        std::fs::write(
            r.join("config.json"),
            format!(
                "{{\"auths\":{{\"r\":{{\"auth\":\"{}\"}}}}}}",
                b64(&format!("user:{secret}"))
            ),
        )
        .unwrap();
        std::fs::write(r.join("off1"), b64(&format!("x{secret}"))).unwrap();
        let spaced: Vec<String> = secret.bytes().map(|b| format!("{b:02x}")).collect();
        std::fs::write(
            r.join("od.txt"),
            format!(" {}\n {}\n", spaced[..10].join(" "), spaced[10..].join(" ")),
        )
        .unwrap();
        std::fs::write(
            r.join("split.conf"),
            format!("pw={}\n{}\n", &secret[..6], &secret[6..]),
        )
        .unwrap();
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(r.join("app.conf.gz")).unwrap(),
            flate2::Compression::default(),
        );
        writeln!(gz, "token={secret}").unwrap();
        gz.finish().unwrap();
        // A .tgz with the secret in a member.
        let mut t = tar::Builder::new(flate2::write::GzEncoder::new(
            std::fs::File::create(r.join("bundle.tgz")).unwrap(),
            flate2::Compression::default(),
        ));
        let body = format!("key: {secret}\n");
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        t.append_data(&mut h, "etc/app.yaml", body.as_bytes())
            .unwrap();
        t.into_inner().unwrap().finish().unwrap();
        let f = scan_tree(r, &[("db".into(), secret.into())]).unwrap();
        let text: Vec<String> = f.iter().map(ToString::to_string).collect();
        for want in [
            "/config.json: secret `db` (base64)",
            "/off1: secret `db` (base64)",
            "/od.txt: secret `db` (hex)",
            "/split.conf: secret `db` (value)",
            "/app.conf.gz: secret `db` (value)",
            "/bundle.tgz!/etc/app.yaml: secret `db` (value)",
        ] {
            assert!(text.iter().any(|t| t == want), "{want} not in {text:?}");
        }
    }

    #[test]
    fn finds_secrets_in_every_form_and_bad_files() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        std::fs::create_dir_all(r.join("etc/app")).unwrap();
        std::fs::create_dir_all(r.join("root/.ssh")).unwrap();
        let secret = "s3cr3t-value!";
        std::fs::write(r.join("etc/app/plain.conf"), format!("pw={secret}\n")).unwrap();
        std::fs::write(
            r.join("etc/app/b64.conf"),
            base64::engine::general_purpose::STANDARD.encode(secret),
        )
        .unwrap();
        std::fs::write(r.join("etc/app/hex.conf"), hex::encode(secret)).unwrap();
        std::fs::write(r.join("etc/clean.conf"), "nothing here\n").unwrap();
        std::fs::write(r.join("root/.ash_history"), "ls\n").unwrap();
        std::fs::write(r.join("root/.ssh/authorized_keys"), "ssh-ed25519 AAAA\n").unwrap();
        std::fs::write(
            r.join("root/.ssh/id"),
            "-----BEGIN OPENSSH PRIVATE KEY-----\n",
        )
        .unwrap();
        std::fs::write(
            r.join("etc/app/libtls.so"),
            b"\x7fELF\0-----BEGIN PRIVATE KEY-----\0-----END PRIVATE KEY-----\0",
        )
        .unwrap();
        let f = scan_tree(r, &[("db".into(), secret.into())]).unwrap();
        let text: Vec<String> = f.iter().map(ToString::to_string).collect();
        for want in [
            "/etc/app/plain.conf: secret `db` (value)",
            "/etc/app/b64.conf: secret `db` (base64)",
            "/etc/app/hex.conf: secret `db` (hex)",
            "/root/.ash_history: shell history file",
            "/root/.ssh/authorized_keys: authorized_keys added or changed during the build",
            "/root/.ssh/id: a private key",
        ] {
            assert!(text.iter().any(|t| t == want), "{want} not in {text:?}");
        }
        assert!(!text.iter().any(|t| t.contains("clean.conf")));
        assert!(
            !text.iter().any(|t| t.contains("libtls.so")),
            "a marker string in a library is not a key: {text:?}"
        );
        assert!(
            !text.iter().any(|t| t.contains(secret)),
            "findings never show the value"
        );
    }
}
