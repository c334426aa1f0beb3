//! A fresh container from a produced image, for `[[build.test]]` and
//! `kiln test`: the image named by the artifact (its layout, its registry
//! reference pinned to the digest, or the blob cache) unpacked into a
//! journaled scratch folder; every check runs in a runc container on it
//! with a read-only root and no network.

use std::path::Path;

use super::check::readonly_instance;
use super::image::{load_base, StoredImage};
use super::reference::BaseRef;
use super::runc::RuncCommunicator;
use super::store::BlobStore;
use crate::builder::{ArtifactInstance, BuildError};
use crate::communicator::Communicator;
use crate::job::Undo;
use crate::ui::ArtifactInfo;

/// The test container's rootfs and how commands reach it.
pub struct TestContainer {
    comm: RuncCommunicator,
    digest: String,
}

impl ArtifactInstance for TestContainer {
    fn communicator(&self) -> &dyn Communicator {
        &self.comm
    }

    fn digest(&self) -> Option<String> {
        Some(self.digest.clone())
    }
}

/// Where an artifact's image is read from: `registry:REF` pinned to its
/// digest, `oci-layout:DIR[:TAG]`, or `kiln-cache:DIGEST`.
async fn load_artifact(
    artifact: &ArtifactInfo,
    store: &BlobStore,
) -> Result<StoredImage, BuildError> {
    if let Some(d) = artifact.id.strip_prefix("kiln-cache:") {
        return from_cache(d, store);
    }
    // Relative layouts (`kiln test --artifact oci-layout:out/img`) are the
    // caller's; a build's artifact ids are absolute.
    let cwd = std::env::current_dir().map_err(BuildError::io("current folder"))?;
    let mut base = BaseRef::parse(&artifact.id, &cwd)?;
    if let (BaseRef::Registry(r), Some(d)) = (&base, artifact.digest.as_deref()) {
        base = BaseRef::Registry(oci_client::Reference::with_digest(
            r.registry().to_string(),
            r.repository().to_string(),
            d.to_string(),
        ));
    }
    let image = load_base(&base, store)
        .await?
        .ok_or_else(|| BuildError::Config(format!("`{}` is not an image", artifact.id)))?;
    if let Some(want) = artifact.digest.as_deref() {
        if image.manifest_digest != want {
            return Err(BuildError::Config(format!(
                "`{}` resolves to {}, not the artifact's digest {want}",
                artifact.id, image.manifest_digest
            )));
        }
    }
    Ok(image)
}

fn from_cache(digest: &str, store: &BlobStore) -> Result<StoredImage, BuildError> {
    let manifest: oci_spec::image::ImageManifest = serde_json::from_slice(&store.read(digest)?)
        .map_err(|e| BuildError::Config(format!("`{digest}`: bad manifest: {e}")))?;
    let config = serde_json::from_slice(&store.read(manifest.config().digest().as_ref())?)
        .map_err(|e| BuildError::Config(format!("`{digest}`: bad image config: {e}")))?;
    Ok(StoredImage {
        manifest,
        config,
        manifest_digest: digest.to_string(),
        source: format!("kiln-cache:{digest}"),
    })
}

/// Unpacks the artifact's image and returns the container to test it in;
/// everything it makes is on `undo` before it exists.
pub async fn launch_artifact(
    state_dir: &Path,
    undo: &Undo,
    artifact: &ArtifactInfo,
) -> Result<Box<dyn ArtifactInstance>, BuildError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(BuildError::NotSupported(
            "testing an OCI image needs root (it unpacks the image and runs runc)".into(),
        ));
    }
    let store = BlobStore::new(state_dir);
    let image = load_artifact(artifact, &store).await?;
    let id = format!("test-{}", uuid::Uuid::new_v4());
    let comm = readonly_instance(&image, &store, state_dir, &id, undo, "kiln-test").await?;
    Ok(Box::new(TestContainer {
        comm,
        digest: image.manifest_digest,
    }))
}
