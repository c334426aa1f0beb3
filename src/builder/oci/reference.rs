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
    s.parse::<oci_client::Reference>()
        .map_err(|e| BuildError::Config(format!("`{s}` is not an image reference: {e}")))
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
        assert!(is_local_registry("127.0.0.1:5000") && !is_local_registry("ghcr.io"));
    }
}
