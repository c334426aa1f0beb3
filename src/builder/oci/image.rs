//! Images in and out: pulling a base from a registry (anonymous, basic or
//! bearer auth, credentials from the docker `config.json`), an OCI layout,
//! a rootfs tarball or scratch, into the blob store; pushing the result to
//! registries and writing OCI layouts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

use super::reference::{is_local_registry, BaseRef};
use super::store::{canonical_json, hex_of, BlobStore};
use crate::builder::BuildError;

pub const MANIFEST_V1: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX_V1: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const CONFIG_V1: &str = "application/vnd.oci.image.config.v1+json";

/// An image whose blobs are all in the blob store.
#[derive(Debug, Clone)]
pub struct StoredImage {
    pub manifest: ImageManifest,
    pub config: ImageConfiguration,
    /// `sha256:` of the manifest as pulled (the base's identity).
    pub manifest_digest: String,
    /// Where it came from, for messages and provenance.
    pub source: String,
}

/// Where registry credentials come from, for hints.
const CREDENTIALS_HINT: &str = "credentials come from REGISTRY_AUTH_FILE, $DOCKER_CONFIG/config.json or ~/.docker/config.json (`docker login` or `skopeo login` write them)";

/// The cause of a failed request in words — connection refused, DNS, TLS,
/// timeout — from the whole chain of errors (the outer ones say only
/// "error sending request"); `None` when it is none of those.
pub fn cause_of(e: &(dyn std::error::Error + 'static), registry: &str) -> Option<String> {
    let mut chain = vec![];
    let mut refused = false;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(x) = cur {
        if x.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            refused = true;
        }
        chain.push(x.to_string());
        cur = x.source();
    }
    let all = chain.join(": ").to_lowercase();
    let host = registry
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(registry, |(h, _)| h);
    let innermost = chain.last().cloned().unwrap_or_default();
    if refused || all.contains("connection refused") {
        Some(format!("connection refused: nothing listens on `{registry}` (is the registry running, and the port right?)"))
    } else if all.contains("dns error")
        || all.contains("failed to lookup address")
        || all.contains("name or service not known")
        || all.contains("no address associated")
        || all.contains("temporary failure in name resolution")
    {
        Some(format!(
            "DNS: the name `{host}` does not resolve ({innermost})"
        ))
    } else if all.contains("certificate")
        || all.contains("tls")
        || all.contains("handshake")
        || all.contains("invalid peer")
    {
        Some(format!("TLS: {innermost} (a registry with a private CA needs that CA in the system's trust store)"))
    } else if all.contains("timed out") || all.contains("deadline has elapsed") {
        Some(format!("timed out reaching `{registry}`"))
    } else {
        None
    }
}

/// `(realm "…")` of a `WWW-Authenticate` challenge, or nothing.
fn realm_of(challenge: &str) -> String {
    let lower = challenge.to_ascii_lowercase();
    lower
        .find("realm=\"")
        .and_then(|i| challenge[i + 7..].split('"').next())
        .map(|r| format!(" (realm \"{r}\")"))
        .unwrap_or_default()
}

/// Checks that `registry` answers and accepts the configured credentials,
/// by asking its `/v2/` endpoint: an error says why in words (connection
/// refused, DNS, TLS, 401/403 with the realm). Registries that hand out
/// bearer tokens pass here; [`check_push`] then asks for a push token.
pub async fn check_registry(registry: &str) -> Result<(), String> {
    let scheme = if is_local_registry(registry) {
        "http"
    } else {
        "https"
    };
    let url = format!("{scheme}://{registry}/v2/");
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let mut req = client.get(&url);
    let from_template = template_auth(registry).is_some();
    let basic = match docker_auth(registry) {
        Some(RegistryAuth::Basic(u, p)) => {
            req = req.basic_auth(u, Some(p));
            true
        }
        Some(RegistryAuth::Bearer(t)) => {
            req = req.bearer_auth(t);
            true
        }
        _ => false,
    };
    let hint = if from_template {
        "the credentials come from the template's `auth` table"
    } else {
        CREDENTIALS_HINT
    };
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            return Err(cause_of(&e, registry).unwrap_or_else(|| {
                let mut msg = e.to_string();
                let mut cur = std::error::Error::source(&e);
                while let Some(x) = cur {
                    msg.push_str(&format!(": {x}"));
                    cur = x.source();
                }
                msg
            }))
        }
    };
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let realm = realm_of(&challenge);
    match resp.status().as_u16() {
        200..=299 => Ok(()),
        401 if challenge.to_ascii_lowercase().starts_with("bearer") => Ok(()),
        401 if basic => Err(format!(
            "401 Unauthorized: `{registry}` refused the credentials configured for it{realm}; {hint}"
        )),
        401 => Err(format!(
            "401 Unauthorized: `{registry}` wants credentials{realm} and none are configured for it; {CREDENTIALS_HINT}"
        )),
        403 => Err(format!("403 Forbidden: `{registry}` refuses access{realm}")),
        404 => Err(format!(
            "`{url}` answered 404: `{registry}` is not an OCI registry (no /v2/ API)"
        )),
        code => Err(format!("`{url}` answered {code}")),
    }
}

/// Checks that the configured credentials may push to `target` (a push
/// token from registries that hand out bearer tokens).
pub async fn check_push(target: &Reference) -> Result<(), BuildError> {
    let (client, auth) = client_for(target.registry());
    client
        .auth(target, &auth, oci_client::RegistryOperation::Push)
        .await
        .map(|_| ())
        .map_err(reg_err(format!(
            "cannot log in to push to `{}`",
            target.registry()
        )))
}

fn reg_err(what: String) -> impl FnOnce(oci_client::errors::OciDistributionError) -> BuildError {
    move |e| {
        let mut msg = match cause_of(&e, "the registry") {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        };
        if msg.contains("401")
            || msg.contains("UNAUTHORIZED")
            || msg.contains("authentication required")
        {
            msg.push_str(&format!("; hint: {CREDENTIALS_HINT}"));
        }
        BuildError::Io {
            what,
            source: std::io::Error::other(msg),
        }
    }
}

/// Credentials that templates gave for registries (`[source.oci.*] auth`),
/// by registry host: held in memory only, for this process, and looked up
/// before the docker config files.
static TEMPLATE_AUTH: Mutex<BTreeMap<String, (String, String, String)>> =
    Mutex::new(BTreeMap::new());

/// Registers a template's credentials for `registry`: `username` with
/// `password` (or an access `token` used as the password), or a bearer
/// `token` alone. Two templates in one run giving different credentials
/// for one registry is an error (which would win is not obvious).
pub fn use_template_auth(
    registry: &str,
    username: &str,
    password: &str,
    token: &str,
) -> Result<(), String> {
    let entry = (
        username.to_string(),
        password.to_string(),
        token.to_string(),
    );
    let mut table = TEMPLATE_AUTH.lock().unwrap_or_else(|e| e.into_inner());
    match table.get(registry) {
        Some(have) if *have != entry => Err(format!(
            "two templates of this run give different credentials for registry `{registry}`; build them separately"
        )),
        _ => {
            table.insert(registry.to_string(), entry);
            Ok(())
        }
    }
}

/// The credentials a template gave for `registry`, if any.
fn template_auth(registry: &str) -> Option<RegistryAuth> {
    let table = TEMPLATE_AUTH.lock().unwrap_or_else(|e| e.into_inner());
    let (user, password, token) = table.get(registry)?;
    Some(match (user.is_empty(), password.is_empty()) {
        (false, false) => RegistryAuth::Basic(user.clone(), password.clone()),
        (false, true) => RegistryAuth::Basic(user.clone(), token.clone()),
        (true, _) => RegistryAuth::Bearer(token.clone()),
    })
}

/// A registry client for `registry` with credentials from the template or
/// the docker config.
pub fn client_for(registry: &str) -> (Client, RegistryAuth) {
    let protocol = if is_local_registry(registry) {
        ClientProtocol::Http
    } else {
        ClientProtocol::Https
    };
    let client = Client::new(ClientConfig {
        protocol,
        ..Default::default()
    });
    (
        client,
        docker_auth(registry).unwrap_or(RegistryAuth::Anonymous),
    )
}

/// Credentials for `registry`: the template's (`auth`), else basic
/// credentials from `REGISTRY_AUTH_FILE`, `$DOCKER_CONFIG/config.json` or
/// `~/.docker/config.json`.
pub fn docker_auth(registry: &str) -> Option<RegistryAuth> {
    if let Some(auth) = template_auth(registry) {
        return Some(auth);
    }
    let mut files: Vec<PathBuf> = vec![];
    if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE") {
        files.push(f.into());
    }
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        files.push(PathBuf::from(d).join("config.json"));
    }
    if let Some(h) = std::env::var_os("HOME") {
        files.push(PathBuf::from(h).join(".docker/config.json"));
    }
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let auths = &json["auths"];
        for key in [
            registry.to_string(),
            format!("https://{registry}"),
            format!("http://{registry}"),
            // Docker Hub's credentials live under its v1 index URL.
            if registry == "docker.io"
                || registry == "index.docker.io"
                || registry == "registry-1.docker.io"
            {
                "https://index.docker.io/v1/".to_string()
            } else {
                String::new()
            },
        ] {
            let entry = &auths[&key];
            // (`identitytoken` is an OAuth refresh token, not a bearer
            // token: not supported, so it is skipped.)
            let basic = entry["auth"]
                .as_str()
                .and_then(|a| base64::engine::general_purpose::STANDARD.decode(a).ok())
                .and_then(|d| String::from_utf8(d).ok())
                .and_then(|d| {
                    d.split_once(':')
                        .map(|(u, p)| (u.to_string(), p.to_string()))
                });
            if let Some((u, p)) = basic {
                return Some(RegistryAuth::Basic(u, p));
            }
            if let (Some(u), Some(p)) = (entry["username"].as_str(), entry["password"].as_str()) {
                return Some(RegistryAuth::Basic(u.into(), p.into()));
            }
        }
    }
    None
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Loads a base image into the store; `None` for `scratch`.
pub async fn load_base(
    base: &BaseRef,
    store: &BlobStore,
) -> Result<Option<StoredImage>, BuildError> {
    match base {
        BaseRef::Scratch => Ok(None),
        BaseRef::Registry(r) => pull(r, store).await.map(Some),
        BaseRef::Layout { dir, tag } => read_layout(dir, tag.as_deref(), store).map(Some),
        BaseRef::Rootfs(file) => from_rootfs_tar(file, store).map(Some),
    }
}

async fn pull(r: &Reference, store: &BlobStore) -> Result<StoredImage, BuildError> {
    let (client, auth) = client_for(r.registry());
    let accepted = [MANIFEST_V1, INDEX_V1, DOCKER_V2, DOCKER_LIST];
    let (mut bytes, mut digest) = client
        .pull_manifest_raw(r, &auth, &accepted)
        .await
        .map_err(reg_err(format!("cannot pull `{r}`")))?;
    let mut reference = r.clone();
    // An index: pick this platform's manifest.
    let kind: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| BuildError::Config(format!("`{r}`: bad manifest: {e}")))?;
    if kind.get("manifests").is_some() {
        let index: ImageIndex = serde_json::from_slice(&bytes)
            .map_err(|e| BuildError::Config(format!("`{r}`: bad index: {e}")))?;
        let pick = index
            .manifests()
            .iter()
            .find(|m| {
                m.platform().as_ref().is_some_and(|p| {
                    p.os().to_string() == "linux" && p.architecture().to_string() == host_arch()
                })
            })
            .ok_or_else(|| {
                BuildError::Config(format!("`{r}` has no linux/{} image", host_arch()))
            })?;
        reference = Reference::with_digest(
            r.registry().to_string(),
            r.repository().to_string(),
            pick.digest().to_string(),
        );
        (bytes, digest) = client
            .pull_manifest_raw(&reference, &auth, &accepted)
            .await
            .map_err(reg_err(format!("cannot pull `{reference}`")))?;
    }
    let actual = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
    );
    if actual != digest || r.digest().is_some_and(|d| reference == *r && d != actual) {
        return Err(BuildError::Config(format!(
            "`{r}`: manifest digest mismatch ({actual})"
        )));
    }
    store.put_bytes(&bytes)?;
    let manifest: ImageManifest = serde_json::from_slice(&bytes)
        .map_err(|e| BuildError::Config(format!("`{r}`: bad manifest: {e}")))?;
    let blobs = std::iter::once(manifest.config().clone()).chain(manifest.layers().iter().cloned());
    for d in blobs {
        let digest = d.digest().to_string();
        if store.has(&digest) {
            continue;
        }
        let tmp = store.temp_path()?;
        let _cleanup = super::store::RemoveOnDrop(tmp.clone());
        let file = tokio::fs::File::create(&tmp)
            .await
            .map_err(BuildError::io("cannot write blob"))?;
        let claimed = d.size();
        let cap = super::unpack::Limits::resolve(None)?.unpacked;
        if claimed > cap {
            return Err(BuildError::Limit(format!(
                "`{r}`: blob {digest} claims {claimed} bytes, more than the limit of {cap} (KILN_OCI_MAX_UNPACKED)"
            )));
        }
        let exceeded = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let file = super::store::SizeLimited {
            inner: file,
            left: claimed,
            exceeded: exceeded.clone(),
        };
        // `&str` is a descriptor to oci-client: the digest, checked as it
        // streams; the size the manifest claims is enforced by the writer.
        let pulled = client.pull_blob(&reference, digest.as_str(), file).await;
        if exceeded.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(BuildError::Limit(format!(
                "`{r}`: blob {digest} is larger than the {claimed} bytes its manifest says (the registry sent more): refused, nothing kept"
            )));
        }
        pulled.map_err(reg_err(format!("cannot pull blob {digest}")))?;
        store.commit(&tmp, &digest)?;
    }
    let config = serde_json::from_slice(&store.read(manifest.config().digest().as_ref())?)
        .map_err(|e| BuildError::Config(format!("`{r}`: bad image config: {e}")))?;
    Ok(StoredImage {
        manifest,
        config,
        manifest_digest: actual,
        source: format!("registry:{r}"),
    })
}

/// Reads an image from an OCI layout (by tag, or its only image).
pub fn read_layout(
    dir: &Path,
    tag: Option<&str>,
    store: &BlobStore,
) -> Result<StoredImage, BuildError> {
    let index: ImageIndex = serde_json::from_slice(
        &fs_err::read(dir.join("index.json")).map_err(BuildError::io("cannot read OCI layout"))?,
    )
    .map_err(|e| BuildError::Config(format!("`{}`: bad index.json: {e}", dir.display())))?;
    let name = |d: &oci_spec::image::Descriptor| {
        d.annotations()
            .as_ref()
            .and_then(|a| a.get("org.opencontainers.image.ref.name").cloned())
    };
    let pick = match tag {
        Some(t) => index
            .manifests()
            .iter()
            .find(|d| name(d).as_deref() == Some(t)),
        None if index.manifests().len() == 1 => index.manifests().first(),
        None => None,
    }
    .ok_or_else(|| {
        BuildError::Config(format!(
            "`{}` has no image{}",
            dir.display(),
            tag.map(|t| format!(" tagged `{t}`")).unwrap_or_default()
        ))
    })?;
    let blob = |digest: &str| -> Result<PathBuf, BuildError> {
        Ok(dir.join("blobs/sha256").join(hex_of(digest)?))
    };
    let import = |digest: &str| -> Result<(), BuildError> {
        if !store.has(digest) {
            let tmp = store.temp_path()?;
            let _cleanup = super::store::RemoveOnDrop(tmp.clone());
            fs_err::copy(blob(digest)?, &tmp).map_err(BuildError::io("cannot copy blob"))?;
            store.commit(&tmp, digest)?;
        }
        Ok(())
    };
    let manifest_digest = pick.digest().to_string();
    import(&manifest_digest)?;
    let manifest: ImageManifest = serde_json::from_slice(&store.read(&manifest_digest)?)
        .map_err(|e| BuildError::Config(format!("bad manifest: {e}")))?;
    import(manifest.config().digest().as_ref())?;
    for l in manifest.layers() {
        import(l.digest().as_ref())?;
    }
    let config = serde_json::from_slice(&store.read(manifest.config().digest().as_ref())?)
        .map_err(|e| BuildError::Config(format!("bad image config: {e}")))?;
    Ok(StoredImage {
        manifest,
        config,
        manifest_digest,
        source: format!("oci-layout:{}", dir.display()),
    })
}

/// A rootfs tarball becomes a one-layer image (the tar stored as is).
fn from_rootfs_tar(file: &Path, store: &BlobStore) -> Result<StoredImage, BuildError> {
    let tmp = store.temp_path()?;
    let _cleanup = super::store::RemoveOnDrop(tmp.clone());
    fs_err::copy(file, &tmp).map_err(BuildError::io(format!(
        "cannot read rootfs `{}`",
        file.display()
    )))?;
    let digest = super::store::file_digest(&tmp)?;
    let size = fs_err::metadata(&tmp)
        .map_err(BuildError::io("stat"))?
        .len();
    if !store.has(&digest) {
        store.commit(&tmp, &digest)?;
    } else {
        let _ = std::fs::remove_file(&tmp);
    }
    let compressed = {
        let mut f = fs_err::File::open(store.path(&digest)?).map_err(BuildError::io("open"))?;
        let mut m = [0u8; 2];
        std::io::Read::read(&mut f, &mut m).map_err(BuildError::io("read"))?;
        m == [0x1f, 0x8b]
    };
    let diff_id = if compressed {
        let mut h = <sha2::Sha256 as sha2::Digest>::new();
        let mut r = super::unpack::open_layer(&store.path(&digest)?)?;
        std::io::copy(&mut r, &mut HashSink(&mut h)).map_err(BuildError::io("read rootfs"))?;
        format!("sha256:{}", hex::encode(sha2::Digest::finalize(h)))
    } else {
        digest.clone()
    };
    let media = if compressed {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    } else {
        "application/vnd.oci.image.layer.v1.tar"
    };
    let config_json = serde_json::json!({
        "architecture": host_arch(), "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{ "created_by": format!("kiln: rootfs {}", file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()) }],
        "config": { "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] },
    });
    let config_bytes = canonical_json(&config_json);
    let config_digest = store.put_bytes(&config_bytes)?;
    let manifest_json = serde_json::json!({
        "schemaVersion": 2, "mediaType": MANIFEST_V1,
        "config": { "mediaType": CONFIG_V1, "digest": config_digest, "size": config_bytes.len() },
        "layers": [{ "mediaType": media, "digest": digest, "size": size }],
    });
    let manifest_bytes = canonical_json(&manifest_json);
    let manifest_digest = store.put_bytes(&manifest_bytes)?;
    Ok(StoredImage {
        manifest: serde_json::from_slice(&manifest_bytes)
            .map_err(|e| BuildError::Config(e.to_string()))?,
        config: serde_json::from_slice(&config_bytes)
            .map_err(|e| BuildError::Config(e.to_string()))?,
        manifest_digest,
        source: format!("rootfs:{}", file.display()),
    })
}

struct HashSink<'a>(&'a mut sha2::Sha256);
impl std::io::Write for HashSink<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        sha2::Digest::update(self.0, b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Pushes an image (manifest bytes + blobs in the store) to a registry,
/// skipping blobs it has and mounting those of `mount_from` when possible.
pub async fn push(
    target: &Reference,
    manifest_bytes: &[u8],
    blobs: &[String],
    store: &BlobStore,
    mount_from: Option<&Reference>,
) -> Result<String, BuildError> {
    let (client, auth) = client_for(target.registry());
    client.store_auth_if_needed(target.registry(), &auth).await;
    client
        .auth(target, &auth, oci_client::RegistryOperation::Push)
        .await
        .map_err(reg_err(format!("cannot log in to `{}`", target.registry())))?;
    for digest in blobs {
        if client.blob_exists(target, digest).await.unwrap_or(false) {
            continue;
        }
        if let Some(src) = mount_from
            .filter(|s| s.registry() == target.registry() && s.repository() != target.repository())
        {
            if client.mount_blob(target, src, digest).await.is_ok()
                && client.blob_exists(target, digest).await.unwrap_or(false)
            {
                continue;
            }
        }
        let data = store.read(digest)?;
        client
            .push_blob(target, data, digest)
            .await
            .map_err(reg_err(format!("cannot push blob {digest} to `{target}`")))?;
    }
    client
        .push_manifest_raw(
            target,
            manifest_bytes.to_vec(),
            MANIFEST_V1.parse().expect("valid header"),
        )
        .await
        .map_err(reg_err(format!("cannot push manifest to `{target}`")))
}

/// Writes (or adds to) an OCI image layout; `tag` names the image in it.
pub fn write_layout(
    dir: &Path,
    tag: Option<&str>,
    manifest_bytes: &[u8],
    manifest_digest: &str,
    blobs: &[String],
    store: &BlobStore,
) -> Result<(), BuildError> {
    let io = |w: &str| BuildError::io(format!("{w} `{}`", dir.display()));
    let blob_dir = dir.join("blobs/sha256");
    fs_err::create_dir_all(&blob_dir).map_err(io("cannot create"))?;
    fs_err::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .map_err(io("cannot write"))?;
    for d in blobs
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(manifest_digest))
    {
        let dest = blob_dir.join(hex_of(d)?);
        if !dest.exists() {
            let tmp = blob_dir.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
            fs_err::copy(store.path(d)?, &tmp).map_err(io("cannot write blob in"))?;
            fs_err::rename(&tmp, &dest).map_err(io("cannot write blob in"))?;
        }
    }
    let index_path = dir.join("index.json");
    let mut index: serde_json::Value = std::fs::read(&index_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(
            || serde_json::json!({ "schemaVersion": 2, "mediaType": INDEX_V1, "manifests": [] }),
        );
    let mut entry = serde_json::json!({ "mediaType": MANIFEST_V1, "digest": manifest_digest, "size": manifest_bytes.len() });
    if let Some(t) = tag {
        entry["annotations"] = serde_json::json!({ "org.opencontainers.image.ref.name": t });
    }
    let manifests = index["manifests"]
        .as_array_mut()
        .ok_or_else(|| BuildError::Config(format!("`{}`: bad index.json", dir.display())))?;
    manifests.retain(|m| match tag {
        Some(t) => m["annotations"]["org.opencontainers.image.ref.name"] != t,
        None => m["digest"] != manifest_digest,
    });
    manifests.push(entry);
    let tmp = dir.join(".index.json.tmp");
    fs_err::write(&tmp, canonical_json(&index)).map_err(io("cannot write"))?;
    fs_err::rename(&tmp, &index_path).map_err(io("cannot write"))?;
    Ok(())
}

/// Points `tag` in `image`'s repository at the manifest `digest` (already
/// there): a channel pointer such as `:prod`. Idempotent.
pub async fn tag(image: &Reference, digest: &str, tag: &str) -> Result<(), BuildError> {
    let (client, auth) = client_for(image.registry());
    let by_digest = Reference::with_digest(
        image.registry().to_string(),
        image.repository().to_string(),
        digest.to_string(),
    );
    let accepted = [MANIFEST_V1, INDEX_V1, DOCKER_V2, DOCKER_LIST];
    let (bytes, _) = client
        .pull_manifest_raw(&by_digest, &auth, &accepted)
        .await
        .map_err(reg_err(format!("cannot read `{by_digest}`")))?;
    let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v["mediaType"].as_str().map(String::from))
        .unwrap_or_else(|| MANIFEST_V1.to_string());
    let target = Reference::with_tag(
        image.registry().to_string(),
        image.repository().to_string(),
        tag.to_string(),
    );
    client
        .auth(&target, &auth, oci_client::RegistryOperation::Push)
        .await
        .map_err(reg_err(format!("cannot log in to `{}`", target.registry())))?;
    client
        .push_manifest_raw(
            &target,
            bytes,
            media_type
                .parse()
                .map_err(|_| BuildError::Config(format!("bad media type `{media_type}`")))?,
        )
        .await
        .map_err(reg_err(format!("cannot tag `{target}`")))?;
    Ok(())
}

/// The manifest digest a tag points at; `None` when there is no such tag.
pub async fn digest_of(tagged: &Reference) -> Result<Option<String>, BuildError> {
    let (client, auth) = client_for(tagged.registry());
    match client.fetch_manifest_digest(tagged, &auth).await {
        Ok(d) => Ok(Some(d)),
        Err(e) if not_found(&e) => Ok(None),
        Err(e) => Err(reg_err(format!("cannot resolve `{tagged}`"))(e)),
    }
}

/// Whether a registry answered that the manifest (or the whole
/// repository) does not exist, however it phrased it: a 404, or an error
/// envelope with `MANIFEST_UNKNOWN` / `NAME_UNKNOWN`.
pub fn not_found(e: &oci_client::errors::OciDistributionError) -> bool {
    use oci_client::errors::{OciDistributionError as E, OciErrorCode};
    match e {
        E::ImageManifestNotFoundError(_) => true,
        E::RegistryError { envelope, .. } => envelope.errors.iter().any(|x| {
            matches!(
                x.code,
                OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown
            )
        }),
        E::ServerError { code, .. } => *code == 404,
        _ => false,
    }
}

/// Deletes the manifest `digest` from `image`'s repository (and with it
/// every tag on it); `false` when it was gone already. The registry must
/// allow deletes (docker-registry: `storage.delete.enabled`). Basic
/// credentials from the docker config; registries that want bearer tokens
/// are not supported yet.
pub async fn delete_manifest(image: &Reference, digest: &str) -> Result<bool, BuildError> {
    let scheme = if is_local_registry(image.registry()) {
        "http"
    } else {
        "https"
    };
    let url = format!(
        "{scheme}://{}/v2/{}/manifests/{digest}",
        image.registry(),
        image.repository()
    );
    let mut req = reqwest::Client::new().delete(&url);
    match docker_auth(image.registry()) {
        Some(RegistryAuth::Basic(user, password)) => req = req.basic_auth(user, Some(password)),
        Some(RegistryAuth::Bearer(token)) => req = req.bearer_auth(token),
        _ => {}
    }
    let io = |msg: String| BuildError::Io {
        what: format!("cannot delete `{}@{digest}`", image.repository()),
        source: std::io::Error::other(msg),
    };
    let resp = req.send().await.map_err(|e| io(e.to_string()))?;
    match resp.status().as_u16() {
        200..=299 => Ok(true),
        404 => Ok(false),
        401 if resp
            .headers()
            .get("www-authenticate")
            .and_then(|h| h.to_str().ok())
            .is_some_and(|h| h.to_ascii_lowercase().starts_with("bearer")) =>
        {
            Err(io("the registry wants a bearer token: deleting from it is not supported yet".into()))
        }
        405 => Err(io(
            "the registry does not allow deletes (docker-registry: set `storage.delete.enabled: true`)".into(),
        )),
        code => Err(io(format!("the registry answered {code}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error with a cause, as HTTP stacks nest them.
    #[derive(Debug)]
    struct Nested(&'static str, Option<Box<Nested>>);
    impl std::fmt::Display for Nested {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Nested {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    fn chain(inner: &'static str) -> Nested {
        Nested(
            "error sending request",
            Some(Box::new(Nested(
                "client error (Connect)",
                Some(Box::new(Nested(inner, None))),
            ))),
        )
    }

    #[test]
    fn causes_are_named_from_the_innermost_error() {
        let dns = cause_of(
            &chain("dns error: failed to lookup address information: Name or service not known"),
            "reg.example:5000",
        )
        .unwrap();
        assert!(
            dns.starts_with("DNS: the name `reg.example` does not resolve"),
            "{dns}"
        );
        let tls = cause_of(
            &chain("invalid peer certificate: UnknownIssuer"),
            "reg.example",
        )
        .unwrap();
        assert!(
            tls.starts_with("TLS: invalid peer certificate: UnknownIssuer"),
            "{tls}"
        );
        let refused = cause_of(
            &chain("tcp connect error: Connection refused (os error 111)"),
            "127.0.0.1:9",
        )
        .unwrap();
        assert!(
            refused.contains("nothing listens on `127.0.0.1:9`"),
            "{refused}"
        );
        assert_eq!(cause_of(&chain("something else"), "r"), None);
        assert_eq!(
            realm_of("Basic realm=\"kiln-test\""),
            " (realm \"kiln-test\")"
        );
        assert_eq!(
            realm_of("Bearer realm=\"https://auth.example/token\",service=\"r\""),
            " (realm \"https://auth.example/token\")"
        );
        assert_eq!(realm_of(""), "");
    }
}
