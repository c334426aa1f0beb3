//! Signing with cosign-compatible keys: `kiln keygen`, loading the build's
//! signing key (a file or `KILN_SIGNING_KEY`, password `KILN_PASSWORD` or a
//! prompt), and — in [`cosign`] — signatures attached to OCI images the way
//! cosign and skopeo expect them, and their verification.
//!
//! Architecture invariant: the private key and its password stay in memory;
//! nothing here writes them anywhere but `kiln keygen`'s own key file.

pub mod blob;
#[cfg(feature = "oci")]
pub mod cosign;
pub mod dsse;
pub mod provenance;
pub mod sbom;
pub mod testresult;

use std::io::Write;
use std::path::{Path, PathBuf};

use sigstore::crypto::signing_key::SigStoreKeyPair;
use sigstore::crypto::{CosignVerificationKey, SigningScheme};

/// What went wrong with keys or signatures.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("{0}")]
    NotSupported(String),
    #[error("{0}")]
    Key(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Verify(String),
}

/// A loaded signing key.
pub struct SigningKey {
    signer: Signer,
    /// PEM of the public key (what verifiers are given).
    pub public_pem: String,
}

enum Signer {
    /// A cosign key file, decrypted in memory, as a p256 signing key.
    /// Its nonces are RFC 6979's (derived from the key and the digest):
    /// no random number generator is involved, so signing never waits for
    /// a generator's seeding (aws-lc's jitter entropy source takes tens of
    /// milliseconds of CPU on its first use) and a weak generator cannot
    /// leak the key. Verifiers cannot tell these signatures from cosign's.
    Local {
        prehash: Box<p256::ecdsa::SigningKey>,
    },
    /// A key in Vault's transit engine: kiln sends the SHA-256 digest,
    /// Vault signs; the private key never leaves Vault.
    Transit {
        vault: Box<crate::secrets::vault::Vault>,
        name: String,
    },
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<private>)")
    }
}

/// The key id kiln names a public key by: `sha256:` of its PEM (trimmed).
/// The catalog's entries, DSSE envelopes' `keyid` and build manifests use it.
pub fn key_id(public_pem: &str) -> String {
    use sha2::Digest as _;
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(public_pem.trim().as_bytes()))
    )
}

impl SigningKey {
    /// This key's id ([`key_id`] of its public half).
    pub fn key_id(&self) -> String {
        key_id(&self.public_pem)
    }

    /// An ECDSA P-256 signature (ASN.1 DER) of `msg`, as cosign makes them.
    pub async fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignError> {
        use sha2::Digest as _;
        self.sign_digest(&sha2::Sha256::digest(msg).into()).await
    }

    /// An ECDSA P-256 signature (ASN.1 DER) of the message whose SHA-256
    /// is `digest`: the same signature [`SigningKey::sign`] makes of the
    /// message itself, as `cosign sign-blob` and `openssl dgst -sha256
    /// -sign` make them — without holding the message.
    pub async fn sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, SignError> {
        match &self.signer {
            Signer::Local { prehash } => {
                use p256::ecdsa::signature::hazmat::PrehashSigner as _;
                let sig: p256::ecdsa::Signature = prehash
                    .sign_prehash(digest)
                    .map_err(|e| SignError::Key(format!("cannot sign: {e}")))?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
            Signer::Transit { vault, name } => vault
                .transit_sign(name, digest)
                .await
                .map_err(|e| SignError::Key(e.to_string())),
        }
    }

    /// A local key pair as a signer.
    fn local(pair: &SigStoreKeyPair) -> Result<SigningKey, SignError> {
        let der = pair
            .private_key_to_der()
            .map_err(|e| SignError::Key(e.to_string()))?;
        let prehash =
            <p256::ecdsa::SigningKey as p256::pkcs8::DecodePrivateKey>::from_pkcs8_der(&der)
                .map_err(|e| SignError::Key(format!("not an ECDSA P-256 key: {e}")))?;
        let public_pem = pair
            .public_key_to_pem()
            .map_err(|e| SignError::Key(e.to_string()))?;
        Ok(SigningKey {
            signer: Signer::Local {
                prehash: Box::new(prehash),
            },
            public_pem,
        })
    }

    /// Ends what the key holds open: the Vault token kiln logged in with for
    /// a transit key is revoked.
    pub async fn close(&self) {
        if let Signer::Transit { vault, .. } = &self.signer {
            vault.revoke_own_token().await;
        }
    }

    /// A key held in Vault's transit engine (ECDSA P-256).
    pub async fn from_vault_transit(
        name: &str,
        settings: &crate::template::plan::VaultSettings,
    ) -> Result<SigningKey, SignError> {
        let cfg = crate::secrets::vault::VaultConfig::from_env_and(settings)
            .map_err(|e| SignError::Key(e.to_string()))?;
        let vault = crate::secrets::vault::Vault::connect(&cfg)
            .await
            .map_err(|e| SignError::Key(e.to_string()))?;
        let public_pem = vault
            .transit_public_key(name)
            .await
            .map_err(|e| SignError::Key(e.to_string()))?;
        // Renewed while the build runs; revoked by `close`.
        if let Some(task) = vault.keep_alive() {
            std::mem::drop(task);
        }
        Ok(SigningKey {
            signer: Signer::Transit {
                vault: Box::new(vault),
                name: name.to_string(),
            },
            public_pem,
        })
    }
}

/// The password for an encrypted key: `KILN_PASSWORD`, else a prompt on
/// the terminal.
pub fn password(purpose: &str) -> Result<String, SignError> {
    if let Ok(p) = std::env::var("KILN_PASSWORD") {
        return Ok(p);
    }
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .is_err()
    {
        return Err(SignError::Key(format!(
            "{purpose} needs a password: set KILN_PASSWORD (no terminal to ask on)"
        )));
    }
    // Read from the terminal with echo off.
    rpassword::prompt_password(format!("Password for {purpose}: ")).map_err(|source| {
        SignError::Io {
            what: "reading the password".into(),
            source,
        }
    })
}

/// `kiln keygen`: writes `PREFIX.key` (encrypted, mode 0600) and `PREFIX.pub`.
pub fn keygen(prefix: &Path, password: &str) -> Result<(PathBuf, PathBuf), SignError> {
    let key_path = PathBuf::from(format!("{}.key", prefix.display()));
    let pub_path = PathBuf::from(format!("{}.pub", prefix.display()));
    for p in [&key_path, &pub_path] {
        if p.exists() {
            return Err(SignError::Key(format!(
                "`{}` exists already; kiln does not overwrite keys",
                p.display()
            )));
        }
    }
    let signer = SigningScheme::ECDSA_P256_SHA256_ASN1
        .create_signer()
        .map_err(|e| SignError::Key(e.to_string()))?;
    let pair = signer
        .to_sigstore_keypair()
        .map_err(|e| SignError::Key(e.to_string()))?;
    let private = pair
        .private_key_to_encrypted_pem(password.as_bytes())
        .map_err(|e| SignError::Key(e.to_string()))?;
    let public = pair
        .public_key_to_pem()
        .map_err(|e| SignError::Key(e.to_string()))?;
    let io = |what: &str| {
        let what = what.to_string();
        move |source| SignError::Io { what, source }
    };
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_path)
            .map_err(io("cannot write the private key"))?;
        f.write_all(private.as_bytes())
            .map_err(io("cannot write the private key"))?;
    }
    fs_err::write(&pub_path, public).map_err(io("cannot write the public key"))?;
    Ok((key_path, pub_path))
}

/// Loads the signing key named by `[build.sign] key`: `KILN_SIGNING_KEY`
/// (the encrypted PEM itself) when set, else the key file (relative to the
/// template's folder). `vault-transit:NAME` is not supported yet.
pub fn load_signing_key(spec: &str, template_dir: &Path) -> Result<SigningKey, SignError> {
    if spec.starts_with("vault-transit:") {
        return Err(SignError::NotSupported(format!("`key = \"{spec}\"` is a Vault transit key: load it with `SigningKey::from_vault_transit`")));
    }
    let (pem, origin) = match std::env::var("KILN_SIGNING_KEY") {
        Ok(pem) if !pem.is_empty() => (pem.into_bytes(), "KILN_SIGNING_KEY".to_string()),
        _ => {
            let path = template_dir.join(spec);
            let pem = fs_err::read(&path).map_err(|source| SignError::Io {
                what: "cannot read the signing key".into(),
                source,
            })?;
            (pem, format!("`{}`", path.display()))
        }
    };
    let pw = password(&format!("the signing key {origin}"))?;
    let pair = SigStoreKeyPair::from_encrypted_pem(&pem, pw.as_bytes()).map_err(|e| {
        SignError::Key(format!(
            "cannot open the signing key {origin}: {e} (wrong KILN_PASSWORD?)"
        ))
    })?;
    SigningKey::local(&pair)
}

/// A key kiln keeps for itself (unencrypted PKCS#8 PEM, mode 0600, never
/// overwritten): the catalog's signer when nobody gives one. Created on
/// first use.
pub fn load_or_create_plain_key(path: &Path) -> Result<SigningKey, SignError> {
    load_or_create_plain_key_noting(path).map(|(k, _)| k)
}

/// [`load_or_create_plain_key`], saying whether the key was created now;
/// a created key's public half is written beside it (`.pub`), for
/// `kiln audit --key`.
pub fn load_or_create_plain_key_noting(path: &Path) -> Result<(SigningKey, bool), SignError> {
    let existed = path.exists();
    let key = load_or_create_plain_key_inner(path)?;
    let public = path.with_extension("pub");
    if !public.exists() {
        fs_err::write(&public, &key.public_pem).map_err(|source| SignError::Io {
            what: "cannot write the public key".into(),
            source,
        })?;
    }
    Ok((key, !existed))
}

fn load_or_create_plain_key_inner(path: &Path) -> Result<SigningKey, SignError> {
    let io = |what: &str| {
        let what = format!("{what} `{}`", path.display());
        move |source| SignError::Io { what, source }
    };
    let pair = match std::fs::read(path) {
        Ok(pem) => SigStoreKeyPair::from_pem(&pem).map_err(|e| {
            SignError::Key(format!("`{}` is not a private key: {e}", path.display()))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                fs_err::create_dir_all(dir).map_err(|e| SignError::Io {
                    what: "cannot create the key folder".into(),
                    source: e,
                })?;
            }
            let pair = SigningScheme::ECDSA_P256_SHA256_ASN1
                .create_signer()
                .and_then(|s| s.to_sigstore_keypair())
                .map_err(|e| SignError::Key(e.to_string()))?;
            let pem = pair
                .private_key_to_pem()
                .map_err(|e| SignError::Key(e.to_string()))?;
            // Two processes may race to create it: the first one wins.
            if !crate::secrets::create_private_once(path, pem.as_bytes())
                .map_err(io("cannot write the key"))?
            {
                return load_or_create_plain_key_inner(path);
            }
            pair
        }
        Err(e) => return Err(io("cannot read the key")(e)),
    };
    SigningKey::local(&pair)
}

/// Whether an artifact kind is a disk image file (signed as a blob).
pub fn is_disk_image(kind: &str) -> bool {
    kind == "qcow2" || kind == "raw"
}

/// Signs each artifact that has a signature format: OCI images in a
/// registry get a cosign signature pushed next to them, disk image files a
/// `cosign sign-blob` signature beside them ([`blob`]). Others are named
/// as unsigned, never silently skipped.
pub async fn sign_artifacts(
    say: &(dyn Fn(String) + Sync),
    artifacts: &mut [crate::ui::ArtifactInfo],
    key: &SigningKey,
) -> Result<(), SignError> {
    for a in artifacts.iter_mut() {
        #[cfg(feature = "oci")]
        if let (Some(r), Some(digest)) = (a.id.strip_prefix("registry:"), a.digest.clone()) {
            let target: oci_client::Reference = r
                .parse()
                .map_err(|e| SignError::Key(format!("`{r}`: {e}")))?;
            let sig = cosign::attach(&target, &digest, key).await?;
            say(format!("signed {r} ({digest}): `{sig}`"));
            a.signatures.push(format!("registry:{sig}"));
            continue;
        }
        if let (true, Some(digest)) = (is_disk_image(&a.kind), a.digest.clone()) {
            let file = Path::new(a.id.strip_prefix("file:").unwrap_or(&a.id));
            let sig = blob::sign_file(file, &digest, key).await?;
            say(format!(
                "signed {} ({digest}): `{}`",
                file.display(),
                sig.display()
            ));
            a.signatures.push(format!("file:{}", sig.display()));
            continue;
        }
        say(format!("not signed: `{}` — signatures for {} artifacts are not supported yet (registry images and disk files only)", a.id, a.kind));
    }
    Ok(())
}

/// A verification key from a public key PEM file.
pub fn load_public_key(path: &Path) -> Result<CosignVerificationKey, SignError> {
    let pem = fs_err::read(path).map_err(|source| SignError::Io {
        what: "cannot read the public key".into(),
        source,
    })?;
    CosignVerificationKey::try_from_pem(&pem)
        .map_err(|e| SignError::Key(format!("`{}` is not a public key: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keygen_then_load_and_sign_verify() {
        let tmp = tempfile::tempdir().unwrap();
        let (key, public) = keygen(&tmp.path().join("cosign"), "pw").unwrap();
        assert!(std::fs::read_to_string(&key)
            .unwrap()
            .contains("ENCRYPTED SIGSTORE PRIVATE KEY"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(
            keygen(&tmp.path().join("cosign"), "pw").is_err(),
            "never overwrites"
        );
        std::env::set_var("KILN_PASSWORD", "pw");
        let k = load_signing_key("cosign.key", tmp.path()).unwrap();
        let sig = k.sign(b"hello").await.unwrap();
        let v = load_public_key(&public).unwrap();
        v.verify_signature(sigstore::crypto::Signature::Raw(&sig), b"hello")
            .unwrap();
        assert!(v
            .verify_signature(sigstore::crypto::Signature::Raw(&sig), b"hellO")
            .is_err());
        assert!(load_signing_key("vault-transit:x", tmp.path()).is_err());
    }

    /// RFC 6979 A.2.5 (P-256, SHA-256, message `sample`): the nonce, and so
    /// `r`, are the RFC's own; the same input signs the same way twice, and
    /// sigstore's verifier (aws-lc, not the p256 crate) accepts it.
    #[tokio::test]
    async fn local_signatures_use_rfc6979_nonces_and_verify_elsewhere() {
        let x = hex::decode("C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721")
            .unwrap();
        let prehash = p256::ecdsa::SigningKey::from_slice(&x).unwrap();
        let public_pem = {
            use p256::pkcs8::EncodePublicKey as _;
            prehash
                .verifying_key()
                .to_public_key_pem(p256::pkcs8::LineEnding::LF)
                .unwrap()
        };
        let key = SigningKey {
            signer: Signer::Local {
                prehash: Box::new(prehash),
            },
            public_pem: public_pem.clone(),
        };
        let sig = key.sign(b"sample").await.unwrap();
        assert_eq!(sig, key.sign(b"sample").await.unwrap(), "deterministic");
        let parsed = p256::ecdsa::Signature::from_der(&sig).unwrap();
        assert_eq!(
            hex::encode_upper(parsed.r().to_bytes()),
            "EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716"
        );
        let v = CosignVerificationKey::from_pem(
            public_pem.as_bytes(),
            &SigningScheme::ECDSA_P256_SHA256_ASN1,
        )
        .unwrap();
        v.verify_signature(sigstore::crypto::Signature::Raw(&sig), b"sample")
            .unwrap();
        assert!(v
            .verify_signature(sigstore::crypto::Signature::Raw(&sig), b"samplE")
            .is_err());
    }
}
