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

/// `skopeo copy docker://REF dir:DIR` (skopeo checks every blob's digest on
/// the way): the manifest and blobs of a `.sig`/`.att` image, as files.
pub(crate) fn skopeo_fetch(reference: &str, dir: &std::path::Path) -> serde_json::Value {
    let o = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", "--preserve-digests"])
        .arg(format!("docker://{reference}"))
        .arg(format!("dir:{}", dir.display()))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "skopeo copy {reference}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

pub(crate) fn blob_path(dir: &std::path::Path, digest: &str) -> std::path::PathBuf {
    dir.join(digest.strip_prefix("sha256:").unwrap())
}

/// Security teams check kiln's evidence with their own tools: every cosign
/// signature (openssl), every DSSE envelope (securesystemslib and
/// sigstore-js), every in-toto statement (the in-toto attestation bindings'
/// strict parse and validation), fetched with skopeo — and each check fails
/// with a wrong key and a flipped byte.
#[test]
fn signed_oci_evidence_verifies_with_independent_tools() {
    if !ready() || !crate::checkers::ready() {
        return;
    }
    use crate::checkers;
    let reg = Registry::start();
    let s = Scratch::new();
    busybox_rootfs(&s, &[]);
    s.keygen("cosign", "test-pw");
    s.keygen("other", "x");
    s.write("files/setup.sh", "#!/bin/sh\necho set up > /etc/setup\n");
    let image = format!("{}/evidence/img:1", reg.addr);
    let t = s.write(
        "t.toml",
        &format!("[image]\nname = \"ev\"\nversion = \"1.0.0\"\n[secrets.token]\nenv = \"EV_TOKEN\"\n[source.oci.i]\nfrom = \"rootfs:base.tar\"\nto = [\"registry:{image}\"]\n[[build]]\nsources = [\"oci.i\"]\n[[build.provisioner]]\ntype = \"shell\"\ninline = [\"echo hi > /etc/hi\"]\nenv = {{ TOKEN = \"${{secret.token}}\" }}\n[[build.provisioner]]\ntype = \"shell\"\nscript = \"files/setup.sh\"\n[build.sign]\nkey = \"cosign.key\"\n"),
    );
    let o = s
        .kiln()
        .args(["build", "--json"])
        .arg(&t)
        .env("KILN_PASSWORD", "test-pw")
        .env("EV_TOKEN", "ev-secret-4711")
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let summary = crate::json_summary(&o);
    let artifact = &summary["jobs"][0]["artifacts"][0];
    let digest = artifact["digest"].as_str().unwrap().to_string();
    let (public, wrong) = (s.path().join("cosign.pub"), s.path().join("other.pub"));
    let work = s.path().join("work");
    std::fs::create_dir_all(&work).unwrap();

    // The `.sig` image: each simple-signing payload verifies with openssl,
    // names the image's digest, and fails with the wrong key or a flip.
    let tag = digest.replace(':', "-");
    let sig_dir = s.path().join("sig");
    let m = skopeo_fetch(&format!("{}/evidence/img:{tag}.sig", reg.addr), &sig_dir);
    let layers = m["layers"].as_array().unwrap();
    assert!(!layers.is_empty());
    for layer in layers {
        let payload = blob_path(&sig_dir, layer["digest"].as_str().unwrap());
        let sig = work.join("layer.sig");
        std::fs::write(
            &sig,
            layer["annotations"]["dev.cosignproject.cosign/signature"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        checkers::assert_blob(&public, &wrong, &payload, &sig, &work);
        let p: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&payload).unwrap()).unwrap();
        assert_eq!(
            p["critical"]["image"]["docker-manifest-digest"],
            digest.as_str()
        );
        assert_eq!(p["critical"]["type"], "cosign container image signature");
    }

    // The `.att` image: each layer is a DSSE envelope holding a statement.
    let att_dir = s.path().join("att");
    let m = skopeo_fetch(&format!("{}/evidence/img:{tag}.att", reg.addr), &att_dir);
    let layers = m["layers"].as_array().unwrap();
    assert!(!layers.is_empty());
    for layer in layers {
        let envelope = blob_path(&att_dir, layer["digest"].as_str().unwrap());
        let payload = checkers::assert_envelope(
            &public,
            &wrong,
            &envelope,
            "application/vnd.in-toto+json",
            &work,
        );
        let st = checkers::assert_statement(&payload, &work);
        assert_eq!(
            format!(
                "sha256:{}",
                st["subject"][0]["digest"]["sha256"].as_str().unwrap()
            ),
            digest
        );
    }

    // The files beside the build: provenance and the signed manifest.
    let manifest_file = std::path::PathBuf::from(artifact["manifest"].as_str().unwrap());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_file).unwrap()).unwrap();
    let provenance = std::path::PathBuf::from(manifest["provenance"]["file"].as_str().unwrap());
    let payload = checkers::assert_envelope(
        &public,
        &wrong,
        &provenance,
        "application/vnd.in-toto+json",
        &work,
    );
    let st = checkers::assert_statement(&payload, &work);
    let byproducts = st["predicate"]["runDetails"]["byproducts"]
        .as_array()
        .unwrap();
    assert_eq!(byproducts.len(), 2, "one byproduct per provisioner: {st}");
    assert_eq!(byproducts[1]["name"], "provisioner/2/shell");
    assert!(
        byproducts[1]["annotations"]["files"]
            .as_object()
            .unwrap()
            .iter()
            .any(|(path, d)| path.ends_with("files/setup.sh")
                && d.as_str().unwrap().starts_with("sha256:")),
        "{st}"
    );
    let signed = manifest_file.with_extension("dsse.json");
    let body = checkers::assert_envelope(
        &public,
        &wrong,
        &signed,
        "application/vnd.kiln.build-manifest+json",
        &work,
    );
    assert_eq!(body, std::fs::read(&manifest_file).unwrap());

    // The manifest a reviewer reads: what each provisioner ran (secrets
    // masked), scripts by digest, times and status, the signer's key id.
    let signed_text = String::from_utf8(body).unwrap();
    assert!(
        !signed_text.contains("ev-secret-4711"),
        "no secret in the manifest"
    );
    let p = &manifest["provisioners"];
    assert_eq!(p[0]["commands"][0], "echo hi > /etc/hi");
    assert_eq!(p[0]["settings"]["env"]["TOKEN"], "<sensitive>");
    assert_eq!(p[0]["status"], "succeeded");
    assert!(p[0]["duration_ms"].is_u64() && p[0]["started"].is_string());
    assert!(p[1]["scripts"][0]["path"]
        .as_str()
        .unwrap()
        .ends_with("files/setup.sh"));
    assert_eq!(
        p[1]["scripts"][0]["digest"],
        format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
                std::fs::read(s.path().join("files/setup.sh")).unwrap()
            ))
        )
    );
    let key_id = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            std::fs::read_to_string(&public).unwrap().trim().as_bytes()
        ))
    );
    assert_eq!(manifest["signer"]["key_id"], key_id.as_str());
    let o = s
        .kiln()
        .args(["show-manifest", "--key"])
        .arg(&public)
        .arg(&manifest_file)
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let shown = text(&o).0;
    for want in [
        "signature verified",
        "#1 shell: succeeded in",
        "$ echo hi > /etc/hi",
        "env TOKEN=<sensitive>",
        "files/setup.sh (sha256:",
        &format!("signed by:   key {key_id}"),
    ] {
        assert!(shown.contains(want), "`{want}` missing:\n{shown}");
    }
    let o = s
        .kiln()
        .args(["show-manifest", "--key"])
        .arg(&wrong)
        .arg(&manifest_file)
        .output()
        .unwrap();
    assert_exit(&o, 1);

    // Trusted keys. The build's registration is signed by the build's key;
    // a command-line promote by kiln's own catalog key, named when created.
    let key_id_of = |p: &std::path::Path| {
        format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
                std::fs::read_to_string(p).unwrap().trim().as_bytes()
            ))
        )
    };
    let o = s
        .kiln()
        .args(["images", "promote", "ev", "1.0.0+1", "dev"])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let catalog_pub = s.state().join("keys/catalog-signer.pub");
    assert!(
        text(&o).1.contains("created kiln's catalog key")
            && text(&o).1.contains(&key_id_of(&catalog_pub)),
        "{}",
        text(&o).1
    );
    let audit = |args: &[&std::ffi::OsStr]| s.kiln().arg("audit").args(args).output().unwrap();
    let o = audit(&["--key".as_ref(), public.as_os_str()]);
    assert_exit(&o, 1);
    let err = text(&o).1;
    assert!(
        err.contains(&format!(
            "entry 2 is signed by key {}, which is not trusted",
            key_id_of(&catalog_pub)
        )) && err.contains("kiln's own catalog key"),
        "{err}"
    );
    assert!(
        !err.contains("broken"),
        "an untrusted signer is not a broken chain: {err}"
    );
    let o = audit(&[
        "--key".as_ref(),
        public.as_os_str(),
        "--key".as_ref(),
        catalog_pub.as_os_str(),
    ]);
    assert_exit(&o, 0);
    let out = text(&o).0;
    assert!(
        out.contains("register #1") && out.contains("promote #2") && out.contains("trusted: `"),
        "which key signed what: {out}"
    );
    assert!(
        out.contains("#1 shell: succeeded"),
        "the manifest in audit: {out}"
    );
    // A keyring holds both; then an operator signs with their own key.
    let ring = s.write(
        "trusted.pem",
        &format!(
            "# release key\n{}\n# catalog key\n{}",
            std::fs::read_to_string(&public).unwrap(),
            std::fs::read_to_string(&catalog_pub).unwrap()
        ),
    );
    assert_exit(&audit(&["--keyring".as_ref(), ring.as_os_str()]), 0);
    let o = s
        .kiln()
        .args(["images", "promote", "ev", "1.0.0+1", "prod"])
        .env(
            "KILN_SIGNING_KEY",
            std::fs::read_to_string(s.path().join("other.key")).unwrap(),
        )
        .env("KILN_PASSWORD", "x")
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let o = audit(&["--keyring".as_ref(), ring.as_os_str()]);
    assert_exit(&o, 1);
    assert!(
        text(&o).1.contains(&format!(
            "entry 3 is signed by key {}, which is not trusted",
            key_id_of(&wrong)
        )),
        "{}",
        text(&o).1
    );
    assert_exit(
        &audit(&[
            "--keyring".as_ref(),
            ring.as_os_str(),
            "--key".as_ref(),
            wrong.as_os_str(),
        ]),
        0,
    );
    let bad_ring = s.write("bad.pem", "not a key\n");
    let o = audit(&["--keyring".as_ref(), bad_ring.as_os_str()]);
    assert_exit(&o, 2);
    assert!(text(&o).1.contains("bad.pem:1:"), "{}", text(&o).1);
}
