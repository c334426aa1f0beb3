//! Retention: `[image.retention]` says how many newest versions to keep
//! (`keep`), when older ones are deprecated (`deprecate_after`) and when
//! they are deleted (`max_age`). [`plan`] decides from the catalog alone;
//! [`apply`] deprecates, then deletes each version's artifacts (OCI
//! manifests with their tags and signatures) and records every step in the
//! catalog log. Channel targets are always kept.

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
/// Returns what was done, one line each.
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
        // Checked again under the lock: a channel may have moved since.
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
        // Deleting talks to registries: the deprecation lands first, so a
        // version half-deleted by a failure is never left active.
        w.commit().await?;
        let removed = remove_artifacts(&current)
            .await
            .map_err(CatalogError::Refused)?;
        let mut w = catalog.writer().await?;
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
    Ok(done)
}

/// Deletes a version's artifacts; names what it removed. Kinds without a
/// delete yet fail the prune rather than being skipped silently.
async fn remove_artifacts(v: &crate::catalog::model::Version) -> Result<Vec<String>, String> {
    let mut removed = vec![];
    for a in &v.registration.artifacts {
        #[cfg(feature = "oci")]
        if let (Some(r), Some(digest)) = (a.id.strip_prefix("registry:"), a.digest.as_deref()) {
            use crate::builder::oci::image;
            let reference: oci_client::Reference = r.parse().map_err(|e| format!("`{r}`: {e}"))?;
            for sig in &a.signatures {
                // cosign `.sig` / `.att` images are tags next to the image.
                if let Some(sig_ref) = sig.strip_prefix("registry:") {
                    if let Ok(sr) = sig_ref.parse::<oci_client::Reference>() {
                        if let Some(d) = sr.digest() {
                            image::delete_manifest(&sr, d)
                                .await
                                .map_err(|e| e.to_string())?;
                            removed.push(format!("registry:{sig_ref}"));
                        }
                    }
                }
            }
            image::delete_manifest(&reference, digest)
                .await
                .map_err(|e| e.to_string())?;
            removed.push(format!(
                "registry:{}/{}@{digest}",
                reference.registry(),
                reference.repository()
            ));
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
