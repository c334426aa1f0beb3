//! The public Packer templates ported to kiln (templates/ported/): every
//! one validates (the QEMU ones with a base disk given, as a user would),
//! and the Docker ports that need no network build from the Debian minbase
//! root file system, with what their Packer `changes` said in the config.

use std::path::PathBuf;

use crate::{assert_exit, repo, text, Scratch};

fn ported() -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(repo().join("templates/ported"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_ported_template_validates_and_names_its_source() {
    let all = ported();
    assert!(all.len() >= 8, "at least eight ports: {all:?}");
    let readme = std::fs::read_to_string(repo().join("templates/ported/README.md")).unwrap();
    let s = Scratch::new();
    std::fs::create_dir_all(s.path().join("base")).unwrap();
    for f in ["disk.qcow2", "vmlinuz", "initrd.img", "cloud.qcow2"] {
        s.write(&format!("base/{f}"), "");
    }
    let mut kinds = std::collections::BTreeSet::new();
    for t in &all {
        let body = std::fs::read_to_string(t).unwrap();
        let name = t.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            body.starts_with("# Ported from "),
            "{name} names its source"
        );
        assert!(readme.contains(&format!("`{name}`")), "README lists {name}");
        for kind in ["oci", "qemu", "ami"] {
            if body.contains(&format!("[source.{kind}.")) {
                kinds.insert(kind);
            }
        }
        let mut c = s.kiln();
        c.arg("validate");
        if body.contains("var.base_dir") {
            c.arg("--var")
                .arg(format!("base_dir={}", s.path().join("base").display()));
        }
        if body.contains("var.base_disk") {
            c.arg("--var").arg(format!(
                "base_disk={}",
                s.path().join("base/cloud.qcow2").display()
            ));
        }
        let o = c.arg(t).output().unwrap();
        assert_exit(&o, 0);
        assert!(text(&o).0.contains(": valid"), "{name}: {}", text(&o).0);
    }
    assert_eq!(kinds.len(), 3, "Docker, QEMU and AMI ports: {kinds:?}");
}

#[cfg(feature = "oci")]
#[test]
fn the_docker_ports_build_from_a_local_debian_base() {
    if !crate::require(
        "ported Docker templates",
        &["runc", "mmdebstrap", "umoci"],
        true,
    ) {
        return;
    }
    let o = std::process::Command::new(repo().join("scripts/hardening/debian-rootfs.sh"))
        .arg("minbase")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o).1);
    let rootfs = text(&o).0.trim().to_string();
    let s = Scratch::new();
    for (template, output) in [
        ("learn-packer-docker.toml", "out/learn"),
        ("nirgeier-docker-changes.toml", "out/labs"),
    ] {
        let o = s
            .kiln()
            .args(["build", "--json", "--var"])
            .arg(format!("base=rootfs:{rootfs}"))
            .arg("--var")
            .arg(format!("output={}", s.path().join(output).display()))
            .arg(repo().join("templates/ported").join(template))
            .output()
            .unwrap();
        assert_exit(&o, 0);
        if template.starts_with("learn") {
            assert!(
                text(&o).0.contains("this provisioner runs first"),
                "{}",
                text(&o).0
            );
        }
    }
    // nirgeier's `changes`, as an image config.
    let layout = s.path().join("out/labs");
    let blob = |d: &str| -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(
                layout
                    .join("blobs/sha256")
                    .join(d.trim_start_matches("sha256:")),
            )
            .unwrap(),
        )
        .unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = blob(index["manifests"][0]["digest"].as_str().unwrap());
    let config = blob(manifest["config"]["digest"].as_str().unwrap());
    let c = &config["config"];
    assert_eq!(c["User"], "www-data");
    assert_eq!(c["WorkingDir"], "/var/www");
    assert_eq!(
        c["Volumes"],
        serde_json::json!({ "/test1": {}, "/test2": {} })
    );
    assert_eq!(
        c["ExposedPorts"],
        serde_json::json!({ "80/tcp": {}, "443/tcp": {} })
    );
    assert_eq!(c["Labels"]["version"], "1.0");
    assert!(c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "HOSTNAME=www.example.com"));
}

/// chef/bento's Debian port builds on the QEMU builder from the Debian
/// disk scripts/qemu/debian-image.sh makes; its script lists, chosen by a
/// conditional, run in order with the environment map.
#[cfg(feature = "qemu")]
#[test]
fn the_bento_port_builds_on_qemu() {
    if !crate::require(
        "ported QEMU template",
        &["qemu-system-x86_64", "qemu-img", "mmdebstrap", "mkfs.ext4"],
        true,
    ) {
        return;
    }
    let o = std::process::Command::new(repo().join("scripts/qemu/debian-image.sh"))
        .output()
        .unwrap();
    assert!(o.status.success(), "debian-image.sh: {}", text(&o).1);
    let base = text(&o).0.trim().to_string();
    let s = Scratch::new();
    let o = s
        .kiln()
        .args(["build", "--json", "--var"])
        .arg(format!("base_dir={base}"))
        .arg("--var")
        .arg(format!("output_dir={}", s.path().join("out").display()))
        .arg(repo().join("templates/ported/bento-debian-qemu.toml"))
        .output()
        .unwrap();
    let out = text(&o).0;
    assert_exit(&o, 0);
    let order: Vec<usize> = [
        "update_packages ran (HOME_DIR=/home/vagrant)",
        "rebooting",
        "motd ran",
        "motd runs after the update's reboot",
        "sshd ran",
        "networking_debian ran",
        "cleanup_debian ran",
        "minimize ran",
    ]
    .iter()
    .map(|l| {
        out.find(l)
            .unwrap_or_else(|| panic!("`{l}` not in the output: {out}"))
    })
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "in order: {order:?}");
    assert!(!out.contains("cleanup_dnf ran"), "the other branch: {out}");
    assert!(s.path().join("out/debian-12-amd64.qcow2").is_file());
}
