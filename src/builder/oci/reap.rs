//! The OCI builder's own resource kind: a container of an OCI runtime
//! (`runtime --root ROOT … ID`), and how the undo stack and `kiln cleanup`
//! remove one. Needs no cargo feature: a journal may hold containers of a
//! build made by another kiln binary.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::job::{OwnedResource, Reap, ResourceKind};

/// A container of an OCI runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Container {
    pub runtime: String,
    pub root: PathBuf,
    pub id: String,
}

impl ResourceKind for Container {
    const KIND: &'static str = "container";
}

/// Removes containers.
pub struct ContainerReaper;

/// The OCI builder's reaper.
pub fn reaper() -> Arc<dyn Reap> {
    Arc::new(ContainerReaper)
}

#[async_trait]
impl Reap for ContainerReaper {
    fn kinds(&self) -> &'static [&'static str] {
        &[Container::KIND]
    }

    fn describe(&self, r: &OwnedResource) -> String {
        match r.parse::<Container>() {
            Ok(Container { runtime, id, .. }) => format!("{runtime} container `{id}`"),
            Err(e) => e,
        }
    }

    async fn reap(&self, r: &OwnedResource) -> Result<(), String> {
        let Container { runtime, root, id } = r.parse()?;
        let out = tokio::process::Command::new(&runtime)
            .arg("--root")
            .arg(&root)
            .args(["delete", "--force", &id])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .output()
            .await;
        match out {
            Ok(o) if o.status.success() || !root.join(&id).exists() => Ok(()),
            Ok(o) => Err(format!(
                "cannot delete container `{id}`: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            // No runtime installed: no container can exist.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("cannot run `{runtime}`: {e}")),
        }
    }
}
