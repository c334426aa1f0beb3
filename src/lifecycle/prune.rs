//! Retention: `[image.retention]` says how many newest versions to keep
//! (`keep`), when older ones are deprecated (`deprecate_after`) and when
//! they are deleted (`max_age`). [`plan`] decides from the catalog alone;
//! [`apply`] deprecates, then deletes each version's artifacts (OCI
//! manifests with their tags and signatures, disk image files, AMIs with
//! their snapshots in every region) and records every step in the catalog
//! log. Channel targets are always kept, and so is a version whose AMI a
//! launch template version still names.

use serde::Serialize;

use crate::catalog::model::Family;
use crate::catalog::{Action, Catalog, CatalogError};
use crate::sign::SigningKey;
use crate::template::plan::Retention;

/// What happens to one version.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Verdict {
    Keep { version: String, why: String },
    Deprecate { version: String, why: String },
    Delete { version: String, why: String },
}

fn age_of(rfc3339: &str, now: std::time::SystemTime) -> std::time::Duration {
    humantime::parse_rfc3339(rfc3339)
        .ok()
        .and_then(|t| now.duration_since(t).ok())
        .unwrap_or_default()
}

fn fmt(d: std::time::Duration) -> String {
    humantime::format_duration(std::time::Duration::from_secs(d.as_secs())).to_string()
}

/// The verdict for every version still holding artifacts, newest first.
/// Outside the `keep` newest (and not a channel target), a version is
/// deleted when older than `max_age` (or, without `max_age`, when `keep`
/// is set), else deprecated when older than `deprecate_after`.
pub fn plan(family: &Family, r: &Retention, now: std::time::SystemTime) -> Vec<Verdict> {
    let mut live: Vec<_> = family
        .versions
        .iter()
        .filter(|v| !v.artifacts_deleted)
        .collect();
    live.sort_by_key(|v| std::cmp::Reverse(v.registration.build));
    let keep = r.keep.unwrap_or(u64::MAX) as usize;
    live.iter()
        .enumerate()
        .map(|(i, v)| {
            let version = v.registration.version.clone();
            let channels = family.channels_of(&version);
            let age = age_of(&v.registered_at, now);
            if !channels.is_empty() {
                return Verdict::Keep {
                    version,
                    why: format!("channel {}", channels.join(", ")),
                };
            }
            if i < keep {
                return Verdict::Keep {
                    version,
                    why: format!("among the {} newest", r.keep.unwrap_or(0).max(i as u64 + 1)),
                };
            }
            let outside = if r.keep.is_some() {
                format!("beyond the {} newest", keep)
            } else {
                "no `keep`".to_string()
            };
            match r.max_age {
                Some(max) if age > max => {
                    return Verdict::Delete {
                        version,
                        why: format!("{outside} and {} old (max_age {})", fmt(age), fmt(max)),
                    }
                }
                None if r.keep.is_some() => {
                    return Verdict::Delete {
                        version,
                        why: outside,
                    }
                }
                _ => {}
            }
            match r.deprecate_after {
                Some(d) if age > d && v.is_active() => Verdict::Deprecate {
                    version,
                    why: format!(
                        "{outside} and {} old (deprecate_after {})",
                        fmt(age),
                        fmt(d)
                    ),
                },
                _ => Verdict::Keep {
                    version,
                    why: "within the retention policy".into(),
                },
            }
        })
        .collect()
}

/// Carries out `verdicts` for `image`: deprecations, then deletions
/// (active versions are deprecated first), each recorded in the catalog.
/// A version is checked and deleted under the catalog's lock, so no
/// channel can move to it meanwhile. Returns what was done, one line each.
pub async fn apply(
    catalog: &Catalog,
    image: &str,
    verdicts: &[Verdict],
    actor: &str,
    key: &SigningKey,
) -> Result<Vec<String>, CatalogError> {
    let mut done = vec![];
    for v in verdicts {
        let (version, why, delete) = match v {
            Verdict::Keep { .. } => continue,
            Verdict::Deprecate { version, why } => (version, why, false),
            Verdict::Delete { version, why } => (version, why, true),
        };
        let reason = format!("retention: {why}");
        let mut w = catalog.writer().await?;
        let family = w.state.family(image).cloned().unwrap_or_default();
        let Some(current) = family.version(version).cloned() else {
            continue;
        };
        if !family.channels_of(version).is_empty() {
            done.push(format!(
                "kept {image} {version}: a channel points at it now"
            ));
            continue;
        }
        if current.is_active() {
            let change = Action::Deprecate {
                image: image.to_string(),
                version: version.clone(),
                reason: reason.clone(),
            };
            w.record(change, actor, key).await?;
        }
        if !delete {
            w.commit().await?;
            done.push(format!("deprecated {image} {version}: {reason}"));
            continue;
        }
        // Digests another live version still uses stay (the same image
        // can be registered twice).
        let shared: Vec<String> = family
            .versions
            .iter()
            .filter(|o| o.registration.version != *version && !o.artifacts_deleted)
            .flat_map(|o| {
                o.registration
                    .artifacts
                    .iter()
                    .filter_map(|a| a.digest.clone())
            })
            .collect();
        match amis_in_use(&current).await {
            Ok(users) if !users.is_empty() => {
                w.commit().await?;
                done.push(format!(
                    "kept {image} {version} (deprecated): {}",
                    users.join("; ")
                ));
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                w.commit().await?;
                return Err(CatalogError::Refused(e));
            }
        }
        match remove_artifacts(&current, &shared).await {
            Ok(removed) => {
                let change = Action::Delete {
                    image: image.to_string(),
                    version: version.clone(),
                    reason: reason.clone(),
                    removed: removed.clone(),
                };
                w.record(change, actor, key).await?;
                w.commit().await?;
                done.push(format!(
                    "deleted {image} {version}: {reason}; removed {}",
                    removed.join(", ")
                ));
            }
            Err(e) => {
                // The deprecation stands; what was deleted before the
                // failure is gone, and the next prune tries again.
                w.commit().await?;
                return Err(CatalogError::Refused(e));
            }
        }
    }
    Ok(done)
}

/// The launch template versions that still name one of the version's AMIs
/// (in any of its regions): such a version is not deleted.
async fn amis_in_use(v: &crate::catalog::model::Version) -> Result<Vec<String>, String> {
    #[cfg_attr(not(feature = "ami"), allow(unused_mut))]
    let mut users = vec![];
    for a in &v.registration.artifacts {
        if a.kind != "ami" {
            continue;
        }
        #[cfg(feature = "ami")]
        if let Some((region, ami, clients)) =
            crate::builder::ami::artifact(&a.kind, &a.id, a.endpoint.as_deref()).await
        {
            for user in crate::builder::ami::image::launch_template_users(&clients, &ami).await? {
                users.push(format!(
                    "{ami} in {region} is used by launch template {user}"
                ));
            }
            continue;
        }
        return Err(format!(
            "`{}`: this kiln cannot check AMIs (built without the `ami` feature)",
            a.id
        ));
    }
    Ok(users)
}

/// Deletes a version's artifacts, signatures and attestations first;
/// names what it removed (and what was gone already). Kinds without a
/// delete yet fail the prune rather than being skipped silently.
async fn remove_artifacts(
    v: &crate::catalog::model::Version,
    shared: &[String],
) -> Result<Vec<String>, String> {
    let mut removed = vec![];
    for a in &v.registration.artifacts {
        #[cfg(feature = "oci")]
        if let (Some(r), Some(digest)) = (a.id.strip_prefix("registry:"), a.digest.as_deref()) {
            use crate::builder::oci::image;
            use crate::sign::cosign;
            let reference: oci_client::Reference = r.parse().map_err(|e| format!("`{r}`: {e}"))?;
            if shared.iter().any(|d| d == digest) {
                removed.push(format!(
                    "nothing for `{r}`: its digest {digest} is also another version's"
                ));
                continue;
            }
            // cosign's `.sig` and `.att` images are tags next to the image.
            for sidecar in [
                cosign::signature_ref(&reference, digest),
                cosign::attestation_ref(&reference, digest),
            ] {
                if let Some(d) = image::digest_of(&sidecar)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    image::delete_manifest(&sidecar, &d)
                        .await
                        .map_err(|e| e.to_string())?;
                    removed.push(format!("registry:{sidecar}"));
                }
            }
            let existed = image::delete_manifest(&reference, digest)
                .await
                .map_err(|e| e.to_string())?;
            removed.push(format!(
                "registry:{}/{}@{digest}{}",
                reference.registry(),
                reference.repository(),
                if existed { "" } else { " (gone already)" }
            ));
            continue;
        }
        #[cfg(feature = "ami")]
        if let Some((region, ami, clients)) =
            crate::builder::ami::artifact(&a.kind, &a.id, a.endpoint.as_deref()).await
        {
            let snapshots = crate::builder::ami::image::delete(&clients, &ami).await?;
            removed.push(format!(
                "{region}:{ami}{}",
                if snapshots.is_empty() {
                    " (gone already)".to_string()
                } else {
                    format!(" with {}", snapshots.join(", "))
                }
            ));
            continue;
        }
        if a.kind == "qcow2" || a.kind == "raw" {
            let path = std::path::Path::new(a.id.strip_prefix("file:").unwrap_or(&a.id));
            let gone = match std::fs::remove_file(path) {
                Ok(()) => "",
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => " (gone already)",
                Err(e) => return Err(format!("cannot delete `{}`: {e}", path.display())),
            };
            // Its signature and provenance beside it go with it.
            for companion in [
                crate::sign::blob::sig_path(path),
                crate::sign::blob::provenance_path(path),
            ] {
                let _ = std::fs::remove_file(companion);
            }
            removed.push(format!("{}{gone}", path.display()));
            continue;
        }
        return Err(format!(
            "{} {}: deleting `{}` ({}) is not supported yet",
            v.registration.image, v.registration.version, a.id, a.kind
        ));
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::model::{Applied, Registration, State};
    use std::time::{Duration, SystemTime};

    fn family(ages_days: &[u64], channel_on: Option<usize>) -> Family {
        let now = SystemTime::now();
        let times: Vec<String> = ages_days
            .iter()
            .map(|d| {
                humantime::format_rfc3339_millis(now - Duration::from_secs(d * 86400)).to_string()
            })
            .collect();
        let actions: Vec<Action> = (1..=ages_days.len() as u64)
            .map(|b| {
                Action::Register(Registration {
                    image: "web".into(),
                    version: format!("1.0.0+{b}"),
                    build: b,
                    build_id: format!("b{b}"),
                    template_digest: "t".into(),
                    artifacts: vec![],
                })
            })
            .chain(channel_on.map(|b| Action::Promote {
                image: "web".into(),
                version: format!("1.0.0+{b}"),
                channel: "prod".into(),
            }))
            .collect();
        let state = State::replay(actions.iter().enumerate().map(|(i, a)| {
            Applied {
                seq: i as u64 + 1,
                time: times
                    .get(i)
                    .map(String::as_str)
                    .unwrap_or("2026-01-01T00:00:00Z"),
                actor: "me",
                action: a,
            }
        }));
        state.family("web").unwrap().clone()
    }

    fn actions(v: &[Verdict]) -> Vec<String> {
        v.iter()
            .map(|v| match v {
                Verdict::Keep { version, .. } => format!("keep {version}"),
                Verdict::Deprecate { version, .. } => format!("deprecate {version}"),
                Verdict::Delete { version, .. } => format!("delete {version}"),
            })
            .collect()
    }

    #[test]
    fn keep_deprecate_and_delete_never_touch_channel_targets() {
        // Builds 1..=5, 50, 40, 20, 10 and 1 days old; prod on build 1.
        let f = family(&[50, 40, 20, 10, 1], Some(1));
        let r = Retention {
            keep: Some(2),
            max_age: Some(Duration::from_secs(30 * 86400)),
            deprecate_after: Some(Duration::from_secs(15 * 86400)),
        };
        assert_eq!(
            actions(&plan(&f, &r, SystemTime::now())),
            [
                "keep 1.0.0+5",
                "keep 1.0.0+4",
                "deprecate 1.0.0+3",
                "delete 1.0.0+2",
                "keep 1.0.0+1"
            ]
        );
        // `keep` alone deletes everything beyond it.
        let r = Retention {
            keep: Some(3),
            ..Default::default()
        };
        assert_eq!(
            actions(&plan(&f, &r, SystemTime::now())),
            [
                "keep 1.0.0+5",
                "keep 1.0.0+4",
                "keep 1.0.0+3",
                "delete 1.0.0+2",
                "keep 1.0.0+1"
            ]
        );
    }
}
