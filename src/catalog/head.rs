//! The catalog head, published outside the catalog folder. The log's
//! chain proves no entry was edited, inserted or reordered, but not that
//! none was cut from its end: removing the newest entry (a `revoke`)
//! leaves a chain that holds. So whenever a change reaches a version's
//! artifacts (a channel moves, a version is revoked), the head of the log
//! after that change is signed (DSSE, payload type [`PAYLOAD_TYPE`]) and
//! published where the artifacts are consumed — where someone who can
//! write the catalog folder cannot also write:
//!
//! - registry images: the tag [`TAG`] in the image's repository, a
//!   one-layer image holding the envelope;
//! - disk image files: `FILE.catalog-head.dsse.json` beside the file;
//! - AMIs: the SSM parameter `/kiln/IMAGE/catalog-head` in its region.
//!
//! `kiln verify` reads the published head of the artifact it verifies and
//! refuses a catalog log that no longer holds it ([`hold`]).

use std::path::{Path, PathBuf};

use sigstore::crypto::CosignVerificationKey;

use super::chain::Entry;
use super::model::Version;
use super::publish::Published;
use crate::sign::SigningKey;

/// The DSSE payload type of a published head.
pub const PAYLOAD_TYPE: &str = "application/vnd.kiln.catalog-head.v1+json";
/// The registry tag the head is published under, per repository.
pub const TAG: &str = "kiln-catalog-head";
/// The media type of the layer holding the envelope.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";

/// Where a disk image file's published head lives.
pub fn file_path(disk: &Path) -> PathBuf {
    let mut name = disk.as_os_str().to_owned();
    name.push(".catalog-head.dsse.json");
    PathBuf::from(name)
}

/// The SSM parameter holding an image's published head.
pub fn parameter(image: &str) -> String {
    format!("/kiln/{image}/catalog-head")
}

/// The signed envelope of `head` (`SEQ:HASH`) after a change to `version`.
pub async fn envelope(version: &Version, head: &str, key: &SigningKey) -> Result<Vec<u8>, String> {
    let body = serde_json::to_vec(&serde_json::json!({
        "head": head,
        "image": version.registration.image,
        "version": version.registration.version,
        "published": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    }))
    .expect("JSON serializes");
    let env = crate::sign::dsse::sign(PAYLOAD_TYPE, &body, key)
        .await
        .map_err(|e| format!("cannot sign the catalog head: {e}"))?;
    Ok(serde_json::to_vec(&env).expect("envelopes serialize"))
}

/// Publishes `head` beside each of `version`'s artifacts. Artifacts with
/// no place for it are named in `not_supported`, never skipped silently.
pub async fn publish(version: &Version, head: &str, key: &SigningKey) -> Result<Published, String> {
    let bytes = envelope(version, head, key).await?;
    let mut out = Published::default();
    for a in &version.registration.artifacts {
        #[cfg(feature = "oci")]
        if let Some(r) = a.id.strip_prefix("registry:") {
            let image: oci_client::Reference = r.parse().map_err(|e| format!("`{r}`: {e}"))?;
            let tagged = tag_of(&image);
            crate::sign::cosign::put_tagged(&tagged, LAYER_MEDIA_TYPE, bytes.clone())
                .await
                .map_err(|e| format!("cannot publish the catalog head to `{tagged}`: {e}"))?;
            out.done.push(format!("catalog head {head} → {tagged}"));
            continue;
        }
        #[cfg(feature = "ami")]
        if let Some((region, _, clients)) =
            crate::builder::ami::artifact(&a.kind, &a.id, a.endpoint.as_deref()).await
        {
            let name = parameter(&version.registration.image);
            let text = String::from_utf8(bytes.clone()).expect("JSON is UTF-8");
            crate::builder::ami::image::put_text_parameter(&clients, &name, &text)
                .await
                .map_err(|e| format!("cannot publish the catalog head: {e}"))?;
            out.done.push(format!(
                "catalog head {head} → SSM parameter {name} in {region}"
            ));
            continue;
        }
        if a.kind == "qcow2" || a.kind == "raw" {
            let disk = Path::new(a.id.strip_prefix("file:").unwrap_or(&a.id));
            let path = file_path(disk);
            crate::manifest::write_atomic(&path, &bytes)
                .map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
            out.done
                .push(format!("catalog head {head} → {}", path.display()));
            continue;
        }
        out.not_supported.push(format!(
            "`{}` ({}): publishing the catalog head beside this kind is not supported yet",
            a.id, a.kind
        ));
    }
    Ok(out)
}

/// The tag a repository's head is published under.
#[cfg(feature = "oci")]
pub fn tag_of(image: &oci_client::Reference) -> oci_client::Reference {
    oci_client::Reference::with_tag(
        image.registry().to_string(),
        image.repository().to_string(),
        TAG.to_string(),
    )
}

/// The head published for a registry image, if any.
#[cfg(feature = "oci")]
pub async fn fetch_for_image(
    image: &oci_client::Reference,
) -> Result<Option<(String, Vec<u8>)>, String> {
    let tagged = tag_of(image);
    crate::sign::cosign::get_tagged(&tagged, LAYER_MEDIA_TYPE)
        .await
        .map(|b| b.map(|b| (tagged.to_string(), b)))
        .map_err(|e| format!("cannot read the published catalog head: {e}"))
}

/// The head published beside a disk image file, if any.
pub fn fetch_for_file(disk: &Path) -> Result<Option<(String, Vec<u8>)>, String> {
    let path = file_path(disk);
    match std::fs::read(&path) {
        Ok(b) => Ok(Some((path.display().to_string(), b))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read `{}`: {e}", path.display())),
    }
}

/// Holds a verified log to a published head (`envelope`, read from
/// `place`): the log must still hold the entry it names. The envelope is
/// expected to be signed by `key` or by a key that signed the log; one
/// signed by neither is still held to (a head can only make `verify`
/// stricter: what bypasses it is removing the head, which no signature
/// prevents), and the verdict says so. Returns the note for the verdict.
pub fn hold(
    place: &str,
    envelope: &[u8],
    entries: &[Entry],
    key: &CosignVerificationKey,
) -> Result<String, String> {
    let mut body = crate::sign::dsse::verify_bytes(envelope, PAYLOAD_TYPE, key).ok();
    if body.is_none() {
        let mut seen = std::collections::BTreeSet::new();
        for e in entries {
            if !seen.insert(e.signature.key_id.as_str()) {
                continue;
            }
            let Ok(k) = CosignVerificationKey::try_from_pem(e.signature.public_key.as_bytes())
            else {
                continue;
            };
            if let Ok(b) = crate::sign::dsse::verify_bytes(envelope, PAYLOAD_TYPE, &k) {
                body = Some(b);
                break;
            }
        }
    }
    let known = body.is_some();
    let body = match body {
        Some(b) => b,
        None => unverified_body(envelope).ok_or_else(|| {
            format!(
                "the catalog head published at `{place}` is not a DSSE envelope of a catalog head"
            )
        })?,
    };
    let doc: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| format!("the catalog head published at `{place}` is not JSON: {e}"))?;
    let head = doc["head"].as_str().unwrap_or_default();
    let signer = if known {
        ""
    } else {
        " (signed by a key that is neither the one given nor a signer of the log: the entries that key signed may be the ones cut)"
    };
    match super::chain::check_head(entries, head)? {
        Ok(()) => Ok(format!("; catalog head {head} published at `{place}` held{signer}")),
        Err(b) => Err(format!(
            "the catalog log does not hold the head published at `{place}` after a change to {} {} ({head}){signer}: {b} — its revocations cannot be trusted",
            doc["image"].as_str().unwrap_or("?"),
            doc["version"].as_str().unwrap_or("?"),
        )),
    }
}

/// The payload of an envelope of the head's type, its signature unchecked.
fn unverified_body(envelope: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let env: crate::sign::dsse::Envelope = serde_json::from_slice(envelope).ok()?;
    (env.payload_type == PAYLOAD_TYPE).then_some(())?;
    base64::engine::general_purpose::STANDARD
        .decode(&env.payload)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::model::{Action, Registration, Status};

    fn version(disk: &Path) -> Version {
        Version {
            registration: Registration {
                image: "web".into(),
                version: "1.0.0+1".into(),
                build: 1,
                build_id: "b".into(),
                template_digest: "t".into(),
                artifacts: vec![crate::catalog::ArtifactRecord {
                    job: "j".into(),
                    kind: "qcow2".into(),
                    id: disk.display().to_string(),
                    digest: Some("sha256:abc".into()),
                    base: None,
                    endpoint: None,
                    parent: None,
                    fingerprint: "f".into(),
                    manifest_digest: None,
                    manifest: None,
                    signed_manifest_digest: None,
                    signatures: vec![],
                    signer: None,
                }],
            },
            status: Status::Active,
            registered_at: "t".into(),
            registered_by: "me".into(),
            seq: 1,
            artifacts_deleted: false,
            rescan: None,
        }
    }

    async fn log(n: usize, key: &SigningKey) -> Vec<Entry> {
        let mut out: Vec<Entry> = vec![];
        for i in 0..n {
            let prev = out.last().map(|e| (e.seq, e.hash.as_str()));
            let change = Action::Revoke {
                image: "web".into(),
                version: format!("1.0.0+{i}"),
                reason: "r".into(),
            };
            out.push(Entry::new(prev, "me", change, key).await.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn a_published_head_beside_a_disk_file_catches_a_cut_log() {
        let tmp = tempfile::tempdir().unwrap();
        let disk = tmp.path().join("web.qcow2");
        std::fs::write(&disk, b"disk").unwrap();
        let key = crate::sign::load_or_create_plain_key(&tmp.path().join("k")).unwrap();
        let pub_key = CosignVerificationKey::try_from_pem(key.public_pem.as_bytes()).unwrap();
        let entries = log(3, &key).await;
        let head = crate::catalog::chain::head(&entries).unwrap();
        let p = publish(&version(&disk), &head, &key).await.unwrap();
        assert_eq!(p.done.len(), 1, "{:?}", p);
        let (place, bytes) = fetch_for_file(&disk).unwrap().expect("published");
        assert!(hold(&place, &bytes, &entries, &pub_key)
            .unwrap()
            .contains("held"));
        // The newest entry cut: refused, naming what is missing.
        let e = hold(&place, &bytes, &entries[..2], &pub_key).unwrap_err();
        assert!(e.contains("removed from its end"), "{e}");
        // Signed by a stranger and naming an entry the log does not hold:
        // refused, saying both.
        let other = crate::sign::load_or_create_plain_key(&tmp.path().join("o")).unwrap();
        let forged = envelope(&version(&disk), "1:sha256:x", &other)
            .await
            .unwrap();
        let e = hold(&place, &forged, &entries, &pub_key).unwrap_err();
        assert!(
            e.contains("neither the one given") && e.contains("rewritten"),
            "{e}"
        );
        // Not an envelope at all: refused.
        assert!(hold(&place, b"{}", &entries, &pub_key).is_err());
        // Signed by a signer of the log (the operator key, not the build
        // key the verifier was given): accepted.
        let stranger_pub =
            CosignVerificationKey::try_from_pem(other.public_pem.as_bytes()).unwrap();
        assert!(hold(&place, &bytes, &entries, &stranger_pub).is_ok());
    }
}
