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
    /// Only entries signed by these public keys (PEM) are accepted.
    #[arg(long = "key", value_name = "PUB")]
    pub keys: Vec<PathBuf>,
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
    let mut trusted = vec![];
    for k in &args.keys {
        match std::fs::read_to_string(k) {
            Ok(pem) => trusted.push(catalog::chain::key_id(&pem)),
            Err(e) => {
                eprintln!("error: cannot read the public key `{}`: {e}", k.display());
                return Exit::BadInput;
            }
        }
    }
    let cat = match catalog::open_existing(catalog, state_dir).await {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let stored = match cat.stored().await {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let mut verdict = catalog::chain::verify(&stored, &trusted);
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
    let signers: std::collections::BTreeSet<String> = match &verdict {
        Ok(entries) => entries.iter().map(|e| e.signature.key_id.clone()).collect(),
        Err(_) => Default::default(),
    };
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
            "log": readable,
        });
        println!("{out}");
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
                    if trusted.is_empty() {
                        String::new()
                    } else {
                        " with a trusted key".into()
                    }
                );
                let keys: Vec<&str> = signers.iter().map(|k| short(k)).collect();
                println!("signed by: {}", keys.join(", "));
                if let Some(h) = &head {
                    println!("head: {h} (pin it: `kiln audit --expect-head {h}` later refuses a log cut short or rewritten)");
                }
            }
            Err(b) => eprintln!("error: the catalog log is broken at {b}"),
        }
    }
    if verdict.is_ok() && trusted.is_empty() {
        eprintln!("warning: no `--key` given: each entry was checked with the key it carries, so a log rewritten and re-signed as a whole would pass too; give the trusted public keys with `--key`");
    }
    if verdict.is_ok() {
        Exit::Success
    } else {
        Exit::Failure
    }
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

/// The hardening reports in an artifact's build manifest, one headline
/// each — read only when the file is here and matches the digest the
/// catalog recorded.
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
    doc["hardening"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            serde_json::from_value::<crate::provisioner::hardening::report::ComplianceReport>(
                r.clone(),
            )
            .ok()
        })
        .map(|r| format!("compliance: {}", r.headline()))
        .collect()
}
