//! Cosign's signature format for OCI images: a "simple signing" payload
//! naming the repository and the manifest digest, signed, stored as a layer
//! of the image tagged `sha256-<digest>.sig` next to the signed image, with
//! the base64 signature in the layer's `dev.cosignproject.cosign/signature`
//! annotation. skopeo and podman read these with `use-sigstore-attachments`.

use base64::Engine as _;
use oci_client::Reference;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use sigstore::crypto::{CosignVerificationKey, Signature};

use super::{SignError, SigningKey};
use crate::builder::oci::image::{client_for, not_found, MANIFEST_V1};

const SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const SIG_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
const DSSE_LAYER: &str = "application/vnd.dsse.envelope.v1+json";

fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

fn reg(what: String) -> impl FnOnce(oci_client::errors::OciDistributionError) -> SignError {
    move |e| SignError::Io {
        what,
        source: std::io::Error::other(e.to_string()),
    }
}

/// The payload cosign signs for an image.
pub fn payload(repository: &str, manifest_digest: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "critical": {
            "identity": { "docker-reference": repository },
            "image": { "docker-manifest-digest": manifest_digest },
            "type": "cosign container image signature",
        },
        "optional": null,
    }))
    .expect("JSON serializes")
}

/// `registry/repository`, as cosign writes it into payloads.
fn repository_of(r: &Reference) -> String {
    format!("{}/{}", r.registry(), r.repository())
}

/// The reference of the signature image of `digest` in `r`'s repository.
pub fn signature_ref(r: &Reference, digest: &str) -> Reference {
    sidecar_ref(r, digest, "sig")
}

/// Where cosign keeps the attestations of the image `digest`.
pub fn attestation_ref(r: &Reference, digest: &str) -> Reference {
    sidecar_ref(r, digest, "att")
}

fn sidecar_ref(r: &Reference, digest: &str, suffix: &str) -> Reference {
    Reference::with_tag(
        r.registry().to_string(),
        r.repository().to_string(),
        format!("{}.{suffix}", digest.replace(':', "-")),
    )
}

/// Signs the image `digest` in `target`'s repository and pushes the
/// signature next to it (added to signatures already there).
pub async fn attach(
    target: &Reference,
    digest: &str,
    key: &SigningKey,
) -> Result<Reference, SignError> {
    let body = payload(&repository_of(target), digest);
    let signature = base64::engine::general_purpose::STANDARD.encode(key.sign(&body).await?);
    let annotations = json!({ SIG_ANNOTATION: signature });
    push_sidecar(target, digest, "sig", SIMPLESIGNING, body, annotations).await
}

/// Attaches a signed DSSE envelope (provenance) as a cosign attestation:
/// the `sha256-<digest>.att` image, one layer per attestation.
pub async fn attach_attestation(
    target: &Reference,
    digest: &str,
    envelope: &[u8],
) -> Result<Reference, SignError> {
    attach_attestation_of(target, digest, envelope, super::provenance::PREDICATE_TYPE).await
}

/// Attaches a DSSE envelope of a statement with `predicate_type` (the
/// test result, …) to the image's `.att` sidecar, beside the others.
pub async fn attach_attestation_of(
    target: &Reference,
    digest: &str,
    envelope: &[u8],
    predicate_type: &str,
) -> Result<Reference, SignError> {
    let annotations = json!({ SIG_ANNOTATION: "", "predicateType": predicate_type });
    push_sidecar(
        target,
        digest,
        "att",
        DSSE_LAYER,
        envelope.to_vec(),
        annotations,
    )
    .await
}

/// Pushes (or extends) the `sha256-<digest>.<suffix>` image next to an image.
async fn push_sidecar(
    target: &Reference,
    digest: &str,
    suffix: &str,
    media_type: &str,
    body: Vec<u8>,
    annotations: serde_json::Value,
) -> Result<Reference, SignError> {
    let sig_ref = sidecar_ref(target, digest, suffix);
    push_layer(&sig_ref, media_type, body, annotations, true).await?;
    Ok(sig_ref)
}

/// Pushes a one-layer image tagged `tagged` holding `body` (a signed
/// envelope kiln publishes, such as the catalog head), replacing what the
/// tag held. The layer's media type says what it is.
pub async fn put_tagged(
    tagged: &Reference,
    media_type: &str,
    body: Vec<u8>,
) -> Result<(), SignError> {
    push_layer(tagged, media_type, body, json!({}), false).await
}

/// The body of the first `media_type` layer of the image tagged `tagged`;
/// `None` when the tag does not exist.
pub async fn get_tagged(
    tagged: &Reference,
    media_type: &str,
) -> Result<Option<Vec<u8>>, SignError> {
    let (client, auth) = client_for(tagged.registry());
    let bytes = match client
        .pull_manifest_raw(tagged, &auth, &[MANIFEST_V1])
        .await
    {
        Ok((b, _)) => b,
        Err(e) if not_found(&e) => return Ok(None),
        Err(e) => return Err(reg(format!("cannot read `{tagged}`"))(e)),
    };
    let m: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| SignError::Verify(format!("`{tagged}`: bad manifest: {e}")))?;
    let Some(layer) = m["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["mediaType"] == media_type)
    else {
        return Err(SignError::Verify(format!(
            "`{tagged}` holds no `{media_type}` layer"
        )));
    };
    let d = layer["digest"].as_str().unwrap_or_default();
    let mut body = Vec::new();
    client
        .pull_blob(tagged, d, &mut body)
        .await
        .map_err(reg(format!("cannot read `{tagged}` layer {d}")))?;
    if sha256(&body) != d {
        return Err(SignError::Verify(format!(
            "`{tagged}`: layer {d} does not match its digest"
        )));
    }
    Ok(Some(body))
}

/// Pushes an image of `body` as a layer under the tag of `tagged`; with
/// `keep`, the layers the tag already holds stay (other keys, other tools).
async fn push_layer(
    tagged: &Reference,
    media_type: &str,
    body: Vec<u8>,
    annotations: serde_json::Value,
    keep: bool,
) -> Result<(), SignError> {
    let sig_ref = tagged;
    let (client, auth) = client_for(sig_ref.registry());
    let mut layers: Vec<serde_json::Value> = if !keep {
        vec![]
    } else {
        match client
            .pull_manifest_raw(sig_ref, &auth, &[MANIFEST_V1])
            .await
        {
            Ok((bytes, _)) => serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|m| m["layers"].as_array().cloned())
                .unwrap_or_default(),
            Err(_) => vec![],
        }
    };
    let body_digest = sha256(&body);
    layers.retain(|l| !(l["digest"] == body_digest.as_str() && l["annotations"] == annotations));
    layers.push(json!({ "mediaType": media_type, "size": body.len(), "digest": body_digest, "annotations": annotations }));
    let diff_ids: Vec<&serde_json::Value> = layers.iter().map(|l| &l["digest"]).collect();
    let config = serde_json::to_vec(&json!({ "architecture": "", "os": "", "config": {}, "rootfs": { "type": "layers", "diff_ids": diff_ids } })).expect("JSON");
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_V1,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "size": config.len(), "digest": sha256(&config) },
        "layers": layers,
    }))
    .expect("JSON");
    client
        .auth(sig_ref, &auth, oci_client::RegistryOperation::Push)
        .await
        .map_err(reg(format!("cannot log in to `{}`", sig_ref.registry())))?;
    for blob in [config, body] {
        let d = sha256(&blob);
        if !client.blob_exists(sig_ref, &d).await.unwrap_or(false) {
            client
                .push_blob(sig_ref, blob, &d)
                .await
                .map_err(reg(format!("cannot push to `{sig_ref}`")))?;
        }
    }
    client
        .push_manifest_raw(sig_ref, manifest, MANIFEST_V1.parse().expect("header"))
        .await
        .map_err(reg(format!("cannot push `{sig_ref}`")))?;
    Ok(())
}

/// What `kiln verify` found for an image.
#[derive(Debug, serde::Serialize)]
pub struct Verified {
    pub reference: String,
    pub digest: String,
    pub signatures: usize,
    /// Signed SLSA provenance statements whose subject is this image.
    pub provenance: usize,
    /// The results of signed test-result statements about this image.
    pub tests: Vec<String>,
}

/// The digest of the manifest the registry serves for `image`; a
/// reference by digest must get that very manifest.
async fn manifest_digest(
    client: &oci_client::Client,
    auth: &oci_client::secrets::RegistryAuth,
    image: &Reference,
) -> Result<String, SignError> {
    let accepted = [
        MANIFEST_V1,
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ];
    let (bytes, _) = client
        .pull_manifest_raw(image, auth, &accepted)
        .await
        .map_err(reg(format!("cannot read `{image}`")))?;
    let digest = sha256(&bytes);
    if let Some(d) = image.digest() {
        if d != digest {
            return Err(SignError::Verify(format!(
                "`{image}`: the registry served a manifest with digest {digest}"
            )));
        }
    }
    Ok(digest)
}

/// Verifies that `image` (tag or digest) has a cosign signature by `key`
/// over its current manifest digest and repository.
pub async fn verify(image: &Reference, key: &CosignVerificationKey) -> Result<Verified, SignError> {
    let (client, auth) = client_for(image.registry());
    let digest = manifest_digest(&client, &auth, image).await?;
    let sig_ref = signature_ref(image, &digest);
    let (sig_bytes, _) = client
        .pull_manifest_raw(&sig_ref, &auth, &[MANIFEST_V1])
        .await
        .map_err(|_| {
            SignError::Verify(format!(
                "`{image}` ({digest}) has no signature (`{sig_ref}` not found)"
            ))
        })?;
    let sig_manifest: serde_json::Value = serde_json::from_slice(&sig_bytes)
        .map_err(|e| SignError::Verify(format!("`{sig_ref}`: bad manifest: {e}")))?;
    let mut reasons = vec![];
    let mut good = 0;
    for layer in sig_manifest["layers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let Some(layer_digest) = layer["digest"].as_str() else {
            continue;
        };
        let Some(sig_b64) = layer["annotations"][SIG_ANNOTATION].as_str() else {
            reasons.push(format!("layer {layer_digest} has no signature annotation"));
            continue;
        };
        let mut body = Vec::new();
        if let Err(e) = client.pull_blob(&sig_ref, layer_digest, &mut body).await {
            reasons.push(format!("cannot read payload {layer_digest}: {e}"));
            continue;
        }
        if sha256(&body) != layer_digest {
            reasons.push(format!("payload {layer_digest} does not match its digest"));
            continue;
        }
        if let Err(e) = key.verify_signature(Signature::Base64Encoded(sig_b64.as_bytes()), &body) {
            reasons.push(format!(
                "signature on {layer_digest} does not verify with this key ({e})"
            ));
            continue;
        }
        let p: serde_json::Value = match serde_json::from_slice(&body) {
            Ok(p) => p,
            Err(e) => {
                reasons.push(format!("payload {layer_digest} is not JSON: {e}"));
                continue;
            }
        };
        if p["critical"]["image"]["docker-manifest-digest"] != digest.as_str() {
            reasons.push(format!(
                "signed digest {} is not the image's {digest}",
                p["critical"]["image"]["docker-manifest-digest"]
            ));
            continue;
        }
        let identity = p["critical"]["identity"]["docker-reference"]
            .as_str()
            .unwrap_or_default();
        if identity
            .split(['@'])
            .next()
            .unwrap_or_default()
            .rsplit_once(':')
            .map_or(
                identity,
                |(r, t)| if t.contains('/') { identity } else { r },
            )
            != repository_of(image)
        {
            reasons.push(format!(
                "signed for `{identity}`, not `{}`",
                repository_of(image)
            ));
            continue;
        }
        good += 1;
    }
    if good == 0 {
        return Err(SignError::Verify(format!(
            "`{image}` ({digest}): no valid signature: {}",
            if reasons.is_empty() {
                "no signature layers".into()
            } else {
                reasons.join("; ")
            }
        )));
    }
    let (provenance, tests) = verify_attestations(&client, image, &digest, key).await?;
    Ok(Verified {
        reference: image.to_string(),
        digest,
        signatures: good,
        provenance,
        tests,
    })
}

/// Checks every attestation of the image, if there are any: each must be
/// signed by `key` and name the image's digest as its subject. Returns the
/// number of provenance statements and the test results.
async fn verify_attestations(
    client: &oci_client::Client,
    image: &Reference,
    digest: &str,
    key: &CosignVerificationKey,
) -> Result<(usize, Vec<String>), SignError> {
    let mut count = 0;
    let mut tests = vec![];
    for (d, s) in signed_statements(client, image, digest, key).await? {
        let subject = s["subject"][0]["digest"]["sha256"]
            .as_str()
            .unwrap_or_default();
        if format!("sha256:{subject}") != digest {
            return Err(SignError::Verify(format!(
                "provenance {d} is about sha256:{subject}, not {digest}"
            )));
        }
        if s["predicateType"] == super::testresult::PREDICATE_TYPE {
            let result = super::testresult::result_for(&s, digest).map_err(SignError::Verify)?;
            tests.push(result);
        } else {
            count += 1;
        }
    }
    Ok((count, tests))
}

/// The in-toto statements in the image's `.att` sidecar whose DSSE
/// envelopes `key` signed, with their layer digests; none when there is
/// no sidecar. Attestations by other keys or tools may sit beside kiln's:
/// they are left out, not judged.
async fn signed_statements(
    client: &oci_client::Client,
    image: &Reference,
    digest: &str,
    key: &CosignVerificationKey,
) -> Result<Vec<(String, serde_json::Value)>, SignError> {
    let att_ref = sidecar_ref(image, digest, "att");
    let auth = crate::builder::oci::image::docker_auth(image.registry())
        .unwrap_or(oci_client::secrets::RegistryAuth::Anonymous);
    let Ok((bytes, _)) = client
        .pull_manifest_raw(&att_ref, &auth, &[MANIFEST_V1])
        .await
    else {
        return Ok(vec![]);
    };
    let m: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| SignError::Verify(format!("`{att_ref}`: bad manifest: {e}")))?;
    let mut statements = vec![];
    for layer in m["layers"].as_array().cloned().unwrap_or_default() {
        if layer["mediaType"] != DSSE_LAYER {
            continue;
        }
        let d = layer["digest"].as_str().unwrap_or_default();
        let mut body = Vec::new();
        client
            .pull_blob(&att_ref, d, &mut body)
            .await
            .map_err(|e| SignError::Verify(format!("cannot read attestation {d}: {e}")))?;
        if sha256(&body) != d {
            return Err(SignError::Verify(format!(
                "attestation {d} does not match its digest"
            )));
        }
        let Ok(statement) = super::dsse::verify_bytes(&body, super::provenance::PAYLOAD_TYPE, key)
        else {
            continue;
        };
        let s: serde_json::Value = serde_json::from_slice(&statement)
            .map_err(|e| SignError::Verify(format!("provenance {d}: {e}")))?;
        statements.push((d.to_string(), s));
    }
    Ok(statements)
}

/// The SBOM of `predicate_type` (SPDX or CycloneDX, [`super::sbom`])
/// attested about `image`: its digest, and the first attestation in its
/// `.att` that `key` signed, whose subject is that digest and whose
/// predicate type is the one asked for — its `.att` layer and the
/// document (the predicate) — if there is one.
pub async fn sbom(
    image: &Reference,
    key: &CosignVerificationKey,
    predicate_type: &str,
) -> Result<(String, Option<(String, serde_json::Value)>), SignError> {
    let (client, auth) = client_for(image.registry());
    let digest = manifest_digest(&client, &auth, image).await?;
    let found = signed_statements(&client, image, &digest, key)
        .await?
        .into_iter()
        .find_map(|(layer, s)| {
            super::sbom::predicate_of(&s, &digest, predicate_type)
                .ok()
                .map(|doc| (layer, doc.clone()))
        });
    Ok((digest, found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_and_signature_tag_are_cosigns() {
        let p: serde_json::Value =
            serde_json::from_slice(&payload("r.io/a/b", "sha256:ab")).unwrap();
        assert_eq!(p["critical"]["type"], "cosign container image signature");
        assert_eq!(
            p["critical"]["image"]["docker-manifest-digest"],
            "sha256:ab"
        );
        let r: Reference = "127.0.0.1:5000/a/b:1".parse().unwrap();
        assert_eq!(signature_ref(&r, "sha256:ab").tag(), Some("sha256-ab.sig"));
    }
}
