//! Software bills of materials of a produced artifact: what its package
//! databases say is installed (dpkg's `/var/lib/dpkg/status`, apk's
//! `/lib/apk/db/installed`, rpm's database ([`rpmdb`]), with
//! `/etc/os-release` for the distribution), read from a fresh instance of
//! the artifact through a [`Communicator`],
//! written as SPDX 2.3 JSON ([`spdx`]) and CycloneDX 1.6 JSON
//! ([`cyclonedx`]) with the artifact's digest as the described subject.
//!
//! Output is deterministic: packages sorted, ids derived from the package
//! URL, the creation time given by the caller (the build's), the document
//! namespace and serial number derived from the artifact's digest.
//!
//! Not supported yet: Berkeley DB / ndb rpm databases in an image without
//! `rpm` (an instance with one fails [`collect`] rather than giving an
//! empty bill), licenses of dpkg packages (dpkg does not record them;
//! `NOASSERTION`).

pub mod rpmdb;
pub mod rpmheader;

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::communicator::Communicator;

pub const DPKG_STATUS: &str = "/var/lib/dpkg/status";
pub const APK_INSTALLED: &str = "/lib/apk/db/installed";
pub const OS_RELEASE: &str = "/etc/os-release";

/// The package manager a package was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ecosystem {
    Deb,
    Apk,
    Rpm,
}

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Package {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub version: String,
    pub arch: Option<String>,
    /// The source package (dpkg `Source:`, apk `o:`, rpm's source rpm) and
    /// its version, when the database records one.
    pub source: Option<(String, String)>,
    /// A license as the database records it (apk `L:`, rpm `License`),
    /// not checked to be an SPDX expression.
    pub license: Option<String>,
}

/// What an artifact contains, as read from it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    /// `/etc/os-release` `ID` (`debian`, `alpine`, …).
    pub os_id: Option<String>,
    /// `/etc/os-release` `VERSION_ID`.
    pub os_version: Option<String>,
    /// `/etc/os-release` `PRETTY_NAME`.
    pub os_name: Option<String>,
    /// The databases read (paths in the artifact).
    pub databases: Vec<String>,
    /// Sorted, without duplicates.
    pub packages: Vec<Package>,
}

/// What the documents describe: the artifact and its content digest.
pub struct Subject<'a> {
    /// The artifact's id (`oci-layout:DIR:TAG`, `registry:REF`, a disk
    /// image's path, …).
    pub name: &'a str,
    /// `sha256:HEX`.
    pub digest: &'a str,
    /// The artifact's kind (`oci`, `qcow2`, `raw`, `ami`): what the
    /// documents call the subject (see [`Subject::purposes`]).
    pub kind: &'a str,
}

impl Subject<'_> {
    /// The subject's SPDX `primaryPackagePurpose` and CycloneDX component
    /// type: a container image is `CONTAINER`/`container`; a disk image
    /// file `FILE`/`file`; a cloud machine image (no file, no container)
    /// `OTHER`/`platform`.
    pub fn purposes(&self) -> (&'static str, &'static str) {
        match self.kind {
            "oci" => ("CONTAINER", "container"),
            "qcow2" | "raw" => ("FILE", "file"),
            _ => ("OTHER", "platform"),
        }
    }

    /// What the digest is of, when it is not the artifact's content: an
    /// AMI's is of its identity ([`AmiIdentity`]).
    fn digest_note(&self) -> Option<&'static str> {
        (self.kind == "ami").then_some(
            "an AMI has no content digest: the SHA-256 is of the canonical JSON {\"image_id\",\"region\",\"snapshot_ids\" (sorted)} of the image, as `aws ec2 describe-images` lists it (kiln docs/sbom.md)",
        )
    }
}

/// What identifies an AMI, which has no content digest: its region, its
/// id and its EBS snapshots (sorted). The sha256 of its canonical JSON —
/// `{"image_id":…,"region":…,"snapshot_ids":[…]}`, keys sorted, no
/// whitespace — stands in for the digest as the subject of its SBOMs;
/// anyone can recompute it from `aws ec2 describe-images` (docs/sbom.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmiIdentity {
    // Fields in sorted order: serde_json writes them so, which makes the
    // compact serialization the canonical JSON.
    pub image_id: String,
    pub region: String,
    pub snapshot_ids: Vec<String>,
}

impl AmiIdentity {
    /// The identity of `image_id` in `region` backed by `snapshot_ids` (in
    /// any order, as `describe-images` lists its block devices).
    pub fn new(region: &str, image_id: &str, snapshot_ids: &[String]) -> Self {
        let mut snapshot_ids = snapshot_ids.to_vec();
        snapshot_ids.sort();
        snapshot_ids.dedup();
        AmiIdentity {
            image_id: image_id.into(),
            region: region.into(),
            snapshot_ids,
        }
    }

    /// The subject's name: `ami:REGION/ami-…`.
    pub fn name(&self) -> String {
        format!("ami:{}/{}", self.region, self.image_id)
    }

    /// The canonical JSON the digest is taken over.
    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("JSON serializes")
    }

    /// `sha256:HEX` of [`AmiIdentity::canonical`].
    pub fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(self.canonical())))
    }
}

/// The value of one `Field:` of a dpkg paragraph.
fn field<'a>(para: &'a str, key: &str) -> Option<&'a str> {
    para.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|r| r.strip_prefix(':'))
            .map(str::trim)
    })
}

/// The installed packages of a dpkg status file (status `install ok
/// installed`; half-installed and config-files entries are left out).
pub fn parse_dpkg(status: &str) -> Vec<Package> {
    let mut out = vec![];
    for para in status.split("\n\n") {
        let (Some(name), Some(version)) = (field(para, "Package"), field(para, "Version")) else {
            continue;
        };
        if !field(para, "Status").is_some_and(|s| s.ends_with(" installed")) {
            continue;
        }
        let source = field(para, "Source").map(|s| match s.split_once(' ') {
            Some((n, v)) => (
                n.to_string(),
                v.trim()
                    .trim_start_matches('(')
                    .trim_end_matches(')')
                    .to_string(),
            ),
            None => (s.to_string(), version.to_string()),
        });
        out.push(Package {
            ecosystem: Ecosystem::Deb,
            name: name.into(),
            version: version.into(),
            arch: field(para, "Architecture").map(String::from),
            source,
            license: None,
        });
    }
    out
}

/// The installed packages of apk's database (`P:` name, `V:` version,
/// `A:` arch, `L:` license, `o:` origin — the source package).
pub fn parse_apk(db: &str) -> Vec<Package> {
    let mut out = vec![];
    for para in db.split("\n\n") {
        let f = |k: &str| para.lines().find_map(|l| l.strip_prefix(k)).map(str::trim);
        let (Some(name), Some(version)) = (f("P:"), f("V:")) else {
            continue;
        };
        out.push(Package {
            ecosystem: Ecosystem::Apk,
            name: name.into(),
            version: version.into(),
            arch: f("A:").map(String::from),
            source: f("o:").map(|o| (o.to_string(), version.to_string())),
            license: f("L:").filter(|l| !l.is_empty()).map(String::from),
        });
    }
    out
}

/// One `KEY=value` of `/etc/os-release` (quotes removed).
pub fn os_release_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l.trim().strip_prefix(key)?.strip_prefix('=')?;
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v);
        (!v.is_empty()).then(|| v.to_string())
    })
}

impl Inventory {
    /// An inventory from the texts of the files (each `None` when absent).
    pub fn from_texts(os_release: Option<&str>, dpkg: Option<&str>, apk: Option<&str>) -> Self {
        let mut inv = Inventory::default();
        if let Some(os) = os_release {
            inv.os_id = os_release_value(os, "ID");
            inv.os_version = os_release_value(os, "VERSION_ID");
            inv.os_name = os_release_value(os, "PRETTY_NAME");
        }
        if let Some(s) = dpkg {
            inv.databases.push(DPKG_STATUS.into());
            inv.packages.extend(parse_dpkg(s));
        }
        if let Some(s) = apk {
            inv.databases.push(APK_INSTALLED.into());
            inv.packages.extend(parse_apk(s));
        }
        inv.packages.sort();
        inv.packages.dedup();
        inv
    }

    /// Adds the packages of an rpm database, `label` naming it and how it
    /// was read.
    pub fn add_rpm(&mut self, label: String, headers: Vec<rpmheader::RpmHeader>) {
        self.databases.push(label);
        self.packages.extend(headers.into_iter().map(|h| Package {
            ecosystem: Ecosystem::Rpm,
            version: h.evr(),
            source: h.source_rpm.as_deref().and_then(rpmheader::source_of),
            name: h.name,
            arch: h.arch,
            license: h.license,
        }));
        self.packages.sort();
        self.packages.dedup();
    }

    /// The package URL of `p`: `pkg:deb/debian/NAME@VERSION?arch=…&distro=debian-12`,
    /// `pkg:rpm/fedora/NAME@[EPOCH:]VERSION-RELEASE?arch=…&distro=fedora-40`.
    pub fn purl(&self, p: &Package) -> String {
        let (ty, default_ns) = match p.ecosystem {
            Ecosystem::Deb => ("deb", "debian"),
            Ecosystem::Apk => ("apk", "alpine"),
            Ecosystem::Rpm => ("rpm", "redhat"),
        };
        let ns = self.os_id.as_deref().unwrap_or(default_ns);
        let mut q = vec![];
        if let Some(a) = &p.arch {
            q.push(format!("arch={}", pct(a)));
        }
        if let (Some(id), Some(v)) = (&self.os_id, &self.os_version) {
            q.push(format!("distro={}", pct(&format!("{id}-{v}"))));
        }
        if let Some((src, _)) = &p.source {
            if src != &p.name {
                q.push(format!("upstream={}", pct(src)));
            }
        }
        let mut s = format!("pkg:{ty}/{}/{}@{}", pct(ns), pct(&p.name), pct(&p.version));
        if !q.is_empty() {
            s.push('?');
            s.push_str(&q.join("&"));
        }
        s
    }
}

/// Percent-encoding of a purl component (everything but unreserved
/// characters).
fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// A stable id of a package: its name (in SPDX id characters) and a hash
/// of its purl.
fn package_id(purl: &str, p: &Package) -> String {
    let name: String = p
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{name}-{}", &sha256_hex(purl)[..12])
}

/// An SPDX/CycloneDX timestamp (`YYYY-MM-DDThh:mm:ssZ`) from any RFC 3339
/// time; the input unchanged when it does not parse.
pub fn timestamp(rfc3339: &str) -> String {
    humantime::parse_rfc3339_weak(rfc3339.trim_end_matches('Z'))
        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_else(|_| rfc3339.to_string())
}

fn source_text(p: &Package) -> Option<String> {
    p.source
        .as_ref()
        .map(|(n, v)| format!("built package from: {n} {v}"))
}

/// The SPDX 2.3 JSON document: the artifact as a package with its digest
/// (`documentDescribes`), each installed package `CONTAINED_BY`… — stated
/// as the artifact `CONTAINS` it — with its purl, and its source package
/// in `sourceInfo` (`built package from: NAME VERSION`).
pub fn spdx(inv: &Inventory, subject: &Subject, created: &str) -> Value {
    let hex = subject.digest.trim_start_matches("sha256:");
    let mut packages = vec![json!({
        "SPDXID": "SPDXRef-Artifact",
        "name": subject.name,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "checksums": [{ "algorithm": "SHA256", "checksumValue": hex }],
        "primaryPackagePurpose": subject.purposes().0,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
    })];
    if let Some(note) = subject.digest_note() {
        packages[0]["comment"] = note.into();
    }
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-Artifact",
    })];
    if let Some(os) = &inv.os_id {
        packages.push(json!({
            "SPDXID": "SPDXRef-OperatingSystem",
            "name": os,
            "versionInfo": inv.os_version.clone().unwrap_or_default(),
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "primaryPackagePurpose": "OPERATING-SYSTEM",
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "comment": inv.os_name.clone().unwrap_or_default(),
        }));
        relationships.push(json!({
            "spdxElementId": "SPDXRef-Artifact",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": "SPDXRef-OperatingSystem",
        }));
    }
    for p in &inv.packages {
        let purl = inv.purl(p);
        let id = format!("SPDXRef-Package-{}", package_id(&purl, p));
        let mut pkg = json!({
            "SPDXID": id,
            "name": p.name,
            "versionInfo": p.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "primaryPackagePurpose": "LIBRARY",
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": purl,
            }],
        });
        if let Some(s) = source_text(p) {
            pkg["sourceInfo"] = s.into();
        }
        if let Some(l) = &p.license {
            pkg["licenseComments"] = format!("as recorded by the package database: {l}").into();
        }
        packages.push(pkg);
        relationships.push(json!({
            "spdxElementId": "SPDXRef-Artifact",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": subject.name,
        "documentNamespace": format!("https://kiln.invalid/spdx/sha256/{hex}"),
        "creationInfo": {
            "created": timestamp(created),
            "creators": [format!("Tool: kiln-{}", env!("CARGO_PKG_VERSION"))],
            "comment": format!("read from {} of the artifact", inv.databases.join(", ")),
        },
        "documentDescribes": ["SPDXRef-Artifact"],
        "packages": packages,
        "relationships": relationships,
    })
}

/// A UUID (version 5 layout) from a digest, for a stable serial number.
fn uuid_of(hex: &str) -> String {
    let h = Sha256::digest(format!("kiln-cyclonedx:{hex}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(b).to_string()
}

/// The CycloneDX 1.6 JSON document: the artifact as
/// `metadata.component` (type `container`, its SHA-256), the operating
/// system and each installed package as components with purls, the
/// source package as `kiln:package:source` properties.
pub fn cyclonedx(inv: &Inventory, subject: &Subject, created: &str) -> Value {
    let hex = subject.digest.trim_start_matches("sha256:");
    let mut components = vec![];
    if let Some(os) = &inv.os_id {
        let mut c = json!({
            "type": "operating-system",
            "bom-ref": "os",
            "name": os,
        });
        if let Some(v) = &inv.os_version {
            c["version"] = v.clone().into();
        }
        if let Some(n) = &inv.os_name {
            c["description"] = n.clone().into();
        }
        components.push(c);
    }
    for p in &inv.packages {
        let purl = inv.purl(p);
        let mut c = json!({
            "type": "library",
            "bom-ref": purl,
            "name": p.name,
            "version": p.version,
            "purl": purl,
        });
        if let Some(l) = &p.license {
            c["licenses"] = json!([{ "license": { "name": l } }]);
        }
        let mut props = vec![];
        if let Some((n, v)) = &p.source {
            props.push(json!({ "name": "kiln:package:source", "value": n }));
            props.push(json!({ "name": "kiln:package:source-version", "value": v }));
        }
        if let Some(a) = &p.arch {
            props.push(json!({ "name": "kiln:package:arch", "value": a }));
        }
        if !props.is_empty() {
            c["properties"] = props.into();
        }
        components.push(c);
    }
    let mut artifact = json!({
        "type": subject.purposes().1,
        "bom-ref": "artifact",
        "name": subject.name,
        "hashes": [{ "alg": "SHA-256", "content": hex }],
    });
    if let Some(note) = subject.digest_note() {
        artifact["description"] = note.into();
    }
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": format!("urn:uuid:{}", uuid_of(hex)),
        "version": 1,
        "metadata": {
            "timestamp": timestamp(created),
            "tools": { "components": [{ "type": "application", "name": "kiln", "version": env!("CARGO_PKG_VERSION") }] },
            "component": artifact,
            "properties": [{ "name": "kiln:databases", "value": inv.databases.join(",") }],
        },
        "components": components,
    })
}

/// Reads the package databases of a running instance of the artifact;
/// `Err` when none can be read, or an rpm database only an `rpm` the image
/// lacks could read (not supported yet). `scratch` is a journaled folder of
/// the job for what is copied out (an rpm sqlite database).
pub async fn collect(comm: &dyn Communicator, scratch: &Path) -> Result<Inventory, String> {
    returns_output(comm).await?;
    let os = read_text(comm, OS_RELEASE, MAX_OS_RELEASE_BYTES).await?;
    let os = match os {
        Some(t) => Some(t),
        None => read_text(comm, "/usr/lib/os-release", MAX_OS_RELEASE_BYTES).await?,
    };
    let dpkg = read_text(comm, DPKG_STATUS, MAX_TEXT_DB_BYTES).await?;
    let apk = read_text(comm, APK_INSTALLED, MAX_TEXT_DB_BYTES).await?;
    let rpm = rpmdb::read(comm, scratch).await?;
    if dpkg.is_none() && apk.is_none() && rpm.is_none() {
        return Err(format!(
            "no package database found in the artifact (`{DPKG_STATUS}`, `{APK_INSTALLED}`, `{}`)",
            rpmdb::SQLITE_DBS.join("`, `")
        ));
    }
    let mut inv = Inventory::from_texts(os.as_deref(), dpkg.as_deref(), apk.as_deref());
    if let Some(r) = rpm {
        inv.add_rpm(r.label, r.packages);
    }
    if inv.packages.is_empty() {
        return Err(format!(
            "the instance returned no package database content: {} read, but no installed package in it (an empty bill is never written)",
            inv.databases
                .iter()
                .map(|d| format!("`{d}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(inv)
}

/// The most of a text database (dpkg status, apk installed) kiln takes
/// from an instance: a large server's dpkg status is a few MiB.
pub const MAX_TEXT_DB_BYTES: usize = 64 << 20;
const MAX_OS_RELEASE_BYTES: usize = 64 << 10;

/// A text file of the instance (`cat`), `None` when it cannot be read;
/// refused once more than `cap` bytes arrived — counted here as the lines
/// come in, whatever the instance's `cat` does — so an image cannot make
/// the host hold more than `cap`.
async fn read_text(
    comm: &dyn Communicator,
    path: &str,
    cap: usize,
) -> Result<Option<String>, String> {
    let cmd = crate::communicator::RemoteCommand {
        script: format!("cat {} 2>/dev/null", crate::communicator::sh_quote(path)),
        timeout: Some(std::time::Duration::from_secs(120)),
        ..Default::default()
    };
    let (mut text, mut lines, mut over) = (String::new(), 0usize, false);
    let code = comm
        .exec(&cmd, &mut |s, line| {
            if s != crate::ui::Stream::Stdout || over {
                return;
            }
            if text.len() + line.len() + 1 > cap {
                over = true;
                text = String::new();
                return;
            }
            if lines > 0 {
                text.push('\n');
            }
            text.push_str(&line);
            lines += 1;
        })
        .await
        .map_err(|e| e.to_string())?;
    if over {
        return Err(format!(
            "`{path}` in the instance is larger than {cap} bytes: refused"
        ));
    }
    Ok((code == 0).then_some(text))
}

/// The line a probe command prints, to tell an instance whose
/// communicator returns no output from one with no package database.
const PROBE: &str = "kiln-sbom-probe";

/// Refuses a communicator that runs commands but returns none of their
/// output (moto's SSM answers every command with empty output): every
/// database would read as empty, and the bill with it.
async fn returns_output(comm: &dyn Communicator) -> Result<(), String> {
    let cmd = crate::communicator::RemoteCommand {
        script: format!("echo {PROBE}"),
        timeout: Some(std::time::Duration::from_secs(60)),
        ..Default::default()
    };
    let mut seen = false;
    let code = comm
        .exec(&cmd, &mut |_, line| seen |= line.trim() == PROBE)
        .await
        .map_err(|e| e.to_string())?;
    if code != 0 || !seen {
        return Err(format!(
            "the instance returned no package database: `echo {PROBE}` gave no output (exit {code}), so its communicator returns no command output and nothing can be read through it"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DPKG: &str = "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nMulti-Arch: same\nSource: glibc\nVersion: 2.36-9+deb12u4\n\nPackage: removed\nStatus: deinstall ok config-files\nVersion: 1.0\n\nPackage: libstdc++6\nStatus: install ok installed\nArchitecture: amd64\nSource: gcc-12 (12.2.0-14)\nVersion: 12.2.0-14\n\nPackage: bsdutils\nStatus: install ok installed\nArchitecture: amd64\nSource: util-linux (2.38.1-5)\nVersion: 1:2.38.1-5+deb12u1\nDescription: basic utilities\n more\n";
    const OS: &str = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n";

    fn subject() -> (String, String) {
        (
            "oci-layout:/out:1".into(),
            format!("sha256:{}", "ab".repeat(32)),
        )
    }

    #[test]
    fn dpkg_packages_with_sources_and_purls() {
        let inv = Inventory::from_texts(Some(OS), Some(DPKG), None);
        let names: Vec<_> = inv.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["bsdutils", "libc6", "libstdc++6"]);
        let bsd = &inv.packages[0];
        assert_eq!(bsd.source, Some(("util-linux".into(), "2.38.1-5".into())));
        assert_eq!(
            inv.purl(bsd),
            "pkg:deb/debian/bsdutils@1%3A2.38.1-5%2Bdeb12u1?arch=amd64&distro=debian-12&upstream=util-linux"
        );
        assert_eq!(
            inv.packages[1].source,
            Some(("glibc".into(), "2.36-9+deb12u4".into()))
        );
        assert_eq!(
            inv.purl(&inv.packages[2]),
            "pkg:deb/debian/libstdc%2B%2B6@12.2.0-14?arch=amd64&distro=debian-12&upstream=gcc-12"
        );
    }

    #[test]
    fn apk_packages() {
        let db = "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\nL:MIT\no:musl\n\nC:Q1def=\nP:busybox-binsh\nV:1.36.1-r5\nA:x86_64\nL:GPL-2.0-only\no:busybox\n";
        let inv = Inventory::from_texts(Some("ID=alpine\nVERSION_ID=3.19.1\n"), None, Some(db));
        assert_eq!(inv.packages.len(), 2);
        assert_eq!(
            inv.purl(&inv.packages[0]),
            "pkg:apk/alpine/busybox-binsh@1.36.1-r5?arch=x86_64&distro=alpine-3.19.1&upstream=busybox"
        );
        assert_eq!(inv.packages[1].license.as_deref(), Some("MIT"));
    }

    #[test]
    fn documents_are_deterministic_and_describe_the_artifact() {
        let inv = Inventory::from_texts(Some(OS), Some(DPKG), None);
        let (name, digest) = subject();
        let s = Subject {
            name: &name,
            digest: &digest,
            kind: "oci",
        };
        let a = spdx(&inv, &s, "2026-12-06T20:00:00.123Z");
        assert_eq!(a, spdx(&inv, &s, "2026-12-06T20:00:00.123Z"));
        assert_eq!(a["creationInfo"]["created"], "2026-12-06T20:00:00Z");
        assert_eq!(a["documentDescribes"][0], "SPDXRef-Artifact");
        assert_eq!(
            a["packages"][0]["checksums"][0]["checksumValue"],
            "ab".repeat(32)
        );
        // artifact, OS, three packages
        assert_eq!(a["packages"].as_array().unwrap().len(), 5);
        assert_eq!(
            a["packages"][2]["sourceInfo"],
            "built package from: util-linux 2.38.1-5"
        );
        let c = cyclonedx(&inv, &s, "2026-12-06T20:00:00Z");
        assert_eq!(c, cyclonedx(&inv, &s, "2026-12-06T20:00:00Z"));
        assert_eq!(
            c["metadata"]["component"]["hashes"][0]["content"],
            "ab".repeat(32)
        );
        assert_eq!(c["components"].as_array().unwrap().len(), 4);
        assert!(c["serialNumber"].as_str().unwrap().starts_with("urn:uuid:"));
    }

    #[test]
    fn rpm_packages_and_purls() {
        let mut inv = Inventory::from_texts(Some("ID=fedora\nVERSION_ID=40\n"), None, None);
        let h = rpmheader::parse(&rpmheader::tests::hello()).unwrap();
        inv.add_rpm(
            "/var/lib/rpm/rpmdb.sqlite (sqlite, read by kiln)".into(),
            vec![h],
        );
        let p = &inv.packages[0];
        assert_eq!(p.version, "2:2.1-3.fc40");
        assert_eq!(p.source, Some(("hello-src".into(), "2.1-3.fc40".into())));
        assert_eq!(p.license.as_deref(), Some("MIT"));
        assert_eq!(
            inv.purl(p),
            "pkg:rpm/fedora/hello@2%3A2.1-3.fc40?arch=noarch&distro=fedora-40&upstream=hello-src"
        );
        assert_eq!(
            inv.databases,
            ["/var/lib/rpm/rpmdb.sqlite (sqlite, read by kiln)"]
        );
    }

    /// Through the local communicator (the host's `sh` and `cat`): a
    /// file within the cap is read whole, a larger one refused, a missing
    /// one is `None`.
    #[tokio::test]
    async fn text_databases_are_read_within_a_cap() {
        use crate::communicator::local::LocalCommunicator;
        use crate::job::{Journal, Reapers, Undo};
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let undo = Undo::new(Journal::new(d), Reapers::default(), "b", "j");
        let comm = LocalCommunicator::new(d.into(), d.join("scripts"), undo.clone());
        let f = d.join("status");
        std::fs::write(&f, DPKG).unwrap();
        let path = f.display().to_string();
        let read = read_text(&comm, &path, DPKG.len()).await.unwrap().unwrap();
        assert_eq!(parse_dpkg(&read), parse_dpkg(DPKG));
        assert_eq!(read, DPKG.trim_end());
        let err = read_text(&comm, &path, DPKG.len() / 2).await.unwrap_err();
        assert!(err.contains("is larger than"), "{err}");
        let missing = d.join("none").display().to_string();
        assert_eq!(read_text(&comm, &missing, 100).await.unwrap(), None);
        // And the whole read: the probe answers, the database is read.
        returns_output(&comm).await.unwrap();
        undo.unwind().await;
    }

    #[test]
    fn an_ami_identity_digest_is_the_documented_recipe() {
        // The digest `jq -cj '{image_id: $i, region: $r, snapshot_ids: (… |
        // sort)}' | sha256sum` gives (docs/sbom.md), computed with them.
        let id = AmiIdentity::new(
            "us-east-1",
            "ami-0123456789abcdef0",
            &["snap-0bbb".into(), "snap-0aaa".into()],
        );
        assert_eq!(
            String::from_utf8(id.canonical()).unwrap(),
            r#"{"image_id":"ami-0123456789abcdef0","region":"us-east-1","snapshot_ids":["snap-0aaa","snap-0bbb"]}"#
        );
        assert_eq!(
            id.digest(),
            "sha256:70ccc65467c2e10599eebf31fcc682e6f6cae52cb073731206528b0ca1e05cd7"
        );
        assert_eq!(id.name(), "ami:us-east-1/ami-0123456789abcdef0");
    }

    #[test]
    fn os_release_values() {
        assert_eq!(os_release_value(OS, "ID").as_deref(), Some("debian"));
        assert_eq!(os_release_value(OS, "VERSION_ID").as_deref(), Some("12"));
        assert_eq!(os_release_value("ID='x'\n", "ID").as_deref(), Some("x"));
        assert_eq!(os_release_value(OS, "VERSION"), None);
    }
}
