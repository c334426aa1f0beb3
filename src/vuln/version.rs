//! Version ordering per package ecosystem, as a vulnerability feed's
//! ranges need it: Debian with dpkg's rules (epoch, upstream with `~`
//! sorting before everything, revision) through the `debversion` crate.
//! Alpine (apk) and RPM orderings are not supported yet: a feed record
//! that would need one fails the rescan rather than being skipped.

use std::cmp::Ordering;

/// The package ecosystems a feed record can name (OSV `ecosystem`
/// without its `:RELEASE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ecosystem {
    Debian,
    Alpine,
    /// Anything else (`npm`, `PyPI`, …): never matches an OS package.
    Other(String),
}

impl Ecosystem {
    pub fn parse(name: &str) -> Ecosystem {
        match name {
            "Debian" => Ecosystem::Debian,
            "Alpine" => Ecosystem::Alpine,
            other => Ecosystem::Other(other.to_string()),
        }
    }

    /// The `/etc/os-release` `ID` of images whose packages it describes.
    pub fn os_id(&self) -> Option<&'static str> {
        match self {
            Ecosystem::Debian => Some("debian"),
            Ecosystem::Alpine => Some("alpine"),
            Ecosystem::Other(_) => None,
        }
    }

    /// Orders two versions of this ecosystem; `Err` names the version
    /// that does not parse or the ordering kiln lacks.
    pub fn compare(&self, a: &str, b: &str) -> Result<Ordering, String> {
        match self {
            Ecosystem::Debian => {
                let parse = |v: &str| {
                    v.parse::<debversion::Version>()
                        .map_err(|e| format!("`{v}` is not a Debian version: {e}"))
                };
                Ok(parse(a)?.cmp(&parse(b)?))
            }
            Ecosystem::Alpine => {
                Err("comparing Alpine (apk) versions is not supported yet".to_string())
            }
            Ecosystem::Other(e) => Err(format!(
                "comparing versions of ecosystem `{e}` is not supported"
            )),
        }
    }
}

/// One affected range of a feed record: `introduced` (`0` = since the
/// first version) up to `fixed` (excluded) or `last_affected` (included).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Range {
    pub introduced: Option<String>,
    pub fixed: Option<String>,
    pub last_affected: Option<String>,
}

impl Range {
    /// Whether `v` lies in the range.
    pub fn contains(&self, eco: &Ecosystem, v: &str) -> Result<bool, String> {
        if let Some(i) = self.introduced.as_deref().filter(|i| *i != "0") {
            if eco.compare(v, i)? == Ordering::Less {
                return Ok(false);
            }
        }
        if let Some(f) = &self.fixed {
            if eco.compare(v, f)? != Ordering::Less {
                return Ok(false);
            }
        }
        if let Some(l) = &self.last_affected {
            if eco.compare(v, l)? == Ordering::Greater {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lt(a: &str, b: &str) -> bool {
        Ecosystem::Debian.compare(a, b).unwrap() == Ordering::Less
    }

    #[test]
    fn debian_order_follows_dpkg() {
        // Tilde sorts before the empty string: a pre-release is older.
        assert!(lt("1.0~rc1-1", "1.0-1"));
        assert!(lt("3.0.11-1~deb12u1", "3.0.11-1"));
        // An epoch outweighs any upstream version.
        assert!(lt("9.9-1", "1:0.1-1"));
        // Revisions compare numerically, not as text.
        assert!(lt("2.36-9", "2.36-10"));
        assert!(lt("1.2.3", "1.2.3-0.1"));
        assert_eq!(
            Ecosystem::Debian.compare("0:1.0-1", "1.0-1").unwrap(),
            Ordering::Equal
        );
    }

    #[test]
    fn ranges_exclude_fixed_and_include_last_affected() {
        let d = Ecosystem::Debian;
        let r = Range {
            introduced: Some("0".into()),
            fixed: Some("1.2-3".into()),
            last_affected: None,
        };
        assert!(r.contains(&d, "1.2-2").unwrap());
        assert!(r.contains(&d, "1.2-3~deb12u1").unwrap());
        assert!(!r.contains(&d, "1.2-3").unwrap());
        assert!(!r.contains(&d, "1:1.0-1").unwrap());
        let r = Range {
            introduced: Some("2.0".into()),
            fixed: None,
            last_affected: Some("2.5".into()),
        };
        assert!(!r.contains(&d, "1.9").unwrap());
        assert!(r.contains(&d, "2.5").unwrap());
        assert!(!r.contains(&d, "2.5-1").unwrap());
    }

    #[test]
    fn unsupported_orderings_fail_by_name() {
        let e = Ecosystem::Alpine.compare("1.2-r0", "1.3-r0").unwrap_err();
        assert!(e.contains("not supported yet"), "{e}");
        assert!(Ecosystem::Debian.compare("a b", "1").is_err());
    }
}
