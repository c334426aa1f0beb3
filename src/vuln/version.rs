//! Version ordering per package ecosystem, as a feed's ranges need it,
//! and which OSV ecosystems kiln can match against an image at all.
//! Debian and Ubuntu with dpkg's rules (epoch, `~` before everything,
//! revision) through the `debversion` crate; RPM distributions with
//! rpmvercmp's rules (epoch, `~` before and `^` after the bare version,
//! alphanumeric segments) through the `rpm-version` crate; Alpine, Wolfi
//! and Chainguard with apk's rules ([`super::apk`]). An ecosystem kiln does
//! not know is [`Ecosystem::Other`]: reported by the rescan, never matched.

use std::cmp::Ordering;

/// A family of version rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Dpkg,
    Rpm,
    Apk,
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Dpkg => "dpkg",
            Scheme::Rpm => "rpm",
            Scheme::Apk => "apk",
        }
    }
}

/// The OS distributions kiln matches: the OSV ecosystem name (without
/// its `:RELEASE`), the version rules, and the `/etc/os-release` `ID`s of
/// the images whose packages it describes.
const DISTROS: &[(&str, Scheme, &[&str])] = &[
    ("Debian", Scheme::Dpkg, &["debian"]),
    ("Ubuntu", Scheme::Dpkg, &["ubuntu"]),
    ("Alpine", Scheme::Apk, &["alpine"]),
    ("Wolfi", Scheme::Apk, &["wolfi"]),
    ("Chainguard", Scheme::Apk, &["chainguard"]),
    ("Red Hat", Scheme::Rpm, &["rhel"]),
    ("AlmaLinux", Scheme::Rpm, &["almalinux"]),
    ("Rocky Linux", Scheme::Rpm, &["rocky"]),
    (
        "openSUSE",
        Scheme::Rpm,
        &["opensuse-leap", "opensuse-tumbleweed", "opensuse"],
    ),
    ("SUSE", Scheme::Rpm, &["sles", "sles_sap", "sle-micro"]),
    ("Mageia", Scheme::Rpm, &["mageia"]),
    ("Photon OS", Scheme::Rpm, &["photon"]),
    ("Azure Linux", Scheme::Rpm, &["azurelinux", "mariner"]),
    ("openEuler", Scheme::Rpm, &["openEuler"]),
];

/// The package ecosystem a feed record names (OSV `ecosystem` without its
/// `:RELEASE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ecosystem {
    /// An OS distribution in [`DISTROS`] (its OSV name).
    Distro(&'static str),
    /// Anything else (`npm`, `PyPI`, a distribution kiln does not know):
    /// never matches an OS package, and the rescan says so.
    Other(String),
}

impl Ecosystem {
    pub const DEBIAN: Ecosystem = Ecosystem::Distro("Debian");

    pub fn parse(name: &str) -> Ecosystem {
        match DISTROS.iter().find(|d| d.0 == name) {
            Some(d) => Ecosystem::Distro(d.0),
            None => Ecosystem::Other(name.to_string()),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Ecosystem::Distro(n) => n,
            Ecosystem::Other(n) => n,
        }
    }

    fn distro(&self) -> Option<&'static (&'static str, Scheme, &'static [&'static str])> {
        match self {
            Ecosystem::Distro(n) => DISTROS.iter().find(|d| d.0 == *n),
            Ecosystem::Other(_) => None,
        }
    }

    /// The version rules, for a known distribution.
    pub fn scheme(&self) -> Option<Scheme> {
        self.distro().map(|d| d.1)
    }

    /// Whether its records describe an image whose `/etc/os-release` `ID`
    /// is `os_id`.
    pub fn describes(&self, os_id: Option<&str>) -> bool {
        match (self.distro(), os_id) {
            (Some(d), Some(id)) => d.2.contains(&id),
            _ => false,
        }
    }

    /// Orders two versions of this ecosystem; `Err` names the version
    /// that is not one of the ecosystem, or the ecosystem kiln lacks.
    pub fn compare(&self, a: &str, b: &str) -> Result<Ordering, String> {
        let Some(scheme) = self.scheme() else {
            return Err(format!(
                "comparing versions of ecosystem `{}` is not supported",
                self.name()
            ));
        };
        compare(scheme, a, b)
    }
}

/// Orders two versions under `scheme`.
pub fn compare(scheme: Scheme, a: &str, b: &str) -> Result<Ordering, String> {
    match scheme {
        Scheme::Dpkg => {
            let parse = |v: &str| {
                v.parse::<debversion::Version>()
                    .map_err(|e| format!("`{v}` is not a Debian version: {e}"))
            };
            Ok(parse(a)?.cmp(&parse(b)?))
        }
        Scheme::Rpm => {
            for v in [a, b] {
                if !is_rpm_evr(v) {
                    return Err(format!(
                        "`{v}` is not an RPM version (`[EPOCH:]VERSION[-RELEASE]` of letters, digits and `._+~^`)"
                    ));
                }
            }
            Ok(rpm_version::rpm_evr_compare(a, b))
        }
        Scheme::Apk => {
            for v in [a, b] {
                if !super::apk::is_valid(v) {
                    return Err(format!("`{v}` is not an Alpine (apk) version"));
                }
            }
            Ok(super::apk::compare(a, b))
        }
    }
}

/// `[EPOCH:]VERSION[-RELEASE]`: rpmvercmp orders any text, but a version
/// with other characters (spaces, a second `-`) is no package's, so it is
/// refused rather than ordered by accident.
fn is_rpm_evr(v: &str) -> bool {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) => (Some(e), r),
        None => (None, v),
    };
    let part = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"._+~^".contains(&c))
    };
    let epoch_ok = epoch.is_none_or(|e| !e.is_empty() && e.bytes().all(|c| c.is_ascii_digit()));
    let (version, release) = match rest.split_once('-') {
        Some((v, r)) => (v, Some(r)),
        None => (rest, None),
    };
    epoch_ok && part(version) && release.is_none_or(part)
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
        Ecosystem::DEBIAN.compare(a, b).unwrap() == Ordering::Less
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
            Ecosystem::DEBIAN.compare("0:1.0-1", "1.0-1").unwrap(),
            Ordering::Equal
        );
    }

    #[test]
    fn ranges_exclude_fixed_and_include_last_affected() {
        let d = Ecosystem::DEBIAN;
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
    fn rpm_and_apk_orderings_and_bad_versions() {
        let rpm = Ecosystem::parse("AlmaLinux");
        let o = |a, b| rpm.compare(a, b).unwrap();
        assert_eq!(o("1.0~rc1-1", "1.0-1"), Ordering::Less);
        assert_eq!(o("1.0^git1-1", "1.0-1"), Ordering::Greater);
        assert_eq!(o("1:0.9-1", "2.0-1"), Ordering::Greater);
        assert_eq!(o("3.0.7-24.el9", "3.0.7-27.el9"), Ordering::Less);
        assert!(rpm.compare("1.0 1", "1").is_err());
        assert!(rpm.compare("x:1.0", "1").is_err());
        assert!(rpm.compare("1.0-1-2", "1").is_err());
        let apk = Ecosystem::parse("Alpine");
        assert_eq!(
            apk.compare("1.2.4_git20230717-r4", "1.2.4_git20230717-r5"),
            Ok(Ordering::Less)
        );
        let e = apk.compare("1.0bc", "1").unwrap_err();
        assert!(e.contains("`1.0bc` is not an Alpine"), "{e}");
    }

    #[test]
    fn distributions_map_to_images_and_unknown_ecosystems_to_nothing() {
        assert!(Ecosystem::parse("Rocky Linux").describes(Some("rocky")));
        assert!(!Ecosystem::parse("Rocky Linux").describes(Some("almalinux")));
        assert!(Ecosystem::parse("Ubuntu").describes(Some("ubuntu")));
        assert_eq!(Ecosystem::parse("Red Hat").scheme(), Some(Scheme::Rpm));
        let npm = Ecosystem::parse("npm");
        assert_eq!(npm, Ecosystem::Other("npm".into()));
        assert!(!npm.describes(Some("debian")));
        let e = npm.compare("1", "2").unwrap_err();
        assert!(e.contains("`npm` is not supported"), "{e}");
    }

    #[test]
    fn bad_debian_versions_fail() {
        assert!(Ecosystem::DEBIAN.compare("a b", "1").is_err());
    }
}
