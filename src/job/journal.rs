//! The on-disk journal of live resources: one JSON file per resource under
//! `<state>/journal/<build-id>/<job>/`, written atomically (temp file,
//! fsync, rename) before the call that creates the resource returns, and
//! removed once the resource is undone. `kiln cleanup` reads it to reap
//! what a SIGKILLed build left behind.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::process::process_start_time;
use super::resource::Resource;

/// One journal file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalEntry {
    pub resource: Resource,
    pub build_id: String,
    pub job: String,
    pub description: String,
    /// The kiln process that created it, to tell a live build from a dead one.
    pub owner_pid: u32,
    pub owner_start_time: u64,
    /// Seconds since the Unix epoch.
    pub created: u64,
}

/// The journal directory.
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    /// The journal under a state directory (created on first write).
    pub fn new(state_dir: &Path) -> Journal {
        Journal {
            dir: state_dir.join("journal"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Durably records a resource; returns the entry's path.
    pub fn record(
        &self,
        build_id: &str,
        job: &str,
        seq: u64,
        resource: &Resource,
        description: &str,
    ) -> std::io::Result<PathBuf> {
        let dir = self.dir.join(sanitize(build_id)).join(sanitize(job));
        fs_err::create_dir_all(&dir)?;
        let me = std::process::id();
        let entry = JournalEntry {
            resource: resource.clone(),
            build_id: build_id.to_string(),
            job: job.to_string(),
            description: description.to_string(),
            owner_pid: me,
            owner_start_time: process_start_time(me as i32).unwrap_or(0),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let path = dir.join(format!("{seq:06}.json"));
        let tmp = dir.join(format!(".{seq:06}.json.tmp"));
        {
            let mut f = fs_err::File::create(&tmp)?;
            serde_json::to_writer_pretty(&mut f, &entry)?;
            f.sync_all()?;
        }
        fs_err::rename(&tmp, &path)?;
        // The rename is durable only once the directory is synced.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(path)
    }

    /// Forgets a resource that no longer exists; prunes empty directories.
    pub fn remove(&self, entry: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(entry) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut dir = entry.parent();
        while let Some(d) = dir {
            if d == self.dir || std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }

    /// Every entry, oldest build first, in creation order within a job.
    pub fn entries(&self) -> std::io::Result<Vec<(PathBuf, JournalEntry)>> {
        let mut out = vec![];
        let Ok(builds) = std::fs::read_dir(&self.dir) else {
            return Ok(out);
        };
        for b in builds.flatten() {
            for j in std::fs::read_dir(b.path())?.flatten() {
                if !j.path().is_dir() {
                    continue;
                }
                for e in std::fs::read_dir(j.path())?.flatten() {
                    let p = e.path();
                    if p.extension().is_some_and(|x| x == "json")
                        && !p
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                    {
                        let text = fs_err::read_to_string(&p)?;
                        let entry: JournalEntry = serde_json::from_str(&text).map_err(|err| {
                            std::io::Error::new(
                                std::io::ErrorKind::InvalidData,
                                format!("{}: {err}", p.display()),
                            )
                        })?;
                        out.push((p, entry));
                    }
                }
            }
        }
        out.sort_by(|a, b| (a.1.created, &a.0).cmp(&(b.1.created, &b.0)));
        Ok(out)
    }
}

/// A job or build name as a safe single path component.
pub fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::process::owner_alive;

    #[test]
    fn record_list_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let j = Journal::new(tmp.path());
        let r = Resource::TempDir {
            path: tmp.path().join("w"),
        };
        let p = j.record("b1", "web.null.x", 1, &r, "workspace").unwrap();
        let entries = j.entries().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].1.resource, r);
        assert!(owner_alive(
            entries[0].1.owner_pid,
            entries[0].1.owner_start_time
        ));
        j.remove(&p).unwrap();
        assert!(j.entries().unwrap().is_empty());
        assert!(
            !tmp.path().join("journal/b1").exists(),
            "empty directories are pruned"
        );
    }
}
