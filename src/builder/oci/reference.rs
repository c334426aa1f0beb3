//! Where an image comes from and goes to: `registry:REF`,
//! `oci-layout:DIR[:TAG]`, `rootfs:FILE.tar` and `scratch`.

use std::path::{Path, PathBuf};

use crate::builder::BuildError;

/// A base image (`from`).
#[derive(Debug, Clone, PartialEq)]
pub enum BaseRef {
    Registry(oci_client::Reference),
    Layout { dir: PathBuf, tag: Option<String> },
    Rootfs(PathBuf),
    Scratch,
}

/// An output (`to`).
#[derive(Debug, Clone, PartialEq)]
pub enum TargetRef {
    Registry(oci_client::Reference),
    Layout { dir: PathBuf, tag: Option<String> },
}

fn registry_ref(s: &str) -> Result<oci_client::Reference, BuildError> {
    if let Some(r) = explicit_registry_ref(s) {
        return Ok(r);
    }
    s.parse::<oci_client::Reference>()
        .map_err(|e| BuildError::Config(format!("`{s}` is not an image reference: {e}")))
}

/// The common case — `HOST[:PORT]/PATH:TAG`, `…@ALGO:HEX` or both, ASCII
/// only — parsed without oci-spec's reference regex, whose compilation
/// (Unicode `\w`) costs a command like `build --skip-unchanged` about
/// 30 ms. Anything else (Docker Hub short names, no tag, odd characters)
/// returns `None` and goes to oci-spec, so the result is always what
/// oci-spec would make (tested).
fn explicit_registry_ref(s: &str) -> Option<oci_client::Reference> {
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    let (registry, path) = rest.split_once('/')?;
    let (path, tag) = match path.rsplit_once(':') {
        Some((p, t)) => (p, Some(t)),
        None => (path, None),
    };
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let host_ok = {
        let (host, port) = match registry.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (registry, None),
        };
        let label = |l: &str| {
            !l.is_empty()
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        // Docker Hub names are normalized by oci-spec (`library/…`).
        !matches!(
            host,
            "docker.io" | "index.docker.io" | "registry-1.docker.io"
        ) && (host.contains('.') || port.is_some() || host == "localhost")
            && host.split('.').all(label)
            && port.is_none_or(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    };
    // `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`.
    let component = |c: &str| {
        let b = c.as_bytes();
        let mut i = 0;
        let mut last_sep = true;
        while i < b.len() {
            let ch = b[i] as char;
            if alnum(ch) {
                last_sep = false;
                i += 1;
                continue;
            }
            if last_sep {
                return false;
            }
            let sep_len = if ch == '.' {
                1
            } else if ch == '_' {
                if b.get(i + 1) == Some(&b'_') {
                    2
                } else {
                    1
                }
            } else if ch == '-' {
                b[i..].iter().take_while(|&&x| x == b'-').count()
            } else {
                return false;
            };
            i += sep_len;
            last_sep = true;
        }
        !last_sep
    };
    let tag_ok = tag.is_none_or(|t| {
        let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
        !t.is_empty()
            && t.len() <= 128
            && t.starts_with(word)
            && t.chars().all(|c| word(c) || c == '.' || c == '-')
    });
    // The digests oci-spec accepts: sha256/384/512 in lowercase hex.
    let digest_ok = digest.is_none_or(|d| {
        d.split_once(':').is_some_and(|(algo, hex)| {
            let len = match algo {
                "sha256" => 64,
                "sha384" => 96,
                "sha512" => 128,
                _ => return false,
            };
            hex.len() == len
                && hex
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        })
    });
    if !host_ok
        || !path.split('/').all(component)
        || !tag_ok
        || !digest_ok
        || rest.len() > 255
        || (tag.is_none() && digest.is_none())
    {
        return None;
    }
    let (registry, path) = (registry.to_string(), path.to_string());
    Some(match (tag, digest) {
        (Some(t), Some(d)) => {
            oci_client::Reference::with_tag_and_digest(registry, path, t.into(), d.into())
        }
        (Some(t), None) => oci_client::Reference::with_tag(registry, path, t.into()),
        (None, Some(d)) => oci_client::Reference::with_digest(registry, path, d.into()),
        (None, None) => unreachable!("checked above"),
    })
}

/// `DIR[:TAG]`: a trailing `:TAG` without `/` is a tag.
fn layout(rest: &str, base: &Path) -> (PathBuf, Option<String>) {
    let (dir, tag) = match rest.rsplit_once(':') {
        Some((d, t)) if !t.contains('/') && !d.is_empty() => (d, Some(t.to_string())),
        _ => (rest, None),
    };
    (base.join(dir), tag)
}

impl BaseRef {
    /// Parses `from`; relative paths resolve against `base`.
    pub fn parse(s: &str, base: &Path) -> Result<BaseRef, BuildError> {
        if s == "scratch" {
            return Ok(BaseRef::Scratch);
        }
        match s.split_once(':') {
            Some(("registry", r)) => Ok(BaseRef::Registry(registry_ref(r)?)),
            Some(("oci-layout", r)) => {
                let (dir, tag) = layout(r, base);
                Ok(BaseRef::Layout { dir, tag })
            }
            Some(("rootfs", r)) => Ok(BaseRef::Rootfs(base.join(r))),
            _ => Err(BuildError::Config(format!(
                "`from = \"{s}\"`: expected `registry:REF`, `oci-layout:DIR[:TAG]`, `rootfs:FILE.tar` or `scratch`"
            ))),
        }
    }
}

impl TargetRef {
    /// Parses one `to` entry; relative paths resolve against `base`.
    pub fn parse(s: &str, base: &Path) -> Result<TargetRef, BuildError> {
        match s.split_once(':') {
            Some(("registry", r)) => Ok(TargetRef::Registry(registry_ref(r)?)),
            Some(("oci-layout", r)) => {
                let (dir, tag) = layout(r, base);
                Ok(TargetRef::Layout { dir, tag })
            }
            _ => Err(BuildError::Config(format!(
                "`to = \"{s}\"`: expected `registry:REF` or `oci-layout:DIR[:TAG]`"
            ))),
        }
    }
}

/// Registries on loopback are spoken to over plain HTTP (test and local
/// registries); everything else over HTTPS.
pub fn is_local_registry(registry: &str) -> bool {
    let host = registry
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(registry);
    host == "localhost" || host == "127.0.0.1" || host == "[::1]"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let b = Path::new("/t");
        assert_eq!(BaseRef::parse("scratch", b).unwrap(), BaseRef::Scratch);
        assert_eq!(
            BaseRef::parse("rootfs:x.tar", b).unwrap(),
            BaseRef::Rootfs("/t/x.tar".into())
        );
        assert_eq!(
            BaseRef::parse("oci-layout:out/web:1.0", b).unwrap(),
            BaseRef::Layout {
                dir: "/t/out/web".into(),
                tag: Some("1.0".into())
            }
        );
        let BaseRef::Registry(r) =
            BaseRef::parse("registry:127.0.0.1:5000/base/debian:bookworm", b).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("127.0.0.1:5000", "base/debian", Some("bookworm"))
        );
        assert!(BaseRef::parse("docker://x", b).is_err());
        assert!(BaseRef::parse("registry:127.0.0.1:5000/Bad:tag", b).is_err());
        assert!(is_local_registry("127.0.0.1:5000") && !is_local_registry("ghcr.io"));
    }

    #[test]
    fn the_fast_reference_parser_agrees_with_oci_spec() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let refs = [
            "127.0.0.1:5000/base:1".to_string(),
            "localhost:5000/a/b/c:v1.2-rc_3".into(),
            "ghcr.io/org/app:latest".into(),
            "registry.example.com/a.b/c__d/e---f:tag".into(),
            format!("ghcr.io/org/app@{digest}"),
            format!("ghcr.io/org/app:1@{digest}"),
        ];
        for r in &refs {
            let fast = explicit_registry_ref(r).unwrap_or_else(|| panic!("fast path for {r}"));
            let spec: oci_client::Reference = r.parse().unwrap();
            assert_eq!(fast, spec, "{r}");
            assert_eq!(fast.whole(), spec.whole(), "{r}");
        }
        // Left to oci-spec: short names, no tag, odd characters, bad parts.
        for r in [
            "busybox:1",
            "library/busybox:1",
            "ghcr.io/org/app",
            "ghcr.io/Org/app:1",
            "ghcr.io/org/app:",
            "ghcr.io/org/-app:1",
            "ghcr.io/org/app@sha256:abc",
            "-bad.io/org/app:1",
            "docker.io/busybox:1",
            "index.docker.io/library/busybox:1",
            "ghcr.io/org/app@md5:0123456789abcdef0123456789abcdef",
            "ghcr.io/org/app@sha256:ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB",
        ] {
            assert!(explicit_registry_ref(r).is_none(), "{r}");
        }
    }
}
