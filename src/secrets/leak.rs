//! The leak scan: before an artifact is pushed, signed or registered, its
//! new content is searched for every secret (as is, base64, hex,
//! URL-encoded), and for what must not ship in a golden image: shell
//! histories, `authorized_keys` added during the build, private keys.

use std::path::{Path, PathBuf};

use aho_corasick::AhoCorasick;
use base64::Engine as _;

/// One thing that must not be in the image.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// Path inside the image.
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

/// Every form of each secret: `(pattern, secret name, form name)`.
fn patterns(secrets: &[(String, String)]) -> Vec<(Vec<u8>, String, &'static str)> {
    let mut out = vec![];
    for (name, value) in secrets.iter().filter(|(_, v)| v.len() >= MIN_SECRET_LEN) {
        let b = value.as_bytes();
        let forms: [(&'static str, String); 6] = [
            ("value", value.clone()),
            (
                "base64",
                base64::engine::general_purpose::STANDARD_NO_PAD.encode(b),
            ),
            (
                "base64url",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b),
            ),
            ("hex", hex::encode(b)),
            ("hex", hex::encode_upper(b)),
            (
                "URL-encoded",
                percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC)
                    .to_string(),
            ),
        ];
        for (form, p) in forms {
            if !out
                .iter()
                .any(|(q, n, _): &(Vec<u8>, String, &str)| *q == p.as_bytes() && n == name)
            {
                out.push((p.into_bytes(), name.clone(), form));
            }
        }
    }
    out
}

/// Scans the files under `root` (the new layer's content, or a mounted
/// disk). Whiteouts and special files are skipped.
pub fn scan_tree(root: &Path, secrets: &[(String, String)]) -> std::io::Result<Vec<Finding>> {
    let pats = patterns(secrets);
    // Secret forms first, then the private key markers (indexes past `pats`).
    let needles: Vec<&[u8]> = pats
        .iter()
        .map(|p| p.0.as_slice())
        .chain(PRIVATE_KEY_MARKERS.iter().map(|m| m.as_bytes()))
        .collect();
    let matcher = AhoCorasick::new(needles).map_err(std::io::Error::other)?;
    let mut findings = vec![];
    walk(root, Path::new(""), &pats, &matcher, &mut findings)?;
    Ok(findings)
}

fn walk(
    root: &Path,
    rel: &Path,
    pats: &[(Vec<u8>, String, &'static str)],
    m: &AhoCorasick,
    out: &mut Vec<Finding>,
) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(root.join(rel))?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = rel.join(e.file_name());
        let ft = e.file_type()?;
        if ft.is_dir() {
            walk(root, &path, pats, m, out)?;
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
        let file = std::fs::File::open(root.join(&path))?;
        let mut seen: Vec<usize> = vec![];
        for hit in m.stream_find_iter(std::io::BufReader::new(file)) {
            // Every private key marker counts as one finding.
            let i = hit?.pattern().as_usize().min(pats.len());
            if seen.contains(&i) {
                continue;
            }
            seen.push(i);
            let what = match pats.get(i) {
                Some((_, secret, form)) => format!("secret `{secret}` ({form})"),
                None => "a private key".into(),
            };
            out.push(Finding {
                path: path.clone(),
                what,
            });
        }
    }
    Ok(())
}

/// Scans one file's bytes for the secrets' forms: a disk image's
/// overlay, which holds every cluster the build wrote (deleted files'
/// data included). Streamed. A secret split across two clusters that are
/// not adjacent in the file is not found; file names are unknown at this
/// level, so findings name the file scanned.
pub fn scan_bytes(file: &Path, secrets: &[(String, String)]) -> std::io::Result<Vec<Finding>> {
    let pats = patterns(secrets);
    if pats.is_empty() {
        return Ok(vec![]);
    }
    let matcher =
        AhoCorasick::new(pats.iter().map(|p| p.0.as_slice())).map_err(std::io::Error::other)?;
    let reader = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(file)?);
    let mut seen: Vec<usize> = vec![];
    let mut out = vec![];
    for hit in matcher.stream_find_iter(reader) {
        let i = hit?.pattern().as_usize();
        if seen.contains(&i) {
            continue;
        }
        seen.push(i);
        let (_, secret, form) = &pats[i];
        out.push(Finding {
            path: file.file_name().map(PathBuf::from).unwrap_or_default(),
            what: format!("secret `{secret}` ({form}) in the data the build wrote"),
        });
    }
    Ok(out)
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
