//! DSSE envelopes (the in-toto signing format cosign uses for attestations):
//! the signature covers the pre-authentication encoding (PAE) of the
//! payload type and body, so neither can be swapped.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sigstore::crypto::{CosignVerificationKey, Signature};

use super::{SignError, SigningKey};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Envelope {
    pub payload_type: String,
    /// Standard base64 of the body.
    pub payload: String,
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeSignature {
    pub keyid: String,
    pub sig: String,
}

/// `DSSEv1 <len(type)> <type> <len(body)> <body>`.
pub fn pae(payload_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Signs `body` into an envelope.
pub async fn sign(
    payload_type: &str,
    body: &[u8],
    key: &SigningKey,
) -> Result<Envelope, SignError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(Envelope {
        payload_type: payload_type.to_string(),
        payload: b64.encode(body),
        signatures: vec![EnvelopeSignature {
            // Empty: DSSE does not sign the keyid, and kiln's strict form
            // leaves no byte that could change unnoticed (the signer's key
            // id is in the signed build manifest instead).
            keyid: String::new(),
            sig: b64.encode(key.sign(&pae(payload_type, body)).await?),
        }],
    })
}

/// Verifies an envelope with `key` (any one signature suffices) and returns
/// its body.
pub fn verify(
    env: &Envelope,
    expected_type: &str,
    key: &CosignVerificationKey,
) -> Result<Vec<u8>, SignError> {
    if env.payload_type != expected_type {
        return Err(SignError::Verify(format!(
            "payload type `{}` is not `{expected_type}`",
            env.payload_type
        )));
    }
    let body = base64::engine::general_purpose::STANDARD
        .decode(&env.payload)
        .map_err(|e| SignError::Verify(format!("payload is not base64: {e}")))?;
    let msg = pae(&env.payload_type, &body);
    let ok = env.signatures.iter().any(|s| {
        key.verify_signature(Signature::Base64Encoded(s.sig.as_bytes()), &msg)
            .is_ok()
    });
    if ok {
        Ok(body)
    } else {
        Err(SignError::Verify(
            "no signature in the envelope verifies with this key".into(),
        ))
    }
}

/// Parses and verifies an envelope as written by kiln. Anything but the
/// exact bytes kiln writes (compact JSON, these fields) is refused, so no
/// byte of the file can change unnoticed, signed or not.
pub fn verify_bytes(
    bytes: &[u8],
    expected_type: &str,
    key: &CosignVerificationKey,
) -> Result<Vec<u8>, SignError> {
    let trimmed = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let env: Envelope = serde_json::from_slice(trimmed)
        .map_err(|e| SignError::Verify(format!("not a DSSE envelope: {e}")))?;
    if serde_json::to_vec(&env).expect("serializes") != trimmed {
        return Err(SignError::Verify(
            "the envelope is not in the form kiln writes (altered?)".into(),
        ));
    }
    verify(&env, expected_type, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_byte_of_an_envelope_matters() {
        let tmp = tempfile::tempdir().unwrap();
        super::super::keygen(&tmp.path().join("k"), "pw").unwrap();
        std::env::set_var("KILN_PASSWORD", "pw");
        let key = super::super::load_signing_key("k.key", tmp.path()).unwrap();
        let public = super::super::load_public_key(&tmp.path().join("k.pub")).unwrap();
        let env = sign("application/vnd.in-toto+json", br#"{"a":1}"#, &key)
            .await
            .unwrap();
        let bytes = serde_json::to_vec(&env).unwrap();
        assert_eq!(
            verify_bytes(&bytes, "application/vnd.in-toto+json", &public).unwrap(),
            br#"{"a":1}"#
        );
        // Mutation test: every single-byte change, in every bit, is refused.
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut m = bytes.clone();
                m[i] ^= 1 << bit;
                assert!(
                    verify_bytes(&m, "application/vnd.in-toto+json", &public).is_err(),
                    "byte {i} bit {bit} went unnoticed"
                );
            }
        }
    }
}
