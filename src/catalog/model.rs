//! What the catalog knows, derived from its log: image families, their
//! versions (`1.4.0+7`: the template's semver plus a build number the
//! catalog assigns), each version's artifacts and status, and channels
//! with their history. Nothing here is stored: [`State::replay`] folds
//! the log's entries, so the log stays the only record and nothing is
//! ever updated in place.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use super::rescan::{LoggedRescan, RescanRecord};
pub use crate::template::schema::is_valid_name;

/// One change to the catalog, as recorded in a log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// A new version of `image`.
    Register(Registration),
    /// `channel` now points at `version`.
    Promote {
        image: String,
        version: String,
        channel: String,
    },
    /// `channel` goes back from `from` to `to` (an earlier target).
    Rollback {
        image: String,
        channel: String,
        from: String,
        to: String,
    },
    /// Still usable, no longer recommended.
    Deprecate {
        image: String,
        version: String,
        reason: String,
    },
    /// Must not be used: `verify` refuses it and channels cannot be moved
    /// to it (those already there stay until someone moves them).
    Revoke {
        image: String,
        version: String,
        reason: String,
    },
    /// Its artifacts were deleted (`kiln prune`); what was removed.
    Delete {
        image: String,
        version: String,
        reason: String,
        removed: Vec<String>,
    },
    /// A policy gate's decision before `channel` moved (or did not).
    Policy(PolicyDecision),
    /// `kiln rescan` of a version: feeds, VEX, findings (the gate reads
    /// the latest).
    Rescan(RescanRecord),
}

/// What a policy gate decided (docs/policy.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    Deny,
    /// Denied, and promoted all the same by an operator who gave a reason.
    Override,
}

impl Decision {
    pub fn name(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Override => "override",
        }
    }
}

/// A policy file as evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyFileRecord {
    pub path: String,
    /// `sha256:` of its content.
    pub digest: String,
}

/// One denial: the artifact's job, the rule and its message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionFinding {
    pub artifact: String,
    pub rule: String,
    pub message: String,
}

/// A policy gate's decision about moving `channel` to `version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyDecision {
    pub image: String,
    pub version: String,
    pub channel: String,
    /// `promote` (`kiln images promote`) or `register` (a build's channels).
    pub occasion: String,
    pub decision: Decision,
    /// The package evaluated (`data.kiln.promote`).
    pub entrypoint: String,
    pub policies: Vec<PolicyFileRecord>,
    /// `sha256:` of each artifact's input document (canonical JSON).
    pub inputs: Vec<String>,
    pub denials: Vec<DecisionFinding>,
    /// The operator's reason, for an override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Action {
    pub fn image(&self) -> &str {
        match self {
            Action::Register(r) => &r.image,
            Action::Promote { image, .. }
            | Action::Rollback { image, .. }
            | Action::Deprecate { image, .. }
            | Action::Revoke { image, .. }
            | Action::Delete { image, .. } => image,
            Action::Policy(d) => &d.image,
            Action::Rescan(r) => &r.image,
        }
    }

    /// A one-line description for people.
    pub fn describe(&self) -> String {
        match self {
            Action::Register(r) => format!(
                "register {} {} ({} artifact{})",
                r.image,
                r.version,
                r.artifacts.len(),
                if r.artifacts.len() == 1 { "" } else { "s" }
            ),
            Action::Promote {
                image,
                version,
                channel,
            } => format!("promote {image} {version} to {channel}"),
            Action::Rollback {
                image,
                channel,
                from,
                to,
            } => format!("rollback {image} {channel} from {from} to {to}"),
            Action::Deprecate {
                image,
                version,
                reason,
            } => format!("deprecate {image} {version}: {reason}"),
            Action::Revoke {
                image,
                version,
                reason,
            } => format!("revoke {image} {version}: {reason}"),
            Action::Delete {
                image,
                version,
                reason,
                removed,
            } => format!(
                "delete {image} {version}: {reason} (removed {})",
                if removed.is_empty() {
                    "nothing".to_string()
                } else {
                    removed.join(", ")
                }
            ),
            Action::Policy(d) => {
                let mut text = format!(
                    "policy {} {} {} to {} ({}, {})",
                    d.decision.name(),
                    d.image,
                    d.version,
                    d.channel,
                    d.occasion,
                    d.entrypoint
                );
                for f in &d.denials {
                    text.push_str(&format!("; {}: {} ({})", f.rule, f.message, f.artifact));
                }
                if let Some(r) = &d.reason {
                    text.push_str(&format!("; override reason: {r}"));
                }
                text
            }
            Action::Rescan(r) => {
                let signed: Vec<&str> = r
                    .vex
                    .iter()
                    .filter_map(|v| v.signed_by.as_deref())
                    .collect();
                format!(
                    "rescan {} {}: {} ({} feed{}, {} VEX document{}{})",
                    r.image,
                    r.version,
                    r.summary(),
                    r.feeds.len(),
                    if r.feeds.len() == 1 { "" } else { "s" },
                    r.vex.len(),
                    if r.vex.len() == 1 { "" } else { "s" },
                    if signed.is_empty() {
                        String::new()
                    } else {
                        format!(", signed by {}", signed.join(", "))
                    }
                )
            }
        }
    }
}

/// A version's registration: what was built, from what, by which build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    pub image: String,
    /// `SEMVER+BUILD`, e.g. `1.4.0+7`.
    pub version: String,
    /// The build number the catalog assigned (per image family, from 1).
    pub build: u64,
    pub build_id: String,
    /// `sha256:` of the template.
    pub template_digest: String,
    pub artifacts: Vec<ArtifactRecord>,
}

/// One artifact of a version (one per source and output).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    /// The job (`build.type.name`) that made it.
    pub job: String,
    /// `oci`, `qcow2`, `raw`, `ami`, …
    pub kind: String,
    /// Reference, path or id (`registry:host/repo:tag`, …).
    pub id: String,
    pub digest: Option<String>,
    /// The resolved base (`…@sha256:…`, an AMI id).
    pub base: Option<String>,
    /// The AWS-compatible endpoint an AMI lives behind, when not AWS's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The kiln version the base is, when it is itself a catalogued image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The job's input fingerprint.
    pub fingerprint: String,
    /// `sha256:` of the build manifest file, and where it was written.
    pub manifest_digest: Option<String>,
    pub manifest: Option<String>,
    /// `sha256:` of the signed manifest's DSSE envelope, when signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_manifest_digest: Option<String>,
    /// Signatures made for it (e.g. the cosign `.sig` reference).
    #[serde(default)]
    pub signatures: Vec<String>,
    /// Key id (`sha256:` of the public key) of the build's signing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
}

/// Whether a version may be used.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    Active,
    Deprecated {
        reason: String,
        at: String,
        by: String,
    },
    Revoked {
        reason: String,
        at: String,
        by: String,
    },
    /// Its artifacts are gone (`kiln prune`); the record stays.
    Deleted {
        reason: String,
        at: String,
        by: String,
    },
}

impl Status {
    /// Statuses only ever get stronger: a revoked version stays revoked
    /// (so `verify` keeps refusing copies of it) even once deleted.
    fn rank(&self) -> u8 {
        match self {
            Status::Active => 0,
            Status::Deprecated { .. } => 1,
            Status::Deleted { .. } => 2,
            Status::Revoked { .. } => 3,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Deprecated { .. } => "deprecated",
            Status::Revoked { .. } => "revoked",
            Status::Deleted { .. } => "deleted",
        }
    }
}

/// A version with what happened to it since.
#[derive(Debug, Clone, Serialize)]
pub struct Version {
    #[serde(flatten)]
    pub registration: Registration,
    pub status: Status,
    pub registered_at: String,
    pub registered_by: String,
    /// Position of its register entry in the log (1-based).
    pub seq: u64,
    /// `kiln prune` removed its artifacts (whatever its status says).
    pub artifacts_deleted: bool,
    /// Its latest `kiln rescan`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rescan: Option<LoggedRescan>,
}

impl Version {
    pub fn is_active(&self) -> bool {
        self.status == Status::Active
    }
}

/// One move of a channel.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelMove {
    pub version: String,
    /// `promote` or `rollback`.
    pub how: String,
    pub at: String,
    pub by: String,
    pub seq: u64,
}

/// A channel: where it points now and every move it made.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Channel {
    pub current: Option<String>,
    pub history: Vec<ChannelMove>,
}

/// An image family.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Family {
    pub versions: Vec<Version>,
    pub channels: BTreeMap<String, Channel>,
}

impl Family {
    pub fn version(&self, v: &str) -> Option<&Version> {
        self.versions.iter().find(|x| x.registration.version == v)
    }

    fn version_mut(&mut self, v: &str) -> Option<&mut Version> {
        self.versions
            .iter_mut()
            .find(|x| x.registration.version == v)
    }

    /// Moves a version to a stronger status (never back: see `Status::rank`).
    fn set_status(&mut self, version: &str, status: Status) {
        if let Some(v) = self.version_mut(version) {
            if status.rank() > v.status.rank() {
                v.status = status;
            }
        }
    }

    /// The next build number.
    pub fn next_build(&self) -> u64 {
        self.versions
            .iter()
            .map(|v| v.registration.build)
            .max()
            .unwrap_or(0)
            + 1
    }

    /// Channels pointing at `version`.
    pub fn channels_of(&self, version: &str) -> Vec<String> {
        self.channels
            .iter()
            .filter(|(_, c)| c.current.as_deref() == Some(version))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Where `channel` pointed before its current target, skipping
    /// versions revoked or deleted since: what a rollback goes back to.
    pub fn previous_target(&self, channel: &str) -> Option<&str> {
        let c = self.channels.get(channel)?;
        let current = c.current.as_deref()?;
        c.history
            .iter()
            .rev()
            .map(|m| m.version.as_str())
            .filter(|v| *v != current)
            .find(|v| {
                self.version(v).is_some_and(|x| {
                    !matches!(x.status, Status::Revoked { .. } | Status::Deleted { .. })
                })
            })
    }
}

/// A log entry as the state needs it.
pub struct Applied<'a> {
    pub seq: u64,
    pub time: &'a str,
    pub actor: &'a str,
    pub action: &'a Action,
}

/// The whole catalog, replayed from the log.
#[derive(Debug, Clone, Default, Serialize)]
pub struct State {
    pub images: BTreeMap<String, Family>,
}

impl State {
    /// Folds entries in log order. Entries that name what does not exist
    /// (possible only in a tampered log) are ignored here; `audit` reports
    /// the broken chain.
    pub fn replay<'a>(entries: impl IntoIterator<Item = Applied<'a>>) -> State {
        let mut state = State::default();
        for e in entries {
            state.apply(&e);
        }
        state
    }

    /// Applies one more entry.
    pub fn apply(&mut self, e: &Applied<'_>) {
        let family = self.images.entry(e.action.image().to_string()).or_default();
        let by = e.actor.to_string();
        let at = e.time.to_string();
        match e.action {
            Action::Register(r) => family.versions.push(Version {
                registration: r.clone(),
                status: Status::Active,
                registered_at: at,
                registered_by: by,
                seq: e.seq,
                artifacts_deleted: false,
                rescan: None,
            }),
            Action::Promote {
                version, channel, ..
            }
            | Action::Rollback {
                to: version,
                channel,
                ..
            } => {
                let how = match e.action {
                    Action::Promote { .. } => "promote",
                    _ => "rollback",
                };
                let c = family.channels.entry(channel.clone()).or_default();
                c.current = Some(version.clone());
                c.history.push(ChannelMove {
                    version: version.clone(),
                    how: how.into(),
                    at,
                    by,
                    seq: e.seq,
                });
            }
            Action::Deprecate {
                version, reason, ..
            } => family.set_status(
                version,
                Status::Deprecated {
                    reason: reason.clone(),
                    at,
                    by,
                },
            ),
            Action::Revoke {
                version, reason, ..
            } => family.set_status(
                version,
                Status::Revoked {
                    reason: reason.clone(),
                    at,
                    by,
                },
            ),
            Action::Delete {
                version, reason, ..
            } => {
                if let Some(v) = family.version_mut(version) {
                    v.artifacts_deleted = true;
                }
                family.set_status(
                    version,
                    Status::Deleted {
                        reason: reason.clone(),
                        at,
                        by,
                    },
                )
            }
            // A decision moves nothing: the promote entry after it does.
            Action::Policy(_) => {}
            Action::Rescan(r) => {
                if let Some(v) = family.version_mut(&r.version) {
                    v.rescan = Some(LoggedRescan {
                        seq: e.seq,
                        at,
                        by,
                        record: r.clone(),
                    });
                }
            }
        }
    }

    pub fn family(&self, image: &str) -> Option<&Family> {
        self.images.get(image)
    }

    /// The version an artifact digest belongs to (the first registered).
    pub fn by_digest(&self, digest: &str) -> Option<(&str, &Version)> {
        self.all_by_digest(digest).into_iter().next()
    }

    /// Every version with an artifact (or manifest) of this digest: the
    /// same image may be registered more than once.
    pub fn all_by_digest(&self, digest: &str) -> Vec<(&str, &Version)> {
        self.images
            .iter()
            .flat_map(|(name, f)| {
                f.versions
                    .iter()
                    .filter(|v| {
                        v.registration.artifacts.iter().any(|a| {
                            a.digest.as_deref() == Some(digest)
                                || a.manifest_digest.as_deref() == Some(digest)
                                || a.signed_manifest_digest.as_deref() == Some(digest)
                        })
                    })
                    .map(move |v| (name.as_str(), v))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(build: u64) -> Action {
        Action::Register(Registration {
            image: "web".into(),
            version: format!("1.0.0+{build}"),
            build,
            build_id: format!("b{build}"),
            template_digest: "sha256:t".into(),
            artifacts: vec![],
        })
    }

    fn promote(v: &str, c: &str) -> Action {
        Action::Promote {
            image: "web".into(),
            version: v.into(),
            channel: c.into(),
        }
    }

    fn replay(actions: &[Action]) -> State {
        State::replay(actions.iter().enumerate().map(|(i, a)| Applied {
            seq: i as u64 + 1,
            time: "t",
            actor: "me",
            action: a,
        }))
    }

    #[test]
    fn channels_move_and_roll_back_past_revoked_versions() {
        let revoke = Action::Revoke {
            image: "web".into(),
            version: "1.0.0+2".into(),
            reason: "bad".into(),
        };
        let s = replay(&[
            reg(1),
            reg(2),
            reg(3),
            promote("1.0.0+1", "prod"),
            promote("1.0.0+2", "prod"),
            promote("1.0.0+3", "prod"),
            revoke,
        ]);
        let f = s.family("web").unwrap();
        assert_eq!(f.next_build(), 4);
        assert_eq!(f.channels["prod"].current.as_deref(), Some("1.0.0+3"));
        assert_eq!(f.channels["prod"].history.len(), 3);
        // 1.0.0+2 is revoked: a rollback goes back to 1.0.0+1.
        assert_eq!(f.previous_target("prod"), Some("1.0.0+1"));
        assert_eq!(f.version("1.0.0+2").unwrap().status.name(), "revoked");
        assert_eq!(f.channels_of("1.0.0+3"), vec!["prod".to_string()]);
    }

    #[test]
    fn a_revoked_version_is_not_undone_by_deprecation() {
        let s = replay(&[
            reg(1),
            Action::Revoke {
                image: "web".into(),
                version: "1.0.0+1".into(),
                reason: "cve".into(),
            },
            Action::Deprecate {
                image: "web".into(),
                version: "1.0.0+1".into(),
                reason: "old".into(),
            },
        ]);
        assert_eq!(
            s.family("web").unwrap().versions[0].status.name(),
            "revoked"
        );
        // Deleting its artifacts keeps it revoked, so copies still fail `verify`.
        let mut s = s;
        s.apply(&Applied {
            seq: 4,
            time: "t",
            actor: "me",
            action: &Action::Delete {
                image: "web".into(),
                version: "1.0.0+1".into(),
                reason: "retention".into(),
                removed: vec![],
            },
        });
        let v = &s.family("web").unwrap().versions[0];
        assert_eq!(v.status.name(), "revoked");
        assert!(v.artifacts_deleted);
    }
}
