//! The sbom step (`[build.sbom] enabled = true`), after `snapshot` (and
//! the tests, which read the inventory in their own instance when there
//! are `[[build.test]]`s): each distinct artifact not read yet — an OCI
//! image, a QEMU disk image or an AMI — is started fresh by its builder,
//! its package databases read through the instance's communicator
//! (`sbom::collect`), and the inventory kept on the artifact; `records`
//! writes the SPDX and CycloneDX documents from it. A failure to read
//! fails the job: an SBOM that was asked for is never silently missing.
//! Other artifact kinds get a message: not supported yet.

use crate::builder::Builder;
use crate::job::{JobContext, Undo};
use crate::ui::ArtifactInfo;

/// Whether the sbom step reads artifacts of `kind`: OCI images and disk
/// images (QEMU exports), whose content digest the documents describe, and
/// AMIs, described by their identity (see [`subject_of`]).
pub(super) fn readable(kind: &str) -> bool {
    kind == "oci" || kind == "ami" || crate::sign::is_disk_image(kind)
}

/// What an artifact's documents describe: its id and content digest, or
/// for an AMI (no content digest) `ami:REGION/ami-…` and the sha256 of its
/// identity's canonical JSON (`sbom::AmiIdentity`, docs/sbom.md).
pub(super) fn subject_of(a: &ArtifactInfo) -> Result<Subject, String> {
    if let Some(digest) = &a.digest {
        return Ok(Subject {
            name: a.id.clone(),
            digest: digest.clone(),
            identity: None,
        });
    }
    let identity = a
        .identity
        .clone()
        .filter(|_| a.kind == "ami")
        .and_then(|v| serde_json::from_value::<crate::sbom::AmiIdentity>(v).ok())
        .ok_or_else(|| format!("`{}` has no content digest or identity to describe", a.id))?;
    Ok(Subject {
        name: identity.name(),
        digest: identity.digest(),
        identity: Some(identity),
    })
}

/// See [`subject_of`].
pub(super) struct Subject {
    pub(super) name: String,
    pub(super) digest: String,
    pub(super) identity: Option<crate::sbom::AmiIdentity>,
}

/// Reads the inventory of every readable artifact (once per digest) onto
/// `artifact.sbom`; the instances stay on `undo` for the caller to unwind.
pub(super) async fn sbom_artifacts(
    ctx: &JobContext,
    builder: &dyn Builder,
    undo: &Undo,
    artifacts: &mut [ArtifactInfo],
) -> Result<(), super::JobError> {
    let mut done: Vec<(String, serde_json::Value)> = vec![];
    for a in artifacts.iter_mut() {
        if a.sbom.is_some() {
            // Read in the test instance already.
            continue;
        }
        if !readable(&a.kind) || !builder.can_test() {
            ctx.message(format!(
                "SBOM for {} artifacts is not supported yet: `{}` has none",
                a.kind, a.id
            ));
            continue;
        }
        let digest = subject_of(a).map_err(super::JobError::Sbom)?.digest;
        if let Some((_, inv)) = done.iter().find(|(d, _)| *d == digest) {
            a.sbom = Some(inv.clone());
            continue;
        }
        ctx.message(format!(
            "reading the package databases of `{}` ({digest}) in a fresh instance",
            a.id
        ));
        let instance = builder
            .launch_artifact(ctx, undo, a)
            .await
            .map_err(|e| super::JobError::Sbom(e.to_string()))?;
        let scratch = ctx
            .scratch_dir(undo, "sbom-files", "files copied out for the SBOM")
            .await
            .map_err(|e| super::JobError::Sbom(format!("journal: {e}")))?;
        let inv = crate::sbom::collect(instance.communicator(), &scratch)
            .await
            .map_err(|e| super::JobError::Sbom(format!("`{}`: {e}", a.id)))?;
        ctx.message(format!(
            "{} packages in `{}` ({})",
            inv.packages.len(),
            a.id,
            inv.databases.join(", ")
        ));
        let value = serde_json::to_value(&inv).expect("JSON serializes");
        done.push((digest, value.clone()));
        a.sbom = Some(value);
    }
    Ok(())
}
