//! What a job creates outside the kiln process, as its journal records
//! name it. The host kinds (directory, file, process, mount) are removed
//! here; every other kind (a runtime's container, a cloud run) is *owned*:
//! the builder or communicator that creates it names it with a
//! [`ResourceKind`] and removes it through [`Reap`], which the engine
//! hands to the undo stack and to `kiln cleanup` as [`Reapers`].

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::process::kill_process;

/// Something outside the kiln process that a build created. Journaled as
/// a JSON object whose `kind` names it (`temp_dir`, `container`, `aws_run`…).
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    /// A directory kiln created (workspaces, scratch space).
    TempDir { path: PathBuf },
    /// A file kiln created.
    TempFile { path: PathBuf },
    /// A child process (a provisioner's shell); `start_time` guards against
    /// pid reuse, `group` kills its whole process group.
    Process {
        pid: i32,
        start_time: u64,
        group: bool,
    },
    /// A mount point (the OCI builder's overlayfs).
    Mount { target: PathBuf },
    /// A kind that its owner (a builder or communicator) describes and
    /// removes through [`Reap`].
    Owned(OwnedResource),
}

/// An owner's resource as journaled: its kind and its fields.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedResource {
    pub kind: String,
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// A typed resource of an owner, stored as [`Resource::Owned`].
pub trait ResourceKind: Serialize + DeserializeOwned {
    /// The journal record's `kind`.
    const KIND: &'static str;

    /// This resource, ready for the undo stack.
    fn resource(&self) -> Resource {
        let fields = match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => unreachable!("a resource kind is a struct with named fields"),
        };
        Resource::Owned(OwnedResource {
            kind: Self::KIND.to_string(),
            fields,
        })
    }
}

impl OwnedResource {
    /// The typed resource, when this record is of kind `T`.
    pub fn parse<T: ResourceKind>(&self) -> Result<T, String> {
        if self.kind != T::KIND {
            return Err(format!("not a `{}` resource: `{}`", T::KIND, self.kind));
        }
        serde_json::from_value(serde_json::Value::Object(self.fields.clone()))
            .map_err(|e| format!("a `{}` journal record: {e}", self.kind))
    }
}

/// The owner of resource kinds the host cannot remove by itself: the
/// builder or communicator that creates them.
#[async_trait]
pub trait Reap: Send + Sync {
    /// The kinds this owner removes.
    fn kinds(&self) -> &'static [&'static str];

    /// A short human description for logs.
    fn describe(&self, r: &OwnedResource) -> String;

    /// Removes the resource; succeeds when it is already gone.
    async fn reap(&self, r: &OwnedResource) -> Result<(), String>;
}

/// Every owner's [`Reap`], found by kind.
#[derive(Clone, Default)]
pub struct Reapers {
    owners: Vec<Arc<dyn Reap>>,
}

impl Reapers {
    /// Adds an owner.
    pub fn with(mut self, owner: Arc<dyn Reap>) -> Reapers {
        self.owners.push(owner);
        self
    }

    fn owner(&self, kind: &str) -> Option<&dyn Reap> {
        self.owners
            .iter()
            .find(|o| o.kinds().contains(&kind))
            .map(|o| o.as_ref())
    }

    /// A short human description for logs.
    pub fn describe(&self, r: &Resource) -> String {
        match r {
            Resource::TempDir { path } => format!("directory `{}`", path.display()),
            Resource::TempFile { path } => format!("file `{}`", path.display()),
            Resource::Process { pid, .. } => format!("process {pid}"),
            Resource::Mount { target } => format!("mount `{}`", target.display()),
            Resource::Owned(o) => match self.owner(&o.kind) {
                Some(owner) => owner.describe(o),
                None => format!("`{}` resource", o.kind),
            },
        }
    }

    /// Removes the resource; succeeds when it is already gone.
    pub async fn reap(&self, r: &Resource) -> Result<(), String> {
        match r {
            Resource::TempDir { path } => match tokio::fs::remove_dir_all(path).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(format!("cannot remove `{}`: {e}", path.display()))
                }
                _ => Ok(()),
            },
            Resource::TempFile { path } => match tokio::fs::remove_file(path).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(format!("cannot remove `{}`: {e}", path.display()))
                }
                _ => Ok(()),
            },
            Resource::Process {
                pid,
                start_time,
                group,
            } => {
                kill_process(*pid, *start_time, *group);
                Ok(())
            }
            Resource::Mount { target } => {
                use nix::mount::{umount2, MntFlags};
                match umount2(target, MntFlags::MNT_DETACH) {
                    Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {
                        Ok(())
                    }
                    Err(e) => Err(format!("cannot unmount `{}`: {e}", target.display())),
                }
            }
            Resource::Owned(o) => match self.owner(&o.kind) {
                Some(owner) => owner.reap(o).await,
                None => Err(format!(
                    "this kiln has no reaper for `{}` resources (the builder that made it is not in this binary)",
                    o.kind
                )),
            },
        }
    }
}

/// The journal form of the host kinds.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum HostRecord {
    TempDir {
        path: PathBuf,
    },
    TempFile {
        path: PathBuf,
    },
    Process {
        pid: i32,
        start_time: u64,
        group: bool,
    },
    Mount {
        target: PathBuf,
    },
}

const HOST_KINDS: &[&str] = &["temp_dir", "temp_file", "process", "mount"];

impl Serialize for Resource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let host = match self.clone() {
            Resource::TempDir { path } => HostRecord::TempDir { path },
            Resource::TempFile { path } => HostRecord::TempFile { path },
            Resource::Process {
                pid,
                start_time,
                group,
            } => HostRecord::Process {
                pid,
                start_time,
                group,
            },
            Resource::Mount { target } => HostRecord::Mount { target },
            Resource::Owned(o) => {
                let mut m = o.fields;
                m.insert("kind".into(), o.kind.into());
                return m.serialize(s);
            }
        };
        host.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Resource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Resource, D::Error> {
        let mut fields = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let kind = match fields.get("kind") {
            Some(serde_json::Value::String(k)) => k.clone(),
            _ => return Err(D::Error::missing_field("kind")),
        };
        if HOST_KINDS.contains(&kind.as_str()) {
            let host: HostRecord = serde_json::from_value(serde_json::Value::Object(fields))
                .map_err(D::Error::custom)?;
            return Ok(match host {
                HostRecord::TempDir { path } => Resource::TempDir { path },
                HostRecord::TempFile { path } => Resource::TempFile { path },
                HostRecord::Process {
                    pid,
                    start_time,
                    group,
                } => Resource::Process {
                    pid,
                    start_time,
                    group,
                },
                HostRecord::Mount { target } => Resource::Mount { target },
            });
        }
        fields.remove("kind");
        Ok(Resource::Owned(OwnedResource { kind, fields }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Thing {
        id: String,
        endpoint: Option<String>,
    }

    impl ResourceKind for Thing {
        const KIND: &'static str = "thing";
    }

    struct ThingOwner;

    #[async_trait]
    impl Reap for ThingOwner {
        fn kinds(&self) -> &'static [&'static str] {
            &["thing"]
        }
        fn describe(&self, r: &OwnedResource) -> String {
            format!(
                "thing {}",
                r.parse::<Thing>().map(|t| t.id).unwrap_or_default()
            )
        }
        async fn reap(&self, r: &OwnedResource) -> Result<(), String> {
            Err(format!("reaped {}", r.parse::<Thing>()?.id))
        }
    }

    #[test]
    fn journal_form_names_the_kind() {
        let dir = Resource::TempDir { path: "/w".into() };
        let json = serde_json::to_value(&dir).unwrap();
        assert_eq!(json, serde_json::json!({"kind": "temp_dir", "path": "/w"}));
        assert_eq!(serde_json::from_value::<Resource>(json).unwrap(), dir);

        let thing = Thing {
            id: "a".into(),
            endpoint: None,
        }
        .resource();
        let json = serde_json::to_value(&thing).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "thing", "id": "a", "endpoint": null})
        );
        let back: Resource = serde_json::from_value(json).unwrap();
        assert_eq!(back, thing);
        let Resource::Owned(o) = back else {
            panic!("an owned kind")
        };
        assert_eq!(
            o.parse::<Thing>().unwrap(),
            Thing {
                id: "a".into(),
                endpoint: None
            }
        );
    }

    #[tokio::test]
    async fn owned_kinds_go_to_their_owner() {
        let thing = Thing {
            id: "a".into(),
            endpoint: None,
        }
        .resource();
        let none = Reapers::default();
        assert_eq!(none.describe(&thing), "`thing` resource");
        assert!(none.reap(&thing).await.unwrap_err().contains("no reaper"));
        let owned = Reapers::default().with(Arc::new(ThingOwner));
        assert_eq!(owned.describe(&thing), "thing a");
        assert_eq!(owned.reap(&thing).await.unwrap_err(), "reaped a");
    }
}
