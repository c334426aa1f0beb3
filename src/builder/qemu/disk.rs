//! Disk images through `qemu-img`: the copy-on-write overlay the VM writes to (the base is never opened for writing), and
//! the standalone export with its streaming sha256.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::builder::BuildError;

/// The sha256 of a file, read in chunks (images are gigabytes).
pub async fn sha256_file(path: &Path) -> Result<String, BuildError> {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        use std::io::Read;
        let mut file = fs_err::File::open(&p)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(hex::encode(hasher.finalize()))
    })
    .await
    .map_err(|e| BuildError::io("hashing")(std::io::Error::other(e)))?
    .map_err(BuildError::io(format!("cannot hash `{}`", path.display())))
}

/// What `qemu-img info` says about an image.
#[derive(Debug, serde::Deserialize)]
pub struct ImageInfo {
    pub format: String,
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
}

async fn qemu_img(args: &[&std::ffi::OsStr], what: &str) -> Result<Vec<u8>, BuildError> {
    let out = tokio::process::Command::new("qemu-img")
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(BuildError::io(format!("cannot run `qemu-img` to {what}")))?;
    if !out.status.success() {
        return Err(BuildError::Io {
            what: format!("`qemu-img` could not {what}"),
            source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        });
    }
    Ok(out.stdout)
}

pub async fn info(path: &Path) -> Result<ImageInfo, BuildError> {
    let out = qemu_img(
        &["info".as_ref(), "--output=json".as_ref(), path.as_os_str()],
        &format!("read `{}`", path.display()),
    )
    .await?;
    serde_json::from_slice(&out).map_err(|e| {
        BuildError::io("qemu-img info")(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    })
}

/// Creates a qcow2 overlay at `overlay` backed by `base`, grown to `size`
/// bytes when given (never shrunk: that would cut the filesystem).
pub async fn create_overlay(
    base: &Path,
    base_info: &ImageInfo,
    overlay: &Path,
    size: Option<u64>,
) -> Result<(), BuildError> {
    if let Some(s) = size.filter(|s| *s < base_info.virtual_size) {
        return Err(BuildError::Config(format!(
            "`disk_size` ({s} bytes) is smaller than the base image ({} bytes); disks are only grown",
            base_info.virtual_size
        )));
    }
    let size = size.map(|s| s.to_string());
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "create".as_ref(),
        "-q".as_ref(),
        "-f".as_ref(),
        "qcow2".as_ref(),
        "-b".as_ref(),
        base.as_os_str(),
        "-F".as_ref(),
        base_info.format.as_ref(),
        overlay.as_os_str(),
    ];
    if let Some(s) = &size {
        args.push(s.as_ref());
    }
    qemu_img(&args, "create the overlay").await.map(drop)
}

/// Creates an empty qcow2 disk of `size` bytes: the target of an install
/// from an ISO.
pub async fn create_empty(path: &Path, size: u64) -> Result<(), BuildError> {
    let size = size.to_string();
    qemu_img(
        &[
            "create".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            path.as_os_str(),
            size.as_ref(),
        ],
        "create the empty target disk",
    )
    .await
    .map(drop)
}

/// Writes overlay + base as one standalone image.
pub async fn export(
    overlay: &Path,
    output: &Path,
    format: &str,
    compress: bool,
) -> Result<(), BuildError> {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "convert".as_ref(),
        "-f".as_ref(),
        "qcow2".as_ref(),
        "-O".as_ref(),
        format.as_ref(),
    ];
    if compress {
        args.push("-c".as_ref());
    }
    args.extend([overlay.as_os_str(), output.as_os_str()]);
    qemu_img(&args, "export the disk").await.map(drop)
}
