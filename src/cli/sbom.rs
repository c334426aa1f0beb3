//! `kiln sbom [--format spdx|cyclonedx] [--key PUB] ARTIFACT|MANIFEST`:
//! prints the SBOM a build recorded for an artifact, after verifying it.
//! Told apart as `kiln verify` tells them apart:
//! - a build manifest names the document and its sha256; the document is
//!   printed only when its bytes match. With `--key` the manifest's own
//!   signature is verified first, and so is the document's signed
//!   attestation (its predicate must be the document, byte for byte as
//!   JSON, its subject the artifact: the content digest, or for an AMI the
//!   digest of its identity, recomputed here);
//! - an image in a registry (`--key` required): the attestation in its
//!   cosign `.att` sidecar signed by the key about its current digest;
//! - a disk image file (`--key` required): the attestation beside it
//!   (`FILE.spdx.intoto.json`), whose subject must be the file's sha256;
//! - an AMI: through the catalog, which names its build manifest.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use super::Exit;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Spdx,
    Cyclonedx,
}

impl Format {
    /// The manifest's name for it, and of the attestation beside a disk.
    fn name(self) -> &'static str {
        match self {
            Format::Spdx => "spdx",
            Format::Cyclonedx => "cyclonedx",
        }
    }

    fn predicate_type(self) -> &'static str {
        match self {
            Format::Spdx => crate::sign::sbom::SPDX_PREDICATE_TYPE,
            Format::Cyclonedx => crate::sign::sbom::CYCLONEDX_PREDICATE_TYPE,
        }
    }
}

#[derive(Args, Debug)]
pub struct SbomArgs {
    /// Which document: SPDX 2.3 JSON or CycloneDX 1.6 JSON.
    #[arg(long, value_enum, default_value = "spdx")]
    pub format: Format,
    /// The public key the SBOM's attestation must verify with (required
    /// for an image or a disk file); for a manifest, its signature
    /// (`X.dsse.json`) is verified with it first.
    #[arg(long, value_name = "PUB")]
    pub key: Option<PathBuf>,
    /// An image in a registry (`registry:HOST/REPO:TAG`,
    /// `HOST/REPO@sha256:…`), a disk image file, an AMI (`ami-…`,
    /// `REGION:ami-…`, `ami:REGION/ami-…`; found through the catalog), or
    /// the artifact's build manifest (`X.json` or `X.dsse.json`).
    #[arg(value_name = "ARTIFACT|MANIFEST")]
    pub artifact: String,
}

/// What the argument names, told apart as `kiln verify` does.
#[derive(Debug, PartialEq)]
enum Target {
    Manifest(PathBuf),
    Disk(PathBuf),
    /// The id as given (`REGION:ami-…` for `ami:REGION/ami-…`) and the AMI id.
    Ami(String, String),
    Registry(String),
}

impl Target {
    fn of(arg: &str) -> Result<Target, String> {
        if let Some(layout) = arg.strip_prefix("oci-layout:") {
            return Err(format!(
                "`oci-layout:{layout}`: reading an SBOM from an OCI layout is not supported yet\nhint: pass the build manifest instead: `kiln sbom --key PUB STATE/manifests/BUILD_ID/JOB-N.json`"
            ));
        }
        let path = Path::new(arg);
        if path.is_file() || arg.ends_with(".json") {
            return Ok(if arg.ends_with(".json") {
                Target::Manifest(path.to_path_buf())
            } else {
                Target::Disk(path.to_path_buf())
            });
        }
        // `ami:REGION/ami-…`, the name the documents give an AMI.
        let id = match arg.strip_prefix("ami:").and_then(|r| r.split_once('/')) {
            Some((region, ami)) => format!("{region}:{ami}"),
            None => arg.to_string(),
        };
        if let Some(ami) = super::verify::ami_of(&id) {
            let ami = ami.to_string();
            return Ok(Target::Ami(id, ami));
        }
        let reference = arg.strip_prefix("registry:").unwrap_or(arg);
        // `/x/disk.qcow2`, or `out/disk.qcow2` when `out/` is a folder
        // here, is a missing file, not an image on Docker Hub.
        let first = reference.split('/').next().unwrap_or_default();
        let pathlike = arg.starts_with(['/', '.']) || Path::new(first).is_dir();
        if reference == arg && reference.contains('/') && pathlike {
            return Err(format!("`{arg}`: no such file"));
        }
        if reference.contains('/') {
            return Ok(Target::Registry(reference.to_string()));
        }
        Err(format!(
            "`{arg}`: not a file, an image reference, an AMI id or a build manifest"
        ))
    }
}

pub async fn exec(args: SbomArgs, state_dir: &Path, catalog: Option<&str>) -> Exit {
    let target = match Target::of(&args.artifact) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::BadInput;
        }
    };
    let key = args.key.as_deref();
    let found = match (&target, key) {
        (Target::Manifest(m), _) => document(m, args.format, key),
        (Target::Ami(id, ami), _) => from_ami(id, ami, args.format, key, state_dir, catalog).await,
        (Target::Disk(_) | Target::Registry(_), None) => {
            eprintln!(
                "error: `{}`: give the public key its SBOM attestation must verify with (`--key PUB`)",
                args.artifact
            );
            return Exit::BadInput;
        }
        (Target::Disk(file), Some(k)) => from_disk(file, args.format, k),
        (Target::Registry(r), Some(k)) => from_registry(r, args.format, k).await,
    };
    match found {
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

/// The document an attestation carries, as kiln wrote it beside the
/// manifest (pretty JSON).
fn pretty(doc: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec_pretty(doc).expect("JSON serializes")
}

/// A disk image file: its SBOM attestation beside it, signed by `key`,
/// about the sha256 of the file's bytes (hashed as a stream).
fn from_disk(file: &Path, format: Format, key: &Path) -> Result<(Vec<u8>, String), String> {
    use crate::sign::{blob, dsse, provenance};
    let name = format.name();
    let public = crate::sign::load_public_key(key).map_err(|e| e.to_string())?;
    let att = blob::sbom_attestation_path(file, name);
    let env = std::fs::read(&att).map_err(|e| {
        format!(
            "`{}` has no signed {name} SBOM beside it: cannot read `{}`: {e}",
            file.display(),
            att.display()
        )
    })?;
    let body = dsse::verify_bytes(&env, provenance::PAYLOAD_TYPE, &public)
        .map_err(|e| format!("`{}` (key `{}`): {e}", att.display(), key.display()))?;
    let statement: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| format!("`{}`: not a statement: {e}", att.display()))?;
    let digest = format!(
        "sha256:{}",
        hex::encode(blob::sha256_file(file).map_err(|e| e.to_string())?)
    );
    let doc = crate::sign::sbom::predicate_of(&statement, &digest, format.predicate_type())
        .map_err(|e| {
            format!(
                "`{}` is not the {name} SBOM of `{}` ({digest}): {e}",
                att.display(),
                file.display()
            )
        })?;
    Ok((
        pretty(doc),
        format!(
            "{name} SBOM of disk image `{}` ({digest}): attestation `{}` verified with `{}`",
            file.display(),
            att.display(),
            key.display()
        ),
    ))
}

/// An image in a registry: the SBOM attestation in its `.att` sidecar
/// signed by `key` about the digest the registry serves now.
#[cfg(feature = "oci")]
async fn from_registry(
    reference: &str,
    format: Format,
    key: &Path,
) -> Result<(Vec<u8>, String), String> {
    let name = format.name();
    let image: oci_client::Reference = reference
        .parse()
        .map_err(|e| format!("`{reference}` is not a file or an image reference: {e}"))?;
    let public = crate::sign::load_public_key(key).map_err(|e| e.to_string())?;
    let (digest, found) = crate::sign::cosign::sbom(&image, &public, format.predicate_type())
        .await
        .map_err(|e| e.to_string())?;
    let att = crate::sign::cosign::attestation_ref(&image, &digest);
    let Some((layer, doc)) = found else {
        return Err(format!(
            "`{image}` ({digest}) has no {name} SBOM attestation signed by `{}` about that digest (looked in `{att}`)",
            key.display()
        ));
    };
    Ok((
        pretty(&doc),
        format!(
            "{name} SBOM of `{image}` ({digest}): attestation `{att}` layer {layer} verified with `{}`",
            key.display()
        ),
    ))
}

#[cfg(not(feature = "oci"))]
async fn from_registry(reference: &str, _: Format, _: &Path) -> Result<(Vec<u8>, String), String> {
    Err(format!(
        "`{reference}`: this kiln was compiled without the `oci` feature"
    ))
}

/// An AMI carries no attestation itself: the catalog names its build
/// manifest (and the digest of the signed one), which is read as
/// `kiln sbom MANIFEST` reads it.
async fn from_ami(
    id: &str,
    ami: &str,
    format: Format,
    key: Option<&Path>,
    state_dir: &Path,
    catalog: Option<&str>,
) -> Result<(Vec<u8>, String), String> {
    let hint = format!(
        "hint: pass its build manifest instead: `kiln sbom{} STATE/manifests/BUILD_ID/JOB-N.json`",
        key.map(|k| format!(" --key {}", k.display()))
            .unwrap_or_default()
    );
    let state = super::verify::verified_state(state_dir, catalog)
        .await?
        .ok_or_else(|| {
            format!("`{id}`: an AMI has no registry or file to carry its SBOM, and there is no catalog here to find its build manifest (`--catalog`)\n{hint}")
        })?;
    let (image, v, a) = super::verify::ami_in(&state, id, ami)
        .ok_or_else(|| format!("`{id}` is not in the catalog\n{hint}"))?;
    let version = &v.registration.version;
    let manifest = a.manifest.as_deref().ok_or_else(|| {
        format!(
            "{image} {version}: the catalog names no build manifest for {}\n{hint}",
            a.id
        )
    })?;
    if let Some(recorded) = &a.signed_manifest_digest {
        let envelope = format!(
            "{}.dsse.json",
            manifest.strip_suffix(".json").unwrap_or(manifest)
        );
        let bytes =
            std::fs::read(&envelope).map_err(|e| format!("cannot read `{envelope}`: {e}"))?;
        if &crate::manifest::sha256_hex(&bytes) != recorded {
            return Err(format!(
                "`{envelope}` is not the signed manifest the catalog recorded for {image} {version} ({recorded})"
            ));
        }
    }
    let (bytes, note) = document(Path::new(manifest), format, key)?;
    Ok((
        bytes,
        format!("{} ({image} {version} in the catalog): {note}", a.id),
    ))
}

fn document(
    manifest: &Path,
    format: Format,
    key: Option<&Path>,
) -> Result<(Vec<u8>, String), String> {
    let (m, note) = super::show_manifest::load(manifest, key)?;
    let name = format.name();
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
    fn the_argument_is_told_apart_as_verify_does() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("deb.qcow2");
        std::fs::write(&disk, b"disk").unwrap();
        let d = disk.to_str().unwrap();
        assert_eq!(Target::of(d), Ok(Target::Disk(disk.clone())));
        assert_eq!(
            Target::of("missing/JOB-1.json"),
            Ok(Target::Manifest("missing/JOB-1.json".into()))
        );
        for (arg, id) in [
            ("ami-0abc", "ami-0abc"),
            ("us-east-1:ami-0abc", "us-east-1:ami-0abc"),
            ("ami:us-east-1/ami-0abc", "us-east-1:ami-0abc"),
        ] {
            assert_eq!(
                Target::of(arg),
                Ok(Target::Ami(id.into(), "ami-0abc".into())),
                "{arg}"
            );
        }
        assert_eq!(
            Target::of("registry:127.0.0.1:5000/t/deb:1"),
            Ok(Target::Registry("127.0.0.1:5000/t/deb:1".into()))
        );
        let pinned = format!("r.io/t/deb@sha256:{}", "ab".repeat(32));
        assert_eq!(Target::of(&pinned), Ok(Target::Registry(pinned.clone())));
        // A missing file in a folder that exists is not a Docker Hub image.
        let missing = dir.path().join("gone.qcow2");
        let err = Target::of(missing.to_str().unwrap()).unwrap_err();
        assert!(
            err.contains("no such file") && err.contains("gone.qcow2"),
            "{err}"
        );
        let err = Target::of("oci-layout:out/img:1").unwrap_err();
        assert!(
            err.contains("not supported yet") && err.contains("hint:"),
            "{err}"
        );
        let err = Target::of("nonsense").unwrap_err();
        assert!(err.contains("`nonsense`"), "{err}");
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
