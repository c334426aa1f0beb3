//! The log's integrity: every entry carries the hash of the one before it
//! and is signed (ECDSA P-256, the key's public half travels in the entry
//! and is named by its key id). [`verify`] walks a stored log and reports
//! the first broken link by position: an edited, removed, inserted or
//! reordered entry, or a signature that does not verify.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sigstore::crypto::{CosignVerificationKey, Signature};

use super::model::Action;
use crate::sign::SigningKey;

/// What the first entry names as its predecessor.
pub const GENESIS: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// One entry of the append-only log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the log, from 1.
    pub seq: u64,
    /// `hash` of the entry before (or [`GENESIS`]).
    pub prev: String,
    /// RFC 3339, UTC.
    pub time: String,
    /// Who made the change (`KILN_ACTOR`, the CI's user, or user@host).
    pub actor: String,
    pub change: Action,
    /// `sha256:` of the canonical JSON of the fields above.
    pub hash: String,
    pub signature: EntrySignature,
}

/// The signature of an entry's body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntrySignature {
    /// `sha256:` of the public key PEM.
    pub key_id: String,
    pub public_key: String,
    /// Base64 of the ASN.1 DER ECDSA signature of the body.
    pub sig: String,
}

/// The key id of a public key PEM.
pub fn key_id(public_pem: &str) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(public_pem.trim().as_bytes()))
    )
}

fn body(seq: u64, prev: &str, time: &str, actor: &str, change: &Action) -> Vec<u8> {
    let v = serde_json::json!({
        "seq": seq, "prev": prev, "time": time, "actor": actor,
        "change": serde_json::to_value(change).expect("actions serialize"),
    });
    crate::manifest::canonical(&v)
}

impl Entry {
    /// A new, signed entry after `prev` (`(seq, hash)` of the last entry).
    pub async fn new(
        prev: Option<(u64, &str)>,
        actor: &str,
        change: Action,
        key: &SigningKey,
    ) -> Result<Entry, crate::sign::SignError> {
        let (seq, prev) = match prev {
            Some((s, h)) => (s + 1, h.to_string()),
            None => (1, GENESIS.to_string()),
        };
        let time = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let bytes = body(seq, &prev, &time, actor, &change);
        let sig = key.sign(&bytes).await?;
        Ok(Entry {
            seq,
            hash: format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
            prev,
            time,
            actor: actor.to_string(),
            change,
            signature: EntrySignature {
                key_id: key_id(&key.public_pem),
                public_key: key.public_pem.clone(),
                sig: base64::engine::general_purpose::STANDARD.encode(sig),
            },
        })
    }

    /// The bytes stored for it.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("entries serialize")
    }

    /// Parses stored bytes (no checks beyond the shape).
    pub fn parse(bytes: &[u8]) -> Result<Entry, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("not a catalog entry: {e}"))
    }

    /// Checks this entry on its own: its hash and its signature.
    fn check_self(&self) -> Result<(), String> {
        let bytes = body(self.seq, &self.prev, &self.time, &self.actor, &self.change);
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        if actual != self.hash {
            return Err(format!(
                "its content does not match its hash (edited): recorded {}, actual {actual}",
                self.hash
            ));
        }
        if key_id(&self.signature.public_key) != self.signature.key_id {
            return Err("its key id does not match its public key".into());
        }
        let key = CosignVerificationKey::try_from_pem(self.signature.public_key.as_bytes())
            .map_err(|e| format!("its public key is unreadable: {e}"))?;
        key.verify_signature(
            Signature::Base64Encoded(self.signature.sig.as_bytes()),
            &bytes,
        )
        .map_err(|_| "its signature does not verify (edited or forged)".to_string())
    }
}

/// The first problem found in a log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BrokenLink {
    /// 1-based position in the stored order.
    pub position: usize,
    pub problem: String,
}

impl std::fmt::Display for BrokenLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "entry {}: {}", self.position, self.problem)
    }
}

/// Holds a verified log to a head pinned earlier (`SEQ:HASH`, as `kiln
/// audit` and `kiln verify` print it): that entry must still be there,
/// unchanged. Catches the one tampering the chain alone cannot: entries
/// cut from its end (a `revoke` removed). `Err(message)` when `expected`
/// is not `SEQ:HASH`.
pub fn check_head(entries: &[Entry], expected: &str) -> Result<Result<(), BrokenLink>, String> {
    let Some((seq, hash)) = expected
        .split_once(':')
        .and_then(|(s, h)| Some((s.parse::<usize>().ok()?, h)))
    else {
        return Err(format!(
            "`--expect-head {expected}`: expected SEQ:HASH as printed by `kiln audit` or `kiln verify`"
        ));
    };
    Ok(match entries.get(seq.wrapping_sub(1)) {
        Some(e) if e.hash == hash => Ok(()),
        Some(e) => Err(BrokenLink {
            position: seq,
            problem: format!(
                "its hash is {}, not the expected head {hash} (the log was rewritten)",
                e.hash
            ),
        }),
        None => Err(BrokenLink {
            position: entries.len() + 1,
            problem: format!(
                "missing: the log ends at entry {} but the expected head is entry {seq} (entries were removed from its end)",
                entries.len()
            ),
        }),
    })
}

/// The head of a verified log, `SEQ:HASH` (what `--expect-head` takes).
pub fn head(entries: &[Entry]) -> Option<String> {
    entries.last().map(|e| format!("{}:{}", e.seq, e.hash))
}

/// Walks a stored log in order. Returns the parsed entries, or the first
/// broken link. `trusted` (key ids), when not empty, must include every
/// entry's signer.
pub fn verify(stored: &[Vec<u8>], trusted: &[String]) -> Result<Vec<Entry>, BrokenLink> {
    let mut out: Vec<Entry> = Vec::with_capacity(stored.len());
    for (i, bytes) in stored.iter().enumerate() {
        let position = i + 1;
        let broken = |problem: String| BrokenLink { position, problem };
        let e = Entry::parse(bytes).map_err(broken)?;
        if e.seq != position as u64 {
            return Err(broken(format!(
                "it says it is entry {} (entries removed, inserted or reordered)",
                e.seq
            )));
        }
        let expected_prev = out.last().map_or(GENESIS, |p| p.hash.as_str());
        if e.prev != expected_prev {
            return Err(broken(format!(
                "it does not follow the entry before it: it names {} as its predecessor, which is {expected_prev} (entries removed, inserted, reordered or edited)",
                e.prev
            )));
        }
        e.check_self().map_err(broken)?;
        if !trusted.is_empty() && !trusted.contains(&e.signature.key_id) {
            return Err(broken(format!(
                "signed by {}, which is not a trusted key",
                e.signature.key_id
            )));
        }
        out.push(e);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn promote(v: &str) -> Action {
        Action::Promote {
            image: "web".into(),
            version: v.into(),
            channel: "dev".into(),
        }
    }

    async fn log(n: usize) -> (Vec<Vec<u8>>, SigningKey) {
        let tmp = tempfile::tempdir().unwrap();
        let key = crate::sign::load_or_create_plain_key(&tmp.path().join("k")).unwrap();
        let mut out: Vec<Entry> = vec![];
        for i in 0..n {
            let prev = out.last().map(|e| (e.seq, e.hash.as_str()));
            let e = Entry::new(prev, "me", promote(&format!("1.0.0+{i}")), &key)
                .await
                .unwrap();
            out.push(e);
        }
        (out.iter().map(Entry::to_bytes).collect(), key)
    }

    #[tokio::test]
    async fn an_intact_log_verifies_and_every_tampering_is_found_with_its_position() {
        let (stored, key) = log(4).await;
        assert_eq!(verify(&stored, &[]).unwrap().len(), 4);
        assert_eq!(
            verify(&stored, &[key_id(&key.public_pem)]).unwrap().len(),
            4
        );
        assert_eq!(
            verify(&stored, &["sha256:other".into()])
                .unwrap_err()
                .position,
            1
        );

        // Edited content.
        let mut edited = stored.clone();
        edited[2] = String::from_utf8(edited[2].clone())
            .unwrap()
            .replace("1.0.0+2", "1.0.0+9")
            .into_bytes();
        let err = verify(&edited, &[]).unwrap_err();
        assert_eq!(err.position, 3);
        assert!(err.problem.contains("edited"), "{err}");

        // Removed.
        let mut removed = stored.clone();
        removed.remove(1);
        assert_eq!(verify(&removed, &[]).unwrap_err().position, 2);

        // Reordered.
        let mut reordered = stored.clone();
        reordered.swap(1, 2);
        assert_eq!(verify(&reordered, &[]).unwrap_err().position, 2);

        // Re-hashed after an edit: the signature no longer verifies.
        let mut e = Entry::parse(&stored[3]).unwrap();
        e.actor = "mallory".into();
        let b = body(e.seq, &e.prev, &e.time, &e.actor, &e.change);
        e.hash = format!("sha256:{}", hex::encode(Sha256::digest(&b)));
        let mut forged = stored.clone();
        forged[3] = e.to_bytes();
        let err = verify(&forged, &[]).unwrap_err();
        assert_eq!(err.position, 4);
        assert!(err.problem.contains("signature"), "{err}");
    }
}
