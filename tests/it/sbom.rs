//! `[build.sbom]` end to end on OCI images: a Debian minbase image
//! (scripts/hardening/debian-rootfs.sh) whose SPDX and CycloneDX
//! documents are accepted by independent validators (`pyspdxtools -i`
//! from PyPI spdx-tools, cyclonedx-python-lib's JSON validator) and whose
//! package set is what `dpkg-query` and trivy's rootfs mode read from the
//! built image's rootfs (`sbom_check`); their
//! signed in-toto attestations checked by securesystemslib, sigstore-js
//! and in-toto-attestation; an apk database; and the clear failures (no
//! package database, rpm). Needs root, runc, busybox (and mmdebstrap for
//! the Debian image).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::oci::busybox_rootfs;
use crate::sbom_check::{assert_valid, cdx_set, printed_sbom, read_json, spdx_set};
use crate::{assert_exit, text, Scratch};

fn validators_ready() -> bool {
    crate::require("SBOM", &["runc", "busybox"], true) && crate::sbom_check::validators_ready()
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
        || !crate::require(
            "Debian SBOM",
            &["mmdebstrap", "dpkg-query", "umoci", "distro2sbom"],
            true,
        )
        || !crate::sbom_check::trivy_ready()
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

    // The package set, read independently from the built image's own
    // rootfs (the OCI layout unpacked by umoci): by dpkg-query, and by
    // trivy's rootfs mode.
    let unpacked = s.path().join("unpacked");
    let o = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(s.path().join("out/img:1"))
        .arg(&unpacked)
        .output()
        .unwrap();
    assert!(o.status.success(), "umoci: {}", text(&o).1);
    let root = unpacked.join("rootfs");
    let expected = crate::sbom_check::dpkg_query_packages(&root);
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
    let t = std::time::Instant::now();
    let trivy = crate::sbom_check::trivy_packages(&root, s.path());
    let trivy_ms = t.elapsed().as_millis();
    crate::sbom_check::assert_same_or_documented(&in_cdx, &trivy, "trivy");
    // A second opinion: distro2sbom, through dpkg on the same root.
    let d2s = crate::sbom_check::distro2sbom_packages(&root, s.path());
    crate::sbom_check::assert_same_or_documented(&in_cdx, &d2s, "distro2sbom");
    let _ = std::fs::remove_dir_all(&unpacked);
    let step_ms = |step: &str| {
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| e["step"] == step && e["duration_ms"].is_u64())
            .map(|e| e["duration_ms"].clone())
    };
    let step_ms = (step_ms("test"), step_ms("sbom"));
    eprintln!(
        "MEASURED: {} packages, SPDX and CycloneDX agree with dpkg-query; (test, sbom) steps {step_ms:?} ms; trivy {trivy_ms} ms; SPDX {} bytes, CycloneDX {} bytes",
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
        let st = crate::checkers::checked_statement(s.path(), &envelope, checkers);
        assert_eq!(st["predicateType"], ty);
        assert_eq!(st["subject"][0]["digest"]["sha256"], hex);
        assert_eq!(&st["predicate"], doc);
    }

    // Both attestations are in the registry image's `.att` too.
    let tag = digest.replace(':', "-");
    let att_dir = s.path().join("att");
    let m = crate::sign::skopeo_fetch(&format!("{}/t/deb:{tag}.att", reg.addr), &att_dir);
    let in_att: Vec<serde_json::Value> = m["layers"]
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
            serde_json::from_slice(&b).unwrap()
        })
        .collect();
    let kinds: Vec<&str> = in_att
        .iter()
        .map(|st| st["predicateType"].as_str().unwrap())
        .collect();
    for ty in ["https://spdx.dev/Document", "https://cyclonedx.org/bom"] {
        assert!(kinds.contains(&ty), "{ty} not in the .att: {kinds:?}");
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
        assert_eq!(printed_sbom(&o), read_json(file));
    }
    // `kiln sbom IMAGE --key`: read back from the image's `.att` (beside
    // the provenance and the test result), by tag and by digest, it is the
    // document the manifest recorded, byte for byte, and the one skopeo
    // fetched from the registry; another key finds none.
    s.keygen("wrong", "y");
    let pinned = format!("{}/t/deb@{digest}", reg.addr);
    for (format, ty) in [
        ("spdx", "https://spdx.dev/Document"),
        ("cyclonedx", "https://cyclonedx.org/bom"),
    ] {
        let sbom = |arg: &str, key: &str| {
            s.kiln()
                .args(["sbom", "--format", format, "--key", key, arg])
                .current_dir(s.path())
                .output()
                .unwrap()
        };
        let from_manifest = sbom(manifest_file.to_str().unwrap(), "cosign.pub");
        assert_exit(&from_manifest, 0);
        for arg in [format!("registry:{image}"), pinned.clone()] {
            let o = sbom(&arg, "cosign.pub");
            let (out, err) = text(&o);
            assert_exit(&o, 0);
            assert_eq!(out, text(&from_manifest).0, "{format} of {arg}");
            assert!(
                err.contains(&digest) && err.contains(".att") && err.contains("verified"),
                "{err}"
            );
            let printed: serde_json::Value = serde_json::from_str(&out).unwrap();
            let fetched = in_att
                .iter()
                .find(|st| st["predicateType"] == ty)
                .map(|st| &st["predicate"]);
            assert_eq!(Some(&printed), fetched, "skopeo's copy of the .att");
        }
        let o = sbom(&format!("registry:{image}"), "wrong.pub");
        assert_exit(&o, 1);
        let err = text(&o).1;
        assert!(
            err.contains(&digest) && err.contains(&image) && err.contains("wrong.pub"),
            "{err}"
        );
    }
    let o = s
        .kiln()
        .args(["sbom", &format!("registry:{image}")])
        .output()
        .unwrap();
    assert_exit(&o, 2);
    assert!(text(&o).1.contains("--key"), "{}", text(&o).1);

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

/// What cannot be read fails the build, saying why: no package database;
/// an rpm database that is not one (an SQLite header and garbage); a
/// Berkeley DB `Packages` in an image without `rpm` (not supported yet).
/// No SBOM is silently missing.
#[test]
fn no_database_or_unreadable_rpm_fails_clearly() {
    if !crate::require("SBOM", &["runc", "busybox"], true) {
        return;
    }
    let bdb_magic: &[u8] = &[0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x62, 0x31, 0x05, 0];
    for (extra, says) in [
        (vec![], "no package database found"),
        (
            vec![(
                "var/lib/rpm/rpmdb.sqlite",
                &b"SQLite format 3\0 and then garbage"[..],
            )],
            "`/var/lib/rpm/rpmdb.sqlite`: not an",
        ),
        (
            vec![("var/lib/rpm/Packages", bdb_magic)],
            // busybox's own `rpm` applet cannot list a database.
            "not supported yet",
        ),
    ] {
        let s = Scratch::new();
        crate::oci::busybox_rootfs_bytes(&s, &extra);
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

/// Tiny noarch rpms built here with Debian's `rpmbuild` (a License, an
/// Epoch, a subpackage whose source rpm has another name), installed with
/// `rpm --root R --justdb` into a real rpm sqlite database, planted in a
/// busybox image with Fedora's os-release: kiln's SBOMs validate and list
/// what `rpm -qa --root R` lists, and what trivy reads from the same
/// database.
#[test]
fn rpm_sqlite_database_matches_rpm_and_trivy() {
    if !validators_ready()
        || !crate::require("rpm SBOM", &["rpm", "rpmbuild"], true)
        || !crate::sbom_check::trivy_ready()
    {
        return;
    }
    let s = Scratch::new();
    let top = s.path().join("rpmbuild");
    let specs = [
        ("kiln-hello", "Epoch: 2\nVersion: 1.2.0\nRelease: 3.fc40\nLicense: MIT\n", ""),
        (
            "kiln-tool",
            "Version: 0.9.1\nRelease: 1.fc40\nLicense: Apache-2.0 AND BSD-3-Clause\n",
            "%package -n kiln-tool-data\nSummary: data\nLicense: CC0-1.0\n%description -n kiln-tool-data\ndata\n%files -n kiln-tool-data\n",
        ),
    ];
    for (name, fields, sub) in specs {
        let spec = s.write(
            &format!("{name}.spec"),
            &format!("Name: {name}\n{fields}Summary: kiln test package\nBuildArch: noarch\n%description\nA kiln SBOM test package.\n{sub}%files\n"),
        );
        let o = Command::new("rpmbuild")
            .arg("-bb")
            .arg("--define")
            .arg(format!("_topdir {}", top.display()))
            .arg(&spec)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "rpmbuild {name}: {}{}",
            text(&o).0,
            text(&o).1
        );
    }
    let rpms: Vec<PathBuf> = std::fs::read_dir(top.join("RPMS/noarch"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(rpms.len(), 3, "{rpms:?}");
    let root = s.path().join("rpmroot");
    std::fs::create_dir_all(&root).unwrap();
    let rpm = |args: &[&str]| {
        let o = Command::new("rpm")
            .arg("--root")
            .arg(&root)
            .args(["--dbpath", "/var/lib/rpm"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "rpm {args:?}: {}{}",
            text(&o).0,
            text(&o).1
        );
        text(&o).0
    };
    rpm(&["--initdb"]);
    let mut install = vec!["-i", "--justdb", "--nodeps", "--noscripts", "--nosignature"];
    let names: Vec<String> = rpms.iter().map(|p| p.display().to_string()).collect();
    install.extend(names.iter().map(String::as_str));
    rpm(&install);
    let db = root.join("var/lib/rpm/rpmdb.sqlite");
    let bytes = std::fs::read(&db).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (not the sqlite backend?): {:?}",
            db.display(),
            std::fs::read_dir(root.join("var/lib/rpm"))
                .map(|d| d.map(|e| e.unwrap().file_name()).collect::<Vec<_>>())
        )
    });
    assert!(
        bytes.starts_with(b"SQLite format 3\0"),
        "the sqlite backend"
    );
    // rpm leaves its write-ahead log beside the database: planted too, as
    // an image has it.
    let wal = std::fs::read(root.join("var/lib/rpm/rpmdb.sqlite-wal")).unwrap_or_default();
    let expected: BTreeSet<String> = rpm(&[
        "-qa",
        "--qf",
        "%{NAME} %|EPOCH?{%{EPOCH}:}|%{VERSION}-%{RELEASE}\\n",
    ])
    .lines()
    .map(String::from)
    .collect();
    assert_eq!(expected.len(), 3, "{expected:?}");
    let os_release = "NAME=\"Fedora Linux\"\nVERSION=\"40 (Container Image)\"\nID=fedora\nVERSION_ID=40\nPRETTY_NAME=\"Fedora Linux 40 (Container Image)\"\n";
    crate::oci::busybox_rootfs_bytes(
        &s,
        &[
            ("etc/os-release", os_release.as_bytes()),
            ("etc/fedora-release", b"Fedora release 40 (Forty)\n"),
            ("var/lib/rpm/rpmdb.sqlite", &bytes),
            ("var/lib/rpm/rpmdb.sqlite-wal", &wal),
        ],
    );
    let t = s.write(
        "t.toml",
        "[image]\nname = \"rpm\"\nversion = \"1.0.0\"\n\n[source.oci.img]\nfrom = \"rootfs:base.tar\"\nto = [\"oci-layout:out/img:1\"]\n\n[[build]]\nsources = [\"oci.img\"]\n\n[build.sbom]\nenabled = true\n",
    );
    let (manifest, log, _) = build_ok(&s, &t, "");
    let rec = &manifest["sbom"];
    assert_eq!(
        rec["databases"][0], "/var/lib/rpm/rpmdb.sqlite (sqlite, read by kiln)",
        "{log}"
    );
    let spdx_file = PathBuf::from(rec["spdx"]["file"].as_str().unwrap());
    let cdx_file = PathBuf::from(rec["cyclonedx"]["file"].as_str().unwrap());
    assert_valid(&spdx_file, &cdx_file);
    let (spdx, cdx) = (read_json(&spdx_file), read_json(&cdx_file));
    assert_eq!(spdx_set(&spdx), expected, "SPDX vs rpm -qa");
    assert_eq!(cdx_set(&cdx), expected, "CycloneDX vs rpm -qa");
    let comp = |name: &str| {
        cdx["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {cdx}"))
            .clone()
    };
    let hello = comp("kiln-hello");
    assert_eq!(
        hello["purl"],
        "pkg:rpm/fedora/kiln-hello@2%3A1.2.0-3.fc40?arch=noarch&distro=fedora-40"
    );
    assert_eq!(hello["licenses"][0]["license"]["name"], "MIT");
    let data = comp("kiln-tool-data");
    assert_eq!(
        data["purl"],
        "pkg:rpm/fedora/kiln-tool-data@0.9.1-1.fc40?arch=noarch&distro=fedora-40&upstream=kiln-tool"
    );
    assert_eq!(data["licenses"][0]["license"]["name"], "CC0-1.0");
    let spdx_data = spdx["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "kiln-tool-data")
        .unwrap();
    assert_eq!(
        spdx_data["sourceInfo"],
        "built package from: kiln-tool 0.9.1-1.fc40"
    );

    // trivy, reading the same database in a root filesystem of its own.
    let troot = s.path().join("trivy-root");
    std::fs::create_dir_all(troot.join("var/lib/rpm")).unwrap();
    std::fs::create_dir_all(troot.join("etc")).unwrap();
    std::fs::write(troot.join("etc/os-release"), os_release).unwrap();
    std::fs::write(
        troot.join("etc/fedora-release"),
        "Fedora release 40 (Forty)\n",
    )
    .unwrap();
    std::fs::write(troot.join("var/lib/rpm/rpmdb.sqlite"), &bytes).unwrap();
    std::fs::write(troot.join("var/lib/rpm/rpmdb.sqlite-wal"), &wal).unwrap();
    let trivy = crate::sbom_check::trivy_packages(&troot, s.path());
    crate::sbom_check::assert_same_or_documented(&cdx_set(&cdx), &trivy, "trivy");
}
