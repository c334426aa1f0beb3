//! Signing: `kiln keygen`, a signed OCI build, `kiln verify`, tampering,
//! and an independent check of the signature with openssl. (Debian's
//! skopeo refuses sigstore policies — "Debian-local change: sigstore
//! disabled" — so it cannot be the independent verifier on this machine.)

use std::process::Command;

use base64::Engine as _;

use crate::oci::{busybox_rootfs, Registry};
use crate::{assert_exit, text, Scratch};

fn ready() -> bool {
    crate::require(
        "signing",
        &[
            "runc",
            "docker-registry",
            "skopeo",
            "busybox",
            "openssl",
            "curl",
        ],
        true,
    )
}

fn curl_json(url: &str) -> serde_json::Value {
    let o = Command::new("curl")
        .args([
            "-sf",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
            url,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "GET {url}");
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn signed_build_verifies_and_tampering_is_detected() {
    if !ready() {
        return;
    }
    let reg = Registry::start();
    let s = Scratch::new();
    busybox_rootfs(&s, &[]);
    s.keygen("cosign", "test-pw");
    s.keygen("other", "x");
    let image = format!("{}/signed/img:1", reg.addr);
    let t = s.write(
        "t.toml",
        &format!("[image]\nname = \"s\"\nversion = \"1.0.0\"\n[source.oci.i]\nfrom = \"rootfs:base.tar\"\nto = [\"registry:{image}\"]\n[[build]]\nsources = [\"oci.i\"]\n[build.sign]\nkey = \"cosign.key\"\n"),
    );
    // A wrong password fails before anything is built.
    let o = s
        .kiln()
        .args(["build"])
        .arg(&t)
        .env("KILN_PASSWORD", "nope")
        .output()
        .unwrap();
    assert_exit(&o, 1);
    assert!(text(&o).1.contains("wrong KILN_PASSWORD"), "{}", text(&o).1);

    let o = s
        .kiln()
        .args(["build", "--json"])
        .arg(&t)
        .env("KILN_PASSWORD", "test-pw")
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let summary: serde_json::Value =
        serde_json::from_str(text(&o).0.lines().last().unwrap()).unwrap();
    let artifact = &summary["jobs"][0]["artifacts"][0];
    let digest = artifact["digest"].as_str().unwrap();
    assert!(artifact["signatures"][0]
        .as_str()
        .unwrap()
        .ends_with(&format!("{}.sig", digest.replace(':', "-"))));
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(artifact["manifest"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest["signatures"], artifact["signatures"],
        "the build manifest records the signature"
    );

    let verify = |key: &str, target: &str| {
        s.kiln()
            .args(["verify", "--json", "--key"])
            .arg(s.path().join(key))
            .arg(target)
            .output()
            .unwrap()
    };
    let o = verify("cosign.pub", &format!("registry:{image}"));
    assert_exit(&o, 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text(&o).0).unwrap()["verified"],
        true
    );
    assert!(
        text(&o).0.contains("\"provenance\":1"),
        "one signed provenance attestation: {}",
        text(&o).0
    );
    assert_exit(&verify("other.pub", &image), 1);

    // The signed build manifest and the provenance file verify offline;
    // a changed byte anywhere in them is caught.
    let manifest_file = std::path::PathBuf::from(artifact["manifest"].as_str().unwrap());
    let o = verify("cosign.pub", manifest_file.to_str().unwrap());
    assert_exit(&o, 0);
    let provenance_file =
        std::path::PathBuf::from(manifest["provenance"]["file"].as_str().unwrap());
    let o = verify("cosign.pub", provenance_file.to_str().unwrap());
    assert_exit(&o, 0);
    let statement: serde_json::Value = serde_json::from_str(&text(&o).0).unwrap();
    assert_eq!(
        statement["detail"]["predicateType"],
        "https://slsa.dev/provenance/v1"
    );
    assert_eq!(
        format!(
            "sha256:{}",
            statement["detail"]["subject"][0]["digest"]["sha256"]
                .as_str()
                .unwrap()
        ),
        digest
    );
    let dsse_file = manifest_file.with_extension("dsse.json");
    for file in [&manifest_file, &provenance_file, &dsse_file] {
        let original = std::fs::read(file).unwrap();
        for i in (0..original.len()).step_by(original.len() / 12 + 1) {
            let mut m = original.clone();
            m[i] ^= 0x20;
            std::fs::write(file, &m).unwrap();
            let target = if file == &dsse_file {
                &manifest_file
            } else {
                file
            };
            assert_exit(&verify("cosign.pub", target.to_str().unwrap()), 1);
        }
        std::fs::write(file, &original).unwrap();
    }

    // Independent check: the payload and signature in the registry verify
    // with openssl against the public key, as cosign would check them.
    let sig_tag = format!("{}.sig", digest.replace(':', "-"));
    let sig_manifest = curl_json(&format!(
        "http://{}/v2/signed/img/manifests/{sig_tag}",
        reg.addr
    ));
    let layer = &sig_manifest["layers"][0];
    let payload_digest = layer["digest"].as_str().unwrap();
    let payload = Command::new("curl")
        .args([
            "-sf",
            &format!("http://{}/v2/signed/img/blobs/{payload_digest}", reg.addr),
        ])
        .output()
        .unwrap()
        .stdout;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(
            layer["annotations"]["dev.cosignproject.cosign/signature"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    std::fs::write(s.path().join("payload"), &payload).unwrap();
    std::fs::write(s.path().join("sig.der"), &sig).unwrap();
    let o = Command::new("openssl")
        .args([
            "dgst",
            "-sha256",
            "-verify",
            "cosign.pub",
            "-signature",
            "sig.der",
            "payload",
        ])
        .current_dir(s.path())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let p: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(p["critical"]["image"]["docker-manifest-digest"], digest);
    assert_eq!(
        p["critical"]["identity"]["docker-reference"],
        format!("{}/signed/img", reg.addr)
    );

    // Tampering: flip one byte of the signature, then of the payload.
    let push_sig_manifest = |m: &serde_json::Value| {
        let body = serde_json::to_vec(m).unwrap();
        std::fs::write(s.path().join("m.json"), &body).unwrap();
        let o = Command::new("curl")
            .args([
                "-sf",
                "-X",
                "PUT",
                "-H",
                "Content-Type: application/vnd.oci.image.manifest.v1+json",
                "--data-binary",
                "@m.json",
                &format!("http://{}/v2/signed/img/manifests/{sig_tag}", reg.addr),
            ])
            .current_dir(s.path())
            .output()
            .unwrap();
        assert!(o.status.success());
    };
    let mut bad_sig = sig.clone();
    bad_sig[10] ^= 1;
    let mut m = sig_manifest.clone();
    m["layers"][0]["annotations"]["dev.cosignproject.cosign/signature"] =
        base64::engine::general_purpose::STANDARD
            .encode(&bad_sig)
            .into();
    push_sig_manifest(&m);
    let o = verify("cosign.pub", &image);
    assert_exit(&o, 1);
    assert!(text(&o).0.contains("does not verify"), "{}", text(&o).0);

    let mut forged = payload.clone();
    let at = forged.iter().position(|b| *b == b'a').unwrap();
    forged[at] = b'b';
    let forged_digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&forged))
    );
    let repo: oci_client::Reference = format!("{}/signed/img:x", reg.addr).parse().unwrap();
    let (client, _) = kiln::builder::oci::image::client_for(repo.registry());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            client
                .push_blob(&repo, forged.clone(), &forged_digest)
                .await
                .unwrap();
        });
    let mut m = sig_manifest.clone();
    m["layers"][0]["digest"] = forged_digest.into();
    push_sig_manifest(&m);
    assert_exit(&verify("cosign.pub", &image), 1);
}
