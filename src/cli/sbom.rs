//! `kiln sbom MANIFEST [--format spdx|cyclonedx] [--key PUB]`: prints the
//! SBOM a build recorded for an artifact. The manifest names the document
//! and its sha256; the document is printed only when its bytes match.
//! With `--key` the manifest's own signature is verified first, and so is
//! the document's signed attestation (its predicate must be the document,
//! byte for byte as JSON, its subject the artifact: the content digest, or
//! for an AMI the digest of its identity, recomputed here).

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use super::Exit;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Spdx,
    Cyclonedx,
}

#[derive(Args, Debug)]
pub struct SbomArgs {
    /// Which document: SPDX 2.3 JSON or CycloneDX 1.6 JSON.
    #[arg(long, value_enum, default_value = "spdx")]
    pub format: Format,
    /// Verify the manifest's signature (`X.dsse.json`) and the SBOM's
    /// attestation with this public key first.
    #[arg(long, value_name = "PUB")]
    pub key: Option<PathBuf>,
    /// The build manifest of the artifact (`X.json` or `X.dsse.json`).
    #[arg(value_name = "MANIFEST")]
    pub manifest: PathBuf,
}

pub fn exec(args: SbomArgs) -> Exit {
    match document(&args.manifest, args.format, args.key.as_deref()) {
        Ok((bytes, note)) => {
            eprintln!("{note}");
            println!("{}", String::from_utf8_lossy(&bytes).trim_end());
            Exit::Success
        }
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Failure
        }
    }
}

fn document(
    manifest: &Path,
    format: Format,
    key: Option<&Path>,
) -> Result<(Vec<u8>, String), String> {
    let (m, note) = super::show_manifest::load(manifest, key)?;
    let name = match format {
        Format::Spdx => "spdx",
        Format::Cyclonedx => "cyclonedx",
    };
    let rec = &m["sbom"][name];
    if rec.is_null() {
        return Err(format!(
            "`{}` records no {name} SBOM (build with `[build.sbom] enabled = true`)",
            manifest.display()
        ));
    }
    let file = PathBuf::from(rec["file"].as_str().unwrap_or_default());
    let bytes =
        std::fs::read(&file).map_err(|e| format!("cannot read `{}`: {e}", file.display()))?;
    let digest = crate::manifest::sha256_hex(&bytes);
    if rec["digest"].as_str() != Some(digest.as_str()) {
        return Err(format!(
            "`{}` is {digest}, not the {} its manifest recorded",
            file.display(),
            rec["digest"]
        ));
    }
    let mut note = format!(
        "{name} SBOM `{}` matches its manifest ({note})",
        file.display()
    );
    if let Some(k) = key {
        let att = &rec["attestation"];
        let Some(att_file) = att["file"].as_str() else {
            return Err(format!(
                "the build did not sign the {name} SBOM: no attestation to verify with `{}`",
                k.display()
            ));
        };
        let public = crate::sign::load_public_key(k).map_err(|e| e.to_string())?;
        let env = std::fs::read(att_file).map_err(|e| format!("cannot read `{att_file}`: {e}"))?;
        let body =
            crate::sign::dsse::verify_bytes(&env, crate::sign::provenance::PAYLOAD_TYPE, &public)
                .map_err(|e| format!("`{att_file}`: {e}"))?;
        let st: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("`{att_file}`: not a statement: {e}"))?;
        let doc: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("`{}`: not JSON: {e}", file.display()))?;
        let (subject, digest) = subject_of(&m)?;
        let hex = digest.trim_start_matches("sha256:");
        if st["predicate"] != doc
            || st["subject"][0]["digest"]["sha256"] != hex
            || st["subject"][0]["name"] != subject.as_str()
        {
            return Err(format!(
                "`{att_file}` does not attest this document for the artifact `{subject}` ({digest})"
            ));
        }
        note.push_str(&format!("; attestation `{att_file}` verified"));
    }
    Ok((bytes, note))
}

/// The name and digest an artifact's SBOM attestations must have as
/// subject: its id and content digest; for an AMI, `ami:REGION/ami-…` and
/// the digest of the identity the manifest recorded, which must be the
/// artifact's (region and id) and hash to the recorded subject digest.
fn subject_of(m: &serde_json::Value) -> Result<(String, String), String> {
    let artifact = &m["artifact"];
    if let Some(d) = artifact["digest"].as_str() {
        let id = artifact["id"].as_str().unwrap_or_default();
        return Ok((id.to_string(), d.to_string()));
    }
    let id = artifact["id"].as_str().unwrap_or_default();
    let (region, ami) = crate::builder::ami::parse_artifact_id(id)
        .filter(|_| artifact["kind"] == "ami")
        .ok_or_else(|| format!("the manifest's artifact `{id}` has no content digest"))?;
    let recorded = &m["sbom"]["subject"];
    let identity: crate::sbom::AmiIdentity =
        serde_json::from_value(recorded["identity"].clone())
            .map_err(|e| format!("the manifest records no identity of the AMI `{id}`: {e}"))?;
    if identity.region != region || identity.image_id != ami {
        return Err(format!(
            "the manifest's SBOM subject is `{}`, not its artifact `{id}`",
            identity.name()
        ));
    }
    let digest = identity.digest();
    if recorded["digest"].as_str() != Some(digest.as_str()) {
        return Err(format!(
            "the AMI identity recorded for `{id}` hashes to {digest}, not the recorded {}",
            recorded["digest"]
        ));
    }
    Ok((identity.name(), digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ami_manifest(identity: &crate::sbom::AmiIdentity) -> serde_json::Value {
        json!({
            "artifact": { "kind": "ami", "id": "us-east-1:ami-0abc", "digest": null },
            "sbom": { "subject": {
                "name": identity.name(),
                "digest": identity.digest(),
                "identity": identity,
            } },
        })
    }

    #[test]
    fn an_amis_subject_is_recomputed_and_must_be_its_artifact() {
        let id = crate::sbom::AmiIdentity::new("us-east-1", "ami-0abc", &["snap-1".into()]);
        let m = ami_manifest(&id);
        assert_eq!(
            subject_of(&m).unwrap(),
            ("ami:us-east-1/ami-0abc".to_string(), id.digest())
        );
        // Another AMI's identity, or a digest that is not the identity's.
        let other = crate::sbom::AmiIdentity::new("us-east-1", "ami-0def", &["snap-1".into()]);
        let err = subject_of(&ami_manifest(&other)).unwrap_err();
        assert!(err.contains("not its artifact"), "{err}");
        let mut wrong = m.clone();
        wrong["sbom"]["subject"]["identity"]["snapshot_ids"] = json!(["snap-2"]);
        let err = subject_of(&wrong).unwrap_err();
        assert!(err.contains("hashes to"), "{err}");
        let mut none = m;
        none["sbom"]["subject"] = json!(null);
        assert!(subject_of(&none).unwrap_err().contains("no identity"));
        // Anything with a content digest is described by it.
        let oci = json!({ "artifact": { "kind": "oci", "id": "oci-layout:/o:1", "digest": "sha256:ab" } });
        assert_eq!(
            subject_of(&oci).unwrap(),
            ("oci-layout:/o:1".to_string(), "sha256:ab".to_string())
        );
    }
}
