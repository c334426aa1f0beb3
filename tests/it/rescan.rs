//! `kiln rescan` end to end: a busybox OCI build with a planted Debian 12
//! dpkg database and `[build.sbom]`, registered in channel `prod`, is
//! rescanned offline against feeds the test writes (Debian
//! security-tracker JSON and a folder of OSV records) and OpenVEX
//! documents: the planted vulnerable versions are found (epoch, `~` and
//! revision boundaries included), a live VEX statement takes its finding
//! out of the count, an expired one is ignored and said so, `--fail-on`
//! sets the exit code. Debian version matching is cross-checked against
//! `debsecan` (Debian's own scanner, python3-apt's comparison) reading the
//! same status file and the same feed, served in its format on loopback.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::path::Path;

use crate::oci::busybox_rootfs;
use crate::{assert_exit, text, Scratch};

/// Installed packages (binary, version, source (version)) of the planted
/// Debian 12 image.
const STATUS: &str = "\
Package: libssl3
Status: install ok installed
Architecture: amd64
Source: openssl
Version: 3.0.11-1~deb12u1

Package: zlib1g
Status: install ok installed
Architecture: amd64
Source: zlib
Version: 1:1.2.13.dfsg-1

Package: tar
Status: install ok installed
Architecture: amd64
Version: 1.34+dfsg-1.2

Package: bash
Status: install ok installed
Architecture: amd64
Source: bash (5.2.15-2)
Version: 5.2.15-2+b2

Package: sudo
Status: install ok installed
Architecture: amd64
Version: 1.9.13p3-1+deb12u1

Package: libgnutls30
Status: install ok installed
Architecture: amd64
Source: gnutls28
Version: 3.7.9-2
";

/// Debian security-tracker JSON: (source, CVE, bookworm status, fixed
/// version, urgency) and whether the planted version is affected.
const TRACKER: &[(&str, &str, &str, &str, &str, bool)] = &[
    // `~deb12u1` < `~deb12u2`: affected; fixed exactly at the installed
    // version: not.
    (
        "openssl",
        "CVE-2099-0001",
        "resolved",
        "3.0.11-1~deb12u2",
        "high",
        true,
    ),
    (
        "openssl",
        "CVE-2099-0002",
        "resolved",
        "3.0.11-1~deb12u1",
        "high",
        false,
    ),
    // The epoch: `1:` outweighs a larger upstream without one.
    (
        "zlib",
        "CVE-2099-0003",
        "resolved",
        "1.2.14-1",
        "medium",
        false,
    ),
    (
        "zlib",
        "CVE-2099-0004",
        "resolved",
        "1:1.2.13.dfsg-2",
        "high",
        true,
    ),
    // Revisions: `-1.2` < `-1.2+deb12u1`, `-1.2` > `-1.1`.
    (
        "tar",
        "CVE-2099-0005",
        "resolved",
        "1.34+dfsg-1.2+deb12u1",
        "low",
        true,
    ),
    (
        "tar",
        "CVE-2099-0006",
        "resolved",
        "1.34+dfsg-1.1",
        "low",
        false,
    ),
    // A binNMU: the source version (5.2.15-2) is what is compared.
    (
        "bash",
        "CVE-2099-0007",
        "resolved",
        "5.2.15-2",
        "medium",
        false,
    ),
    // Open, no fix: affected whatever the version.
    ("sudo", "CVE-2099-0008", "open", "", "unimportant", true),
    // Never affected in bookworm.
    ("gnutls28", "CVE-2099-0009", "resolved", "0", "high", false),
];

fn tracker_json() -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (pkg, cve, status, fixed, urgency, _) in TRACKER {
        let mut rel = serde_json::json!({ "status": status, "urgency": urgency });
        if !fixed.is_empty() {
            rel["fixed_version"] = (*fixed).into();
        }
        m.entry(pkg.to_string())
            .or_insert_with(|| serde_json::json!({}))
            .as_object_mut()
            .unwrap()
            .insert(
                cve.to_string(),
                serde_json::json!({ "description": "test", "releases": { "bookworm": rel, "bullseye": { "status": "open", "urgency": "high" } } }),
            );
    }
    serde_json::Value::Object(m)
}

/// The same feed in debsecan's own format (`VERSION 1`, vulnerability
/// names, then `source,index,flags,fixed,` lines), zlib-compressed.
fn debsecan_feed() -> Vec<u8> {
    let mut names = String::new();
    let mut lines = String::new();
    for (i, (pkg, cve, status, fixed, urgency, _)) in TRACKER.iter().enumerate() {
        names.push_str(&format!("{cve},,test\n"));
        if *status == "resolved" && *fixed == "0" {
            continue;
        }
        let u = match *urgency {
            "low" => 'L',
            "medium" => 'M',
            "high" => 'H',
            _ => ' ',
        };
        let fix = if fixed.is_empty() { ' ' } else { 'F' };
        lines.push_str(&format!("{pkg},{i},S{u}?{fix},{fixed},\n"));
    }
    let body = format!("VERSION 1\n{names}\n{lines}\n\n");
    let mut z = flate2::write::ZlibEncoder::new(vec![], flate2::Compression::default());
    z.write_all(body.as_bytes()).unwrap();
    z.finish().unwrap()
}

/// Serves `body` to every GET on loopback; returns the base URL.
fn serve(body: Vec<u8>) -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let head = format!(
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n",
                body.len()
            );
            let _ = c.write_all(head.as_bytes());
            let _ = c.write_all(&body);
        }
    });
    url
}

const OSV_CRITICAL: &str = r#"{
  "schema_version": "1.6.0",
  "id": "DSA-9999-1",
  "aliases": ["CVE-2099-1000"],
  "summary": "openssl: planted critical",
  "database_specific": { "severity": "CRITICAL" },
  "affected": [{
    "package": { "ecosystem": "Debian:12", "name": "openssl" },
    "ranges": [{ "type": "ECOSYSTEM", "events": [ { "introduced": "0" }, { "fixed": "3.0.11-1~deb12u2" } ] }]
  }]
}"#;

const OSV_OTHER_RELEASE: &str = r#"{
  "id": "DSA-9999-2",
  "database_specific": { "severity": "CRITICAL" },
  "affected": [{
    "package": { "ecosystem": "Debian:11", "name": "openssl" },
    "ranges": [{ "type": "ECOSYSTEM", "events": [ { "introduced": "0" } ] }]
  }]
}"#;

const OSV_LISTED: &str = r#"{
  "id": "OSV-2099-3",
  "database_specific": { "severity": "MODERATE" },
  "affected": [{
    "package": { "ecosystem": "Debian", "name": "gnutls28" },
    "versions": ["3.7.9-2"]
  }]
}"#;

/// OpenVEX: the critical (by its CVE alias) not affected until 2099; the
/// zlib finding not affected until 2020, long expired.
const VEX: &str = r#"{
  "@context": "https://openvex.dev/ns/v0.2.0",
  "@id": "https://example.com/vex/kiln-test",
  "author": "Image Security <security@example.com>",
  "timestamp": "2026-01-01T00:00:00Z",
  "version": 1,
  "statements": [
    {
      "vulnerability": { "name": "CVE-2099-1000" },
      "products": [{ "@id": "pkg:oci/gated", "subcomponents": [{ "@id": "pkg:deb/debian/libssl3" }] }],
      "status": "not_affected",
      "justification": "vulnerable_code_not_in_execute_path",
      "kiln:expires": "2099-01-01T00:00:00Z"
    },
    {
      "vulnerability": { "name": "CVE-2099-0004" },
      "products": [{ "@id": "pkg:deb/debian/zlib1g" }],
      "status": "not_affected",
      "justification": "inline_mitigations_already_exist",
      "kiln:expires": "2020-01-01T00:00:00Z"
    }
  ]
}"#;

fn ready() -> bool {
    crate::require("rescan", &["runc", "busybox"], true)
}

/// Builds and registers the planted image (channel `prod`).
fn planted_build(s: &Scratch) {
    busybox_rootfs(
        s,
        &[
            ("etc/os-release", "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\nID=debian\n"),
            ("var/lib/dpkg/status", STATUS),
        ],
    );
    let t = s.write(
        "t.toml",
        "[image]\nname = \"gated\"\nversion = \"1.0.0\"\n\n[source.oci.img]\nfrom = \"rootfs:base.tar\"\nto = [\"oci-layout:out/img:1\"]\nnetwork = \"none\"\n\n[[build]]\nsources = [\"oci.img\"]\n\n[[build.provisioner]]\ntype = \"shell\"\ninline = [\"echo hi > /etc/motd\"]\n\n[build.sbom]\nenabled = true\n\n[build.register]\nchannels = [\"prod\"]\n",
    );
    let o = s.kiln().arg("build").arg(&t).output().unwrap();
    assert_exit(&o, 0);
}

fn write_feeds(s: &Scratch) {
    s.write("tracker.json", &tracker_json().to_string());
    s.write("osv/DSA-9999-1.json", OSV_CRITICAL);
    s.write("osv/DSA-9999-2.json", OSV_OTHER_RELEASE);
    s.write("osv/OSV-2099-3.json", OSV_LISTED);
    s.write("vex.json", VEX);
}

/// (id, package) of every finding in a `--json` report, with the VEX
/// status each carries.
fn findings(report: &serde_json::Value) -> Vec<(String, String, Option<String>)> {
    report["versions"][0]["artifacts"][0]["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no findings in {report:#}"))
        .iter()
        .map(|f| {
            (
                f["id"].as_str().unwrap().to_string(),
                f["package"].as_str().unwrap().to_string(),
                f["vex"]["status"].as_str().map(String::from),
            )
        })
        .collect()
}

#[test]
fn rescan_finds_planted_versions_honours_vex_and_ignores_expired_statements() {
    if !ready() {
        return;
    }
    let s = Scratch::new();
    planted_build(&s);
    write_feeds(&s);

    let o = s
        .kiln()
        .args([
            "rescan",
            "gated",
            "--feed",
            "tracker.json",
            "--feed",
            "osv",
            "--vex",
            "vex.json",
            "--json",
        ])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let (out, err) = text(&o);
    assert!(
        err.contains("vex.json#2") && err.contains("expired") && err.contains("ignored"),
        "{err}"
    );
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["versions"][0]["version"], "1.0.0+1", "{r:#}");
    assert_eq!(r["versions"][0]["channels"], serde_json::json!(["prod"]));
    assert_eq!(r["versions"][0]["artifacts"][0]["scanned"], true);
    let got: BTreeSet<_> = findings(&r).into_iter().collect();
    let not_affected = Some("not_affected".to_string());
    let want: BTreeSet<(String, String, Option<String>)> = [
        ("CVE-2099-0001", "libssl3", None),
        ("DSA-9999-1", "libssl3", not_affected.clone()),
        ("CVE-2099-0004", "zlib1g", None),
        ("CVE-2099-0005", "tar", None),
        ("CVE-2099-0008", "sudo", None),
        ("OSV-2099-3", "libgnutls30", None),
    ]
    .into_iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c))
    .collect();
    assert_eq!(got, want);
    let counts = &r["versions"][0]["counts"];
    assert_eq!(counts["critical"], 0, "{counts}");
    assert_eq!(counts["high"], 2, "{counts}");
    assert_eq!(counts["medium"], 1, "{counts}");
    assert_eq!(counts["low"], 2, "{counts}");
    assert_eq!(counts["vex_not_affected"], 1, "{counts}");
    assert_eq!(r["channels"][0]["channel"], "prod");
    let zlib = r["versions"][0]["artifacts"][0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["package"] == "zlib1g")
        .unwrap();
    assert_eq!(zlib["fixed"], "1:1.2.13.dfsg-2");
    assert!(
        zlib["expired_vex"][0]
            .as_str()
            .unwrap()
            .contains("vex.json#2"),
        "{zlib}"
    );

    // Thresholds: the critical is VEX'd away, the highs are not.
    let o = s
        .kiln()
        .args([
            "rescan",
            "--feed",
            "tracker.json",
            "--feed",
            "osv",
            "--vex",
            "vex.json",
            "--fail-on",
            "critical",
        ])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let out = text(&o).0;
    assert!(
        out.contains(
            "channel gated/prod -> 1.0.0+1: 2 high, 1 medium, 2 low; 1 not affected per VEX"
        ),
        "{out}"
    );
    assert!(out.contains("[VEX not_affected by Image Security <security@example.com> until 2099-01-01T00:00:00Z]"), "{out}");
    let o = s
        .kiln()
        .args([
            "rescan",
            "--feed",
            "tracker.json",
            "--feed",
            "osv",
            "--vex",
            "vex.json",
            "--fail-on",
            "high",
        ])
        .output()
        .unwrap();
    assert_exit(&o, 1);
    // Without the VEX document the critical counts.
    let o = s
        .kiln()
        .args(["rescan", "--feed", "osv", "--fail-on", "critical"])
        .output()
        .unwrap();
    assert_exit(&o, 1);
    assert!(text(&o).0.contains("critical DSA-9999-1"), "{:?}", text(&o));

    // The recorded SBOM edited after the build: not scanned, exit 1.
    let cdx = crate::files_under(&s.state().join("manifests"))
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".cdx.json"))
        .unwrap();
    let doc = std::fs::read_to_string(&cdx).unwrap();
    std::fs::write(&cdx, doc.replace("3.0.11-1~deb12u1", "3.0.11-1~deb12u9")).unwrap();
    let o = s.kiln().args(["rescan", "--feed", "osv"]).output().unwrap();
    assert_exit(&o, 1);
    assert!(
        text(&o).0.contains("NOT SCANNED")
            && text(&o).0.contains("is not the one the manifest recorded"),
        "{:?}",
        text(&o)
    );
}

/// Hostile inputs, no catalog needed: a broken feed is named by
/// file:line:col, a VEX statement without an expiry or author is refused
/// by position, an unsupported OSV range type by name.
#[test]
fn bad_feeds_and_vex_are_refused_with_their_position() {
    let s = Scratch::new();
    s.write("bad.json", "{\n  \"id\": \"X\",\n  \"affected\": [,]\n}\n");
    let o = s
        .kiln()
        .args(["rescan", "--feed", "bad.json"])
        .output()
        .unwrap();
    assert_exit(&o, 2);
    assert!(text(&o).1.contains("bad.json:3:"), "{:?}", text(&o));
    s.write("semver.json", r#"{"id":"G","affected":[{"package":{"ecosystem":"Debian:12","name":"a"},"ranges":[{"type":"GIT","events":[]}]}]}"#);
    let o = s
        .kiln()
        .args(["rescan", "--feed", "semver.json"])
        .output()
        .unwrap();
    assert_exit(&o, 2);
    assert!(
        text(&o).1.contains("range type `GIT` is not supported"),
        "{:?}",
        text(&o)
    );
    s.write("osv/a.json", OSV_CRITICAL);
    s.write(
        "vex.json",
        &VEX.replace(
            "\"kiln:expires\": \"2020-01-01T00:00:00Z\"",
            "\"impact_statement\": \"x\"",
        ),
    );
    let o = s
        .kiln()
        .args(["rescan", "--feed", "osv", "--vex", "vex.json"])
        .output()
        .unwrap();
    assert_exit(&o, 2);
    assert!(
        text(&o)
            .1
            .contains("vex.json#2: the statement has no expiry"),
        "{:?}",
        text(&o)
    );
    s.write(
        "anon.json",
        &VEX.replace("\"author\": \"Image Security <security@example.com>\",", ""),
    );
    let o = s
        .kiln()
        .args(["rescan", "--feed", "osv", "--vex", "anon.json"])
        .output()
        .unwrap();
    assert_exit(&o, 2);
    assert!(
        text(&o)
            .1
            .contains("anon.json#1: the statement is not attributed"),
        "{:?}",
        text(&o)
    );
    // `kiln vex sign` refuses to sign what a rescan would refuse, before
    // it needs a key; a `--vex-key` that is no public key is named.
    let o = s
        .kiln()
        .args(["vex", "sign", "anon.json", "--key", "missing.key"])
        .output()
        .unwrap();
    assert_exit(&o, 2);
    assert!(
        text(&o)
            .1
            .contains("anon.json#1: the statement is not attributed"),
        "{:?}",
        text(&o)
    );
    s.write(
        "not-a-key.pub",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    );
    let o = s
        .kiln()
        .args(["rescan", "--feed", "osv", "--vex-key", "not-a-key.pub"])
        .output()
        .unwrap();
    assert_exit(&o, 2);
    assert!(
        text(&o).1.contains("VEX key `not-a-key.pub`")
            && text(&o).1.contains("is not a public key"),
        "{:?}",
        text(&o)
    );
}

/// debsecan, on the same status file and the same tracker data (in its
/// own format, served on loopback), reports the same (CVE, package)
/// pairs as `kiln rescan` does from the image's SBOM; and both agree with
/// the expectations written beside the feed.
#[test]
fn debian_matching_agrees_with_debsecan() {
    if !ready() || !crate::require("rescan (debsecan cross-check)", &["debsecan"], false) {
        return;
    }
    let s = Scratch::new();
    planted_build(&s);
    write_feeds(&s);
    let status = s.write("status", STATUS);
    let url = serve(debsecan_feed());
    let o = std::process::Command::new("debsecan")
        .args(["--suite", "bookworm", "--format", "simple", "--history"])
        .arg(s.path().join("history"))
        .arg("--source")
        .arg(&url)
        .arg("--status")
        .arg(&status)
        .arg("--whitelist")
        .arg(s.path().join("whitelist"))
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let theirs: BTreeSet<(String, String)> = text(&o)
        .0
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();

    let o = s
        .kiln()
        .args(["rescan", "--feed", "tracker.json", "--json"])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let r: serde_json::Value = serde_json::from_str(text(&o).0.trim()).unwrap();
    let ours: BTreeSet<(String, String)> = findings(&r)
        .into_iter()
        .map(|(id, pkg, _)| (id, pkg))
        .collect();
    assert_eq!(ours, theirs, "kiln (left) and debsecan (right) disagree");
    fn binary_of(src: &str) -> &str {
        match src {
            "openssl" => "libssl3",
            "zlib" => "zlib1g",
            "gnutls28" => "libgnutls30",
            other => other,
        }
    }
    let expected: BTreeSet<(String, String)> = TRACKER
        .iter()
        .filter(|t| t.5)
        .map(|t| (t.1.to_string(), binary_of(t.0).to_string()))
        .collect();
    assert_eq!(ours, expected);
}

/// The gate of issue 24: no critical vulnerability without VEX, no
/// promotion to `prod` without a logged rescan, no stale feed.
const GATE: &str = r#"package kiln.promote

deny_vulnerable contains msg if {
	some f in input.vulnerabilities.findings
	f.severity == "critical"
	not f.vex
	msg := sprintf("critical %s in %s without a VEX statement", [f.id, f.package])
}

deny_unscanned contains "no rescan of this version is logged" if {
	input.channel == "prod"
	not input.vulnerabilities.scanned
}

deny_stale_feed contains msg if {
	input.vulnerabilities.feed_age_days > 30
	msg := sprintf("the vulnerability feed is %v days old", [input.vulnerabilities.feed_age_days])
}
"#;

/// The planted Debian image with `[build.sbom]`, signed, the gate above
/// and channel `dev` (allowed at build: not `prod`).
fn gated_build(s: &Scratch) {
    busybox_rootfs(
        s,
        &[
            (
                "etc/os-release",
                "ID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n",
            ),
            ("var/lib/dpkg/status", STATUS),
        ],
    );
    s.write("gate.rego", GATE);
    let t = s.write(
        "t.toml",
        "[image]\nname = \"gated\"\nversion = \"1.0.0\"\n\n[source.oci.img]\nfrom = \"rootfs:base.tar\"\nto = [\"oci-layout:out/img:1\"]\nnetwork = \"none\"\n\n[[build]]\nsources = [\"oci.img\"]\n\n[[build.provisioner]]\ntype = \"shell\"\ninline = [\"echo hi > /etc/motd\"]\n\n[build.sbom]\nenabled = true\n\n[build.sign]\nkey = \"cosign.key\"\n\n[build.policy]\nfiles = [\"gate.rego\"]\n\n[build.register]\nchannels = [\"dev\"]\n",
    );
    s.keygen("cosign", "pw");
    let o = s
        .kiln()
        .arg("build")
        .arg(&t)
        .env("KILN_PASSWORD", "pw")
        .output()
        .unwrap();
    assert_exit(&o, 0);
}

fn audit_log(s: &Scratch) -> Vec<serde_json::Value> {
    let o = s.kiln().args(["audit", "--json"]).output().unwrap();
    assert_exit(&o, 0);
    let a: serde_json::Value = serde_json::from_str(text(&o).0.trim()).unwrap();
    a["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["change"].clone())
        .collect()
}

/// Asserts the exit code and that stderr names `needle`.
#[track_caller]
fn refused(o: &std::process::Output, code: i32, needle: &str) {
    assert_exit(o, code);
    assert!(
        text(o).1.contains(needle),
        "`{needle}` not in {:?}",
        text(o)
    );
}

fn key_id_of(pem: &Path) -> String {
    use sha2::Digest as _;
    let pem = std::fs::read_to_string(pem).unwrap();
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(pem.trim().as_bytes()))
    )
}

/// Build (planted vulnerable openssl) → rescan with a feed naming a
/// critical → `promote` to prod denied, naming the rule → the security
/// team's VEX, signed with `kiln vex sign`, marks it not_affected → an
/// unsigned, wrongly signed or tampered VEX is refused by name and logs
/// nothing → rescan with the signed VEX → promote allowed. Every rescan
/// and decision is a signed entry `kiln audit` shows and verifies; an
/// edited rescan entry breaks the chain. The signed VEX is checked by
/// securesystemslib and sigstore-js; a VEX signed by securesystemslib
/// (in-toto statement form) is honoured by kiln; OPA decides the same on
/// the real inputs.
#[test]
fn logged_rescans_and_signed_vex_decide_promotion() {
    if !ready() {
        return;
    }
    let s = Scratch::new();
    gated_build(&s);
    s.keygen("sec", "pw");
    s.keygen("other", "pw");
    s.write("osv/DSA-9999-1.json", OSV_CRITICAL);
    s.write("vex.json", VEX);
    let promote = |extra: &[&str]| {
        s.kiln()
            .args(["images", "promote", "gated", "1.0.0+1", "prod"])
            .args(extra)
            .output()
            .unwrap()
    };
    let rescan = |extra: &[&str]| {
        s.kiln()
            .args(["rescan", "gated", "--feed", "osv", "--json"])
            .args(extra)
            .output()
            .unwrap()
    };

    // No rescan logged yet: prod is refused for that.
    refused(
        &promote(&[]),
        1,
        "deny_unscanned: no rescan of this version is logged",
    );

    // A rescan with the critical, logged.
    let o = rescan(&[]);
    assert_exit(&o, 0);
    let r: serde_json::Value = serde_json::from_str(text(&o).0.trim()).unwrap();
    assert_eq!(r["versions"][0]["counts"]["critical"], 1, "{r:#}");
    let first_seq = r["recorded"][0]["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("{r:#}"));
    let o = promote(&["--print-input"]);
    assert_exit(&o, 0);
    let denied_input: serde_json::Value =
        serde_json::from_str(text(&o).0.lines().next().unwrap()).unwrap();
    let v = &denied_input["vulnerabilities"];
    assert_eq!(v["scanned"], true, "{v:#}");
    assert_eq!(v["rescan"], first_seq);
    assert_eq!(v["counts"]["critical"], 1);
    assert_eq!(v["findings"][0]["id"], "DSA-9999-1");
    assert_eq!(v["findings"][0]["status"], "affected");
    assert!(v["feed_age_days"].as_f64().unwrap() < 1.0, "{v:#}");
    refused(
        &promote(&[]),
        1,
        "deny_vulnerable: critical DSA-9999-1 in libssl3 without a VEX statement",
    );
    // A deploy-time `kiln verify --policy` sees the same logged rescan.
    let o = s
        .kiln()
        .args(["images", "show", "gated", "1.0.0+1", "--json"])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let shown: serde_json::Value = serde_json::from_str(text(&o).0.trim()).unwrap();
    assert_eq!(shown["rescan"]["seq"], first_seq, "{shown:#}");
    let manifest = shown["artifacts"][0]["manifest"]
        .as_str()
        .unwrap()
        .to_string();
    let verify = || {
        s.kiln()
            .args(["verify", "--key", "cosign.pub", "--policy", "gate.rego"])
            .arg(&manifest)
            .output()
            .unwrap()
    };
    refused(&verify(), 1, "deny_vulnerable");

    // The security team signs its VEX.
    let o = s
        .kiln()
        .args(["vex", "sign", "vex.json", "--key", "sec.key"])
        .env("KILN_PASSWORD", "pw")
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert!(text(&o).1.contains("vex.json#2 expired"), "{:?}", text(&o));
    let signed = s.path().join("vex.dsse.json");
    let sec = key_id_of(&s.path().join("sec.pub"));
    assert!(text(&o).0.contains(&sec), "{:?}", text(&o));

    // Refused, each by name, and nothing logged: unsigned while a key is
    // configured, signed by another key, tampered, signed without a key
    // to check it.
    let rescans_before = audit_log(&s)
        .iter()
        .filter(|c| c["action"] == "rescan")
        .count();
    refused(
        &rescan(&["--vex", "vex.json", "--vex-key", "sec.pub"]),
        2,
        "vex.json: the VEX document is not signed",
    );
    refused(
        &rescan(&["--vex", "vex.dsse.json", "--vex-key", "other.pub"]),
        2,
        "does not verify with any `--vex-key`",
    );
    let tampered = crate::checkers::envelope_with_flipped_payload(&signed, s.path());
    refused(
        &rescan(&["--vex", tampered.to_str().unwrap(), "--vex-key", "sec.pub"]),
        2,
        "changed after signing",
    );
    refused(
        &rescan(&["--vex", "vex.dsse.json"]),
        2,
        "give the public key it is signed with",
    );
    assert_eq!(
        audit_log(&s)
            .iter()
            .filter(|c| c["action"] == "rescan")
            .count(),
        rescans_before
    );

    // The signed VEX, verified: the critical is not affected, the expired
    // statement ignored; logged.
    let o = rescan(&[
        "--vex",
        "vex.dsse.json",
        "--vex-key",
        "other.pub",
        "--vex-key",
        "sec.pub",
    ]);
    assert_exit(&o, 0);
    assert!(
        text(&o).1.contains("VEX statement vex.dsse.json#2 (CVE-2099-0004 by Image Security <security@example.com>) expired at 2020-01-01T00:00:00Z: ignored"),
        "{:?}",
        text(&o)
    );
    let r: serde_json::Value = serde_json::from_str(text(&o).0.trim()).unwrap();
    let f = &r["versions"][0]["artifacts"][0]["findings"][0];
    assert_eq!(f["vex"]["status"], "not_affected", "{r:#}");
    assert_eq!(f["vex"]["signed_by"], sec.as_str());
    assert_eq!(r["vex"][0]["signed_by"], sec.as_str());
    assert_eq!(r["versions"][0]["counts"]["critical"], 0);
    let o = promote(&["--print-input"]);
    let allowed_input: serde_json::Value =
        serde_json::from_str(text(&o).0.lines().next().unwrap()).unwrap();
    assert_eq!(
        allowed_input["vulnerabilities"]["findings"][0]["vex"]["signed_by"],
        sec.as_str()
    );
    assert_eq!(
        allowed_input["vulnerabilities"]["vex"][0]["signed_by"],
        sec.as_str()
    );
    let o = verify();
    assert_exit(&o, 0);
    let o = s
        .kiln()
        .args(["images", "show", "gated", "1.0.0+1"])
        .output()
        .unwrap();
    assert!(
        text(&o).0.contains("rescan:")
            && text(&o).0.contains("no findings; 1 not affected per VEX"),
        "{:?}",
        text(&o)
    );
    let o = promote(&[]);
    assert_exit(&o, 0);
    assert!(text(&o).0.contains("policy allow"), "{:?}", text(&o));

    // The log: every rescan and decision, in order, verified.
    let log = audit_log(&s);
    let seen: Vec<String> = log
        .iter()
        .filter(|c| c["action"] == "rescan" || c["action"] == "policy")
        .map(|c| match c["action"].as_str().unwrap() {
            "rescan" => format!(
                "rescan critical={} vexed={} signed={}",
                c["counts"]["critical"], c["counts"]["vex_not_affected"], c["vex"][0]["signed_by"]
            ),
            _ => format!(
                "{} {}",
                c["decision"].as_str().unwrap(),
                c["channel"].as_str().unwrap()
            ),
        })
        .collect();
    assert_eq!(
        seen,
        [
            "allow dev".to_string(),
            "deny prod".into(),
            "rescan critical=1 vexed=0 signed=null".into(),
            "deny prod".into(),
            format!("rescan critical=0 vexed=1 signed=\"{sec}\""),
            "allow prod".into(),
        ]
    );
    let human = s.kiln().arg("audit").output().unwrap();
    assert_exit(&human, 0);
    let out = text(&human).0;
    assert!(
        out.contains("rescan gated 1.0.0+1: 1 critical (1 feed, 0 VEX documents)"),
        "{out}"
    );
    assert!(
        out.contains(&format!("rescan gated 1.0.0+1: no findings; 1 not affected per VEX (1 feed, 1 VEX document, signed by {sec})")),
        "{out}"
    );

    // Independent checks of the envelope kiln made, and a VEX signed by
    // another producer (securesystemslib, in-toto statement form).
    if crate::checkers::ready() {
        let payload = crate::checkers::assert_envelope(
            &s.path().join("sec.pub"),
            &s.path().join("other.pub"),
            &signed,
            "application/vnd.openvex+json",
            s.path(),
        );
        assert_eq!(payload, VEX.as_bytes());
        let statement = serde_json::json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{ "name": "vex.json", "digest": { "sha256": crate::sha256_hex(VEX.as_bytes()) } }],
            "predicateType": "https://openvex.dev/ns/v0.2.0",
            "predicate": serde_json::from_str::<serde_json::Value>(VEX).unwrap(),
        });
        let st = s.write("statement.json", &statement.to_string());
        let env = s.path().join("theirs.json");
        let theirs = s.path().join("theirs.pub");
        let o = crate::checkers::dsse_sign(&st, "application/vnd.in-toto+json", &env, &theirs);
        assert_exit(&o, 0);
        let o = rescan(&[
            "--vex",
            "theirs.json",
            "--vex-key",
            "theirs.pub",
            "--no-record",
        ]);
        assert_exit(&o, 0);
        let r: serde_json::Value = serde_json::from_str(text(&o).0.trim()).unwrap();
        let f = &r["versions"][0]["artifacts"][0]["findings"][0];
        assert_eq!(f["vex"]["signed_by"], key_id_of(&theirs).as_str(), "{r:#}");
        assert_eq!(r["recorded"], serde_json::Value::Null);
        let o = rescan(&[
            "--vex",
            "theirs.json",
            "--vex-key",
            "sec.pub",
            "--no-record",
        ]);
        assert_exit(&o, 2);
    }

    // OPA decides the same on the two real inputs.
    if crate::policy::opa_ready() {
        let rego = s.path().join("gate.rego");
        let inputs = [denied_input, allowed_input];
        let policy =
            kiln::policy::Policy::load(std::slice::from_ref(&rego), "data.kiln.promote").unwrap();
        let ours: Vec<kiln::policy::Verdict> =
            inputs.iter().map(|i| policy.evaluate(i).unwrap()).collect();
        let theirs: Vec<kiln::policy::Verdict> =
            crate::policy::opa_eval("kiln.promote", &[&rego], &inputs)
                .iter()
                .map(kiln::policy::verdict_of)
                .collect();
        assert_eq!(ours, theirs, "regorus and OPA disagree");
        assert!(!ours[0].allowed() && ours[1].allowed(), "{ours:?}");
    }

    // An edited rescan entry breaks the chain at its position.
    let mut edited = false;
    for f in crate::files_under(&s.state().join("catalog")) {
        let Ok(t) = std::fs::read_to_string(&f) else {
            continue;
        };
        if t.contains("\"action\":\"rescan\"") && t.contains("\"critical\":1") {
            std::fs::write(&f, t.replacen("\"critical\":1", "\"critical\":0", 1)).unwrap();
            edited = true;
            break;
        }
    }
    assert!(edited);
    let o = s.kiln().arg("audit").output().unwrap();
    assert_exit(&o, 1);
}

/// An Alpine 3.19 image's os-release and apk database: musl and
/// busybox-binsh (origin busybox).
pub const ALPINE_OS_RELEASE: &str = "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.19.1\n";
pub const APK_INSTALLED: &str = "C:Q1abc=\nP:musl\nV:1.2.4_git20230717-r4\nA:x86_64\nL:MIT\no:musl\n\nC:Q1def=\nP:busybox-binsh\nV:1.36.1-r15\nA:x86_64\nL:GPL-2.0-only\no:busybox\n\n";

/// Alpine and ecosystems kiln does not match: a busybox image with a
/// planted apk database (Alpine 3.19) against OSV records — apk's
/// ordering decides (`_git…-r4` < `-r5`; a fix at the installed version
/// is no finding), an `npm` record is reported as not matched, never
/// silently; a record whose version apk cannot read makes the artifact
/// NOT SCANNED (exit 1), never "not affected".
#[test]
fn alpine_versions_match_by_apk_rules_and_unknown_ecosystems_are_reported() {
    if !ready() {
        return;
    }
    let s = Scratch::new();
    busybox_rootfs(
        &s,
        &[
            ("etc/os-release", ALPINE_OS_RELEASE),
            ("lib/apk/db/installed", APK_INSTALLED),
        ],
    );
    let t = s.write(
        "t.toml",
        "[image]\nname = \"alp\"\nversion = \"1.0.0\"\n\n[source.oci.img]\nfrom = \"rootfs:base.tar\"\nto = [\"oci-layout:out/img:1\"]\nnetwork = \"none\"\n\n[[build]]\nsources = [\"oci.img\"]\n\n[[build.provisioner]]\ntype = \"shell\"\ninline = [\"echo hi > /etc/motd\"]\n\n[build.sbom]\nenabled = true\n\n[build.register]\nchannels = [\"dev\"]\n",
    );
    let o = s.kiln().arg("build").arg(&t).output().unwrap();
    assert_exit(&o, 0);
    let osv = |id: &str, eco: &str, name: &str, fixed: &str| {
        format!(
            r#"{{"id":"{id}","database_specific":{{"severity":"HIGH"}},"affected":[{{"package":{{"ecosystem":"{eco}","name":"{name}"}},"ranges":[{{"type":"ECOSYSTEM","events":[{{"introduced":"0"}},{{"fixed":"{fixed}"}}]}}]}}]}}"#
        )
    };
    s.write(
        "osv/a.json",
        &osv("ALPINE-1", "Alpine:v3.19", "musl", "1.2.4_git20230717-r5"),
    );
    s.write(
        "osv/b.json",
        &osv("ALPINE-2", "Alpine:v3.19", "musl", "1.2.4_git20230717-r4"),
    );
    s.write(
        "osv/c.json",
        &osv("ALPINE-3", "Alpine:v3.19", "busybox", "1.36.1_p1-r0"),
    );
    s.write(
        "osv/d.json",
        &osv("ALPINE-4", "Alpine:v3.18", "musl", "9.9-r0"),
    );
    s.write("osv/e.json", &osv("GHSA-1", "npm", "lodash", "4.17.21"));
    let o = s
        .kiln()
        .args(["rescan", "--feed", "osv", "--json", "--no-record"])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let (out, err) = text(&o);
    assert!(
        err.contains("1 feed record(s) of ecosystem `npm` not matched"),
        "{err}"
    );
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["unmatched_ecosystems"], serde_json::json!({ "npm": 1 }));
    let got: BTreeSet<(String, String)> = findings(&r)
        .into_iter()
        .map(|(id, pkg, _)| (id, pkg))
        .collect();
    let want: BTreeSet<(String, String)> = [("ALPINE-1", "musl"), ("ALPINE-3", "busybox-binsh")]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(got, want, "{r:#}");

    s.write(
        "osv/f.json",
        &osv("ALPINE-5", "Alpine:v3.19", "musl", "1.2.4bc"),
    );
    let o = s
        .kiln()
        .args(["rescan", "--feed", "osv", "--no-record"])
        .output()
        .unwrap();
    assert_exit(&o, 1);
    let out = text(&o).0;
    assert!(
        out.contains("NOT SCANNED") && out.contains("`1.2.4bc` is not an Alpine (apk) version"),
        "{out}"
    );
}
