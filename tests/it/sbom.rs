//! `[build.sbom]` end to end on OCI images: a Debian minbase image
//! (scripts/hardening/debian-rootfs.sh) whose SPDX and CycloneDX
//! documents are accepted by independent validators (`pyspdxtools -i`
//! from PyPI spdx-tools, cyclonedx-python-lib's JSON validator) and whose
//! package set is what `dpkg-query` reads from the same rootfs; their
//! signed in-toto attestations checked by securesystemslib, sigstore-js
//! and in-toto-attestation; an apk database; and the clear failures (no
//! package database, rpm). Needs root, runc, busybox (and mmdebstrap for
//! the Debian image).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::oci::busybox_rootfs;
use crate::{assert_exit, text, Scratch};

const CDX_VALIDATE: &str = "import sys\nfrom cyclonedx.validation.json import JsonStrictValidator\nfrom cyclonedx.schema import SchemaVersion\nerr = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())\nif err is not None:\n    print(err)\n    sys.exit(1)\n";

fn validators_ready() -> bool {
    crate::require("SBOM", &["runc", "busybox", "pyspdxtools", "python3"], true) && {
        let ok = Command::new("python3")
            .args(["-c", "import cyclonedx.validation.json"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok && std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("SBOM tests need cyclonedx-python-lib[json-validation] (installed by .ci/run)");
        }
        ok
    }
}

/// Both validators accept the documents.
#[track_caller]
fn assert_valid(spdx: &Path, cdx: &Path) {
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

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

/// `name version` of every package the SPDX document lists (the artifact
/// and the OS left out), and of every CycloneDX library component.
fn spdx_set(doc: &serde_json::Value) -> BTreeSet<String> {
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

fn cdx_set(doc: &serde_json::Value) -> BTreeSet<String> {
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

/// Builds `template` and returns the manifest of its first artifact, the
/// build's output and the manifest's path.
fn build_ok(s: &Scratch, template: &Path, password: &str) -> (serde_json::Value, String, PathBuf) {
    let o = s
        .kiln()
        .args(["build", "--json"])
        .arg(template)
        .env("KILN_PASSWORD", password)
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert_exit(&o, 0);
    let summary = crate::json_summary(&o);
    let a = &summary["jobs"][0]["artifacts"][0];
    let path = PathBuf::from(a["manifest"].as_str().unwrap());
    (read_json(&path), format!("{out}{err}"), path)
}

/// A Debian image's SBOMs: valid for both validators, the same package
/// set as `dpkg-query` on the rootfs (name and version, both formats),
/// purls with the distro, the artifact's digest as the subject, the
/// build's time, and signed attestations of each with the document as
/// predicate.
#[test]
fn debian_image_sboms_validate_and_match_dpkg_query() {
    if !validators_ready()
        || !crate::oci::ready()
        || !crate::require("Debian SBOM", &["mmdebstrap", "dpkg-query", "tar"], true)
    {
        return;
    }
    let rootfs = crate::hardening::debian_flavour("minbase");
    let s = Scratch::new();
    std::fs::copy(&rootfs, s.path().join("base.tar")).unwrap();
    s.keygen("cosign", "pw");
    let reg = crate::oci::Registry::start();
    let image = format!("{}/t/deb:1", reg.addr);
    let t = s.write(
        "t.toml",
        &format!("[image]\nname = \"deb\"\nversion = \"1.0.0\"\n\n[source.oci.img]\nfrom = \"rootfs:base.tar\"\nto = [\"registry:{image}\", \"oci-layout:out/img:1\"]\n\n[[build]]\nname = \"b\"\nsources = [\"oci.img\"]\n\n[[build.provisioner]]\ntype = \"shell\"\ninline = [\"echo baked > /etc/motd\"]\n\n[[build.test]]\ntype = \"file\"\npath = \"/etc/motd\"\ncontains = [\"baked\"]\n\n[build.sbom]\nenabled = true\n\n[build.sign]\nkey = \"cosign.key\"\n"),
    );
    let (manifest, log, manifest_file) = build_ok(&s, &t, "pw");
    assert!(log.contains("\"step\":\"sbom\""), "an sbom step ran: {log}");
    assert_eq!(
        log.matches("reading the package databases").count(),
        1,
        "two artifacts of one digest are read once: {log}"
    );
    assert!(log.contains("in the test instance"), "{log}");
    assert_eq!(
        log.matches("in a fresh instance").count(),
        1,
        "the tests' instance is the SBOM's: {log}"
    );
    let digest = manifest["artifact"]["digest"].as_str().unwrap().to_string();
    let hex = digest.trim_start_matches("sha256:");
    let rec = &manifest["sbom"];
    let spdx_file = PathBuf::from(rec["spdx"]["file"].as_str().unwrap());
    let cdx_file = PathBuf::from(rec["cyclonedx"]["file"].as_str().unwrap());
    assert_valid(&spdx_file, &cdx_file);

    // The recorded digests are the files'.
    for (f, d) in [
        (&spdx_file, &rec["spdx"]["digest"]),
        (&cdx_file, &rec["cyclonedx"]["digest"]),
    ] {
        use sha2::Digest;
        let got = format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(std::fs::read(f).unwrap()))
        );
        assert_eq!(d.as_str(), Some(got.as_str()), "{}", f.display());
    }

    // The package set, read independently by dpkg-query from the rootfs.
    let unpacked = s.path().join("rootfs");
    std::fs::create_dir_all(&unpacked).unwrap();
    let o = Command::new("tar")
        .arg("-xf")
        .arg(&rootfs)
        .arg("-C")
        .arg(&unpacked)
        .arg("./var/lib/dpkg")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o).1);
    let o = Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            unpacked.join("var/lib/dpkg").display()
        ))
        .args(["-W", "-f", "${Package} ${Version} ${db:Status-Status}\\n"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o).1);
    let expected: BTreeSet<String> = text(&o)
        .0
        .lines()
        .filter_map(|l| l.strip_suffix(" installed").map(String::from))
        .collect();
    assert!(expected.len() > 50, "{expected:?}");
    let spdx = read_json(&spdx_file);
    let cdx = read_json(&cdx_file);
    let (in_spdx, in_cdx) = (spdx_set(&spdx), cdx_set(&cdx));
    assert_eq!(
        in_spdx.symmetric_difference(&expected).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "SPDX vs dpkg-query"
    );
    assert_eq!(in_cdx, expected, "CycloneDX vs dpkg-query");
    assert_eq!(rec["packages"], expected.len());
    let step_ms = |step: &str| {
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| e["step"] == step && e["duration_ms"].is_u64())
            .map(|e| e["duration_ms"].clone())
    };
    let step_ms = (step_ms("test"), step_ms("sbom"));
    eprintln!(
        "MEASURED: {} packages, SPDX and CycloneDX agree with dpkg-query; (test, sbom) steps {step_ms:?} ms; SPDX {} bytes, CycloneDX {} bytes",
        expected.len(),
        std::fs::metadata(&spdx_file).unwrap().len(),
        std::fs::metadata(&cdx_file).unwrap().len()
    );

    // purls, sources, the subject, the time.
    let purls: Vec<&str> = cdx["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["purl"].as_str())
        .collect();
    assert!(
        purls.iter().any(|p| p.starts_with("pkg:deb/debian/libc6@")
            && p.contains("arch=amd64")
            && p.contains("distro=debian-12")
            && p.contains("upstream=glibc")),
        "{purls:?}"
    );
    let libc6 = spdx["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "libc6")
        .unwrap();
    assert!(
        libc6["sourceInfo"]
            .as_str()
            .unwrap()
            .starts_with("built package from: glibc "),
        "{libc6}"
    );
    assert_eq!(spdx["documentDescribes"][0], "SPDXRef-Artifact");
    assert_eq!(spdx["packages"][0]["checksums"][0]["checksumValue"], hex);
    assert_eq!(cdx["metadata"]["component"]["hashes"][0]["content"], hex);
    let finished = manifest["finished"].as_str().unwrap();
    assert_eq!(
        &spdx["creationInfo"]["created"].as_str().unwrap()[..19],
        &finished[..19],
        "the build's time"
    );

    // The attestations: signed with the build's key, subject the
    // artifact, the document itself as predicate.
    let checkers = crate::checkers::ready();
    if checkers {
        s.keygen("other", "x");
    }
    for (format, doc, ty) in [
        ("spdx", &spdx, "https://spdx.dev/Document"),
        ("cyclonedx", &cdx, "https://cyclonedx.org/bom"),
    ] {
        let att = &rec[format]["attestation"];
        assert_eq!(att["predicateType"], ty);
        let envelope = PathBuf::from(att["file"].as_str().unwrap());
        let st: serde_json::Value = if checkers {
            let work = s.path().join("work");
            std::fs::create_dir_all(&work).unwrap();
            let payload = crate::checkers::assert_envelope(
                &s.path().join("cosign.pub"),
                &s.path().join("other.pub"),
                &envelope,
                "application/vnd.in-toto+json",
                &work,
            );
            crate::checkers::assert_statement(&payload, &work)
        } else {
            use base64::Engine;
            let env = read_json(&envelope);
            let b = base64::engine::general_purpose::STANDARD
                .decode(env["payload"].as_str().unwrap())
                .unwrap();
            serde_json::from_slice(&b).unwrap()
        };
        assert_eq!(st["predicateType"], ty);
        assert_eq!(st["subject"][0]["digest"]["sha256"], hex);
        assert_eq!(&st["predicate"], doc);
    }

    // Both attestations are in the registry image's `.att` too.
    let tag = digest.replace(':', "-");
    let att_dir = s.path().join("att");
    let m = crate::sign::skopeo_fetch(&format!("{}/t/deb:{tag}.att", reg.addr), &att_dir);
    let kinds: Vec<String> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            use base64::Engine;
            let env = read_json(&crate::sign::blob_path(
                &att_dir,
                l["digest"].as_str().unwrap(),
            ));
            let b = base64::engine::general_purpose::STANDARD
                .decode(env["payload"].as_str().unwrap())
                .unwrap();
            let st: serde_json::Value = serde_json::from_slice(&b).unwrap();
            st["predicateType"].as_str().unwrap().to_string()
        })
        .collect();
    for ty in ["https://spdx.dev/Document", "https://cyclonedx.org/bom"] {
        assert!(
            kinds.iter().any(|k| k == ty),
            "{ty} not in the .att: {kinds:?}"
        );
    }
    assert!(
        rec["spdx"]["attestation"]["attached"]
            .as_str()
            .is_some_and(|a| a.starts_with("registry:")),
        "{rec}"
    );

    // `kiln sbom` prints each after verifying the manifest and the
    // attestation; a changed document is refused.
    for (format, file) in [("spdx", &spdx_file), ("cyclonedx", &cdx_file)] {
        let o = s
            .kiln()
            .args(["sbom", "--format", format, "--key", "cosign.pub"])
            .arg(&manifest_file)
            .current_dir(s.path())
            .output()
            .unwrap();
        let (out, err) = text(&o);
        assert_exit(&o, 0);
        assert!(
            err.contains("attestation") && err.contains("verified"),
            "{err}"
        );
        let printed: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(printed, read_json(file));
    }
    let o = s
        .kiln()
        .args(["show-manifest"])
        .arg(&manifest_file)
        .output()
        .unwrap();
    assert!(
        text(&o)
            .0
            .contains(&format!("sbom:        {} packages", expected.len())),
        "{}",
        text(&o).0
    );
    let mut changed = read_json(&spdx_file);
    changed["name"] = "other".into();
    std::fs::write(&spdx_file, serde_json::to_vec_pretty(&changed).unwrap()).unwrap();
    let o = s
        .kiln()
        .args(["sbom"])
        .arg(&manifest_file)
        .output()
        .unwrap();
    assert_exit(&o, 1);
    assert!(text(&o).1.contains("not the"), "{}", text(&o).1);
    crate::oci::assert_nothing_left(&s);
}

/// An apk database (in a busybox image, with Alpine's os-release): apk
/// purls, licenses and origins; valid documents. No `[[build.test]]`: the
/// sbom step starts an instance of its own.
#[test]
fn apk_database_gives_apk_purls() {
    if !validators_ready() {
        return;
    }
    let s = Scratch::new();
    busybox_rootfs(
        &s,
        &[
            ("etc/os-release", "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.19.1\nPRETTY_NAME=\"Alpine Linux v3.19\"\n"),
            ("lib/apk/db/installed", "C:Q1abc=\nP:musl\nV:1.2.4_git20230717-r4\nA:x86_64\nS:383152\nL:MIT\no:musl\n\nC:Q1def=\nP:busybox-binsh\nV:1.36.1-r15\nA:x86_64\nL:GPL-2.0-only\no:busybox\n\n"),
        ],
    );
    let t = s.write(
        "t.toml",
        "[image]\nname = \"bb\"\nversion = \"1.0.0\"\n\n[source.oci.img]\nfrom = \"rootfs:base.tar\"\nto = [\"oci-layout:out/img:1\"]\n\n[[build]]\nsources = [\"oci.img\"]\n\n[[build.provisioner]]\ntype = \"shell\"\ninline = [\"echo hi > /etc/motd\"]\n\n[build.sbom]\nenabled = true\n",
    );
    let (manifest, log, _) = build_ok(&s, &t, "");
    assert!(
        log.contains("reading the package databases") && log.contains("in a fresh instance"),
        "{log}"
    );
    let rec = &manifest["sbom"];
    assert_eq!(rec["packages"], 2, "{rec}");
    assert_eq!(
        rec["spdx"]["attestation"],
        serde_json::Value::Null,
        "unsigned build"
    );
    let spdx_file = PathBuf::from(rec["spdx"]["file"].as_str().unwrap());
    let cdx_file = PathBuf::from(rec["cyclonedx"]["file"].as_str().unwrap());
    assert_valid(&spdx_file, &cdx_file);
    let cdx = read_json(&cdx_file);
    let musl = cdx["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "musl")
        .unwrap();
    assert_eq!(
        musl["purl"],
        "pkg:apk/alpine/musl@1.2.4_git20230717-r4?arch=x86_64&distro=alpine-3.19.1"
    );
    assert_eq!(musl["licenses"][0]["license"]["name"], "MIT");
    let spdx = read_json(&spdx_file);
    assert_eq!(
        spdx_set(&spdx),
        BTreeSet::from([
            "busybox-binsh 1.36.1-r15".to_string(),
            "musl 1.2.4_git20230717-r4".to_string()
        ])
    );
}

/// What cannot be read fails the build, saying why: no package database,
/// or an rpm one (not supported yet). No SBOM is silently missing.
#[test]
fn no_database_or_rpm_fails_clearly() {
    if !crate::require("SBOM", &["runc", "busybox"], true) {
        return;
    }
    for (extra, says) in [
        (vec![], "no package database found"),
        (
            vec![("var/lib/rpm/rpmdb.sqlite", "SQLite format 3")],
            "rpm-based images are not supported yet",
        ),
    ] {
        let s = Scratch::new();
        busybox_rootfs(&s, &extra);
        let t = s.write(
            "t.toml",
            "[image]\nname = \"bb\"\nversion = \"1.0.0\"\n\n[source.oci.img]\nfrom = \"rootfs:base.tar\"\nto = [\"oci-layout:out/img:1\"]\n\n[[build]]\nsources = [\"oci.img\"]\n\n[build.sbom]\nenabled = true\n",
        );
        let o = s.kiln().arg("build").arg(&t).output().unwrap();
        let (out, err) = text(&o);
        assert_exit(&o, 1);
        assert!(
            format!("{out}{err}").contains(says),
            "expected `{says}`: {out}{err}"
        );
    }
}
