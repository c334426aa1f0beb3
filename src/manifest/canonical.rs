//! Canonical JSON (sorted keys, no whitespace) and `sha256:` digests: the
//! bytes that fingerprints, catalog entries and signatures are computed over.

use sha2::{Digest as _, Sha256};

/// `sha256:` and the hex digest of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// JSON with sorted keys (serde_json's maps are sorted without
/// `preserve_order`; sorting again keeps it independent of features).
pub fn canonical(v: &serde_json::Value) -> Vec<u8> {
    fn sort(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                serde_json::Value::Object(
                    keys.into_iter().map(|k| (k.clone(), sort(&m[k]))).collect(),
                )
            }
            serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(sort).collect()),
            v => v.clone(),
        }
    }
    serde_json::to_vec(&sort(v)).expect("JSON values serialize")
}
