//! `kiln verify`: checks an artifact's signatures against a public key:
//! OCI images in a registry (cosign's format), disk image files (a
//! `cosign sign-blob` signature and DSSE provenance beside them), signed
//! build manifests, provenance files, channel pointers, and AMIs (through
//! the catalog). OCI layouts are not supported yet. A revoked version is
//! refused whatever its signatures.

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
    /// After the signatures, judge the signed build manifest: a Rego
    /// policy file (`FILE.rego`, evaluated as `kiln images promote` does,
    /// docs/policy.md), or `no-failed-high` (no failed high-severity
    /// hardening rule).
    #[arg(long, value_name = "FILE.rego|no-failed-high")]
    pub policy: Option<String>,
    /// The package a Rego `--policy` is evaluated as.
    #[arg(long, value_name = "PACKAGE", default_value = crate::policy::DEFAULT_ENTRYPOINT)]
    pub policy_entrypoint: String,
    /// With a Rego `--policy`: print the input document it sees (JSON) and
    /// evaluate nothing.
    #[arg(long, requires = "policy")]
    pub print_input: bool,
    /// The catalog head an earlier `verify` or `audit` printed
    /// (`SEQ:HASH`): that entry must still be in the log, unchanged — a log
    /// whose tail was cut (a `revoke` removed) is refused.
    #[arg(long, value_name = "SEQ:HASH")]
    pub expect_head: Option<String>,
    /// Also require a passing `[[build.test]]` attestation (in-toto
    /// test-result, `PASSED` or `WARNED`) signed by the key about the
    /// artifact's digest: in the image's `.att` for registry images,
    /// beside an OCI layout (`DIR.tests.intoto.json`), or named by a build
    /// manifest; for an AMI (no content digest to attest), a passing test
    /// report in its signed build manifest.
    #[arg(long)]
    pub require_tests: bool,
    /// `registry:REF` or `REF` of an OCI image.
    #[arg(value_name = "ARTIFACT")]
    pub artifact: String,
}

/// The built-in `--policy` a verified build manifest can be held to.
#[derive(Debug, Clone, Copy)]
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
    let pem = std::fs::read_to_string(key_path).unwrap_or_default();
    if let (Some(layout), true) = (
        args.artifact.strip_prefix("oci-layout:"),
        args.require_tests,
    ) {
        return match layout_tests(layout, &key) {
            Ok(text) => report(true, serde_json::Value::Null, text),
            Err(e) => report(false, serde_json::Value::String(e.clone()), e),
        };
    }
    if let Some(layout) = args.artifact.strip_prefix("oci-layout:") {
        return report(
            false,
            serde_json::Value::Null,
            format!("`oci-layout:{layout}`: verifying OCI layouts is not supported yet — kiln signs images in a registry (cosign's `sha256-<digest>.sig` beside them) and disk image files (`FILE.sig`), not images in a layout; copy it to a registry (`skopeo copy oci:DIR:TAG docker://REGISTRY/REPO:TAG`), sign it there with `[build.sign]` and verify `registry:REGISTRY/REPO:TAG`"),
        );
    }
    let as_file = std::path::Path::new(&args.artifact);
    if as_file.is_file() {
        return match verify_file(as_file, &key, &pem) {
            Ok((detail, text)) => {
                let digest = detail["artifact"]["digest"].as_str().unwrap_or_default();
                let judged = match args.policy.as_deref() {
                    Some("no-failed-high") => Some(check_policy(Policy::NoFailedHigh, &detail)),
                    Some(file) => {
                        let rescan = match logged_rescan(&detail, state_dir, catalog).await {
                            Ok(r) => r,
                            Err(e) => {
                                eprintln!("error: {e}");
                                return Exit::Failure;
                            }
                        };
                        match rego_policy(
                            file,
                            &args.policy_entrypoint,
                            &detail,
                            rescan.as_ref(),
                            args.print_input,
                        ) {
                            Ok(None) => return Exit::Success,
                            Ok(Some(Ok(text))) => Some(Ok(text)),
                            Ok(Some(Err(text))) => Some(Err(text)),
                            Err(e) => {
                                eprintln!("error: {e}");
                                return Exit::BadInput;
                            }
                        }
                    }
                    None => None,
                };
                let policy = match judged {
                    Some(Err(e)) => return report(false, serde_json::Value::String(e.clone()), e),
                    Some(Ok(ok)) => format!("\n{ok}"),
                    None => String::new(),
                };
                let policy = match (args.require_tests, file_tests(&detail, digest, &key)) {
                    (false, _) => policy,
                    (true, Ok(t)) => format!("{policy}\n{t}"),
                    (true, Err(e)) => {
                        return report(false, serde_json::Value::String(e.clone()), e)
                    }
                };
                let held = match crate::catalog::head::fetch_for_file(as_file) {
                    Ok(found) => published_head(found, &key, state_dir, catalog).await,
                    Err(e) => Err(e),
                };
                let held = match held {
                    Ok(h) => h,
                    Err(e) => return report(false, serde_json::Value::String(e.clone()), e),
                };
                match not_revoked(digest, state_dir, catalog).await {
                    Ok(note) => report(true, detail, format!("{text}{note}{held}{policy}")),
                    Err(e) => report(false, serde_json::Value::String(e.clone()), e),
                }
            }
            Err(e) => report(false, serde_json::Value::String(e.clone()), e),
        };
    }
    if let Some(ami) = ami_of(&args.artifact) {
        let require_tests = args.require_tests;
        return match verify_ami(&args.artifact, ami, &key, state_dir, catalog, require_tests).await
        {
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
                if args.require_tests
                    && !v
                        .tests
                        .iter()
                        .any(|r| crate::sign::testresult::is_passing(r))
                {
                    let e = format!(
                        "{} ({}): no passing test attestation signed by `{}`{}",
                        v.reference,
                        v.digest,
                        key_path.display(),
                        if v.tests.is_empty() {
                            String::new()
                        } else {
                            format!(" (found: {})", v.tests.join(", "))
                        }
                    );
                    return report(false, serde_json::Value::String(e.clone()), e);
                }
                let text = if args.require_tests {
                    format!("{text}; tests: {}", v.tests.join(", "))
                } else {
                    text
                };
                let held = match crate::catalog::head::fetch_for_image(&image).await {
                    Ok(found) => published_head(found, &key, state_dir, catalog).await,
                    Err(e) => Err(e),
                };
                let held = match held {
                    Ok(h) => h,
                    Err(e) => return report(false, serde_json::Value::String(e.clone()), e),
                };
                match not_revoked(&v.digest, state_dir, catalog).await {
                    Ok(note) => report(
                        true,
                        serde_json::to_value(&v).expect("serializable"),
                        format!("{text}{note}{held}"),
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

/// A Rego `--policy` on a verified build manifest: `Ok(None)` when only
/// the input was printed; `Ok(Some(verdict text))`; `Err` for a policy
/// that cannot be used (bad input).
/// The latest rescan the catalog logged for the version a verified
/// build manifest names (`None`: no catalog, version or rescan), so
/// `verify --policy` sees the `vulnerabilities` `promote` sees.
async fn logged_rescan(
    verified: &serde_json::Value,
    state_dir: &std::path::Path,
    catalog: Option<&str>,
) -> Result<Option<crate::catalog::rescan::LoggedRescan>, String> {
    let (Some(image), Some(version)) = (
        verified["image"]["name"].as_str(),
        verified["catalog"]["version"].as_str(),
    ) else {
        return Ok(None);
    };
    let Some(state) = verified_state(state_dir, catalog).await? else {
        return Ok(None);
    };
    Ok(state
        .family(image)
        .and_then(|f| f.version(version))
        .and_then(|v| v.rescan.clone()))
}

fn rego_policy(
    file: &str,
    entrypoint: &str,
    verified: &serde_json::Value,
    rescan: Option<&crate::catalog::rescan::LoggedRescan>,
    print_input: bool,
) -> Result<Option<Result<String, String>>, String> {
    use crate::policy::input::{self, Context, Occasion};
    if verified.get("predicate").is_some() {
        return Err("a Rego `--policy` judges a signed build manifest, not a provenance file: give the manifest's `.json` or `.dsse.json`".into());
    }
    let ctx = Context {
        occasion: Occasion::Verify,
        channel: None,
        version: verified["catalog"]["version"].as_str(),
        status: None,
        channels: &[],
        rescan,
    };
    let doc = input::document(verified, &ctx).map_err(|e| e.to_string())?;
    if print_input {
        println!("{doc}");
        return Ok(None);
    }
    let policy = crate::policy::Policy::load(&[PathBuf::from(file)], entrypoint)
        .map_err(|e| e.to_string())?;
    let verdict = policy.evaluate(&doc).map_err(|e| e.to_string())?;
    for w in &verdict.warnings {
        eprintln!("warning: policy {}: {}", w.rule, w.message);
    }
    Ok(Some(if verdict.allowed() {
        Ok(format!("policy `{file}` ({}): allowed", policy.entrypoint))
    } else {
        Err(format!(
            "policy `{file}` ({}): denied\n{}",
            policy.entrypoint,
            verdict
                .denials
                .iter()
                .map(|d| format!("  {}: {}", d.rule, d.message))
                .collect::<Vec<_>>()
                .join("\n")
        ))
    }))
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
    pem: &str,
) -> Result<(serde_json::Value, String), String> {
    use crate::sign::{blob, dsse, provenance};
    let name = path.to_string_lossy().into_owned();
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| format!("cannot read `{}`: {e}", p.display()))
    };
    if !name.ends_with(".json") {
        return verify_disk_image(path, key, pem);
    }
    if blob::sig_path(path).is_file() && !name.ends_with(".dsse.json") {
        return verify_signed_json(path, pem);
    }
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
        Some(stem) => (
            path.to_path_buf(),
            std::path::PathBuf::from(format!("{stem}.json")),
        ),
        None => match name.strip_suffix(".json") {
            Some(stem) => (
                std::path::PathBuf::from(format!("{stem}.dsse.json")),
                path.to_path_buf(),
            ),
            None => unreachable!("only `.json` files get here"),
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

/// A disk image file: its `FILE.sig` over the content's SHA-256 (cosign's
/// blob format) and its provenance `FILE.intoto.json`, signed by the key
/// and naming that digest as its subject. The caller then asks the catalog.
fn verify_disk_image(
    path: &std::path::Path,
    key: &sigstore::crypto::CosignVerificationKey,
    pem: &str,
) -> Result<(serde_json::Value, String), String> {
    use crate::sign::{blob, dsse, provenance};
    let digest = blob::verify_file_signature(path, pem).map_err(|e| e.to_string())?;
    let prov = blob::provenance_path(path);
    let bytes = std::fs::read(&prov).map_err(|e| {
        format!(
            "`{}` has a valid signature but no provenance: cannot read `{}`: {e}",
            path.display(),
            prov.display()
        )
    })?;
    let body = dsse::verify_bytes(&bytes, provenance::PAYLOAD_TYPE, key)
        .map_err(|e| format!("`{}`: {e}", prov.display()))?;
    let statement: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("`{}`: {e}", prov.display()))?;
    let subject = statement["subject"][0]["digest"]["sha256"]
        .as_str()
        .unwrap_or_default();
    if format!("sha256:{subject}") != digest {
        return Err(format!(
            "`{}` is about sha256:{subject}, not this file ({digest})",
            prov.display()
        ));
    }
    let mut detail = serde_json::json!({
        "artifact": { "id": path, "digest": digest },
        "signature": blob::sig_path(path),
        "provenance": prov,
        "predicateType": statement["predicateType"],
        "invocationId": statement["predicate"]["runDetails"]["metadata"]["invocationId"],
    });
    // The latest test run's attestation, beside the disk (a build's tests
    // or a later `kiln test`), for `--require-tests`.
    let tests = crate::sign::testresult::beside(path);
    if tests.is_file() {
        detail["tests"] = serde_json::json!({ "attestation": { "file": tests } });
    }
    Ok((
        detail,
        format!(
            "verified disk image `{}` ({digest}): signature `{}` and provenance `{}` (build {})",
            path.display(),
            blob::sig_path(path).display(),
            prov.display(),
            statement["predicate"]["runDetails"]["metadata"]["invocationId"]
                .as_str()
                .unwrap_or("?")
        ),
    ))
}

/// A JSON file kiln signed as a blob (`FILE.sig`): a channel pointer of a
/// disk image. Its digest (the image it points at) is what the catalog is
/// asked about.
fn verify_signed_json(
    path: &std::path::Path,
    pem: &str,
) -> Result<(serde_json::Value, String), String> {
    crate::sign::blob::verify_file_signature(path, pem).map_err(|e| e.to_string())?;
    let doc: serde_json::Value = std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| format!("`{}`: signed, but not JSON", path.display()))?;
    let text = match (doc["channel"].as_str(), doc["image"].as_str()) {
        (Some(ch), Some(image)) => format!(
            "verified channel pointer `{}`: {image} `{ch}` → {} {} ({})",
            path.display(),
            doc["version"].as_str().unwrap_or("?"),
            doc["file"].as_str().unwrap_or("?"),
            doc["digest"].as_str().unwrap_or("?")
        ),
        _ => format!("verified `{}`", path.display()),
    };
    let detail = serde_json::json!({
        "artifact": { "id": doc["file"], "digest": doc["digest"] },
        "pointer": doc,
    });
    Ok((detail, text))
}

/// `ami-…` or `REGION:ami-…`: the AMI id.
pub(super) fn ami_of(artifact: &str) -> Option<&str> {
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
    require_tests: bool,
) -> Result<(serde_json::Value, String), String> {
    let state = verified_state(state_dir, catalog).await?.ok_or_else(|| {
        format!("`{artifact}`: an AMI is verified through the catalog, and there is none here (`--catalog`)")
    })?;
    let Some((image, v, a)) = ami_in(&state, artifact, ami) else {
        return Err(format!(
            "`{artifact}` is not in the catalog: nothing vouches for it"
        ));
    };
    let held = published_head(ami_head(&image, &a).await?, key, state_dir, catalog).await?;
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
    let (detail, _) = verify_file(std::path::Path::new(manifest), key, "")?;
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
    let tests = if require_tests {
        format!("; {}", ami_tests(&detail, &a.id)?)
    } else {
        String::new()
    };
    let exists = ami_exists(&a).await?;
    Ok((
        serde_json::json!({ "image": image, "version": version, "status": v.status.name(), "artifact": a.id, "manifest": manifest, "exists": exists, "tests": detail["tests"] }),
        format!(
            "verified AMI {}: {image} {version} ({}), build manifest `{manifest}` signed by the key{tests}{exists}{held}",
            a.id,
            v.status.name()
        ),
    ))
}

/// The catalog's record of the AMI `artifact` (`ami-…` or a full id):
/// its image, version and artifact record.
pub(super) fn ami_in(
    state: &crate::catalog::State,
    artifact: &str,
    ami: &str,
) -> Option<(
    String,
    crate::catalog::model::Version,
    crate::catalog::ArtifactRecord,
)> {
    state.images.iter().find_map(|(image, family)| {
        family.versions.iter().find_map(|v| {
            v.registration
                .artifacts
                .iter()
                .find(|a| {
                    a.kind == "ami" && (a.id == artifact || a.id.ends_with(&format!(":{ami}")))
                })
                .map(|a| (image.clone(), v.clone(), a.clone()))
        })
    })
}

/// `--require-tests` for an AMI: an AMI has no content digest for an
/// in-toto subject, so its evidence is the test report in its signed
/// build manifest (already verified, and the one the catalog recorded),
/// which must be passing.
fn ami_tests(manifest: &serde_json::Value, id: &str) -> Result<String, String> {
    let tests = &manifest["tests"];
    if tests.is_null() {
        return Err(format!(
            "{id}: no test results in its signed build manifest: its build ran no `[[build.test]]`"
        ));
    }
    let report: crate::imagetest::TestReport = serde_json::from_value(tests.clone())
        .map_err(|e| format!("{id}: the test results in its build manifest do not read: {e}"))?;
    let result = report.result();
    if !crate::sign::testresult::is_passing(result) {
        return Err(format!(
            "{id}: the tests did not pass: {result} ({})",
            report.named(crate::imagetest::Outcome::Fail).join("; ")
        ));
    }
    Ok(format!(
        "tests: {result} ({} tests of {}, in the signed build manifest)",
        report.tests.len(),
        report.artifact
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

/// Holds the catalog's log to the head published beside the artifact
/// (`found`: where, and the signed envelope), if there is one and a
/// catalog to hold: the note for the verdict, or why it is refused.
async fn published_head(
    found: Option<(String, Vec<u8>)>,
    key: &sigstore::crypto::CosignVerificationKey,
    state_dir: &std::path::Path,
    catalog: Option<&str>,
) -> Result<String, String> {
    let Some((place, bytes)) = found else {
        return Ok(String::new());
    };
    let Some((_, entries)) = verified_log(state_dir, catalog).await? else {
        return Ok(String::new());
    };
    crate::catalog::head::hold(&place, &bytes, &entries, key)
}

/// The catalog head published for an AMI's image in its region.
#[cfg(feature = "ami")]
async fn ami_head(
    image: &str,
    a: &crate::catalog::ArtifactRecord,
) -> Result<Option<(String, Vec<u8>)>, String> {
    use crate::builder::ami::{artifact, image::get_text_parameter};
    let Some((region, _, clients)) = artifact(&a.kind, &a.id, a.endpoint.as_deref()).await else {
        return Ok(None);
    };
    let name = crate::catalog::head::parameter(image);
    Ok(get_text_parameter(&clients, &name)
        .await?
        .map(|v| (format!("SSM parameter {name} in {region}"), v.into_bytes())))
}

#[cfg(not(feature = "ami"))]
async fn ami_head(
    _: &str,
    _: &crate::catalog::ArtifactRecord,
) -> Result<Option<(String, Vec<u8>)>, String> {
    Ok(None)
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
    let Some((location, entries)) = verified_log(state_dir, catalog).await? else {
        return Ok(None);
    };
    if let Some(h) = expected {
        crate::catalog::chain::check_head(&entries, h)?.map_err(|b| {
            format!(
                "the catalog log `{location}` does not hold the expected head: entry {b} (its revocations cannot be trusted)"
            )
        })?;
    }
    Ok(crate::catalog::chain::head(&entries))
}

/// The catalog's log, its chain verified: where it is and its entries;
/// `None` when no catalog is given and none is in the state folder.
/// Revocations and heads count only from a log whose chain holds.
async fn verified_log(
    state_dir: &std::path::Path,
    catalog: Option<&str>,
) -> Result<Option<(String, Vec<crate::catalog::chain::Entry>)>, String> {
    if catalog.is_none() && !state_dir.join("catalog").is_dir() {
        return Ok(None);
    }
    let cat = crate::catalog::open_existing(catalog, state_dir)
        .await
        .map_err(|e| e.to_string())?;
    let stored = cat.stored().await.map_err(|e| e.to_string())?;
    let entries = crate::catalog::chain::verify(&stored, &[]).map_err(|b| {
        format!(
            "the catalog log `{}` is broken at {b}: its revocations cannot be trusted (run `kiln audit`)",
            cat.location
        )
    })?;
    Ok(Some((cat.location, entries)))
}

/// The catalog's state, replayed only from a log whose chain holds;
/// `None` when there is no catalog.
pub(super) async fn verified_state(
    state_dir: &std::path::Path,
    catalog: Option<&str>,
) -> Result<Option<crate::catalog::State>, String> {
    let Some((_, entries)) = verified_log(state_dir, catalog).await? else {
        return Ok(None);
    };
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

/// `--require-tests` for a verified file: a test attestation itself, or a
/// build manifest naming one (`tests.attestation.file`).
fn file_tests(
    detail: &serde_json::Value,
    digest: &str,
    key: &sigstore::crypto::CosignVerificationKey,
) -> Result<String, String> {
    use crate::sign::testresult;
    if detail["predicateType"] == testresult::PREDICATE_TYPE {
        let subject = format!(
            "sha256:{}",
            detail["subject"][0]["digest"]["sha256"]
                .as_str()
                .unwrap_or_default()
        );
        let r = testresult::result_for(detail, &subject)?;
        return if testresult::is_passing(&r) {
            Ok(format!("tests: {r}"))
        } else {
            Err(format!("the tests did not pass: {r}"))
        };
    }
    let Some(file) = detail["tests"]["attestation"]["file"].as_str() else {
        return Err(format!(
            "no signed test attestation for {}: its build ran no `[[build.test]]`, or did not sign",
            if digest.is_empty() {
                "the artifact"
            } else {
                digest
            }
        ));
    };
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read `{file}`: {e}"))?;
    let r =
        testresult::verify_passing(&bytes, key, digest).map_err(|e| format!("`{file}`: {e}"))?;
    Ok(format!("tests: {r} (`{file}`)"))
}

/// `--require-tests` for `oci-layout:DIR[:TAG]`: the attestation beside
/// the layout, signed by the key, about the layout's image, passing.
/// (Layouts carry no cosign signature; the attestation is their evidence.)
fn layout_tests(
    layout: &str,
    key: &sigstore::crypto::CosignVerificationKey,
) -> Result<String, String> {
    use crate::sign::testresult;
    let dir = testresult::layout_dir(layout);
    let tag = layout.strip_prefix(dir).and_then(|t| t.strip_prefix(':'));
    let digest = testresult::layout_digest(std::path::Path::new(dir), tag)?;
    let beside = testresult::beside(std::path::Path::new(dir));
    let bytes = std::fs::read(&beside).map_err(|e| {
        format!(
            "`oci-layout:{layout}` ({digest}): no test attestation: cannot read `{}`: {e}",
            beside.display()
        )
    })?;
    let r = testresult::verify_passing(&bytes, key, &digest)
        .map_err(|e| format!("`{}`: {e}", beside.display()))?;
    Ok(format!(
        "verified the test attestation of `oci-layout:{layout}` ({digest}): {r} (`{}`); an OCI layout has no image signature to verify",
        beside.display()
    ))
}
