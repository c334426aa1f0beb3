//! `kiln verify`: checks an artifact's signatures against a public key.
//! OCI images in a registry are verified now (cosign's format); disk
//! images, AMIs and manifest files are not supported yet.

use std::path::PathBuf;

use clap::Args;

use super::Exit;

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The public key (PEM) signatures must verify with.
    #[arg(long, value_name = "PUB")]
    pub key: Option<PathBuf>,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// After the signatures, require this of the signed build manifest's
    /// hardening reports (`no-failed-high`: no failed high-severity rule).
    #[arg(long, value_enum, value_name = "POLICY")]
    pub policy: Option<Policy>,
    /// The catalog head an earlier `verify` or `audit` printed
    /// (`SEQ:HASH`): that entry must still be in the log, unchanged — a log
    /// whose tail was cut (a `revoke` removed) is refused.
    #[arg(long, value_name = "SEQ:HASH")]
    pub expect_head: Option<String>,
    /// `registry:REF` or `REF` of an OCI image.
    #[arg(value_name = "ARTIFACT")]
    pub artifact: String,
}

/// What `--policy` can require of a verified build manifest.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Policy {
    /// No hardening rule of high severity failed.
    NoFailedHigh,
}

pub async fn exec(args: VerifyArgs, state_dir: &std::path::Path, catalog: Option<&str>) -> Exit {
    // The catalog head this verdict trusted, printed with every result so
    // CI can pin it (`--expect-head`).
    let head = match catalog_head(state_dir, catalog, args.expect_head.as_deref()).await {
        Ok(h) => h,
        Err(e) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({ "artifact": args.artifact, "verified": false, "detail": e, "head": null })
                );
            } else {
                eprintln!("error: {e}");
            }
            return Exit::Failure;
        }
    };
    let report = |ok: bool, detail: serde_json::Value, text: String| {
        if args.json {
            println!(
                "{}",
                serde_json::json!({ "artifact": args.artifact, "verified": ok, "detail": detail, "head": head })
            );
        } else if ok {
            println!("{text}");
        } else {
            eprintln!("error: {text}");
        }
        if let (Some(h), false) = (&head, args.json) {
            println!("catalog head: {h} (pin it: `kiln verify --expect-head {h}` later refuses a catalog log cut short or rewritten)");
        }
        if ok {
            Exit::Success
        } else {
            Exit::Failure
        }
    };
    let Some(key_path) = &args.key else {
        eprintln!("error: give the public key with `--key PUB` (trusted keys from the catalog are not supported yet)");
        return Exit::BadInput;
    };
    let key = match crate::sign::load_public_key(key_path) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::BadInput;
        }
    };
    let reference = args
        .artifact
        .strip_prefix("registry:")
        .unwrap_or(&args.artifact);
    let as_file = std::path::Path::new(&args.artifact);
    if as_file.is_file() {
        return match verify_file(as_file, &key) {
            Ok((detail, text)) => {
                let digest = detail["artifact"]["digest"].as_str().unwrap_or_default();
                let policy = match args.policy.map(|p| check_policy(p, &detail)) {
                    Some(Err(e)) => return report(false, serde_json::Value::String(e.clone()), e),
                    Some(Ok(ok)) => format!("\n{ok}"),
                    None => String::new(),
                };
                match not_revoked(digest, state_dir, catalog).await {
                    Ok(note) => report(true, detail, format!("{text}{note}{policy}")),
                    Err(e) => report(false, serde_json::Value::String(e.clone()), e),
                }
            }
            Err(e) => report(false, serde_json::Value::String(e.clone()), e),
        };
    }
    if let Some(ami) = ami_of(&args.artifact) {
        return match verify_ami(&args.artifact, ami, &key, state_dir, catalog).await {
            Ok((detail, text)) => report(true, detail, text),
            Err(e) => report(false, serde_json::Value::String(e.clone()), e),
        };
    }
    if args.policy.is_some() {
        eprintln!("error: `--policy` judges a signed build manifest: give its `.json` or `.dsse.json` file");
        return Exit::BadInput;
    }
    if !reference.contains('/') {
        return report(
            false,
            serde_json::Value::Null,
            format!(
                "`{}`: not a file, an image reference or an AMI id",
                args.artifact
            ),
        );
    }
    #[cfg(feature = "oci")]
    {
        let image: oci_client::Reference = match reference.parse() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: `{reference}` is not an image reference: {e}");
                return Exit::BadInput;
            }
        };
        match crate::sign::cosign::verify(&image, &key).await {
            Ok(v) => {
                let text = format!(
                    "verified {} ({}): {} valid signature(s) and {} signed provenance statement(s) by {}",
                    v.reference,
                    v.digest,
                    v.signatures,
                    v.provenance,
                    key_path.display()
                );
                match not_revoked(&v.digest, state_dir, catalog).await {
                    Ok(note) => report(
                        true,
                        serde_json::to_value(&v).expect("serializable"),
                        format!("{text}{note}"),
                    ),
                    Err(e) => report(false, serde_json::Value::String(e.clone()), e),
                }
            }
            Err(e) => report(
                false,
                serde_json::Value::String(e.to_string()),
                e.to_string(),
            ),
        }
    }
    #[cfg(not(feature = "oci"))]
    {
        let _ = key;
        report(
            false,
            serde_json::Value::Null,
            "this kiln was compiled without the `oci` feature".into(),
        )
    }
}

/// Applies `--policy` to what was verified: a build manifest's
/// `hardening` reports, or a provenance statement's compliance byproducts.
fn check_policy(policy: Policy, verified: &serde_json::Value) -> Result<String, String> {
    let Policy::NoFailedHigh = policy;
    let manifest = if verified.get("predicate").is_some() {
        let reports: Vec<serde_json::Value> = verified["predicate"]["runDetails"]["byproducts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| b["mediaType"] == crate::sign::provenance::COMPLIANCE_MEDIA_TYPE)
            .map(|b| b["annotations"]["report"].clone())
            .collect();
        serde_json::json!({ "hardening": reports })
    } else {
        verified.clone()
    };
    let failed = crate::provisioner::hardening::report::failed_high_rules(&manifest)?;
    let reports = manifest["hardening"].as_array().map_or(0, Vec::len);
    if reports == 0 {
        return Err("policy `no-failed-high`: the signed record has no hardening report".into());
    }
    if failed.is_empty() {
        Ok(format!(
            "policy `no-failed-high`: met ({reports} hardening report(s), no failed high-severity rule)"
        ))
    } else {
        Err(format!(
            "policy `no-failed-high`: failed high-severity rule(s): {}",
            failed.join(", ")
        ))
    }
}

/// A signed build manifest (`X.json` with its `X.dsse.json`, or the
/// envelope itself) or a provenance envelope (`X.intoto.json`).
fn verify_file(
    path: &std::path::Path,
    key: &sigstore::crypto::CosignVerificationKey,
) -> Result<(serde_json::Value, String), String> {
    use crate::sign::{dsse, provenance};
    let name = path.to_string_lossy().into_owned();
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| format!("cannot read `{}`: {e}", p.display()))
    };
    if let Some(stem) = name.strip_suffix(".intoto.json") {
        let body = dsse::verify_bytes(&read(path)?, provenance::PAYLOAD_TYPE, key)
            .map_err(|e| format!("`{name}`: {e}"))?;
        let s: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("`{name}`: {e}"))?;
        let subject = s["subject"][0].clone();
        let _ = stem;
        return Ok((
            s,
            format!(
                "verified provenance `{name}` for {} ({})",
                subject["name"].as_str().unwrap_or("?"),
                subject["digest"]["sha256"].as_str().unwrap_or("?")
            ),
        ));
    }
    let (envelope_path, manifest_path) = match name.strip_suffix(".dsse.json") {
        Some(stem) => (path.to_path_buf(), std::path::PathBuf::from(format!("{stem}.json"))),
        None => match name.strip_suffix(".json") {
            Some(stem) => (std::path::PathBuf::from(format!("{stem}.dsse.json")), path.to_path_buf()),
            None => return Err(format!("`{name}`: verifying disk images is not supported yet; give a build manifest (`.json`, `.dsse.json`) or provenance (`.intoto.json`)")),
        },
    };
    if !envelope_path.is_file() {
        return Err(format!(
            "`{}`: the manifest is not signed (no `{}`)",
            manifest_path.display(),
            envelope_path.display()
        ));
    }
    let body = dsse::verify_bytes(
        &read(&envelope_path)?,
        provenance::MANIFEST_PAYLOAD_TYPE,
        key,
    )
    .map_err(|e| format!("`{}`: {e}", envelope_path.display()))?;
    if manifest_path.is_file() && read(&manifest_path)? != body {
        return Err(format!(
            "`{}` differs from what was signed in `{}`",
            manifest_path.display(),
            envelope_path.display()
        ));
    }
    let m: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("signed manifest: {e}"))?;
    let text = format!(
        "verified build manifest `{}`: {} {} ({})",
        manifest_path.display(),
        m["artifact"]["kind"].as_str().unwrap_or("?"),
        m["artifact"]["id"].as_str().unwrap_or("?"),
        m["artifact"]["digest"].as_str().unwrap_or("?")
    );
    Ok((m, text))
}

/// `ami-…` or `REGION:ami-…`: the AMI id.
fn ami_of(artifact: &str) -> Option<&str> {
    let ami = artifact.rsplit_once(':').map_or(artifact, |(_, a)| a);
    (ami.starts_with("ami-") && ami.len() > 4 && !artifact.contains('/')).then_some(ami)
}

/// An AMI cannot carry a signature itself: it is verified through the
/// catalog, which names the version it belongs to and the sha256 of its
/// signed build manifest. The manifest's signature, its artifact id, the
/// digest the catalog recorded and the version's status must all hold;
/// then the AMI must exist in its region.
async fn verify_ami(
    artifact: &str,
    ami: &str,
    key: &sigstore::crypto::CosignVerificationKey,
    state_dir: &std::path::Path,
    catalog: Option<&str>,
) -> Result<(serde_json::Value, String), String> {
    let state = verified_state(state_dir, catalog).await?.ok_or_else(|| {
        format!("`{artifact}`: an AMI is verified through the catalog, and there is none here (`--catalog`)")
    })?;
    let found = state.images.iter().find_map(|(image, family)| {
        family.versions.iter().find_map(|v| {
            v.registration
                .artifacts
                .iter()
                .find(|a| {
                    a.kind == "ami" && (a.id == artifact || a.id.ends_with(&format!(":{ami}")))
                })
                .map(|a| (image.clone(), v.clone(), a.clone()))
        })
    });
    let Some((image, v, a)) = found else {
        return Err(format!(
            "`{artifact}` is not in the catalog: nothing vouches for it"
        ));
    };
    let version = &v.registration.version;
    if let crate::catalog::Status::Revoked { reason, at, by } = &v.status {
        return Err(format!(
            "{image} {version} ({}) was revoked {at} by {by}: {reason}",
            a.id
        ));
    }
    let manifest = a.manifest.as_deref().ok_or_else(|| {
        format!(
            "{image} {version}: the catalog names no build manifest for {}",
            a.id
        )
    })?;
    let (detail, _) = verify_file(std::path::Path::new(manifest), key)?;
    if detail["artifact"]["id"].as_str() != Some(a.id.as_str()) {
        return Err(format!(
            "`{manifest}` is signed, but for {} rather than {}",
            detail["artifact"]["id"], a.id
        ));
    }
    let envelope = format!(
        "{}.dsse.json",
        manifest.strip_suffix(".json").unwrap_or(manifest)
    );
    let bytes = std::fs::read(&envelope).map_err(|e| format!("cannot read `{envelope}`: {e}"))?;
    let digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
    );
    if a.signed_manifest_digest.as_deref() != Some(digest.as_str()) {
        return Err(format!(
            "`{envelope}` is not the signed manifest the catalog recorded for {image} {version}"
        ));
    }
    let exists = ami_exists(&a).await?;
    Ok((
        serde_json::json!({ "image": image, "version": version, "status": v.status.name(), "artifact": a.id, "manifest": manifest, "exists": exists }),
        format!(
            "verified AMI {}: {image} {version} ({}), build manifest `{manifest}` signed by the key{exists}",
            a.id,
            v.status.name()
        ),
    ))
}

/// Says whether the AMI is still registered in its region.
#[cfg(feature = "ami")]
async fn ami_exists(a: &crate::catalog::ArtifactRecord) -> Result<String, String> {
    use crate::builder::ami::{artifact, aws};
    let Some((region, ami, clients)) = artifact(&a.kind, &a.id, a.endpoint.as_deref()).await else {
        return Ok(String::new());
    };
    let ami = ami.as_str();
    match clients.ec2.describe_images().image_ids(ami).send().await {
        Ok(o) if !o.images().is_empty() => Ok(format!("; {ami} is registered in {region}")),
        Ok(_) => Err(format!("{ami} is not registered in {region} (deleted?)")),
        Err(e) if aws::code(&e) == Some("InvalidAMIID.NotFound") => {
            Err(format!("{ami} is not registered in {region} (deleted?)"))
        }
        Err(e) => Err(format!(
            "cannot look {ami} up in {region}: {}",
            aws::describe(&e)
        )),
    }
}

#[cfg(not(feature = "ami"))]
async fn ami_exists(_: &crate::catalog::ArtifactRecord) -> Result<String, String> {
    Ok("; (not looked up in EC2: built without the `ami` feature)".into())
}

/// The head of the catalog's verified log (`None` without a catalog),
/// held to `expected` when given.
async fn catalog_head(
    state_dir: &std::path::Path,
    catalog: Option<&str>,
    expected: Option<&str>,
) -> Result<Option<String>, String> {
    if catalog.is_none() && !state_dir.join("catalog").is_dir() {
        return match expected {
            Some(h) => Err(format!(
                "`--expect-head {h}`: there is no catalog here to hold to it (`--catalog`)"
            )),
            None => Ok(None),
        };
    }
    let cat = crate::catalog::open_existing(catalog, state_dir)
        .await
        .map_err(|e| e.to_string())?;
    let stored = cat.stored().await.map_err(|e| e.to_string())?;
    let entries = crate::catalog::chain::verify(&stored, &[]).map_err(|b| {
        format!(
            "the catalog log `{}` is broken at {b} (run `kiln audit`)",
            cat.location
        )
    })?;
    if let Some(h) = expected {
        crate::catalog::chain::check_head(&entries, h)?.map_err(|b| {
            format!(
                "the catalog log `{}` does not hold the expected head: entry {} (its revocations cannot be trusted)",
                cat.location, b
            )
        })?;
    }
    Ok(crate::catalog::chain::head(&entries))
}

/// The catalog's state, replayed only from a log whose chain holds;
/// `None` when there is no catalog.
async fn verified_state(
    state_dir: &std::path::Path,
    catalog: Option<&str>,
) -> Result<Option<crate::catalog::State>, String> {
    if catalog.is_none() && !state_dir.join("catalog").is_dir() {
        return Ok(None);
    }
    let cat = crate::catalog::open_existing(catalog, state_dir)
        .await
        .map_err(|e| e.to_string())?;
    // Revocations count only from a log whose chain holds.
    let stored = cat.stored().await.map_err(|e| e.to_string())?;
    let entries = crate::catalog::chain::verify(&stored, &[]).map_err(|b| {
        format!(
            "the catalog log `{}` is broken at {b}: its revocations cannot be trusted (run `kiln audit`)",
            cat.location
        )
    })?;
    Ok(Some(crate::catalog::State::replay(entries.iter().map(
        |e| crate::catalog::model::Applied {
            seq: e.seq,
            time: &e.time,
            actor: &e.actor,
            action: &e.change,
        },
    ))))
}

/// Refuses a digest the catalog has revoked; says which version it is.
/// With no catalog given and none in the state folder, nothing is checked.
async fn not_revoked(
    digest: &str,
    state_dir: &std::path::Path,
    catalog: Option<&str>,
) -> Result<String, String> {
    if digest.is_empty() {
        return Ok(String::new());
    }
    let Some(state) = verified_state(state_dir, catalog).await? else {
        return Ok(String::new());
    };
    let found = state.all_by_digest(digest);
    if let Some((image, v)) = found
        .iter()
        .find(|(_, v)| matches!(v.status, crate::catalog::Status::Revoked { .. }))
    {
        let crate::catalog::Status::Revoked { reason, at, by } = &v.status else {
            unreachable!("matched above")
        };
        return Err(format!(
            "{image} {} ({digest}) was revoked {at} by {by}: {reason}",
            v.registration.version
        ));
    }
    Ok(match found.last() {
        Some((image, v)) => format!(
            "; catalog: {image} {} ({})",
            v.registration.version,
            v.status.name()
        ),
        None => "; not in the catalog".into(),
    })
}
