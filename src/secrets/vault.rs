//! Vault (or OpenBao) secrets with vaultrs: login (token, AppRole, JWT),
//! KV v1/v2 reads detected from the mount, response wrapping for remote
//! instances, and revocation of the token kiln logged in with.
//!
//! Configuration comes from the environment, as for the `vault` CLI:
//! `VAULT_ADDR`, `VAULT_NAMESPACE`, `VAULT_CACERT`; auth by `VAULT_TOKEN`
//! (or `~/.vault-token`), AppRole (`VAULT_ROLE_ID` + `VAULT_SECRET_ID` or
//! `VAULT_SECRET_ID_FILE`, mount `VAULT_APPROLE_MOUNT`, default `approle`),
//! or JWT (`VAULT_JWT` or `VAULT_JWT_FILE`, `VAULT_JWT_ROLE`, mount
//! `VAULT_JWT_MOUNT`, default `jwt`). `KILN_VAULT_AUTH` picks one
//! explicitly; otherwise JWT, then AppRole, then token, by what is set.

use std::collections::BTreeMap;
use std::path::PathBuf;

use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};

/// What went wrong talking to Vault. Never holds a secret value.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("Vault is not configured: {0}")]
    Config(String),
    #[error("cannot log in to Vault at {addr} with {method}: {reason}")]
    Login {
        addr: String,
        method: &'static str,
        reason: String,
    },
    #[error("cannot read `{path}` from Vault at {addr}: {reason}")]
    Read {
        addr: String,
        path: String,
        reason: String,
    },
    #[error("key `{key}` is not in `{path}`")]
    MissingKey { path: String, key: String },
    #[error("Vault at {addr}: {reason}")]
    Other { addr: String, reason: String },
}

/// How kiln logs in.
#[derive(Clone)]
pub enum Auth {
    Token(String),
    AppRole {
        mount: String,
        role_id: String,
        secret_id: String,
    },
    Jwt {
        mount: String,
        role: Option<String>,
        jwt: String,
    },
}

impl Auth {
    fn name(&self) -> &'static str {
        match self {
            Auth::Token(_) => "a token",
            Auth::AppRole { .. } => "AppRole",
            Auth::Jwt { .. } => "JWT",
        }
    }
}

/// Where Vault is and how to log in.
#[derive(Clone)]
pub struct VaultConfig {
    pub addr: String,
    pub namespace: Option<String>,
    pub cacert: Option<PathBuf>,
    pub auth: Auth,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn env_or_file(name: &str) -> Result<Option<String>, VaultError> {
    if let Some(v) = env(name) {
        return Ok(Some(v));
    }
    match env(&format!("{name}_FILE")) {
        Some(f) => std::fs::read_to_string(&f)
            .map(|s| Some(s.trim().to_string()))
            .map_err(|e| VaultError::Config(format!("cannot read {name}_FILE `{f}`: {e}"))),
        None => Ok(None),
    }
}

impl VaultConfig {
    /// Reads the configuration from the environment.
    pub fn from_env() -> Result<VaultConfig, VaultError> {
        Self::from_env_and(&crate::template::plan::VaultSettings::default())
    }

    /// The environment, falling back to the template's `[vault]` settings.
    pub fn from_env_and(
        t: &crate::template::plan::VaultSettings,
    ) -> Result<VaultConfig, VaultError> {
        let addr = env("VAULT_ADDR")
            .or_else(|| t.address.clone())
            .ok_or_else(|| {
                VaultError::Config("set VAULT_ADDR (or `address` in `[vault]`)".into())
            })?;
        let method = env("KILN_VAULT_AUTH").or_else(|| t.auth.clone());
        let jwt = env_or_file("VAULT_JWT")?;
        let role_id = env_or_file("VAULT_ROLE_ID")?;
        let auth = match method.as_deref() {
            Some("jwt") | None if jwt.is_some() || method.is_some() => Auth::Jwt {
                mount: env("VAULT_JWT_MOUNT")
                    .or_else(|| t.mount.clone())
                    .unwrap_or_else(|| "jwt".into()),
                role: env("VAULT_JWT_ROLE").or_else(|| t.role.clone()),
                jwt: jwt.ok_or_else(|| {
                    VaultError::Config("JWT auth needs VAULT_JWT or VAULT_JWT_FILE".into())
                })?,
            },
            Some("approle") | None if role_id.is_some() || method.is_some() => Auth::AppRole {
                mount: env("VAULT_APPROLE_MOUNT")
                    .or_else(|| t.mount.clone())
                    .unwrap_or_else(|| "approle".into()),
                role_id: role_id
                    .ok_or_else(|| VaultError::Config("AppRole auth needs VAULT_ROLE_ID".into()))?,
                secret_id: env_or_file("VAULT_SECRET_ID")?.ok_or_else(|| {
                    VaultError::Config(
                        "AppRole auth needs VAULT_SECRET_ID or VAULT_SECRET_ID_FILE".into(),
                    )
                })?,
            },
            Some("token") | None => {
                let token = env("VAULT_TOKEN").or_else(|| {
                    let home = env("HOME")?;
                    std::fs::read_to_string(PathBuf::from(home).join(".vault-token"))
                        .ok()
                        .map(|t| t.trim().to_string())
                });
                Auth::Token(token.ok_or_else(|| {
                    VaultError::Config(
                        "no VAULT_TOKEN, ~/.vault-token, AppRole or JWT credentials".into(),
                    )
                })?)
            }
            Some(other) => {
                return Err(VaultError::Config(format!(
                    "KILN_VAULT_AUTH `{other}`: expected token, approle or jwt"
                )))
            }
        };
        Ok(VaultConfig {
            addr,
            namespace: env("VAULT_NAMESPACE").or_else(|| t.namespace.clone()),
            cacert: env("VAULT_CACERT")
                .map(PathBuf::from)
                .or_else(|| t.ca_cert.clone()),
            auth,
        })
    }
}

/// A logged-in Vault client.
pub struct Vault {
    client: VaultClient,
    http: reqwest::Client,
    cfg: VaultConfig,
    token: String,
    /// True when kiln logged in itself (and so revokes the token).
    own_token: bool,
}

fn settings(cfg: &VaultConfig, token: &str) -> Result<VaultClient, VaultError> {
    let mut b = VaultClientSettingsBuilder::default();
    b.address(&cfg.addr).token(token);
    if let Some(ns) = &cfg.namespace {
        b.namespace(Some(ns.clone()));
    }
    if let Some(ca) = &cfg.cacert {
        b.ca_certs(vec![ca.display().to_string()]);
    }
    let s = b.build().map_err(|e| VaultError::Config(e.to_string()))?;
    VaultClient::new(s).map_err(|e| VaultError::Config(e.to_string()))
}

/// vaultrs errors carry the server's messages (never request bodies).
fn reason(e: vaultrs::error::ClientError) -> String {
    match e {
        vaultrs::error::ClientError::APIError { code, errors } => {
            if errors.is_empty() {
                format!("HTTP {code}")
            } else {
                format!("HTTP {code}: {}", errors.join("; "))
            }
        }
        other => {
            let s = other.to_string();
            if s.contains("error sending request") || s.contains("connect") {
                format!("unreachable ({s})")
            } else {
                s
            }
        }
    }
}

impl Vault {
    /// Logs in as configured.
    pub async fn connect(cfg: &VaultConfig) -> Result<Vault, VaultError> {
        let mut http = reqwest::Client::builder();
        if let Some(ca) = &cfg.cacert {
            let pem = std::fs::read(ca)
                .map_err(|e| VaultError::Config(format!("VAULT_CACERT `{}`: {e}", ca.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| VaultError::Config(format!("VAULT_CACERT: {e}")))?;
            http = http.add_root_certificate(cert);
        }
        let http = http
            .build()
            .map_err(|e| VaultError::Config(e.to_string()))?;
        // A clear message for the commonest failure, before any login.
        if let Err(e) = http
            .get(format!("{}/v1/sys/health", cfg.addr.trim_end_matches('/')))
            .send()
            .await
        {
            return Err(VaultError::Other {
                addr: cfg.addr.clone(),
                reason: format!("unreachable: {e}"),
            });
        }
        let login_err = |reason: String| VaultError::Login {
            addr: cfg.addr.clone(),
            method: cfg.auth.name(),
            reason,
        };
        let (token, own) = match &cfg.auth {
            Auth::Token(t) => (t.clone(), false),
            Auth::AppRole {
                mount,
                role_id,
                secret_id,
            } => {
                let c = settings(cfg, "")?;
                let info = vaultrs::auth::approle::login(&c, mount, role_id, secret_id)
                    .await
                    .map_err(|e| login_err(reason(e)))?;
                (info.client_token, true)
            }
            Auth::Jwt { mount, role, jwt } => {
                let c = settings(cfg, "")?;
                let info = vaultrs::auth::oidc::login(&c, mount, jwt, role.clone())
                    .await
                    .map_err(|e| login_err(reason(e)))?;
                (info.client_token, true)
            }
        };
        let client = settings(cfg, &token)?;
        if !own {
            vaultrs::token::lookup_self(&client)
                .await
                .map_err(|e| login_err(reason(e)))?;
        }
        Ok(Vault {
            client,
            http,
            cfg: cfg.clone(),
            token,
            own_token: own,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .request(
                method,
                format!("{}/v1/{path}", self.cfg.addr.trim_end_matches('/')),
            )
            .header("X-Vault-Token", &self.token);
        if let Some(ns) = &self.cfg.namespace {
            r = r.header("X-Vault-Namespace", ns);
        }
        r
    }

    /// The mount holding `path` and its KV version (what the `vault` CLI
    /// asks `sys/internal/ui/mounts` for).
    async fn kv_mount(&self, path: &str) -> (String, u8) {
        let first = path.split('/').next().unwrap_or_default().to_string();
        let resp = self
            .request(
                reqwest::Method::GET,
                &format!("sys/internal/ui/mounts/{path}"),
            )
            .send()
            .await;
        let Ok(resp) = resp else { return (first, 1) };
        let Ok(json) = resp.json::<serde_json::Value>().await else {
            return (first, 1);
        };
        let mount = json["data"]["path"]
            .as_str()
            .map(|m| m.trim_end_matches('/').to_string())
            .filter(|m| !m.is_empty())
            .unwrap_or(first);
        let version = if json["data"]["options"]["version"].as_str() == Some("2") {
            2
        } else {
            1
        };
        (mount, version)
    }

    /// Reads one key of a KV secret. `path` is `mount/path` (for KV v2 the
    /// API form `mount/data/path` works too).
    pub async fn read(
        &self,
        path: &str,
        key: &str,
        version: Option<u64>,
    ) -> Result<String, VaultError> {
        let (mount, kv) = self.kv_mount(path).await;
        let rest = path
            .strip_prefix(&mount)
            .unwrap_or(path)
            .trim_start_matches('/');
        let read_err = |r: String| VaultError::Read {
            addr: self.cfg.addr.clone(),
            path: path.to_string(),
            reason: r,
        };
        let data: BTreeMap<String, serde_json::Value> = if kv == 2 {
            let rest = rest.strip_prefix("data/").unwrap_or(rest);
            match version {
                Some(v) => vaultrs::kv2::read_version(&self.client, &mount, rest, v).await,
                None => vaultrs::kv2::read(&self.client, &mount, rest).await,
            }
            .map_err(|e| read_err(reason(e)))?
        } else {
            if version.is_some() {
                return Err(read_err("`version` needs a KV v2 mount".into()));
            }
            vaultrs::kv1::get(&self.client, &mount, rest)
                .await
                .map_err(|e| read_err(reason(e)))?
        };
        match data.get(key) {
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(other) => Ok(other.to_string()),
            None => Err(VaultError::MissingKey {
                path: path.to_string(),
                key: key.to_string(),
            }),
        }
    }

    /// Wraps `values` in a single-use token that expires after `ttl`
    /// (e.g. `"5m"`): what a remote instance unwraps itself.
    pub async fn wrap(
        &self,
        values: &BTreeMap<String, String>,
        ttl: &str,
    ) -> Result<String, VaultError> {
        let other = |reason: String| VaultError::Other {
            addr: self.cfg.addr.clone(),
            reason,
        };
        let resp = self
            .request(reqwest::Method::POST, "sys/wrapping/wrap")
            .header("X-Vault-Wrap-TTL", ttl)
            .json(values)
            .send()
            .await
            .map_err(|e| other(format!("cannot wrap: {e}")))?;
        let status = resp.status();
        let json: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| other(format!("cannot wrap: {e}")))?;
        json["wrap_info"]["token"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| other(format!("cannot wrap: HTTP {status}")))
    }

    /// Unwraps a wrapping token (once: Vault refuses a second time).
    pub async fn unwrap(
        &self,
        wrapping_token: &str,
    ) -> Result<BTreeMap<String, String>, VaultError> {
        let other = |reason: String| VaultError::Other {
            addr: self.cfg.addr.clone(),
            reason,
        };
        let mut r = self
            .http
            .post(format!(
                "{}/v1/sys/wrapping/unwrap",
                self.cfg.addr.trim_end_matches('/')
            ))
            .header("X-Vault-Token", wrapping_token);
        if let Some(ns) = &self.cfg.namespace {
            r = r.header("X-Vault-Namespace", ns);
        }
        let resp = r
            .send()
            .await
            .map_err(|e| other(format!("cannot unwrap: {e}")))?;
        let status = resp.status();
        let json: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| other(format!("cannot unwrap: {e}")))?;
        if !status.is_success() {
            let errs = json["errors"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_default();
            return Err(other(format!("cannot unwrap: HTTP {status}: {errs}")));
        }
        serde_json::from_value(json["data"].clone())
            .map_err(|e| other(format!("cannot unwrap: {e}")))
    }

    /// Signs a SHA-256 digest with transit key `name` (ECDSA P-256, ASN.1
    /// DER): the private key never leaves Vault.
    pub async fn transit_sign(&self, name: &str, digest: &[u8]) -> Result<Vec<u8>, VaultError> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let other = |reason: String| VaultError::Other {
            addr: self.cfg.addr.clone(),
            reason,
        };
        let body = serde_json::json!({ "input": b64.encode(digest), "prehashed": true, "hash_algorithm": "sha2-256", "marshaling_algorithm": "asn1" });
        let resp = self
            .request(reqwest::Method::POST, &format!("transit/sign/{name}"))
            .json(&body)
            .send()
            .await
            .map_err(|e| other(format!("transit sign: {e}")))?;
        let status = resp.status();
        let json: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| other(format!("transit sign: {e}")))?;
        let sig = json["data"]["signature"].as_str().ok_or_else(|| {
            other(format!(
                "transit sign with `{name}`: HTTP {status}: {}",
                json["errors"]
            ))
        })?;
        // `vault:v<N>:<base64>`
        let encoded = sig.rsplit(':').next().unwrap_or_default();
        b64.decode(encoded)
            .map_err(|e| other(format!("transit signature: {e}")))
    }

    /// The PEM public key of the latest version of transit key `name`.
    pub async fn transit_public_key(&self, name: &str) -> Result<String, VaultError> {
        let other = |reason: String| VaultError::Other {
            addr: self.cfg.addr.clone(),
            reason,
        };
        let resp = self
            .request(reqwest::Method::GET, &format!("transit/keys/{name}"))
            .send()
            .await
            .map_err(|e| other(format!("transit key: {e}")))?;
        let status = resp.status();
        let json: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| other(format!("transit key: {e}")))?;
        let data = &json["data"];
        if data["type"] != "ecdsa-p256" {
            return Err(other(format!(
                "transit key `{name}`: HTTP {status}: expected an ecdsa-p256 key, found {}",
                data["type"]
            )));
        }
        let latest = data["latest_version"].as_u64().unwrap_or(1).to_string();
        data["keys"][&latest]["public_key"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| other(format!("transit key `{name}` has no public key")))
    }

    /// Revokes the token kiln logged in with (not a token it was given).
    pub async fn finish(self) {
        self.revoke_own_token().await;
    }

    /// Revokes the token kiln logged in with, keeping the client (later
    /// calls fail). A token kiln was given is left alone.
    pub async fn revoke_own_token(&self) {
        if self.own_token {
            let _ = vaultrs::token::revoke_self(&self.client).await;
        }
    }

    /// Keeps a token kiln logged in with alive for a long build: renews it
    /// at half its TTL until the returned task is aborted.
    pub fn keep_alive(&self) -> Option<tokio::task::JoinHandle<()>> {
        if !self.own_token {
            return None;
        }
        let client = settings(&self.cfg, &self.token).ok()?;
        Some(tokio::spawn(async move {
            loop {
                let ttl = match vaultrs::token::lookup_self(&client).await {
                    Ok(info) if info.renewable == Some(true) && info.ttl > 0 => info.ttl,
                    _ => return,
                };
                tokio::time::sleep(std::time::Duration::from_secs((ttl / 2).max(1))).await;
                if vaultrs::token::renew_self(&client, None).await.is_err() {
                    return;
                }
            }
        }))
    }

    /// The token in use (for tests of revocation).
    pub fn token(&self) -> &str {
        &self.token
    }
}

/// Reads every `(name, path, key, version)` concurrently with one login;
/// the token kiln logged in with is revoked afterwards.
pub async fn fetch_all(
    settings: &crate::template::plan::VaultSettings,
    wanted: &[(String, String, String, Option<u64>)],
) -> Result<BTreeMap<String, String>, Vec<(String, String)>> {
    let all = |e: VaultError| {
        wanted
            .iter()
            .map(|w| (w.0.clone(), e.to_string()))
            .collect::<Vec<_>>()
    };
    let cfg = VaultConfig::from_env_and(settings).map_err(all)?;
    let vault = Vault::connect(&cfg).await.map_err(all)?;
    let reads = wanted.iter().map(|(name, path, key, version)| {
        let vault = &vault;
        async move { (name.clone(), vault.read(path, key, *version).await) }
    });
    let results = futures_util::future::join_all(reads).await;
    vault.finish().await;
    let mut out = BTreeMap::new();
    let mut errors = vec![];
    for (name, r) in results {
        match r {
            Ok(v) => {
                out.insert(name, v);
            }
            Err(e) => errors.push((name, e.to_string())),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}
