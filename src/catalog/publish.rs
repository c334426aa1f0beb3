//! Channel pointers where users consume images: after a channel moves in
//! the catalog, each of the version's registry images gets the channel as
//! a tag (`repo:prod` → the version's digest), and each disk image file
//! (`qcow2`, `raw`) a channel manifest beside it (`IMAGE.CHANNEL.json`:
//! version, file, sha256, build manifest), and each AMI the SSM parameter
//! `/kiln/IMAGE/CHANNEL` in its region (data type `aws:ec2:image`, the
//! parameter version labelled with the kiln version). Artifacts that have
//! no pointer format are named, never skipped silently. A revoked
//! version's AMIs are marked deprecated in EC2 ([`revoked`]).

use super::model::Version;

/// What publishing did, per artifact.
#[derive(Debug, Default)]
pub struct Published {
    pub done: Vec<String>,
    pub not_supported: Vec<String>,
}

/// Points `channel` at `version`'s artifacts. Pointer files kiln writes
/// are signed with `key` (the key that signed the catalog change).
pub async fn channel(
    version: &Version,
    channel: &str,
    key: &crate::sign::SigningKey,
) -> Result<Published, String> {
    let mut out = Published::default();
    for a in &version.registration.artifacts {
        #[cfg(feature = "oci")]
        if let (Some(r), Some(digest)) = (a.id.strip_prefix("registry:"), a.digest.as_deref()) {
            let image: oci_client::Reference = r.parse().map_err(|e| format!("`{r}`: {e}"))?;
            crate::builder::oci::image::tag(&image, digest, channel)
                .await
                .map_err(|e| format!("cannot move `{channel}` for `{r}`: {e}"))?;
            out.done.push(format!(
                "{}/{}:{channel} → {digest}",
                image.registry(),
                image.repository()
            ));
            continue;
        }
        #[cfg(feature = "ami")]
        if let Some((region, ami, clients)) =
            crate::builder::ami::artifact(&a.kind, &a.id, a.endpoint.as_deref()).await
        {
            let name = crate::builder::ami::image::publish_channel(
                &clients,
                &version.registration.image,
                channel,
                &ami,
                &version.registration.version,
            )
            .await?;
            out.done
                .push(format!("SSM parameter {name} in {region} → {ami}"));
            continue;
        }
        if a.kind == "qcow2" || a.kind == "raw" {
            let path = std::path::Path::new(a.id.strip_prefix("file:").unwrap_or(&a.id));
            let written = disk_channel_manifest(version, a, path, channel, key).await?;
            out.done.push(format!(
                "{} → {} (signed: `{}`)",
                written.display(),
                version.registration.version,
                crate::sign::blob::sig_path(&written).display()
            ));
            continue;
        }
        out.not_supported.push(format!(
            "`{}` ({}): channel pointers for this kind are not supported yet",
            a.id, a.kind
        ));
    }
    Ok(out)
}

/// Carries a revocation to where images are used: AMIs are marked
/// deprecated (new launches see the deprecation). Registry images and
/// disk files have no such flag; `kiln verify` refuses them instead.
pub async fn revoked(version: &Version) -> Result<Published, String> {
    let mut out = Published::default();
    for a in &version.registration.artifacts {
        if a.kind != "ami" {
            continue;
        }
        #[cfg(feature = "ami")]
        if let Some((region, ami, clients)) =
            crate::builder::ami::artifact(&a.kind, &a.id, a.endpoint.as_deref()).await
        {
            crate::builder::ami::image::deprecate(&clients, &ami).await?;
            out.done.push(format!("{ami} in {region} deprecated"));
            continue;
        }
        out.not_supported.push(format!(
            "`{}`: this kiln cannot deprecate AMIs (built without the `ami` feature)",
            a.id
        ));
    }
    Ok(out)
}

/// Writes `IMAGE.CHANNEL.json` next to a disk image file (atomically) and
/// its signature `IMAGE.CHANNEL.json.sig` (cosign's blob format).
async fn disk_channel_manifest(
    version: &Version,
    a: &super::ArtifactRecord,
    file: &std::path::Path,
    channel: &str,
    key: &crate::sign::SigningKey,
) -> Result<std::path::PathBuf, String> {
    let dir = file.parent().unwrap_or(std::path::Path::new("."));
    let path = dir.join(format!("{}.{channel}.json", version.registration.image));
    let doc = serde_json::json!({
        "image": version.registration.image,
        "channel": channel,
        "version": version.registration.version,
        "file": file,
        "digest": a.digest,
        "manifest": a.manifest,
        "manifest_digest": a.manifest_digest,
    });
    let bytes = serde_json::to_vec_pretty(&doc).expect("JSON serializes");
    crate::manifest::write_atomic(&path, &bytes)
        .map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
    crate::sign::blob::sign_bytes(&path, &bytes, key)
        .await
        .map_err(|e| format!("cannot sign `{}`: {e}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::model::{Registration, Status};

    #[tokio::test]
    async fn a_disk_image_gets_a_channel_manifest_beside_it() {
        let tmp = tempfile::tempdir().unwrap();
        let disk = tmp.path().join("web.qcow2");
        std::fs::write(&disk, b"disk").unwrap();
        let v = Version {
            registration: Registration {
                image: "web".into(),
                version: "1.0.0+3".into(),
                build: 3,
                build_id: "b".into(),
                template_digest: "t".into(),
                artifacts: vec![super::super::ArtifactRecord {
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
        };
        let key = crate::sign::load_or_create_plain_key(&tmp.path().join("k")).unwrap();
        let p = channel(&v, "prod", &key).await.unwrap();
        assert_eq!(p.done.len(), 1);
        let pointer = tmp.path().join("web.prod.json");
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&pointer).unwrap()).unwrap();
        assert_eq!(doc["version"], "1.0.0+3");
        assert_eq!(doc["digest"], "sha256:abc");
        // Signed: the pointer verifies with the key, and not once changed.
        crate::sign::blob::verify_file_signature(&pointer, &key.public_pem).unwrap();
        std::fs::write(&pointer, b"{}").unwrap();
        assert!(crate::sign::blob::verify_file_signature(&pointer, &key.public_pem).is_err());
    }
}
