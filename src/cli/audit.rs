//! `kiln audit`: verifies the catalog's whole log — hash chain and every
//! signature — and tells what was built, from what, signed by whom,
//! promoted when and by whom, and revoked why. Exit 1 at the first broken
//! link, naming its position.

use std::path::{Path, PathBuf};

use clap::Args;

use super::images::fail;
use super::Exit;
use crate::catalog::{self, Action};

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Only entries signed by these public keys (PEM) are accepted
    /// (repeat it for several keys).
    #[arg(long = "key", value_name = "PUB")]
    pub keys: Vec<PathBuf>,
    /// A file of trusted public keys (PEM blocks one after another; `#`
    /// lines are comments), added to the `--key`s.
    #[arg(long, value_name = "FILE")]
    pub keyring: Option<PathBuf>,
    /// The head an earlier audit printed (`SEQ:HASH`): that entry must
    /// still be in the log, unchanged — a log cut short or rewritten
    /// since is refused.
    #[arg(long, value_name = "SEQ:HASH")]
    pub expect_head: Option<String>,
    /// One JSON object: the verdict and every entry.
    #[arg(long)]
    pub json: bool,
}

pub async fn exec(args: AuditArgs, state_dir: &Path, catalog: Option<&str>) -> Exit {
    // Trusted keys: key id → where it was given.
    let mut trusted_from: std::collections::BTreeMap<String, String> = Default::default();
    for k in &args.keys {
        match std::fs::read_to_string(k) {
            Ok(pem) => {
                trusted_from.insert(same_key_id(&pem), format!("`{}`", k.display()));
            }
            Err(e) => {
                eprintln!("error: cannot read the public key `{}`: {e}", k.display());
                return Exit::BadInput;
            }
        }
    }
    if let Some(ring) = &args.keyring {
        match keyring(ring) {
            Ok(keys) => {
                for (n, pem) in keys.iter().enumerate() {
                    trusted_from.insert(
                        same_key_id(pem),
                        format!("key {} of keyring `{}`", n + 1, ring.display()),
                    );
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                return Exit::BadInput;
            }
        }
    }
    let trusted: Vec<String> = trusted_from.keys().cloned().collect();
    let cat = match catalog::open_existing(catalog, state_dir).await {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let stored = match cat.stored().await {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    // The chain first ("broken" is for a broken chain or signature); then
    // whether each entry's signer is one the auditor trusts.
    let mut verdict = catalog::chain::verify(&stored, &[]);
    let mut untrusted = None;
    if let Ok(entries) = &verdict {
        if !trusted.is_empty() {
            untrusted = entries
                .iter()
                .find(|e| !trusted_from.contains_key(&same_key_id(&e.signature.public_key)))
                .map(|e| (e.seq, e.signature.key_id.clone()));
        }
    }
    if let (Ok(entries), Some(head)) = (&verdict, &args.expect_head) {
        match catalog::chain::check_head(entries, head) {
            Ok(Ok(())) => {}
            Ok(Err(broken)) => verdict = Err(broken),
            Err(e) => {
                eprintln!("error: {e}");
                return Exit::BadInput;
            }
        }
    }
    let own_key = std::fs::read_to_string(cat.own_key_path().with_extension("pub"))
        .ok()
        .map(|pem| same_key_id(&pem));
    let signers = signers(
        match &verdict {
            Ok(entries) => entries,
            Err(_) => &[],
        },
        &trusted_from,
        own_key.as_deref(),
        &cat.own_key_path(),
    );
    let head = match &verdict {
        Ok(entries) => catalog::chain::head(entries),
        Err(_) => None,
    };
    // What can be shown: everything up to the break.
    let readable: Vec<catalog::Entry> = match &verdict {
        Ok(entries) => entries.clone(),
        Err(b) => stored[..b.position - 1]
            .iter()
            .filter_map(|s| catalog::Entry::parse(s).ok())
            .collect(),
    };
    if args.json {
        let out = serde_json::json!({
            "catalog": cat.location,
            "entries": stored.len(),
            "verified": verdict.is_ok(),
            "broken": verdict.as_ref().err(),
            "head": head,
            "signers": signers,
            "trusted_keys_given": !trusted.is_empty(),
            "untrusted": untrusted.as_ref().map(|(seq, key)| serde_json::json!({ "entry": seq, "key_id": key })),
            "log": readable,
        });
        println!("{out}");
        if let Some((seq, key)) = &untrusted {
            eprintln!("error: entry {seq} is signed by key {key}, which is not trusted");
        }
    } else {
        println!("catalog {}: {} entries", cat.location, stored.len());
        for e in &readable {
            print_entry(e);
        }
        match &verdict {
            Ok(_) => {
                println!(
                    "verified: the chain of {} entries is intact and every entry's signature verifies{}",
                    stored.len(),
                    match (&untrusted, trusted.is_empty()) {
                        (_, true) => String::new(),
                        (None, false) => " with a trusted key".into(),
                        (Some(_), false) => "; but not every signer is trusted (below)".into(),
                    }
                );
                println!("signed by:");
                for s in &signers {
                    println!(
                        "  key {} ({}): {}",
                        short(s["key_id"].as_str().unwrap_or_default()),
                        s["who"].as_str().unwrap_or_default(),
                        s["signed"].as_str().unwrap_or_default()
                    );
                }
                if let Some(h) = &head {
                    println!("head: {h} (pin it: `kiln audit --expect-head {h}` later refuses a log cut short or rewritten)");
                }
            }
            Err(b) => eprintln!("error: the catalog log is broken at {b}"),
        }
        if let Some((seq, key)) = &untrusted {
            eprintln!(
                "error: entry {seq} is signed by key {key}, which is not trusted (trusted: {}){}",
                trusted_from
                    .values()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                if own_key.is_some()
                    && readable
                        .iter()
                        .find(|e| &e.signature.key_id == key)
                        .map(|e| same_key_id(&e.signature.public_key))
                        == own_key
                {
                    format!("; it is kiln's own catalog key, which signs command-line changes: trust it with `--key {}`", cat.own_key_path().with_extension("pub").display())
                } else {
                    String::new()
                }
            );
        }
    }
    if verdict.is_ok() && trusted.is_empty() {
        eprintln!("warning: no `--key` given: each entry was checked with the key it carries, so a log rewritten and re-signed as a whole would pass too; give the trusted public keys with `--key`");
    }
    if verdict.is_ok() && untrusted.is_none() {
        Exit::Success
    } else {
        Exit::Failure
    }
}

/// A key id that does not depend on the PEM's line endings (`kiln
/// keygen` writes CRLF, other tools LF): for comparing keys only; entries
/// are named by their recorded key id.
fn same_key_id(pem: &str) -> String {
    catalog::chain::key_id(&pem.replace("\r\n", "\n"))
}

/// The public keys (PEM blocks) of a keyring file.
fn keyring(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the keyring `{}`: {e}", path.display()))?;
    let mut keys = vec![];
    let mut current: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        match &mut current {
            None if line.is_empty() || line.starts_with('#') => {}
            None if line == "-----BEGIN PUBLIC KEY-----" => current = Some(format!("{line}\n")),
            None => {
                return Err(format!(
                    "{}:{}: expected a `-----BEGIN PUBLIC KEY-----` block, found `{line}`",
                    path.display(),
                    n + 1
                ))
            }
            Some(pem) => {
                pem.push_str(line);
                pem.push('\n');
                if line == "-----END PUBLIC KEY-----" {
                    let pem = current.take().expect("in a block");
                    sigstore::crypto::CosignVerificationKey::try_from_pem(pem.as_bytes()).map_err(
                        |e| format!("{}:{}: not a public key: {e}", path.display(), n + 1),
                    )?;
                    keys.push(pem);
                }
            }
        }
    }
    if current.is_some() {
        return Err(format!(
            "{}: a key block is not closed (`-----END PUBLIC KEY-----`)",
            path.display()
        ));
    }
    if keys.is_empty() {
        return Err(format!("the keyring `{}` holds no key", path.display()));
    }
    Ok(keys)
}

/// Each key that signed entries: who it is (a trusted key and where it
/// was given, kiln's own catalog key, or unknown) and what it signed.
fn signers(
    entries: &[catalog::Entry],
    trusted: &std::collections::BTreeMap<String, String>,
    own_key: Option<&str>,
    own_path: &Path,
) -> Vec<serde_json::Value> {
    let mut by_key: std::collections::BTreeMap<
        &str,
        std::collections::BTreeMap<&'static str, Vec<u64>>,
    > = Default::default();
    let mut pems: std::collections::BTreeMap<&str, String> = Default::default();
    for e in entries {
        let what = match &e.change {
            Action::Register(_) => "register",
            Action::Promote { .. } => "promote",
            Action::Rollback { .. } => "rollback",
            Action::Deprecate { .. } => "deprecate",
            Action::Revoke { .. } => "revoke",
            Action::Delete { .. } => "delete",
            Action::Policy(_) => "policy decision",
            Action::Rescan(_) => "rescan",
        };
        pems.insert(&e.signature.key_id, same_key_id(&e.signature.public_key));
        by_key
            .entry(&e.signature.key_id)
            .or_default()
            .entry(what)
            .or_default()
            .push(e.seq);
    }
    by_key
        .into_iter()
        .map(|(key, what)| {
            let mut who = vec![];
            let same = pems.get(key).cloned().unwrap_or_default();
            if let Some(from) = trusted.get(&same) {
                who.push(format!("trusted: {from}"));
            } else if !trusted.is_empty() {
                who.push("NOT TRUSTED".into());
            }
            if Some(same.as_str()) == own_key {
                who.push(format!(
                    "kiln's own catalog key `{}`, which signs command-line changes",
                    own_path.display()
                ));
            }
            if who.is_empty() {
                who.push("a build's `[build.sign]` key or an operator's KILN_SIGNING_KEY".into());
            }
            let signed: Vec<String> = what
                .iter()
                .map(|(w, seqs)| {
                    let list: Vec<String> = seqs.iter().map(|s| format!("#{s}")).collect();
                    format!("{w} {}", list.join(" "))
                })
                .collect();
            serde_json::json!({ "key_id": key, "who": who.join("; "), "signed": signed.join(", "), "entries": what })
        })
        .collect()
}

fn short(key_id: &str) -> &str {
    let hex = key_id.strip_prefix("sha256:").unwrap_or(key_id);
    &hex[..hex.len().min(16)]
}

fn print_entry(e: &catalog::Entry) {
    println!(
        "#{:<5} {}  {}  by {} (key {})",
        e.seq,
        e.time,
        e.change.describe(),
        e.actor,
        short(&e.signature.key_id)
    );
    if let Action::Register(r) = &e.change {
        println!(
            "        build {} template {}",
            r.build_id, r.template_digest
        );
        for a in &r.artifacts {
            println!(
                "        {} {} {} from {}{}; signed by {}",
                a.kind,
                a.id,
                a.digest.as_deref().unwrap_or("-"),
                a.base.as_deref().unwrap_or("-"),
                a.parent
                    .as_ref()
                    .map(|p| format!(" ({p})"))
                    .unwrap_or_default(),
                a.signer.as_deref().map(short).unwrap_or("nobody")
            );
            for line in compliance(a) {
                println!("          {line}");
            }
        }
    }
}

/// An artifact's build manifest as a reviewer reads it (template and git
/// commit, provisioners with what they ran, signer, hardening headlines) —
/// read only when the file is here and matches the digest the catalog
/// recorded.
fn compliance(a: &catalog::ArtifactRecord) -> Vec<String> {
    let (Some(path), Some(digest)) = (&a.manifest, &a.manifest_digest) else {
        return vec![];
    };
    let Ok(bytes) = std::fs::read(path) else {
        return vec![format!("(build manifest `{path}` is not on this machine)")];
    };
    let actual = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
    );
    if &actual != digest {
        return vec![format!(
            "warning: build manifest `{path}` does not match the digest the catalog recorded ({digest})"
        )];
    }
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return vec![];
    };
    // What the reviewer reads in `kiln show-manifest`, but the lines the
    // entry itself already says.
    super::show_manifest::render(&doc)
        .into_iter()
        .filter(|l| !l.starts_with("image:") && !l.starts_with("artifact:"))
        .collect()
}
