//! `[build.sbom]` on a QEMU build end to end: the cached Debian test image
//! (scripts/qemu/debian-image.sh) built under TCG, its export booted once
//! more by the sbom step and its package databases read over SSH. The
//! documents are checked by the validators, and their package set against
//! what `dpkg-query` and trivy's rootfs mode read from the exported disk
//! itself, mounted read-only on the host (`sbom_check::MountedDisk`).
//! Two boots in all. Needs root, QEMU, losetup and trivy.

use std::path::PathBuf;

use crate::qemu::{boot_source, debian_image, sha256, template, TmpfsDir};
use crate::sbom_check::{assert_valid, cdx_set, read_json, spdx_set, MountedDisk};
use crate::{assert_exit, text, Scratch};

/// The export's SBOMs describe the disk file (its sha256 is the subject),
/// validate, list what dpkg-query and trivy find on the disk, and are
/// signed beside the disk image; `kiln sbom` prints them after verifying.
#[test]
fn qemu_disk_sboms_validate_and_match_the_exported_root_filesystem() {
    if !crate::qemu::ready()
        || !crate::require(
            "QEMU SBOM",
            &["losetup", "mount", "umount", "dpkg-query"],
            true,
        )
        || !crate::sbom_check::validators_ready()
        || !crate::sbom_check::trivy_ready()
    {
        return;
    }
    let img = debian_image();
    let base = img.join("disk.qcow2");
    let s = Scratch::new();
    let tmpfs = TmpfsDir::new();
    s.keygen("cosign", "pw");
    let body = "[[build.provisioner]]\ntype = \"shell\"\ninline = [\"echo sbom > /etc/kiln-sbom\"]\n\n[build.sbom]\nenabled = true\n\n[build.sign]\nkey = \"cosign.key\"\n";
    let t = s.write(
        "t.toml",
        &template(
            &boot_source(&img, &base, &sha256(&base), "out/deb.qcow2"),
            body,
        ),
    );
    let o = s
        .kiln()
        .args(["build", "--json"])
        .arg(&t)
        .env("KILN_TMPFS", tmpfs.path())
        .env("KILN_QEMU_TEST_TOKEN", "qemu-test-secret-0815")
        .env("KILN_PASSWORD", "pw")
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert_exit(&o, 0);
    let log = format!("{out}{err}");
    assert!(log.contains("\"step\":\"sbom\""), "an sbom step ran: {log}");
    assert!(log.contains("in a fresh instance"), "{log}");
    let summary = crate::json_summary(&o);
    let a = &summary["jobs"][0]["artifacts"][0];
    let manifest_file = PathBuf::from(a["manifest"].as_str().unwrap());
    let manifest = read_json(&manifest_file);
    let disk = s.path().join("out/deb.qcow2");
    let hex = sha256(&disk);
    assert_eq!(
        manifest["artifact"]["digest"],
        format!("sha256:{hex}"),
        "{manifest}"
    );
    let rec = &manifest["sbom"];
    let spdx_file = PathBuf::from(rec["spdx"]["file"].as_str().unwrap());
    let cdx_file = PathBuf::from(rec["cyclonedx"]["file"].as_str().unwrap());
    assert_valid(&spdx_file, &cdx_file);
    let (spdx, cdx) = (read_json(&spdx_file), read_json(&cdx_file));

    // The subject is the exported file.
    assert_eq!(spdx["packages"][0]["checksums"][0]["checksumValue"], hex);
    assert_eq!(spdx["packages"][0]["primaryPackagePurpose"], "FILE");
    assert_eq!(cdx["metadata"]["component"]["hashes"][0]["content"], hex);
    assert_eq!(cdx["metadata"]["component"]["type"], "file");

    // What is on the exported disk, read on the host without booting it.
    let work = s.path().join("mount");
    std::fs::create_dir_all(&work).unwrap();
    let Some(mounted) = MountedDisk::mount(&disk, &work) else {
        return;
    };
    assert_eq!(
        std::fs::read_to_string(mounted.root.join("etc/kiln-sbom")).unwrap(),
        "sbom\n",
        "the mounted disk is the build's"
    );
    let expected = crate::sbom_check::dpkg_query_packages(&mounted.root);
    assert!(expected.len() > 100, "{expected:?}");
    let (in_spdx, in_cdx) = (spdx_set(&spdx), cdx_set(&cdx));
    assert_eq!(in_spdx, expected, "SPDX vs dpkg-query on the disk");
    assert_eq!(in_cdx, expected, "CycloneDX vs dpkg-query on the disk");
    assert_eq!(rec["packages"], expected.len());
    let t0 = std::time::Instant::now();
    let trivy = crate::sbom_check::trivy_packages(&mounted.root, s.path());
    let trivy_ms = t0.elapsed().as_millis();
    drop(mounted);
    crate::sbom_check::assert_same_or_documented(&in_cdx, &trivy, "trivy");
    let step_ms = |step: &str| {
        out.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| e["step"] == step && e["duration_ms"].is_u64())
            .map(|e| e["duration_ms"].clone())
    };
    eprintln!(
        "MEASURED: QEMU disk, {} packages; sbom step {:?} ms (a second boot under TCG); trivy {trivy_ms} ms",
        expected.len(),
        step_ms("sbom")
    );
    let purls: Vec<&str> = cdx["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["purl"].as_str())
        .collect();
    assert!(
        purls
            .iter()
            .any(|p| p.starts_with("pkg:deb/debian/openssh-server@")
                && p.contains("distro=debian-12")),
        "{purls:?}"
    );

    // Signed beside the disk image (no registry to attach to), and in the
    // manifest's folder; `kiln sbom --key` verifies and prints.
    for format in ["spdx", "cyclonedx"] {
        let beside = s.path().join(format!("out/deb.qcow2.{format}.intoto.json"));
        assert!(beside.is_file(), "{}", beside.display());
        assert_eq!(
            rec[format]["attestation"]["attached"],
            format!("file:{}", beside.display()),
            "{rec}"
        );
        let o = s
            .kiln()
            .args(["sbom", "--format", format, "--key", "cosign.pub"])
            .arg(&manifest_file)
            .output()
            .unwrap();
        assert_exit(&o, 0);
        assert!(text(&o).1.contains("verified"), "{}", text(&o).1);
        let printed: serde_json::Value = serde_json::from_str(&text(&o).0).unwrap();
        assert_eq!(printed["name"].is_null(), format == "cyclonedx");
    }

    // `kiln sbom DISK --key`: the attestation beside the disk, about the
    // file's sha256, is the document the manifest recorded, byte for
    // byte; another key, or a copy with one byte flipped, is refused.
    s.keygen("wrong", "y");
    let tampered = s.path().join("tampered/deb.qcow2");
    std::fs::create_dir_all(tampered.parent().unwrap()).unwrap();
    std::fs::copy(&disk, &tampered).unwrap();
    {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&tampered)
            .unwrap();
        let at = f.metadata().unwrap().len() / 2;
        let mut b = [0u8];
        f.seek(SeekFrom::Start(at)).unwrap();
        f.read_exact(&mut b).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&[b[0] ^ 0x01]).unwrap();
    }
    let tampered_hex = sha256(&tampered);
    assert_ne!(tampered_hex, hex);
    for format in ["spdx", "cyclonedx"] {
        let sbom = |arg: &std::path::Path, key: &str| {
            s.kiln()
                .args(["sbom", "--format", format, "--key", key])
                .arg(arg)
                .output()
                .unwrap()
        };
        let from_manifest = sbom(&manifest_file, "cosign.pub");
        assert_exit(&from_manifest, 0);
        let o = sbom(&disk, "cosign.pub");
        let (out, err) = text(&o);
        assert_exit(&o, 0);
        assert_eq!(out, text(&from_manifest).0, "{format} of the disk");
        assert!(err.contains(&format!("sha256:{hex}")), "{err}");
        let o = sbom(&disk, "wrong.pub");
        assert_exit(&o, 1);
        assert!(text(&o).1.contains("wrong.pub"), "{}", text(&o).1);
        let beside = format!("deb.qcow2.{format}.intoto.json");
        std::fs::copy(
            s.path().join("out").join(&beside),
            s.path().join("tampered").join(&beside),
        )
        .unwrap();
        let o = sbom(&tampered, "cosign.pub");
        assert_exit(&o, 1);
        let err = text(&o).1;
        assert!(
            err.contains(&format!("about sha256:{hex}, not sha256:{tampered_hex}")),
            "{err}"
        );
    }
    std::fs::remove_dir_all(s.path().join("tampered")).unwrap();
    crate::qemu::assert_nothing_left(&s, &tmpfs);
}
