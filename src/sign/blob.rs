//! Signatures over files, as `cosign sign-blob --key` makes them: the
//! base64 of an ECDSA P-256 signature (ASN.1 DER) over the file's SHA-256,
//! in `FILE.sig` beside it — `openssl dgst -sha256 -verify PUB -signature`
//! and sigstore's verifiers check it as they check cosign's. A disk image
//! also gets its DSSE provenance beside it (`FILE.intoto.json`, subject:
//! the file's sha256). Files are hashed as a stream, never held whole.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use super::{SignError, SigningKey};

/// Where a file's signature goes: `FILE.sig`.
pub fn sig_path(file: &Path) -> PathBuf {
    beside(file, "sig")
}

/// Where a disk image's provenance goes: `FILE.intoto.json`.
pub fn provenance_path(file: &Path) -> PathBuf {
    beside(file, "intoto.json")
}

/// Where a disk image's signed SBOM of `format` (`spdx`, `cyclonedx`)
/// goes: `FILE.spdx.intoto.json`, `FILE.cyclonedx.intoto.json`.
pub fn sbom_attestation_path(file: &Path, format: &str) -> PathBuf {
    beside(file, &format!("{format}.intoto.json"))
}

fn beside(file: &Path, suffix: &str) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> SignError {
    move |source| SignError::Io { what, source }
}

/// The SHA-256 of a file, read as a stream.
pub fn sha256_file(path: &Path) -> Result<[u8; 32], SignError> {
    let mut f = fs_err::File::open(path).map_err(io("cannot read the file".into()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(io(format!("cannot read `{}`", path.display())))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// `sha256:<hex>` as 32 bytes.
pub fn digest_bytes(digest: &str) -> Result<[u8; 32], SignError> {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex::decode(hex)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| SignError::Verify(format!("`{digest}` is not a sha256 digest")))
}

/// Signs the file whose SHA-256 is `digest` (the builder streamed it when
/// it wrote the file) and writes `FILE.sig`. Returns its path.
pub async fn sign_file(file: &Path, digest: &str, key: &SigningKey) -> Result<PathBuf, SignError> {
    let sig = key.sign_digest(&digest_bytes(digest)?).await?;
    let path = sig_path(file);
    write_sig(&path, &sig)?;
    Ok(path)
}

/// Signs `bytes` (a small file kiln writes, such as a channel pointer) and
/// writes the signature to `sig_path(file)`.
pub async fn sign_bytes(file: &Path, bytes: &[u8], key: &SigningKey) -> Result<PathBuf, SignError> {
    let sig = key.sign(bytes).await?;
    let path = sig_path(file);
    write_sig(&path, &sig)?;
    Ok(path)
}

fn write_sig(path: &Path, sig: &[u8]) -> Result<(), SignError> {
    let tmp = beside(path, "tmp");
    let b64 = base64::engine::general_purpose::STANDARD.encode(sig);
    fs_err::write(&tmp, b64).map_err(io("cannot write the signature".into()))?;
    fs_err::rename(&tmp, path).map_err(io("cannot write the signature".into()))
}

/// Checks `FILE.sig` against the SHA-256 of the file's content with the
/// public key (PEM). Returns the digest (`sha256:<hex>`).
pub fn verify_file_signature(file: &Path, public_pem: &str) -> Result<String, SignError> {
    let sig_file = sig_path(file);
    let sig_b64 = match std::fs::read_to_string(&sig_file) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SignError::Verify(format!(
                "`{}` is not signed: there is no `{}` beside it",
                file.display(),
                sig_file.display()
            )))
        }
        Err(e) => return Err(io(format!("cannot read `{}`", sig_file.display()))(e)),
    };
    let digest = sha256_file(file)?;
    verify_digest(public_pem, &digest, sig_b64.trim()).map_err(|e| {
        SignError::Verify(format!(
            "`{}`: {e} (the file or its signature changed, or another key signed it)",
            sig_file.display()
        ))
    })?;
    Ok(format!("sha256:{}", hex::encode(digest)))
}

/// Checks a base64 ECDSA P-256 signature over the message whose SHA-256 is
/// `digest`.
pub fn verify_digest(public_pem: &str, digest: &[u8; 32], sig_b64: &str) -> Result<(), SignError> {
    use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
    use p256::pkcs8::DecodePublicKey as _;
    let key = p256::ecdsa::VerifyingKey::from_public_key_pem(public_pem)
        .map_err(|e| SignError::Key(format!("not an ECDSA P-256 public key: {e}")))?;
    let der = base64::engine::general_purpose::STANDARD
        .decode(sig_b64)
        .map_err(|e| SignError::Verify(format!("the signature is not base64: {e}")))?;
    let sig = p256::ecdsa::Signature::from_der(&der)
        .map_err(|e| SignError::Verify(format!("the signature is not ECDSA (DER): {e}")))?;
    key.verify_prehash(digest, &sig)
        .map_err(|_| SignError::Verify("the signature does not verify with this key".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_signature_is_cosigns_and_every_change_is_caught() {
        let tmp = tempfile::tempdir().unwrap();
        super::super::keygen(&tmp.path().join("k"), "pw").unwrap();
        super::super::keygen(&tmp.path().join("w"), "pw").unwrap();
        std::env::set_var("KILN_PASSWORD", "pw");
        let key = super::super::load_signing_key("k.key", tmp.path()).unwrap();
        let public = std::fs::read_to_string(tmp.path().join("k.pub")).unwrap();
        let wrong = std::fs::read_to_string(tmp.path().join("w.pub")).unwrap();
        let file = tmp.path().join("disk.raw");
        std::fs::write(&file, vec![7u8; 3 << 20]).unwrap();
        let digest = format!("sha256:{}", hex::encode(sha256_file(&file).unwrap()));
        let sig = sign_file(&file, &digest, &key).await.unwrap();
        assert_eq!(sig, tmp.path().join("disk.raw.sig"));
        assert_eq!(verify_file_signature(&file, &public).unwrap(), digest);
        // The same signature as one over the whole message (what cosign
        // sign-blob and openssl make): the sigstore crate verifies it.
        let v = super::super::load_public_key(&tmp.path().join("k.pub")).unwrap();
        let b64 = std::fs::read_to_string(&sig).unwrap();
        v.verify_signature(
            sigstore::crypto::Signature::Base64Encoded(b64.as_bytes()),
            &std::fs::read(&file).unwrap(),
        )
        .unwrap();
        assert!(verify_file_signature(&file, &wrong).is_err(), "wrong key");
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[1 << 20] ^= 1;
        std::fs::write(&file, &bytes).unwrap();
        let err = verify_file_signature(&file, &public).unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");
        std::fs::remove_file(&sig).unwrap();
        let err = verify_file_signature(&file, &public).unwrap_err();
        assert!(err.to_string().contains("is not signed"), "{err}");
    }
}
