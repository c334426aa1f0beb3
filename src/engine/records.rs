//! The files of one artifact: its build manifest, and when the build
//! signs, its signed provenance (beside it, and attached to registry
//! images) and the manifest's own DSSE envelope.

use std::path::{Path, PathBuf};

use crate::manifest;
use crate::sign::SigningKey;
use crate::template::plan::{BuildPlan, JobPlan};
use crate::ui::{ArtifactInfo, Event, EventBus};

/// What goes into an artifact's records besides the artifact.
pub(super) struct ArtifactRecords<'a> {
    pub(super) times: (&'a str, &'a str),
    pub(super) fingerprint: &'a str,
    pub(super) catalog: serde_json::Value,
}

/// The files written for an artifact.
pub(super) struct WrittenRecords {
    pub(super) paths: Vec<PathBuf>,
    pub(super) manifest_digest: String,
    pub(super) signed_manifest_digest: Option<String>,
}

/// The manifest of one artifact and, when the build signs, its signed
/// provenance (beside the manifest, and attached to registry images) and
/// the manifest's own DSSE envelope.
#[allow(clippy::too_many_arguments)]
pub(super) async fn write_artifact_records(
    dir: &Path,
    plan: &BuildPlan,
    job: &JobPlan,
    artifact: &mut ArtifactInfo,
    n: usize,
    records: ArtifactRecords<'_>,
    signer: Option<&SigningKey>,
    bus: &EventBus,
) -> Result<WrittenRecords, String> {
    let (started, finished) = records.times;
    let say = |text: String| {
        bus.emit(Event::Message {
            job: Some(job.name()),
            text,
        })
    };
    fs_err::create_dir_all(dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    let stem = manifest::stem(job, n);
    let mut paths = vec![];
    let mut provenance = serde_json::Value::Null;
    if signer.is_some() && artifact.digest.is_none() {
        say(format!(
            "no provenance for `{}`: in-toto statements need the artifact's content digest, which a {} has not; its signed build manifest vouches for it",
            artifact.id, artifact.kind
        ));
    }
    if let (Some(key), Some(_)) = (signer, artifact.digest.as_deref()) {
        let statement = crate::sign::provenance::statement(plan, job, artifact, started, finished);
        let body = serde_json::to_vec(&statement).expect("JSON serializes");
        let env = crate::sign::dsse::sign(crate::sign::provenance::PAYLOAD_TYPE, &body, key)
            .await
            .map_err(|e| e.to_string())?;
        let env_bytes = serde_json::to_vec(&env).expect("JSON serializes");
        let path = dir.join(format!("{stem}.intoto.json"));
        manifest::write_atomic(&path, &env_bytes)
            .map_err(|e| format!("cannot write provenance: {e}"))?;
        paths.push(path.clone());
        #[allow(unused_mut)]
        let mut attached = serde_json::Value::Null;
        #[cfg(feature = "oci")]
        if let (Some(r), Some(digest)) = (
            artifact.id.strip_prefix("registry:"),
            artifact.digest.as_deref(),
        ) {
            let target: oci_client::Reference = r.parse().map_err(|e| format!("`{r}`: {e}"))?;
            let att = crate::sign::cosign::attach_attestation(&target, digest, &env_bytes)
                .await
                .map_err(|e| e.to_string())?;
            say(format!("provenance attached: `{att}`"));
            attached = format!("registry:{att}").into();
        }
        if crate::sign::is_disk_image(&artifact.kind) {
            let file = Path::new(artifact.id.strip_prefix("file:").unwrap_or(&artifact.id));
            let beside = crate::sign::blob::provenance_path(file);
            manifest::write_atomic(&beside, &env_bytes)
                .map_err(|e| format!("cannot write provenance: {e}"))?;
            say(format!(
                "provenance beside the disk image: `{}`",
                beside.display()
            ));
            paths.push(beside.clone());
            attached = format!("file:{}", beside.display()).into();
        }
        say(format!("provenance `{}`", path.display()));
        provenance = serde_json::json!({ "file": path, "attestation": attached, "predicateType": crate::sign::provenance::PREDICATE_TYPE });
    }
    if artifact.tests.is_some() {
        let tests = write_test_attestation(dir, &stem, plan, artifact, signer, &say).await?;
        if let Some(paths_of) = tests {
            paths.extend(paths_of);
        }
    }
    if artifact.sbom.is_some() {
        paths.extend(write_sboms(dir, &stem, artifact, finished, signer, &say).await?);
    }
    let (path, bytes) = manifest::write(
        dir,
        plan,
        job,
        artifact,
        n,
        started,
        finished,
        provenance,
        records.fingerprint,
        records.catalog,
        signer.map(|k| k.key_id()).as_deref(),
    )
    .map_err(|e| format!("cannot write the build manifest: {e}"))?;
    paths.push(path.clone());
    artifact.manifest = Some(path.display().to_string());
    say(format!("manifest `{}`", path.display()));
    let mut signed_manifest_digest = None;
    if let Some(key) = signer {
        let env =
            crate::sign::dsse::sign(crate::sign::provenance::MANIFEST_PAYLOAD_TYPE, &bytes, key)
                .await
                .map_err(|e| e.to_string())?;
        let signed = dir.join(format!("{stem}.dsse.json"));
        let env_bytes = serde_json::to_vec(&env).expect("JSON serializes");
        manifest::write_atomic(&signed, &env_bytes)
            .map_err(|e| format!("cannot write the signed manifest: {e}"))?;
        paths.push(signed.clone());
        signed_manifest_digest = Some(manifest::sha256_hex(&env_bytes));
        say(format!("signed manifest `{}`", signed.display()));
    }
    Ok(WrittenRecords {
        paths,
        manifest_digest: manifest::sha256_hex(&bytes),
        signed_manifest_digest,
    })
}

/// The signed test-result statement of a tested artifact: beside the
/// manifest, attached to registry images, beside OCI layouts and disk
/// images (`DIR.tests.intoto.json`, `FILE.tests.intoto.json`); recorded in `artifact.tests` (`attestation`)
/// for the manifest. Without a signing key the report is only recorded.
pub(super) async fn write_test_attestation(
    dir: &Path,
    stem: &str,
    plan: &BuildPlan,
    artifact: &mut ArtifactInfo,
    signer: Option<&SigningKey>,
    say: &dyn Fn(String),
) -> Result<Option<Vec<PathBuf>>, String> {
    let Some(report) = artifact
        .tests
        .clone()
        .and_then(|t| serde_json::from_value::<crate::imagetest::TestReport>(t).ok())
    else {
        return Ok(None);
    };
    let template = plan.template.display().to_string();
    let config = crate::sign::testresult::TestConfiguration {
        template: &template,
        template_digest: &plan.template_digest,
        url: format!("kiln:build/{}", plan.build_id),
    };
    let (Some(key), Some(statement)) =
        (signer, crate::sign::testresult::statement(&report, &config))
    else {
        say(format!(
            "test results of `{}` recorded in its manifest, unsigned: no `[build.sign]` key or no content digest",
            artifact.id
        ));
        return Ok(None);
    };
    let body = serde_json::to_vec(&statement).expect("JSON serializes");
    let env = crate::sign::dsse::sign(crate::sign::provenance::PAYLOAD_TYPE, &body, key)
        .await
        .map_err(|e| e.to_string())?;
    let env_bytes = serde_json::to_vec(&env).expect("JSON serializes");
    let path = dir.join(format!("{stem}.tests.intoto.json"));
    manifest::write_atomic(&path, &env_bytes)
        .map_err(|e| format!("cannot write the test attestation: {e}"))?;
    let mut paths = vec![path.clone()];
    #[allow(unused_mut)]
    let mut attached = serde_json::Value::Null;
    #[cfg(feature = "oci")]
    if let (Some(r), Some(digest)) = (
        artifact.id.strip_prefix("registry:"),
        artifact.digest.as_deref(),
    ) {
        let target: oci_client::Reference = r.parse().map_err(|e| format!("`{r}`: {e}"))?;
        let att = crate::sign::cosign::attach_attestation_of(
            &target,
            digest,
            &env_bytes,
            crate::sign::testresult::PREDICATE_TYPE,
        )
        .await
        .map_err(|e| e.to_string())?;
        say(format!("test attestation attached: `{att}`"));
        attached = format!("registry:{att}").into();
    }
    if let Some(layout) = artifact.id.strip_prefix("oci-layout:") {
        let layout_dir = crate::sign::testresult::layout_dir(layout);
        let beside = crate::sign::testresult::beside(Path::new(layout_dir));
        manifest::write_atomic(&beside, &env_bytes)
            .map_err(|e| format!("cannot write the test attestation: {e}"))?;
        say(format!(
            "test attestation beside the layout: `{}`",
            beside.display()
        ));
        paths.push(beside.clone());
        attached = format!("file:{}", beside.display()).into();
    }
    // A disk image (QEMU): its attestation goes beside it, like its
    // signature and provenance, for `kiln verify FILE --require-tests`.
    let disk = Path::new(&artifact.id);
    if disk.is_absolute() && disk.is_file() {
        let beside = crate::sign::testresult::beside(disk);
        manifest::write_atomic(&beside, &env_bytes)
            .map_err(|e| format!("cannot write the test attestation: {e}"))?;
        say(format!(
            "test attestation beside the disk image: `{}`",
            beside.display()
        ));
        paths.push(beside.clone());
        attached = format!("file:{}", beside.display()).into();
    }
    say(format!(
        "test attestation `{}` ({})",
        path.display(),
        report.result()
    ));
    if let Some(t) = artifact.tests.as_mut().and_then(|t| t.as_object_mut()) {
        t.insert(
            "attestation".into(),
            serde_json::json!({ "file": path, "attached": attached, "predicateType": crate::sign::testresult::PREDICATE_TYPE, "result": report.result() }),
        );
    }
    Ok(Some(paths))
}

/// The SPDX and CycloneDX documents of an artifact whose inventory the
/// sbom step read (`artifact.sbom`): `STEM.spdx.json` and `STEM.cdx.json`
/// beside the manifest, created at the build's end; when the build signs,
/// each as a signed in-toto statement (`STEM.spdx.intoto.json`,
/// `STEM.cyclonedx.intoto.json`), attached to registry images too, beside
/// disk images; an AMI's are recorded in its manifest only.
/// `artifact.sbom` becomes the record of them for the manifest, with the
/// subject they describe (`engine::sbom::subject_of`).
async fn write_sboms(
    dir: &Path,
    stem: &str,
    artifact: &mut ArtifactInfo,
    finished: &str,
    signer: Option<&SigningKey>,
    say: &dyn Fn(String),
) -> Result<Vec<PathBuf>, String> {
    let Some(inv) = artifact
        .sbom
        .clone()
        .and_then(|v| serde_json::from_value::<crate::sbom::Inventory>(v).ok())
    else {
        return Err(format!("no package inventory of `{}`", artifact.id));
    };
    let described = super::sbom::subject_of(artifact)?;
    let digest = described.digest.clone();
    let subject = crate::sbom::Subject {
        name: &described.name,
        digest: &digest,
        kind: &artifact.kind,
    };
    let mut paths = vec![];
    let mut record = serde_json::json!({
        "packages": inv.packages.len(),
        "databases": inv.databases,
        "os": { "id": inv.os_id, "version_id": inv.os_version },
        "subject": { "name": described.name, "digest": digest },
    });
    if let Some(identity) = &described.identity {
        record["subject"]["identity"] = serde_json::to_value(identity).expect("JSON serializes");
    }
    let docs = [
        (
            "spdx",
            "spdx.json",
            crate::sbom::spdx(&inv, &subject, finished),
            crate::sign::sbom::SPDX_PREDICATE_TYPE,
        ),
        (
            "cyclonedx",
            "cdx.json",
            crate::sbom::cyclonedx(&inv, &subject, finished),
            crate::sign::sbom::CYCLONEDX_PREDICATE_TYPE,
        ),
    ];
    for (format, ext, doc, predicate_type) in docs {
        let bytes = serde_json::to_vec_pretty(&doc).expect("JSON serializes");
        let path = dir.join(format!("{stem}.{ext}"));
        manifest::write_atomic(&path, &bytes)
            .map_err(|e| format!("cannot write the {format} SBOM: {e}"))?;
        paths.push(path.clone());
        let mut attestation = serde_json::Value::Null;
        if let Some(key) = signer {
            let st = crate::sign::sbom::statement(&described.name, &digest, predicate_type, &doc);
            let body = serde_json::to_vec(&st).expect("JSON serializes");
            let env = crate::sign::dsse::sign(crate::sign::provenance::PAYLOAD_TYPE, &body, key)
                .await
                .map_err(|e| e.to_string())?;
            let env_bytes = serde_json::to_vec(&env).expect("JSON serializes");
            let att = dir.join(format!("{stem}.{format}.intoto.json"));
            manifest::write_atomic(&att, &env_bytes)
                .map_err(|e| format!("cannot write the {format} SBOM attestation: {e}"))?;
            paths.push(att.clone());
            #[allow(unused_mut)]
            let mut attached = serde_json::Value::Null;
            #[cfg(feature = "oci")]
            if let Some(r) = artifact.id.strip_prefix("registry:") {
                let target: oci_client::Reference = r.parse().map_err(|e| format!("`{r}`: {e}"))?;
                let at = crate::sign::cosign::attach_attestation_of(
                    &target,
                    &digest,
                    &env_bytes,
                    predicate_type,
                )
                .await
                .map_err(|e| e.to_string())?;
                say(format!("{format} SBOM attestation attached: `{at}`"));
                attached = format!("registry:{at}").into();
            }
            // A disk image has no registry: its attestations go beside
            // the file, as its provenance does.
            if crate::sign::is_disk_image(&artifact.kind) {
                let file = Path::new(artifact.id.strip_prefix("file:").unwrap_or(&artifact.id));
                let beside = crate::sign::blob::sbom_attestation_path(file, format);
                manifest::write_atomic(&beside, &env_bytes).map_err(|e| {
                    format!("cannot write the {format} SBOM attestation beside the disk image: {e}")
                })?;
                say(format!(
                    "{format} SBOM attestation beside the disk image: `{}`",
                    beside.display()
                ));
                paths.push(beside.clone());
                attached = format!("file:{}", beside.display()).into();
            }
            say(format!("{format} SBOM attestation `{}`", att.display()));
            attestation = serde_json::json!({ "file": att, "attached": attached, "predicateType": predicate_type });
        }
        say(format!(
            "{format} SBOM `{}` ({} packages)",
            path.display(),
            inv.packages.len()
        ));
        record[format] = serde_json::json!({
            "file": path,
            "digest": manifest::sha256_hex(&bytes),
            "attestation": attestation,
        });
    }
    artifact.sbom = Some(record);
    Ok(paths)
}
