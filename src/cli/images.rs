//! `kiln images`: the catalog's versions and channels — list, show,
//! history — and the operator's changes: promote, rollback, deprecate,
//! revoke, and register (a build manifest written without a catalog).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::Exit;
use crate::catalog::{self, Catalog, CatalogError, Operation, State};
use crate::sign::SigningKey;

#[derive(Args, Debug)]
pub struct ImagesArgs {
    #[command(subcommand)]
    pub command: ImagesCommand,
}

#[derive(Subcommand, Debug)]
pub enum ImagesCommand {
    /// Every image family (or one) with its versions, status and channels.
    List {
        image: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One version (or the version a channel points at) in full.
    Show {
        image: String,
        /// A version (`1.4.0+7`) or a channel name.
        version: String,
        #[arg(long)]
        json: bool,
    },
    /// The log entries of an image, or one channel's moves.
    History {
        image: String,
        #[arg(long)]
        channel: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Point a channel at a version (and move its `:<channel>` tag). When
    /// the version's build manifests name a `[build.policy]`, it is
    /// evaluated first and its decision logged (docs/policy.md).
    Promote {
        image: String,
        version: String,
        channel: String,
        /// Promote although the policy denies it; the override and this
        /// reason are logged.
        #[arg(long, value_name = "REASON")]
        override_policy: Option<String>,
        /// Print each artifact's policy input document (one JSON object
        /// per line) and change nothing.
        #[arg(long)]
        print_input: bool,
    },
    /// Point a channel back at its previous target (or `--to VERSION`).
    Rollback {
        image: String,
        channel: String,
        #[arg(long, value_name = "VERSION")]
        to: Option<String>,
    },
    /// Mark a version as no longer recommended.
    Deprecate {
        image: String,
        version: String,
        #[arg(long)]
        reason: String,
    },
    /// Mark a version as unusable: `verify` refuses it from then on.
    Revoke {
        image: String,
        version: String,
        #[arg(long)]
        reason: String,
    },
    /// Register build manifests (one version) written without a catalog.
    Register {
        #[arg(required = true, value_name = "MANIFEST")]
        manifests: Vec<PathBuf>,
        /// Promote the new version to this channel too.
        #[arg(long)]
        channel: Vec<String>,
    },
}

/// Maps a catalog error to its exit code, printing it.
pub(crate) fn fail(e: &CatalogError) -> Exit {
    eprintln!("error: {e}");
    match e {
        CatalogError::BadLocation(_) | CatalogError::Invalid(_) => Exit::BadInput,
        _ => Exit::Failure,
    }
}

pub async fn exec(args: ImagesArgs, state_dir: &Path, catalog: Option<&str>) -> Exit {
    let read_only = matches!(
        args.command,
        ImagesCommand::List { .. } | ImagesCommand::Show { .. } | ImagesCommand::History { .. }
    );
    let opened = if read_only {
        catalog::open_existing(catalog, state_dir).await
    } else {
        catalog::open(catalog, state_dir).await
    };
    let cat = match opened {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let result = match args.command {
        ImagesCommand::List { image, json } => list(&cat, image.as_deref(), json).await,
        ImagesCommand::Show {
            image,
            version,
            json,
        } => show(&cat, &image, &version, json).await,
        ImagesCommand::History {
            image,
            channel,
            json,
        } => history(&cat, &image, channel.as_deref(), json).await,
        ImagesCommand::Promote {
            image,
            version,
            channel,
            override_policy,
            print_input,
        } => promote(&cat, image, version, channel, override_policy, print_input).await,
        ImagesCommand::Rollback { image, channel, to } => {
            let op = Operation::Rollback {
                image: image.clone(),
                channel: channel.clone(),
                to,
            };
            change(&cat, op, Some((image, channel))).await
        }
        ImagesCommand::Deprecate {
            image,
            version,
            reason,
        } => {
            let op = Operation::Deprecate {
                image,
                version,
                reason,
            };
            change(&cat, op, None).await
        }
        ImagesCommand::Revoke {
            image,
            version,
            reason,
        } => {
            let op = Operation::Revoke {
                image: image.clone(),
                version: version.clone(),
                reason,
            };
            match change(&cat, op, None).await {
                Ok(Exit::Success) => Ok(revoked(&cat, &image, &version).await),
                other => other,
            }
        }
        ImagesCommand::Register { manifests, channel } => {
            register(&cat, &manifests, &channel).await
        }
    };
    result.unwrap_or_else(|e| fail(&e))
}

async fn list(cat: &Catalog, image: Option<&str>, json: bool) -> Result<Exit, CatalogError> {
    let snap = cat.snapshot().await?;
    let families: Vec<(&String, &catalog::model::Family)> = snap
        .state
        .images
        .iter()
        .filter(|(n, _)| image.is_none_or(|i| i == n.as_str()))
        .collect();
    if let (Some(i), true) = (image, families.is_empty()) {
        return Err(CatalogError::Refused(format!(
            "no image `{i}` in the catalog"
        )));
    }
    if json {
        let out: serde_json::Map<String, serde_json::Value> = families
            .iter()
            .map(|(n, f)| ((*n).clone(), serde_json::to_value(f).expect("serializes")))
            .collect();
        println!("{}", serde_json::Value::Object(out));
        return Ok(Exit::Success);
    }
    println!(
        "{:<20} {:<16} {:<11} {:<16} {:<24} BY",
        "IMAGE", "VERSION", "STATUS", "CHANNELS", "REGISTERED"
    );
    for (name, f) in families {
        for v in &f.versions {
            println!(
                "{:<20} {:<16} {:<11} {:<16} {:<24} {}",
                name,
                v.registration.version,
                v.status.name(),
                f.channels_of(&v.registration.version).join(","),
                v.registered_at,
                v.registered_by
            );
        }
    }
    Ok(Exit::Success)
}

fn resolve<'a>(
    state: &'a State,
    image: &str,
    version_or_channel: &str,
) -> Result<&'a catalog::model::Version, CatalogError> {
    let f = state
        .family(image)
        .ok_or_else(|| CatalogError::Refused(format!("no image `{image}` in the catalog")))?;
    let v = f.version(version_or_channel).or_else(|| {
        let target = f.channels.get(version_or_channel)?.current.as_deref()?;
        f.version(target)
    });
    v.ok_or_else(|| {
        CatalogError::Refused(format!(
            "`{image}` has no version or channel `{version_or_channel}`"
        ))
    })
}

async fn show(cat: &Catalog, image: &str, which: &str, json: bool) -> Result<Exit, CatalogError> {
    let snap = cat.snapshot().await?;
    let v = resolve(&snap.state, image, which)?;
    let channels = snap
        .state
        .family(image)
        .map(|f| f.channels_of(&v.registration.version))
        .unwrap_or_default();
    if json {
        let mut value = serde_json::to_value(v).expect("serializes");
        value["channels"] = channels.into();
        println!("{value}");
        return Ok(Exit::Success);
    }
    let r = &v.registration;
    println!("{} {}", r.image, r.version);
    println!("  status:      {}", describe_status(&v.status));
    println!("  registered:  {} by {}", v.registered_at, v.registered_by);
    println!(
        "  build:       {} (template {})",
        r.build_id, r.template_digest
    );
    println!("  channels:    {}", channels.join(", "));
    match &v.rescan {
        Some(l) => println!(
            "  rescan:      #{} {} by {}: {}",
            l.seq,
            l.at,
            l.by,
            l.record.summary()
        ),
        None => println!("  rescan:      none logged (`kiln rescan`)"),
    }
    for a in &r.artifacts {
        println!("  artifact     {} {}", a.kind, a.id);
        println!("    job:         {}", a.job);
        println!("    digest:      {}", a.digest.as_deref().unwrap_or("-"));
        println!("    base:        {}", a.base.as_deref().unwrap_or("-"));
        if let Some(p) = &a.parent {
            println!("    parent:      {p}");
        }
        println!("    fingerprint: {}", a.fingerprint);
        println!(
            "    manifest:    {} ({})",
            a.manifest.as_deref().unwrap_or("-"),
            a.manifest_digest.as_deref().unwrap_or("-")
        );
        println!(
            "    signed by:   {}",
            a.signer.as_deref().unwrap_or("(not signed)")
        );
        for s in &a.signatures {
            println!("    signature:   {s}");
        }
    }
    Ok(Exit::Success)
}

pub(crate) fn describe_status(s: &catalog::Status) -> String {
    match s {
        catalog::Status::Active => "active".into(),
        catalog::Status::Deprecated { reason, at, by } => {
            format!("deprecated {at} by {by}: {reason}")
        }
        catalog::Status::Revoked { reason, at, by } => format!("REVOKED {at} by {by}: {reason}"),
        catalog::Status::Deleted { reason, at, by } => format!("deleted {at} by {by}: {reason}"),
    }
}

async fn history(
    cat: &Catalog,
    image: &str,
    channel: Option<&str>,
    json: bool,
) -> Result<Exit, CatalogError> {
    let snap = cat.snapshot().await?;
    if snap.state.family(image).is_none() {
        return Err(CatalogError::Refused(format!(
            "no image `{image}` in the catalog"
        )));
    }
    if let Some(ch) = channel {
        let c = snap
            .state
            .family(image)
            .and_then(|f| f.channels.get(ch))
            .ok_or_else(|| CatalogError::Refused(format!("`{image}` has no channel `{ch}`")))?;
        if json {
            println!("{}", serde_json::to_value(c).expect("serializes"));
        } else {
            for m in &c.history {
                println!(
                    "#{:<6} {}  {:<8} {}  by {}",
                    m.seq, m.at, m.how, m.version, m.by
                );
            }
        }
        return Ok(Exit::Success);
    }
    for e in snap.entries.iter().filter(|e| e.change.image() == image) {
        if json {
            println!("{}", serde_json::to_value(e).expect("serializes"));
        } else {
            println!(
                "#{:<6} {}  {}  by {}",
                e.seq,
                e.time,
                e.change.describe(),
                e.actor
            );
        }
    }
    Ok(Exit::Success)
}

/// `promote`, through the version's policy gate when its manifests name
/// one: the decision is logged before the channel moves (or does not).
async fn promote(
    cat: &Catalog,
    image: String,
    version: String,
    channel: String,
    override_policy: Option<String>,
    print_input: bool,
) -> Result<Exit, CatalogError> {
    use crate::policy::{gate, input::Occasion};
    if override_policy
        .as_deref()
        .is_some_and(|r| r.trim().is_empty())
    {
        return Err(CatalogError::Invalid(
            "`--override-policy` needs a reason".into(),
        ));
    }
    if print_input {
        // Nothing is changed: a read without the lock will do.
        let snap = cat.snapshot().await?;
        let Some((v, channels)) = snap
            .state
            .family(&image)
            .and_then(|f| f.version(&version).map(|v| (v, f.channels_of(&version))))
        else {
            return Err(CatalogError::Refused(format!(
                "`{image}` has no version `{version}` in the catalog"
            )));
        };
        let Some(g) = gate::evaluate_version(v, &channel, Occasion::Promote, &channels)
            .map_err(policy_error)?
        else {
            return Err(CatalogError::Invalid(format!(
                "`{image} {version}`: no build manifest of it names a `[build.policy]`, so there is no policy input"
            )));
        };
        for e in &g.evaluations {
            println!("{}", e.input);
        }
        return Ok(Exit::Success);
    }
    // Judged on the state the catalog's lock holds while the change is
    // recorded: a promotion, rollback or rescan logged meanwhile by
    // someone else cannot leave the decision stale.
    let decide = |state: &State| {
        let gated = match state
            .family(&image)
            .and_then(|f| f.version(&version).map(|v| (v, f.channels_of(&version))))
        {
            Some((v, channels)) => {
                gate::evaluate_version(v, &channel, Occasion::Promote, &channels)
                    .map_err(policy_error)?
            }
            None => None,
        };
        let Some(g) = gated else {
            if override_policy.is_some() {
                return Err(CatalogError::Invalid(format!(
                    "`--override-policy`: no build manifest of `{image} {version}` names a `[build.policy]`; nothing to override"
                )));
            }
            test_pause();
            return Ok(None);
        };
        for e in &g.evaluations {
            for w in &e.verdict.warnings {
                eprintln!("warning: policy {}: {} ({})", w.rule, w.message, e.job);
            }
        }
        let d = g.decision(
            &image,
            &version,
            &channel,
            Occasion::Promote,
            override_policy.as_deref(),
        );
        if d.decision == catalog::model::Decision::Override {
            eprintln!(
                "warning: promoting against the policy (override: {}):\n{}",
                d.reason.as_deref().unwrap_or_default(),
                gate::describe_denials(&d.denials)
            );
        }
        test_pause();
        Ok(Some(d))
    };
    let op = Operation::Promote {
        image: image.clone(),
        version: version.clone(),
        channel: channel.clone(),
    };
    change_gated(cat, op, decide, Some((image.clone(), channel.clone()))).await
}

/// Records an operator's change; a moved channel's pointers follow.
async fn change(
    cat: &Catalog,
    op: Operation,
    moved: Option<(String, String)>,
) -> Result<Exit, CatalogError> {
    change_gated(cat, op, |_| Ok(None), moved).await
}

/// [`change`] through a policy gate: `decide` judges the change on the
/// state under the catalog's lock ([`Catalog::apply_gated`]).
async fn change_gated<F>(
    cat: &Catalog,
    op: Operation,
    decide: F,
    moved: Option<(String, String)>,
) -> Result<Exit, CatalogError>
where
    F: FnOnce(&State) -> Result<Option<catalog::model::PolicyDecision>, CatalogError>,
{
    let (key, note) = cat.operator_key_noting()?;
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    let mut gated = None;
    let entry = cat
        .apply_gated(
            op,
            |state: &State| {
                let d = decide(state)?;
                gated = d.as_ref().map(|d| d.decision.name());
                Ok(d)
            },
            &catalog::actor(),
            &key,
        )
        .await?;
    if let Some(d) = gated {
        println!("#{} policy {d}", entry.seq - 1);
    }
    println!("#{} {}", entry.seq, entry.change.describe());
    if let Some((image, channel)) = moved {
        return Ok(publish(cat, &image, &channel, &key).await);
    }
    Ok(Exit::Success)
}

/// Carries a revocation to the artifacts (AMIs are deprecated in EC2).
async fn revoked(cat: &Catalog, image: &str, version: &str) -> Exit {
    let snap = match cat.snapshot().await {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let Some(f) = snap.state.family(image) else {
        return Exit::Success;
    };
    let Some(v) = f.version(version) else {
        return Exit::Success;
    };
    // Revoking does not move channels (that is the operator's choice).
    let channels = f.channels_of(&v.registration.version);
    if !channels.is_empty() {
        let list = channels
            .iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", ");
        eprintln!(
            "warning: {} {} is revoked, but channel{} {list} still point{} at it: `kiln verify` refuses it from now on; move {} with `kiln images rollback {image} CHANNEL` or `kiln images promote {image} VERSION CHANNEL`",
            image,
            v.registration.version,
            if channels.len() == 1 { "" } else { "s" },
            if channels.len() == 1 { "s" } else { "" },
            if channels.len() == 1 { "it" } else { "them" },
        );
    }
    // The head first: it is what keeps the revocation from being cut
    // from the log unnoticed, whatever happens to the deprecation.
    let head = match catalog::chain::head(&snap.entries) {
        Some(head) => match operator_key(cat) {
            Ok(key) => catalog::head::publish(v, &head, &key).await,
            Err(e) => Err(e),
        },
        None => Ok(Default::default()),
    };
    let published = match (head, catalog::publish::revoked(v).await) {
        (Ok(mut h), Ok(p)) => {
            h.done.extend(p.done);
            h.not_supported.extend(p.not_supported);
            Ok(h)
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    match published {
        Ok(p) => {
            for line in p.done.iter().chain(&p.not_supported) {
                println!("revoked: {line}");
            }
            Exit::Success
        }
        Err(e) => {
            eprintln!("error: the catalog revoked {image} {version}, but {e}");
            Exit::Failure
        }
    }
}

/// Moves a channel's pointers to where the catalog says it points.
async fn publish(cat: &Catalog, image: &str, channel: &str, key: &SigningKey) -> Exit {
    let snap = match cat.snapshot().await {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let Ok(v) = resolve(&snap.state, image, channel) else {
        return Exit::Success;
    };
    let mut published = catalog::publish::channel(v, channel, key).await;
    if let (Ok(p), Some(head)) = (&mut published, catalog::chain::head(&snap.entries)) {
        match catalog::head::publish(v, &head, key).await {
            Ok(h) => {
                p.done.extend(h.done);
                p.not_supported.extend(h.not_supported);
            }
            Err(e) => published = Err(e),
        }
    }
    match published {
        Ok(p) => {
            for d in p.done {
                println!("{channel}: {d}");
            }
            for n in p.not_supported {
                println!("{channel}: {n}");
            }
            Exit::Success
        }
        Err(e) => {
            eprintln!("error: the catalog moved `{channel}`, but {e}");
            Exit::Failure
        }
    }
}

/// Registers the artifacts of build manifests as one new version.
async fn register(
    cat: &Catalog,
    manifests: &[PathBuf],
    channels: &[String],
) -> Result<Exit, CatalogError> {
    let mut docs = vec![];
    for path in manifests {
        let bytes = fs_err::read(path).map_err(|e| CatalogError::Io {
            what: "cannot read the manifest".into(),
            source: e,
        })?;
        let doc: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            CatalogError::Invalid(format!("`{}` is not a build manifest: {e}", path.display()))
        })?;
        let digest = format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
        );
        docs.push((path, doc, digest));
    }
    let field = |d: &serde_json::Value, p: &str| {
        d.pointer(p)
            .and_then(|v| v.as_str())
            .map(String::from)
            .unwrap_or_default()
    };
    let (_, first, _) = &docs[0];
    let image = field(first, "/image/name");
    let semver = field(first, "/image/version");
    if !image.is_empty() && !catalog::model::is_valid_name(&image) {
        return Err(CatalogError::Invalid(format!(
            "`{}` names the image `{image}`, which is not a valid image name",
            docs[0].0.display()
        )));
    }
    if image.is_empty() || semver.is_empty() {
        return Err(CatalogError::Invalid(format!(
            "`{}` names no image (`image.name`, `image.version`): not a kiln build manifest",
            docs[0].0.display()
        )));
    }
    for (path, d, _) in &docs {
        if field(d, "/image/name") != image || field(d, "/image/version") != semver {
            return Err(CatalogError::Invalid(format!(
                "`{}` is of another image or version than `{}`",
                path.display(),
                docs[0].0.display()
            )));
        }
    }
    for ch in channels {
        catalog::check_channel(ch)?;
    }
    let (key, note) = cat.operator_key_noting()?;
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    let actor = catalog::actor();
    let mut w = cat.writer().await?;
    let build = w.state.family(&image).map_or(1, |f| f.next_build());
    let version = format!("{semver}+{build}");
    let artifacts = docs
        .iter()
        .map(|(path, d, digest)| catalog::ArtifactRecord {
            job: field(d, "/job"),
            kind: field(d, "/artifact/kind"),
            id: field(d, "/artifact/id"),
            digest: d
                .pointer("/artifact/digest")
                .and_then(|v| v.as_str())
                .map(String::from),
            base: d
                .pointer("/base")
                .and_then(|v| v.as_str())
                .map(String::from),
            endpoint: d
                .pointer("/artifact/endpoint")
                .and_then(|v| v.as_str())
                .map(String::from),
            parent: None,
            fingerprint: field(d, "/fingerprint"),
            manifest_digest: Some(digest.clone()),
            manifest: Some(
                std::path::absolute(path)
                    .unwrap_or_else(|_| (*path).clone())
                    .display()
                    .to_string(),
            ),
            signed_manifest_digest: None,
            signatures: d
                .pointer("/signatures")
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            signer: None,
        })
        .collect();
    let change = catalog::Action::Register(catalog::Registration {
        image: image.clone(),
        version: version.clone(),
        build,
        build_id: field(first, "/build_id"),
        template_digest: field(first, "/template/digest"),
        artifacts,
    });
    let seq = w.record(change, &actor, &key).await?.seq;
    let mut promoted = vec![];
    let mut denied = vec![];
    for ch in channels {
        // The manifests' `[build.policy]`, as a build's channels are gated.
        let gate = match w.state.family(&image).and_then(|f| {
            f.version(&version)
                .map(|v| (v.clone(), f.channels_of(&version)))
        }) {
            Some((v, now)) => crate::policy::gate::evaluate_version(
                &v,
                ch,
                crate::policy::input::Occasion::Register,
                &now,
            )
            .map_err(policy_error)?,
            None => None,
        };
        if let Some(g) = gate {
            let d = g.decision(
                &image,
                &version,
                ch,
                crate::policy::input::Occasion::Register,
                None,
            );
            let deny = d.decision == catalog::model::Decision::Deny;
            let text = crate::policy::gate::describe_denials(&d.denials);
            let at = w
                .record(catalog::Action::Policy(d), &actor, &key)
                .await?
                .seq;
            if deny {
                denied.push(format!(
                    "not promoted to `{ch}`: denied by policy (decision #{at} in the catalog log):\n{text}"
                ));
                continue;
            }
        }
        let promote = catalog::Action::Promote {
            image: image.clone(),
            version: version.clone(),
            channel: ch.clone(),
        };
        w.record(promote, &actor, &key).await?;
        promoted.push(ch.clone());
    }
    w.commit().await?;
    println!("#{seq} registered {image} {version}");
    let mut exit = Exit::Success;
    for ch in &promoted {
        if publish(cat, &image, ch, &key).await != Exit::Success {
            exit = Exit::Failure;
        }
    }
    if !denied.is_empty() {
        eprintln!("error: {}", denied.join("\n"));
        exit = Exit::Failure;
    }
    Ok(exit)
}

/// Test hook (debug builds only): with `KILN_TEST_PROMOTE_PAUSE=DIR`, a
/// promotion that has decided (under the catalog's lock) creates `DIR/reached` and waits (a minute
/// at most) for `DIR/go`, so a test can race another writer against it.
fn test_pause() {
    #[cfg(debug_assertions)]
    if let Some(dir) = std::env::var_os("KILN_TEST_PROMOTE_PAUSE") {
        let dir = std::path::PathBuf::from(dir);
        let _ = std::fs::write(dir.join("reached"), "");
        let start = std::time::Instant::now();
        while !dir.join("go").exists() && start.elapsed() < std::time::Duration::from_secs(60) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// A policy that cannot be used is bad input (exit 2); evidence that
/// cannot be read or an evaluation that fails refuses the change (exit 1).
fn policy_error(e: crate::policy::PolicyError) -> CatalogError {
    match e {
        crate::policy::PolicyError::Input(m) => CatalogError::Refused(m),
        e @ crate::policy::PolicyError::Eval(_) => CatalogError::Refused(e.to_string()),
        other => CatalogError::Invalid(other.to_string()),
    }
}

/// The operator's key, as a message for the user.
fn operator_key(cat: &Catalog) -> Result<SigningKey, String> {
    cat.operator_key().map_err(|e| e.to_string())
}
