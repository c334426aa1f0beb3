//! The OCI builder's steps: preflight, launch (pull, unpack, mount) and
//! snapshot (layer, config, manifest, outputs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use async_trait::async_trait;
use serde::Deserialize;

use super::container::mount_overlay;
use super::image::{self, StoredImage, CONFIG_V1, MANIFEST_V1};
use super::layer::{write_layer_until, Compression};
use super::reference::{BaseRef, TargetRef};
use super::runc::RuncCommunicator;
use super::store::{canonical_json, hex_of, BlobStore};
use crate::builder::{BuildError, Builder, Instance};
use crate::communicator::Communicator;
use crate::job::{sanitize, JobContext, Resource};
use crate::template::plan::JobPlan;
use crate::ui::ArtifactInfo;

#[derive(Debug, Deserialize, Default)]
struct ImageOverrides {
    env: Option<BTreeMap<String, String>>,
    cmd: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    labels: Option<BTreeMap<String, String>>,
    workdir: Option<String>,
    user: Option<String>,
    exposed_ports: Option<Vec<String>>,
    volumes: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default)]
struct RegistryAuthSettings {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    token: String,
}

#[derive(Debug, Deserialize)]
struct OciSettings {
    from: String,
    #[serde(default)]
    to: Vec<String>,
    runtime: Option<String>,
    network: Option<String>,
    compression: Option<String>,
    created: Option<String>,
    leak_scan: Option<String>,
    #[serde(default)]
    config: ImageOverrides,
    limits: Option<super::unpack::LimitSettings>,
    #[serde(default)]
    auth: BTreeMap<String, RegistryAuthSettings>,
}

/// The job's settings; the template's registry credentials are checked
/// and handed to the registry client (in memory) on the way.
fn settings(job: &JobPlan) -> Result<OciSettings, BuildError> {
    let s: OciSettings = crate::builder::source_settings(job)?;
    let values = match job.source.get("auth") {
        Some(crate::template::value::Value::Map(m)) => m.clone(),
        _ => Default::default(),
    };
    for (registry, a) in &s.auth {
        let at = format!("`auth.\"{registry}\"` of source `{}`", job.source_name);
        let secret_ok = |key: &str| {
            values
                .get(registry)
                .and_then(|v| match v {
                    crate::template::value::Value::Map(m) => m.get(key),
                    _ => None,
                })
                .is_none_or(|v| v.is_sensitive())
        };
        for key in ["password", "token"] {
            if !secret_ok(key) {
                return Err(BuildError::Config(format!(
                    "{at}: `{key}` must come from `[secrets]` or a `sensitive` variable, not be written in the template (it would be recorded with the build's settings)"
                )));
            }
        }
        match (
            a.username.is_empty(),
            a.password.is_empty(),
            a.token.is_empty(),
        ) {
            (false, false, true) | (false, true, false) | (true, true, false) => {}
            (_, false, false) => {
                return Err(BuildError::Config(format!(
                    "{at}: give `password` or `token`, not both"
                )))
            }
            (false, true, true) => {
                return Err(BuildError::Config(format!(
                    "{at}: `username` needs a `password` or a `token`"
                )))
            }
            (true, false, true) => {
                return Err(BuildError::Config(format!(
                    "{at}: `password` needs a `username`"
                )))
            }
            (true, true, true) => {
                return Err(BuildError::Config(format!(
                    "{at}: give `username` with `password` or `token`, or a bearer `token`"
                )))
            }
        }
        image::use_template_auth(registry, &a.username, &a.password, &a.token)
            .map_err(BuildError::Config)?;
    }
    Ok(s)
}

/// Every registry of `from` and `to`, and the credentials for each, are
/// checked before anything is pulled or run: a registry that cannot be
/// reached or refuses the credentials fails the job now, with the cause
/// in words, not after the provisioners.
async fn check_registries(
    ctx: &JobContext,
    s: &OciSettings,
    base: &BaseRef,
    targets: &[TargetRef],
) -> Result<(), BuildError> {
    let mut seen: Vec<&str> = vec![];
    let mut roles: Vec<(&str, String)> = vec![];
    if let BaseRef::Registry(r) = base {
        roles.push((r.registry(), format!("`from = \"{}\"`", s.from)));
    }
    for (t, raw) in targets.iter().zip(&s.to) {
        if let TargetRef::Registry(r) = t {
            roles.push((r.registry(), format!("`to` entry \"{raw}\"")));
        }
    }
    for (registry, role) in roles {
        if seen.contains(&registry) {
            continue;
        }
        seen.push(registry);
        image::check_registry(registry)
            .await
            .map_err(|e| BuildError::Io {
                what: format!("registry `{registry}` of {role}"),
                source: std::io::Error::other(e),
            })?;
    }
    for t in targets {
        if let TargetRef::Registry(r) = t {
            image::check_push(r).await?;
        }
    }
    ctx.message(format!(
        "registries reachable, credentials accepted: {}",
        if seen.is_empty() {
            "(none used)".to_string()
        } else {
            seen.join(", ")
        }
    ));
    Ok(())
}

pub struct OciBuilder;

#[async_trait]
impl Builder for OciBuilder {
    fn preflight(&self, job: &JobPlan) -> Result<(), BuildError> {
        let s = settings(job)?;
        let runtime = s.runtime.as_deref().unwrap_or("runc");
        if !nix::unistd::geteuid().is_root() {
            return Err(BuildError::NotSupported("the oci builder needs root (overlayfs and the OCI runtime); rootless builds are not supported yet".into()));
        }
        if which(runtime).is_none() {
            return Err(BuildError::NotSupported(format!(
                "the OCI runtime `{runtime}` is not installed (on Debian: `apt-get install runc`)"
            )));
        }
        if runtime.ends_with("crun") && Path::new("/sys/fs/cgroup/unified").is_dir() {
            return Err(BuildError::NotSupported(
                "crun cannot run containers on this host's hybrid cgroup v1/v2 layout; use `runtime = \"runc\"`".into(),
            ));
        }
        Ok(())
    }

    async fn resolve_base(
        &self,
        job: &JobPlan,
        template_dir: &Path,
        state_dir: &Path,
    ) -> Result<Option<String>, BuildError> {
        let s = settings(job)?;
        let base_ref = BaseRef::parse(&s.from, template_dir)?;
        let store = BlobStore::new(state_dir);
        let base = image::load_base(&base_ref, &store).await?;
        Ok(Some(base_label(base.as_ref())))
    }

    fn can_test(&self) -> bool {
        true
    }

    async fn launch_artifact(
        &self,
        ctx: &JobContext,
        undo: &crate::job::Undo,
        artifact: &ArtifactInfo,
    ) -> Result<Box<dyn crate::builder::ArtifactInstance>, BuildError> {
        super::tester::launch_artifact(&ctx.state_dir, undo, artifact).await
    }

    async fn launch(&self, ctx: &JobContext) -> Result<Box<dyn Instance>, BuildError> {
        let s = settings(&ctx.plan)?;
        let base_ref = BaseRef::parse(&s.from, &ctx.template_dir)?;
        let targets =
            s.to.iter()
                .map(|t| TargetRef::parse(t, &ctx.template_dir))
                .collect::<Result<Vec<_>, _>>()?;
        let store = BlobStore::new(&ctx.state_dir);
        check_registries(ctx, &s, &base_ref, &targets).await?;
        ctx.message(format!("base `{}`", s.from));
        let base = image::load_base(&base_ref, &store).await?;
        let limits = super::unpack::Limits::resolve(s.limits.as_ref())?;
        let lower = lower_dir(ctx, &store, base.as_ref(), limits).await?;

        let work = ctx
            .state_dir
            .join("work")
            .join(sanitize(&ctx.build_id))
            .join(sanitize(&ctx.name));
        ctx.undo
            .register(
                Resource::TempDir { path: work.clone() },
                "oci work directory",
            )
            .await
            .map_err(BuildError::io("journal"))?;
        let (upper, overlay_work, merged) =
            (work.join("upper"), work.join("work"), work.join("merged"));
        for d in [&upper, &overlay_work, &merged] {
            fs_err::tokio::create_dir_all(d)
                .await
                .map_err(BuildError::io("cannot create work directory"))?;
        }
        let overlay = if std::env::var_os("KILN_OCI_NO_OVERLAY").is_some_and(|v| v == "1") {
            Err("KILN_OCI_NO_OVERLAY=1".to_string())
        } else {
            ctx.undo
                .register(
                    Resource::Mount {
                        target: merged.clone(),
                    },
                    "overlay mount",
                )
                .await
                .map_err(BuildError::io("journal"))?;
            mount_overlay(&lower, &upper, &overlay_work, &merged).map_err(|e| e.to_string())
        };
        let copied = match overlay {
            Ok(()) => None,
            Err(why) => {
                ctx.message(format!("overlayfs not used ({why}): copying the base instead; the snapshot diffs the whole tree, which is slower"));
                let (l, m) = (lower.clone(), merged.clone());
                let cancelled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let _on_drop = SetOnDrop(cancelled.clone());
                let since = tokio::task::spawn_blocking(move || {
                    super::copydiff::copy_base_until(&l, &m, &|| {
                        cancelled.load(std::sync::atomic::Ordering::SeqCst)
                    })
                })
                .await
                .map_err(|e| BuildError::Io {
                    what: "copy".into(),
                    source: std::io::Error::other(e),
                })?
                .map(Some)?;
                // The whole work folder, so that the snapshot can still
                // hard-link from the tree into `upper` (one mount).
                ctx.undo
                    .register(
                        Resource::Mount {
                            target: work.clone(),
                        },
                        "nodev bind mount",
                    )
                    .await
                    .map_err(BuildError::io("journal"))?;
                super::container::bind_nodev(&work)?;
                since
            }
        };

        // An unguessable name, created here (never adopted if it exists),
        // readable by root only: it will hold provisioner environments.
        let secret_dir = tmpfs_dir()?.join(format!(
            "kiln-{}-{}",
            sanitize(&ctx.build_id),
            uuid::Uuid::new_v4()
        ));
        ctx.undo
            .register(
                Resource::TempDir {
                    path: secret_dir.clone(),
                },
                "runtime configs (tmpfs)",
            )
            .await
            .map_err(BuildError::io("journal"))?;
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&secret_dir)
                .map_err(BuildError::io(format!(
                    "cannot create `{}`",
                    secret_dir.display()
                )))?;
        }
        let image_cfg = base.as_ref().and_then(|b| b.config.config().clone());
        let image_env = image_cfg
            .as_ref()
            .and_then(|c| c.env().clone())
            .unwrap_or_else(|| {
                vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()]
            });
        let image_workdir = image_cfg
            .as_ref()
            .and_then(|c| c.working_dir().clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into());
        let (uid, gid) = resolve_user(
            &merged,
            image_cfg.as_ref().and_then(|c| c.user().clone()).as_deref(),
        )?;
        let short: String = ctx
            .build_id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(8)
            .collect();
        let comm = RuncCommunicator {
            runtime: s.runtime.clone().unwrap_or_else(|| "runc".into()),
            state_root: ctx.state_dir.join("oci").join("runtime"),
            secret_dir,
            rootfs: merged.clone(),
            hostname: format!("kiln-{short}"),
            host_network: s.network.as_deref() != Some("none"),
            image_env,
            image_workdir,
            uid,
            gid,
            id_prefix: format!("kiln-{short}-{}", sanitize(&ctx.plan.source_name)),
            undo: ctx.undo.clone(),
            counter: AtomicU64::new(0),
            readonly_root: false,
            session: Default::default(),
        };
        Ok(Box::new(OciInstance {
            settings: s,
            targets,
            store,
            base,
            lower,
            upper,
            copied,
            comm,
        }))
    }
}

fn which(bin: &str) -> Option<PathBuf> {
    if bin.contains('/') {
        return Path::new(bin).is_file().then(|| PathBuf::from(bin));
    }
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(bin))
            .find(|c| c.is_file())
    })
}

/// The folder for runtime configs: they carry the environment (secrets),
/// so it must be a tmpfs. `KILN_TMPFS` overrides the default `/dev/shm`.
pub(crate) fn tmpfs_dir() -> Result<PathBuf, BuildError> {
    crate::secrets::tmpfs_dir("provisioner environments (secrets)")
        .map_err(BuildError::NotSupported)
}

/// `USER` as `uid[:gid]`; names are not resolved yet (root is used).
/// A `USER` (`uid`, `uid:gid`, `name`, `name:group`, or a mix) as numeric
/// ids, names looked up in the image's own `/etc/passwd` and `/etc/group`
/// (`rootfs` is untrusted: symlinks and oversized files are refused). An
/// unknown name is an error, never root.
fn resolve_user(rootfs: &Path, user: Option<&str>) -> Result<(u32, u32), BuildError> {
    let Some(u) = user.filter(|u| !u.is_empty()) else {
        return Ok((0, 0));
    };
    let (name, group) = match u.split_once(':') {
        Some((n, g)) => (n, Some(g)),
        None => (u, None),
    };
    let read = |file: &str| -> Result<String, BuildError> {
        let bad = |why: &str| {
            BuildError::Config(format!(
                "USER `{u}`: cannot look names up in the image's /etc/{file}: {why}"
            ))
        };
        let etc = rootfs.join("etc");
        let path = etc.join(file);
        for p in [&etc, &path] {
            match std::fs::symlink_metadata(p) {
                Ok(m) if m.file_type().is_symlink() => return Err(bad("it is a symbolic link")),
                Ok(m) if p == &path && (!m.is_file() || m.len() > 4 << 20) => {
                    return Err(bad("not a regular file of at most 4 MiB"))
                }
                Ok(_) => {}
                Err(e) => return Err(bad(&e.to_string())),
            }
        }
        std::fs::read_to_string(&path).map_err(|e| bad(&e.to_string()))
    };
    // `name:x:uid:gid:…` lines: (uid or gid, primary gid) of `key`.
    let find = |text: &str, key: &str| -> Option<(u32, u32)> {
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 3 && f[0] == key).then(|| {
                let id = f[2].parse().ok()?;
                Some((id, f.get(3).and_then(|g| g.parse().ok()).unwrap_or(id)))
            })?
        })
    };
    let (uid, primary_gid) = match name.parse::<u32>() {
        Ok(n) => (n, n),
        Err(_) => find(&read("passwd")?, name).ok_or_else(|| {
            BuildError::Config(format!(
                "USER `{u}`: there is no user `{name}` in the image's /etc/passwd"
            ))
        })?,
    };
    let gid = match group {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => find(&read("group")?, g).map(|(id, _)| id).ok_or_else(|| {
                BuildError::Config(format!(
                    "USER `{u}`: there is no group `{g}` in the image's /etc/group"
                ))
            })?,
        },
    };
    Ok((uid, gid))
}

/// How artifacts record their base: `SOURCE@MANIFEST_DIGEST`, or `scratch`.
fn base_label(base: Option<&StoredImage>) -> String {
    match base {
        Some(b) => format!("{}@{}", b.source, b.manifest_digest),
        None => "scratch".to_string(),
    }
}

/// The unpacked base, cached per manifest digest; unpacked into a temp
/// folder (journaled) and renamed, so a crash never leaves half a cache.
async fn lower_dir(
    ctx: &JobContext,
    store: &BlobStore,
    base: Option<&StoredImage>,
    limits: super::unpack::Limits,
) -> Result<PathBuf, BuildError> {
    let root = ctx.state_dir.join("oci").join("rootfs");
    let key = match base {
        Some(b) => hex_of(&b.manifest_digest)?.to_string(),
        None => "scratch".to_string(),
    };
    let dir = root.join(&key);
    if dir.is_dir() {
        return Ok(dir);
    }
    let tmp = root.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
    let handle = ctx
        .undo
        .register(Resource::TempDir { path: tmp.clone() }, "base unpack")
        .await
        .map_err(BuildError::io("journal"))?;
    // Root-only: an unpacked base keeps the image's setuid files and nodes.
    crate::builder::cache::private_dir(&root)
        .map_err(BuildError::io("cannot create the base cache"))?;
    fs_err::tokio::create_dir_all(&tmp)
        .await
        .map_err(BuildError::io("cannot create base folder"))?;
    if let Some(b) = base {
        ctx.message(format!(
            "unpacking {} layer(s) of {}",
            b.manifest.layers().len(),
            b.manifest_digest
        ));
        let layers: Vec<(String, PathBuf)> = b
            .manifest
            .layers()
            .iter()
            .map(|l| Ok((l.digest().to_string(), store.path(l.digest().as_ref())?)))
            .collect::<Result<_, BuildError>>()?;
        let t = tmp.clone();
        let unpack_layers = layers.clone();
        // If the job is cancelled while this runs, the task stops at the
        // next entry and removes its own folder: the undo stack may already
        // have removed it, and nothing must be re-created behind its back.
        let cancelled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let _on_drop = SetOnDrop(cancelled.clone());
        let unpacked = tokio::task::spawn_blocking(move || {
            let is_cancelled = || cancelled.load(std::sync::atomic::Ordering::SeqCst);
            let result = super::unpack::unpack_image(&t, &unpack_layers, limits, &is_cancelled);
            if is_cancelled() || result.is_err() {
                let _ = std::fs::remove_dir_all(&t);
            }
            result
        })
        .await
        .map_err(|e| BuildError::Io {
            what: "unpack".into(),
            source: std::io::Error::other(e),
        })?;
        if let Err(e) = unpacked {
            if matches!(e, BuildError::Limit(_)) {
                // Nothing of a bomb stays cached: neither its blobs nor a
                // half-unpacked tree (removed by the task above).
                for (_, p) in &layers {
                    let _ = std::fs::remove_file(p);
                }
            }
            return Err(e);
        }
    }
    match fs_err::tokio::rename(&tmp, &dir).await {
        Ok(()) => {}
        // Another build unpacked the same base meanwhile.
        Err(_) if dir.is_dir() => {}
        Err(e) => return Err(BuildError::io("cannot store the unpacked base")(e)),
    }
    ctx.undo.release(handle).await;
    let _ = fs_err::tokio::remove_dir_all(&tmp).await;
    Ok(dir)
}

/// Raises a flag when dropped: tells blocking work that whoever awaited it
/// is gone (the job was cancelled).
struct SetOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

struct OciInstance {
    settings: OciSettings,
    targets: Vec<TargetRef>,
    store: BlobStore,
    base: Option<StoredImage>,
    lower: PathBuf,
    upper: PathBuf,
    /// When the base was copied (no overlayfs): the upper tree is then
    /// computed by diffing at snapshot time.
    copied: Option<i64>,
    comm: RuncCommunicator,
}

impl OciInstance {
    /// Fails the build if the new layer holds a secret or a key.
    async fn leak_scan(&self, ctx: &JobContext) -> Result<(), BuildError> {
        if self.settings.leak_scan.as_deref() == Some("off") {
            ctx.message("warning: `leak_scan = \"off\"`: the image is not checked for secrets, keys and shell histories".into());
            return Ok(());
        }
        let (upper, secrets) = (self.upper.clone(), ctx.secrets.clone());
        let findings =
            tokio::task::spawn_blocking(move || crate::secrets::leak::scan_tree(&upper, &secrets))
                .await
                .map_err(|e| BuildError::Io {
                    what: "leak scan".into(),
                    source: std::io::Error::other(e),
                })?
                .map_err(BuildError::io("leak scan"))?;
        if findings.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = findings.iter().map(ToString::to_string).collect();
        Err(BuildError::Leak(list.join("; ")))
    }

    /// Seconds since the epoch that mtimes are clamped to and `created` is.
    fn clamp(&self) -> Result<i64, BuildError> {
        if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
            // Up to the last second of year 9999, which RFC 3339 can write.
            return v.trim().parse::<i64>().ok().filter(|s| (0..=253_402_300_799).contains(s)).ok_or_else(|| {
                BuildError::Config(format!("SOURCE_DATE_EPOCH `{v}` is not a number of seconds between 0 and 253402300799"))
            });
        }
        let created = self
            .settings
            .created
            .clone()
            .or_else(|| self.base.as_ref().and_then(|b| b.config.created().clone()));
        match created {
            Some(c) => humantime::parse_rfc3339_weak(&c)
                .or_else(|_| humantime::parse_rfc3339(&c))
                .map(|t| {
                    t.duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs() as i64)
                        .unwrap_or(0)
                })
                .map_err(|e| {
                    BuildError::Config(format!("`created = \"{c}\"` is not an RFC 3339 time: {e}"))
                }),
            None => Ok(0),
        }
    }

    fn image_config(
        &self,
        ctx: &JobContext,
        diff_id: &str,
        created: &str,
    ) -> Result<Vec<u8>, BuildError> {
        let mut cfg = match &self.base {
            Some(b) => serde_json::to_value(&b.config).expect("config serializes"),
            None => {
                serde_json::json!({ "architecture": host_arch(), "os": "linux", "rootfs": { "type": "layers", "diff_ids": [] } })
            }
        };
        cfg["created"] = created.into();
        if let Some(ids) = cfg["rootfs"]["diff_ids"].as_array_mut() {
            ids.push(diff_id.into());
        }
        if !cfg["history"].is_array() {
            cfg["history"] = serde_json::json!([]);
        }
        let base_layers = cfg["rootfs"]["diff_ids"]
            .as_array()
            .map_or(0, |a| a.len().saturating_sub(1));
        let history = cfg["history"].as_array_mut().expect("array");
        // Tools pair non-empty history entries with layers: fill in the base's gaps.
        let non_empty = history.iter().filter(|h| h["empty_layer"] != true).count();
        for _ in non_empty..base_layers {
            history.insert(
                0,
                serde_json::json!({ "created_by": "base layer (no history recorded)" }),
            );
        }
        for p in &ctx.plan.provisioners {
            let masked = serde_json::Value::Object(
                p.config
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_masked_json()))
                    .collect(),
            );
            let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(canonical_json(
                &masked,
            )));
            history.push(serde_json::json!({ "created": created, "created_by": format!("kiln provisioner {} ({}) sha256:{digest}", p.index, p.kind), "empty_layer": true }));
        }
        history.push(serde_json::json!({ "created": created, "created_by": format!("kiln {} snapshot of {}", env!("CARGO_PKG_VERSION"), ctx.name) }));
        if !cfg["config"].is_object() {
            cfg["config"] = serde_json::json!({});
        }
        let c = &mut cfg["config"];
        let o = &self.settings.config;
        if let Some(env) = &o.env {
            let mut list: Vec<String> = c["Env"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            list.retain(|e| !env.contains_key(e.split('=').next().unwrap_or_default()));
            list.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
            c["Env"] = serde_json::json!(list);
        }
        if let Some(cmd) = &o.cmd {
            c["Cmd"] = serde_json::json!(cmd);
        }
        if let Some(ep) = &o.entrypoint {
            c["Entrypoint"] = serde_json::json!(ep);
        }
        if let Some(w) = &o.workdir {
            c["WorkingDir"] = w.clone().into();
        }
        if let Some(u) = &o.user {
            c["User"] = u.clone().into();
        }
        if let Some(volumes) = &o.volumes {
            c["Volumes"] = serde_json::Value::Object(
                volumes
                    .iter()
                    .map(|v| (v.clone(), serde_json::json!({})))
                    .collect(),
            );
        }
        if let Some(ports) = &o.exposed_ports {
            c["ExposedPorts"] = serde_json::Value::Object(
                ports
                    .iter()
                    .map(|p| (p.clone(), serde_json::json!({})))
                    .collect(),
            );
        }
        if !c["Labels"].is_object() {
            c["Labels"] = serde_json::json!({});
        }
        let labels = c["Labels"].as_object_mut().expect("object");
        labels.insert(
            "org.opencontainers.image.title".into(),
            ctx.image.name.clone().into(),
        );
        labels.insert(
            "org.opencontainers.image.version".into(),
            ctx.image.version.clone().into(),
        );
        labels.insert("org.opencontainers.image.created".into(), created.into());
        if let Some(d) = &ctx.image.description {
            labels.insert(
                "org.opencontainers.image.description".into(),
                d.clone().into(),
            );
        }
        labels.insert(
            "dev.kiln.template.digest".into(),
            ctx.template_digest.clone().into(),
        );
        for (k, v) in o.labels.iter().flatten() {
            labels.insert(k.clone(), v.clone().into());
        }
        // Checked against the OCI types before it is written.
        let typed: oci_spec::image::ImageConfiguration = serde_json::from_value(cfg)
            .map_err(|e| BuildError::Config(format!("invalid image config: {e}")))?;
        Ok(canonical_json(&typed))
    }
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Docker layer media types have OCI equivalents for the same bytes.
fn oci_layer_type(t: &str) -> String {
    match t {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            "application/vnd.oci.image.layer.v1.tar+gzip".into()
        }
        "application/vnd.docker.image.rootfs.diff.tar" => {
            "application/vnd.oci.image.layer.v1.tar".into()
        }
        other => other.into(),
    }
}

#[async_trait]
impl Instance for OciInstance {
    fn communicator(&self) -> &dyn Communicator {
        &self.comm
    }

    async fn snapshot(&mut self, ctx: &JobContext) -> Result<Vec<ArtifactInfo>, BuildError> {
        let clamp = self.clamp()?;
        let started = std::time::Instant::now();
        let created = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(clamp.max(0) as u64),
        )
        .to_string();
        let compression = if self.settings.compression.as_deref() == Some("zstd") {
            Compression::Zstd
        } else {
            Compression::Gzip
        };
        let (upper, lower, store) = (self.upper.clone(), self.lower.clone(), self.store.clone());
        if let Some(since) = self.copied {
            let (lower, root, upper) = (
                self.lower.clone(),
                self.comm.rootfs.clone(),
                self.upper.clone(),
            );
            tokio::task::spawn_blocking(move || {
                super::copydiff::diff_into_upper(&lower, &root, &upper, since)
            })
            .await
            .map_err(|e| BuildError::Io {
                what: "diff".into(),
                source: std::io::Error::other(e),
            })??;
        }
        // The image's USER by name must exist in what was built.
        if let Some(user) = &self.settings.config.user {
            resolve_user(&self.comm.rootfs, Some(user))?;
        }
        self.leak_scan(ctx).await?;
        let cancelled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let _on_drop = SetOnDrop(cancelled.clone());
        let layer = tokio::task::spawn_blocking(move || {
            let is_cancelled = || cancelled.load(std::sync::atomic::Ordering::SeqCst);
            write_layer_until(&upper, &lower, clamp, compression, &store, &is_cancelled)
        })
        .await
        .map_err(|e| BuildError::Io {
            what: "snapshot".into(),
            source: std::io::Error::other(e),
        })??;
        ctx.message(format!(
            "layer {} ({} bytes) in {} ms",
            layer.digest,
            layer.size,
            started.elapsed().as_millis()
        ));
        let config_bytes = self.image_config(ctx, &layer.diff_id, &created)?;
        let config_digest = self.store.put_bytes(&config_bytes)?;
        let mut layers: Vec<serde_json::Value> = self
            .base
            .iter()
            .flat_map(|b| b.manifest.layers().iter())
            .map(|l| serde_json::json!({ "mediaType": oci_layer_type(l.media_type().as_ref()), "digest": l.digest().to_string(), "size": l.size() }))
            .collect();
        layers.push(serde_json::json!({ "mediaType": layer.media_type, "digest": layer.digest, "size": layer.size }));
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_V1,
            "config": { "mediaType": CONFIG_V1, "digest": config_digest, "size": config_bytes.len() },
            "layers": layers,
        });
        let _: oci_spec::image::ImageManifest = serde_json::from_value(manifest.clone())
            .map_err(|e| BuildError::Config(format!("invalid manifest: {e}")))?;
        let manifest_bytes = canonical_json(&manifest);
        let manifest_digest = self.store.put_bytes(&manifest_bytes)?;
        let blobs: Vec<String> = std::iter::once(config_digest.clone())
            .chain(
                layers
                    .iter()
                    .filter_map(|l| l["digest"].as_str().map(String::from)),
            )
            .collect();

        let base_ref = Some(base_label(self.base.as_ref()));
        let mut artifacts = vec![];
        let mount_from = match self.base.as_ref().map(|b| b.source.as_str()) {
            Some(s) => s
                .strip_prefix("registry:")
                .and_then(|r| r.parse::<oci_client::Reference>().ok()),
            None => None,
        };
        for t in &self.targets {
            match t {
                TargetRef::Registry(r) => {
                    ctx.message(format!("pushing `{r}`"));
                    image::push(r, &manifest_bytes, &blobs, &self.store, mount_from.as_ref())
                        .await?;
                    artifacts.push(ArtifactInfo {
                        base: base_ref.clone(),
                        endpoint: None,
                        manifest: None,
                        hardening: vec![],
                        runs: vec![],
                        tests: None,
                        identity: None,
                        sbom: None,
                        signatures: vec![],
                        kind: "oci".into(),
                        id: format!("registry:{r}"),
                        digest: Some(manifest_digest.clone()),
                    });
                }
                TargetRef::Layout { dir, tag } => {
                    let (d, t, store, mb, md, bl) = (
                        dir.clone(),
                        tag.clone(),
                        self.store.clone(),
                        manifest_bytes.clone(),
                        manifest_digest.clone(),
                        blobs.clone(),
                    );
                    tokio::task::spawn_blocking(move || {
                        image::write_layout(&d, t.as_deref(), &mb, &md, &bl, &store)
                    })
                    .await
                    .map_err(|e| BuildError::Io {
                        what: "layout".into(),
                        source: std::io::Error::other(e),
                    })??;
                    let id = match tag {
                        Some(t) => format!("oci-layout:{}:{t}", dir.display()),
                        None => format!("oci-layout:{}", dir.display()),
                    };
                    artifacts.push(ArtifactInfo {
                        base: base_ref.clone(),
                        endpoint: None,
                        manifest: None,
                        hardening: vec![],
                        runs: vec![],
                        tests: None,
                        identity: None,
                        sbom: None,
                        signatures: vec![],
                        kind: "oci".into(),
                        id,
                        digest: Some(manifest_digest.clone()),
                    });
                }
            }
        }
        if artifacts.is_empty() {
            ctx.message(format!(
                "no `to`: the image {manifest_digest} stays in the local blob cache"
            ));
            artifacts.push(ArtifactInfo {
                base: base_ref.clone(),
                endpoint: None,
                manifest: None,
                hardening: vec![],
                runs: vec![],
                tests: None,
                identity: None,
                sbom: None,
                signatures: vec![],
                kind: "oci".into(),
                id: format!("kiln-cache:{manifest_digest}"),
                digest: Some(manifest_digest),
            });
        }
        Ok(artifacts)
    }
}
