//! SLSA v1 provenance as an in-toto statement: what was built (the
//! artifact's digest), from what (template, base, provisioner files by
//! digest, non-sensitive variables), by whom and when.

use serde_json::json;

use crate::manifest::provisioner_digest;
use crate::template::plan::{BuildPlan, JobPlan};
use crate::ui::ArtifactInfo;

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// The DSSE payload type of in-toto statements.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The DSSE payload type of kiln's signed build manifests.
pub const MANIFEST_PAYLOAD_TYPE: &str = "application/vnd.kiln.build-manifest+json";
pub const BUILD_TYPE: &str = "https://github.com/kiln-build/kiln/build-types/template/v1";

pub(crate) fn sha256_map(digest: Option<&str>) -> serde_json::Value {
    match digest.and_then(|d| d.strip_prefix("sha256:")) {
        Some(hex) => json!({ "sha256": hex }),
        None => json!({}),
    }
}

/// A hardening provisioner's compliance report as a resource descriptor:
/// its digest and, in `annotations`, the report itself.
fn compliance_byproduct(report: &serde_json::Value) -> serde_json::Value {
    let bytes = serde_json::to_vec(report).expect("JSON serializes");
    let hex = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    json!({
        "name": format!("hardening/{}", report["profile"].as_str().unwrap_or("?")),
        "mediaType": COMPLIANCE_MEDIA_TYPE,
        "digest": { "sha256": hex },
        "annotations": { "report": report },
    })
}

/// A provisioner as a resource descriptor (in-toto's ResourceDescriptor has
/// only `name`, `uri`, `digest`, `content`, `downloadLocation`,
/// `mediaType` and `annotations`; strict parsers refuse anything else): its
/// settings digest (secrets masked before hashing) as the digest, and the
/// rest of its record — type, files by digest — in `annotations`. The files
/// are also `resolvedDependencies` of their own.
fn provisioner_byproduct(record: &serde_json::Value) -> serde_json::Value {
    let settings = record["settings_digest"].as_str();
    let mut annotations = record.clone();
    if let Some(m) = annotations.as_object_mut() {
        m.remove("settings_digest");
    }
    json!({
        "name": format!("provisioner/{}/{}", record["index"], record["type"].as_str().unwrap_or("?")),
        "mediaType": PROVISIONER_MEDIA_TYPE,
        "digest": sha256_map(settings),
        "annotations": annotations,
    })
}

/// The media type of a provisioner's record among the byproducts.
pub const PROVISIONER_MEDIA_TYPE: &str = "application/vnd.kiln.provisioner+json";

/// The media type of a hardening compliance report among the byproducts.
pub const COMPLIANCE_MEDIA_TYPE: &str = "application/vnd.kiln.compliance-report+json";

/// The statement for one artifact. in-toto v1 requires a digest for every
/// subject: an artifact without a content digest (an AMI) has no
/// statement — its signed build manifest and the catalog vouch for it.
pub fn statement(
    plan: &BuildPlan,
    job: &JobPlan,
    artifact: &ArtifactInfo,
    started: &str,
    finished: &str,
) -> serde_json::Value {
    // Sensitive variables are left out entirely, not masked: their names
    // are in the template, their values nowhere.
    let variables: serde_json::Map<String, serde_json::Value> = plan
        .variables
        .iter()
        .filter(|v| !v.value.is_sensitive())
        .map(|v| (v.name.clone(), v.value.to_json()))
        .collect();
    let mut deps = vec![
        json!({ "uri": format!("file:{}", plan.template.display()), "digest": sha256_map(Some(&plan.template_digest)) }),
    ];
    // The template's git checkout, when it is in one (`dirty`: the build
    // used uncommitted changes, so the commit alone does not describe it).
    if let Some(src) = crate::manifest::template_source(plan) {
        let commit = src["commit"].as_str().unwrap_or_default();
        let mut dep = json!({
            "name": "template-source",
            "digest": { "gitCommit": commit },
            "annotations": { "dirty": src["dirty"], "path": src["path"] },
        });
        if let Some(repo) = src["repository"].as_str() {
            dep["uri"] = format!("git+{repo}@{commit}").into();
        }
        deps.push(dep);
    }
    if let Some(base) = &artifact.base {
        let digest = base.rsplit_once('@').map(|(_, d)| d);
        deps.push(json!({ "uri": base, "digest": sha256_map(digest) }));
    }
    for p in &job.provisioners {
        let d = provisioner_digest(p, &plan.template_dir());
        for (path, digest) in d["files"].as_object().cloned().unwrap_or_default() {
            deps.push(
                json!({ "uri": format!("file:{path}"), "digest": sha256_map(digest.as_str()) }),
            );
        }
    }
    json!({
        "_type": STATEMENT_TYPE,
        "subject": [{ "name": artifact.id, "digest": sha256_map(artifact.digest.as_deref()) }],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "template": plan.template.display().to_string(),
                    "templateDigest": plan.template_digest,
                    "job": job.name(),
                    "variables": variables,
                },
                "internalParameters": { "kilnVersion": env!("CARGO_PKG_VERSION") },
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": { "id": format!("https://github.com/kiln-build/kiln@{}", env!("CARGO_PKG_VERSION")) },
                "metadata": { "invocationId": plan.build_id, "startedOn": started, "finishedOn": finished },
                "byproducts": job.provisioners.iter().map(|p| provisioner_byproduct(&provisioner_digest(p, &plan.template_dir()))).chain(artifact.hardening.iter().map(compliance_byproduct)).collect::<Vec<_>>(),
            },
        },
    })
}
