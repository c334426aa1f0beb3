//! `kiln check`: runs a hardening profile's checks, never its apply scripts, against
//! an existing OCI image kiln did not necessarily build. The image is
//! pulled into the blob cache, unpacked into a journaled scratch folder,
//! and each check runs in a runc container whose root is mounted
//! read-only and has no network; everything is removed afterwards.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use super::image::load_base;
use super::reference::BaseRef;
use super::runc::RuncCommunicator;
use super::store::BlobStore;
use crate::builder::BuildError;
use crate::job::{sanitize, Journal, Reapers, Resource, Undo};
use crate::provisioner::hardening::profile::Profile;
use crate::provisioner::hardening::report::ComplianceReport;
use crate::provisioner::hardening::run::{run_profile, Mode, RunError, Skips};

/// Why an image could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum CheckImageError {
    /// The artifact named is not something kiln can check (exit 2).
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    NotSupported(String),
    #[error(transparent)]
    Image(#[from] BuildError),
    #[error("checks: {0}")]
    Run(#[from] RunError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("cleanup failed ({0}); `kiln cleanup` will retry")]
    Cleanup(String),
}

/// Disk image formats `kiln check` recognises but cannot open yet.
const DISK_SUFFIXES: &[&str] = &[".qcow2", ".raw", ".img", ".vmdk", ".vhd", ".vhdx"];

/// Parses `ARTIFACT`: `registry:REF`, `oci-layout:DIR[:TAG]`,
/// `rootfs:FILE.tar`, or a bare OCI layout folder.
pub fn parse_artifact(artifact: &str, cwd: &Path) -> Result<BaseRef, CheckImageError> {
    if DISK_SUFFIXES.iter().any(|s| artifact.ends_with(s)) {
        return Err(CheckImageError::NotSupported(format!(
            "`{artifact}`: checking disk images is not supported yet (it lands with the QEMU builder, issue #7); give an OCI image"
        )));
    }
    if cwd.join(artifact).join("oci-layout").is_file() {
        return Ok(BaseRef::Layout {
            dir: cwd.join(artifact),
            tag: None,
        });
    }
    match BaseRef::parse(artifact, cwd) {
        Ok(BaseRef::Scratch) | Err(_) => Err(CheckImageError::Input(format!(
            "`{artifact}`: expected `registry:REF`, `oci-layout:DIR[:TAG]`, `rootfs:FILE.tar` or an OCI layout folder"
        ))),
        Ok(base) => Ok(base),
    }
}

/// Checks `profile` against the image; nothing of it is changed and
/// nothing is left behind (a crash leaves journal entries for
/// `kiln cleanup`).
pub async fn check_image(
    base: &BaseRef,
    profile: &Profile,
    state_dir: &Path,
) -> Result<ComplianceReport, CheckImageError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(CheckImageError::NotSupported(
            "`kiln check` needs root (it unpacks the image and runs runc)".into(),
        ));
    }
    let store = BlobStore::new(state_dir);
    let image = load_base(base, &store)
        .await?
        .ok_or_else(|| CheckImageError::Input("`scratch` has nothing to check".into()))?;
    let id = format!("check-{}", uuid::Uuid::new_v4());
    let reapers = Reapers::default().with(super::reap::reaper());
    let undo = Undo::new(Journal::new(state_dir), reapers, &id, "check");
    let result = check_unpacked(&image, &store, profile, state_dir, &id, &undo).await;
    let unwound = undo.unwind().await;
    if let Some(f) = unwound.failed.first() {
        return Err(CheckImageError::Cleanup(f.clone()));
    }
    result
}

async fn check_unpacked(
    image: &super::image::StoredImage,
    store: &BlobStore,
    profile: &Profile,
    state_dir: &Path,
    id: &str,
    undo: &Undo,
) -> Result<ComplianceReport, CheckImageError> {
    let comm = readonly_instance(image, store, state_dir, id, undo, "kiln-check").await?;
    let mut report = run_profile(
        profile,
        &comm,
        Mode::CheckOnly,
        &Skips::default(),
        &mut |_, _| {},
    )
    .await?;
    // The digest names what was checked even when the source was a tag.
    report.image = Some(format!("{}@{}", image.source, image.manifest_digest));
    Ok(report)
}

/// An image unpacked into a journaled scratch folder and the communicator
/// that runs each command in a runc container on it, root read-only, no
/// network: how `kiln check` and `[[build.test]]` look at an image
/// without changing it. Everything is registered on `undo` first.
pub(crate) async fn readonly_instance(
    image: &super::image::StoredImage,
    store: &BlobStore,
    state_dir: &Path,
    id: &str,
    undo: &Undo,
    prefix: &str,
) -> Result<RuncCommunicator, BuildError> {
    let work = state_dir.join("work").join(sanitize(id));
    crate::builder::register_on(
        undo,
        Resource::TempDir { path: work.clone() },
        "unpacked image",
    )
    .await?;
    let rootfs = work.join("rootfs");
    fs_err::create_dir_all(&rootfs).map_err(BuildError::io("cannot create the unpack folder"))?;
    let layers: Vec<(String, PathBuf)> = image
        .manifest
        .layers()
        .iter()
        .map(|l| Ok((l.digest().to_string(), store.path(l.digest().as_ref())?)))
        .collect::<Result<_, BuildError>>()?;
    let root = rootfs.clone();
    use crate::builder::oci::unpack::{unpack_image, Limits};
    let limits = Limits::resolve(None)?;
    tokio::task::spawn_blocking(move || unpack_image(&root, &layers, limits, &|| false))
        .await
        .map_err(|e| BuildError::io("unpack")(std::io::Error::other(e)))??;

    let secret_dir = super::build::tmpfs_dir()?.join(format!("kiln-{id}"));
    crate::builder::register_on(
        undo,
        Resource::TempDir {
            path: secret_dir.clone(),
        },
        "runtime configs (tmpfs)",
    )
    .await?;
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&secret_dir)
            .map_err(BuildError::io("cannot create the runtime folder"))?;
    }
    let short: String = id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .skip(5)
        .take(8)
        .collect();
    let image_env = image
        .config
        .config()
        .as_ref()
        .and_then(|c| c.env().clone())
        .unwrap_or_default();
    Ok(RuncCommunicator {
        runtime: "runc".into(),
        state_root: state_dir.join("oci").join("runtime"),
        secret_dir,
        rootfs,
        hostname: format!("{prefix}-{short}"),
        host_network: false,
        image_env,
        image_workdir: "/".into(),
        uid: 0,
        gid: 0,
        id_prefix: format!("{prefix}-{short}"),
        undo: undo.clone(),
        counter: AtomicU64::new(0),
        readonly_root: true,
        session: Default::default(),
    })
}
