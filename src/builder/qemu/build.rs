//! The QEMU builder's steps: launch (verify the base, overlay, seed,
//! boot, wait for SSH) and snapshot (power off, export, hash).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

use super::launch::{self, Accel, Arch, UefiFiles, VmSpec};
use super::machine::{Firmware, Machine, MachineSettings};
use super::qmp::Qmp;
use super::{bootcmd, cdfiles, disk, download, fetch, firmware, httpserve, seed};
use crate::builder::ArtifactInstance;
use crate::builder::{BuildError, Builder, Instance};
use crate::communicator::ssh::{SshAuth, SshCommunicator, SshTarget};
use crate::communicator::{CommError, Communicator, RemoteCommand};
use crate::job::process::process_start_time;
use crate::job::Undo;
use crate::job::{sanitize, JobContext, Resource};
use crate::template::plan::JobPlan;
use crate::template::schema::parse_size;
use crate::ui::{ArtifactInfo, Stream};

const DEFAULT_SSH_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// How often the wait for SSH says how long it has waited.
const SSH_PROGRESS: Duration = Duration::from_secs(20);
/// What usually keeps a guest's SSH from answering.
const SSH_TIMEOUT_CAUSES: &str = "likely causes: the guest got no network address (without cloud-init, or with `cloud_init = false`, kiln's network config does not apply and the image's own must name the NIC QEMU gives it: see `net_device` and `machine_type`), sshd is not installed or not started, the image has no cloud-init with the NoCloud datasource (kiln's key never arrived: set `ssh_private_key_file` or `ssh_password`), or the boot is slower than `ssh_timeout` (TCG is much slower than KVM)";
/// How long a guest asked to power off from inside may take before ACPI.
const POWEROFF_GRACE: Duration = Duration::from_secs(60);
/// How soon kiln says that a guest ignores ACPI power-down.
const ACPI_NOTICE: Duration = Duration::from_secs(10);
/// After this, a guest that ignored the power-down is killed.
const QMP_CONNECT_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize)]
struct QemuSettings {
    disk: Option<String>,
    disk_url: Option<String>,
    disk_urls: Option<Vec<String>>,
    disk_checksum: Option<String>,
    #[serde(default)]
    insecure_skip_checksum: bool,
    disk_size: Option<String>,
    accelerator: Option<String>,
    arch: Option<String>,
    cpus: Option<u32>,
    memory: Option<String>,
    kernel: Option<String>,
    initrd: Option<String>,
    append: Option<String>,
    user_data: Option<String>,
    /// `false`: no cloud-init files on the seed (no key, no network config).
    cloud_init: Option<bool>,
    ssh_username: Option<String>,
    ssh_password: Option<String>,
    ssh_private_key_file: Option<String>,
    ssh_timeout: Option<String>,
    shutdown_command: Option<String>,
    shutdown_timeout: Option<String>,
    output: String,
    format: Option<String>,
    #[serde(default)]
    compress: bool,
    machine_type: Option<String>,
    cpu_model: Option<String>,
    sockets: Option<u32>,
    cores: Option<u32>,
    disk_interface: Option<String>,
    disk_cache: Option<String>,
    disk_discard: Option<String>,
    disk_detect_zeroes: Option<String>,
    net_device: Option<String>,
    #[serde(default)]
    qemuargs: Vec<Vec<String>>,
    qemu_binary: Option<String>,
    firmware: Option<String>,
    #[serde(default)]
    secure_boot: bool,
    iso_url: Option<String>,
    iso_urls: Option<Vec<String>>,
    iso_checksum: Option<String>,
    boot_wait: Option<String>,
    #[serde(default)]
    boot_command: Vec<String>,
    boot_key_interval: Option<String>,
    http_directory: Option<String>,
    #[serde(default)]
    http_content: std::collections::BTreeMap<String, String>,
    http_port_min: Option<u16>,
    http_port_max: Option<u16>,
    cd_files: Option<Vec<String>>,
    cd_content: Option<std::collections::BTreeMap<String, String>>,
    cd_label: Option<String>,
}

impl QemuSettings {
    /// The machine settings, checked.
    fn machine(&self) -> Result<Machine, BuildError> {
        Machine::from_settings(&MachineSettings {
            machine_type: self.machine_type.as_deref(),
            cpu_model: self.cpu_model.as_deref(),
            cpus: self.cpus,
            sockets: self.sockets,
            cores: self.cores,
            disk_interface: self.disk_interface.as_deref(),
            disk_cache: self.disk_cache.as_deref(),
            disk_discard: self.disk_discard.as_deref(),
            disk_detect_zeroes: self.disk_detect_zeroes.as_deref(),
            net_device: self.net_device.as_deref(),
            qemuargs: &self.qemuargs,
            qemu_binary: self.qemu_binary.as_deref(),
            firmware: self.firmware.as_deref(),
            secure_boot: self.secure_boot,
        })
    }

    /// `iso_url`/`iso_urls`: the installer ISO, when the build installs.
    fn iso_source(&self) -> Result<Option<BaseSource>, BuildError> {
        let urls =
            match (&self.iso_url, &self.iso_urls) {
                (None, None) => return Ok(None),
                (Some(u), None) => vec![u.clone()],
                (None, Some(us)) if !us.is_empty() => us.clone(),
                _ => return Err(BuildError::Config(
                    "set one of `iso_url` or `iso_urls` (a non-empty list of mirrors), not both"
                        .into(),
                )),
            };
        if self.disk.is_some() || self.disk_url.is_some() || self.disk_urls.is_some() {
            return Err(BuildError::Config(
                "`iso_url` installs onto an empty disk of `disk_size`: leave out `disk`, `disk_url` and `disk_urls`".into(),
            ));
        }
        let is_url = |u: &str| {
            ["http://", "https://", "file://"]
                .iter()
                .any(|p| u.starts_with(p))
        };
        // A plain path is a local ISO, like Packer's.
        if urls.len() == 1 && !is_url(&urls[0]) {
            return Ok(Some(BaseSource::Path(urls[0].clone())));
        }
        if let Some(bad) = urls.iter().find(|u| !is_url(u)) {
            return Err(BuildError::Config(format!(
                "`{bad}` in `iso_urls` is not an `http://`, `https://` or `file://` URL"
            )));
        }
        Ok(Some(BaseSource::Urls(urls)))
    }

    /// The checksum of what the build starts from: `iso_checksum` for an
    /// install, `disk_checksum` otherwise.
    fn start_checksum(&self) -> Option<&String> {
        if self.iso_url.is_some() || self.iso_urls.is_some() {
            self.iso_checksum.as_ref()
        } else {
            self.disk_checksum.as_ref()
        }
    }

    /// The base to verify: the ISO for an install, the disk otherwise.
    fn start_source(&self) -> Result<BaseSource, BuildError> {
        match self.iso_source()? {
            Some(iso) => Ok(iso),
            None => self.base_source(),
        }
    }

    /// `disk`, or `disk_url`/`disk_urls`: exactly one.
    fn base_source(&self) -> Result<BaseSource, BuildError> {
        let urls = match (&self.disk, &self.disk_url, &self.disk_urls) {
            (Some(d), None, None) => return Ok(BaseSource::Path(d.clone())),
            (None, Some(u), None) => vec![u.clone()],
            (None, None, Some(us)) if !us.is_empty() => us.clone(),
            _ => {
                return Err(BuildError::Config(
                    "set exactly one of `disk` (a local image), `disk_url` or `disk_urls` (a non-empty list of mirrors)".into(),
                ))
            }
        };
        if let Some(bad) = urls.iter().find(|u| {
            !["http://", "https://", "file://"]
                .iter()
                .any(|p| u.starts_with(p))
        }) {
            return Err(BuildError::Config(format!(
                "`{bad}` is not an `http://`, `https://` or `file://` URL\nhint: a local image goes in `disk`"
            )));
        }
        Ok(BaseSource::Urls(urls))
    }

    fn from_plan(job: &JobPlan) -> Result<QemuSettings, BuildError> {
        let s: QemuSettings = crate::builder::source_settings(job)?;
        if s.iso_source()?.is_some() {
            s.check_install()?;
            return Ok(s);
        }
        if !s.boot_command.is_empty() {
            return Err(BuildError::Config(
                "`boot_command` is typed into an installer: it needs `iso_url`".into(),
            ));
        }
        s.check_cd()?;
        if s.disk_checksum.is_none() && !s.insecure_skip_checksum {
            return Err(BuildError::Config(
                "`disk_checksum` is required (`sha256:…` of the base image)\nhint: `insecure_skip_checksum = true` builds from an unverified base".into(),
            ));
        }
        if let Some(c) = &s.disk_checksum {
            fetch::Checksum::literal(c)?;
        }
        if let BaseSource::Urls(urls) = s.base_source()? {
            if s.disk_checksum.is_none() {
                return Err(BuildError::Config(format!(
                    "`{}` needs `disk_checksum`: a downloaded base is always verified (and cached by its digest)",
                    urls[0]
                )));
            }
        }
        if s.compress && s.format.as_deref() == Some("raw") {
            return Err(BuildError::Config(
                "`compress = true` needs `format = \"qcow2\"`: raw images cannot be compressed"
                    .into(),
            ));
        }
        let machine = s.machine()?;
        if Arch::parse(s.arch.as_deref()) == Arch::Aarch64
            && machine.firmware == Firmware::Bios
            && s.kernel.is_none()
        {
            return Err(BuildError::Config(
                "an aarch64 guest has no BIOS to boot its disk: set `firmware = \"uefi\"` (AAVMF) or `kernel` (direct kernel boot)".into(),
            ));
        }
        Ok(s)
    }
}

impl QemuSettings {
    /// The settings of an install from an ISO, checked before anything runs.
    fn check_install(&self) -> Result<(), BuildError> {
        if self.disk_checksum.is_some() {
            return Err(BuildError::Config(
                "`disk_checksum` verifies `disk`/`disk_url`; an install's ISO is verified by `iso_checksum`".into(),
            ));
        }
        match &self.iso_checksum {
            Some(c) => {
                fetch::Checksum::literal(c)?;
            }
            None if self.insecure_skip_checksum => {
                if let Some(BaseSource::Urls(u)) = self.iso_source()? {
                    return Err(BuildError::Config(format!(
                        "`{}` needs `iso_checksum`: a downloaded ISO is always verified (and cached by its digest)",
                        u[0]
                    )));
                }
            }
            None => {
                return Err(BuildError::Config(
                    "`iso_checksum` is required (`sha256:…`, `sha512:…` or `file:URL-or-path-of-SHA256SUMS`)\nhint: `insecure_skip_checksum = true` installs from an unverified local ISO".into(),
                ))
            }
        }
        if self.disk_size.as_deref().and_then(parse_size).is_none() {
            return Err(BuildError::Config(
                "`iso_url` installs onto an empty disk: set `disk_size` (e.g. `\"10G\"`)".into(),
            ));
        }
        if self.kernel.is_some() {
            return Err(BuildError::Config(
                "`kernel` boots a kernel directly and would skip the ISO: leave it out with `iso_url`".into(),
            ));
        }
        if self.compress && self.format.as_deref() == Some("raw") {
            return Err(BuildError::Config(
                "`compress = true` needs `format = \"qcow2\"`: raw images cannot be compressed"
                    .into(),
            ));
        }
        self.boot_steps()?;
        self.check_cd()?;
        self.machine()?;
        if Arch::parse(self.arch.as_deref()) == Arch::Aarch64 {
            return Err(BuildError::NotSupported(
                "installs from an ISO are not supported yet for aarch64 guests".into(),
            ));
        }
        Ok(())
    }

    /// `boot_command`, parsed; an error names the string and column.
    fn boot_steps(&self) -> Result<Vec<Vec<bootcmd::Token>>, BuildError> {
        self.boot_command
            .iter()
            .enumerate()
            .map(|(i, line)| {
                bootcmd::parse(line).map_err(|e| {
                    BuildError::Config(format!(
                        "`boot_command[{i}]`, column {}: {}\n  {line}\n  {}{}\nhint: {}",
                        e.column,
                        e.message,
                        " ".repeat(e.column - 1),
                        "^".repeat(e.len.max(1)),
                        e.help
                    ))
                })
            })
            .collect()
    }

    /// `cd_files`/`cd_content`/`cd_label`, checked before launch: a FAT
    /// label, relative `cd_content` names; and `cloud_init = false`,
    /// which needs the template's own credentials.
    fn check_cd(&self) -> Result<(), BuildError> {
        if self.cloud_init == Some(false) {
            if self.user_data.is_some() {
                return Err(BuildError::Config(
                    "`user_data` reaches the guest through kiln's cloud-init seed, which `cloud_init = false` leaves out".into(),
                ));
            }
            if self.ssh_private_key_file.is_none() && self.ssh_password.is_none() {
                return Err(BuildError::Config(
                    "`cloud_init = false` leaves out the seed that carries kiln's SSH key: set `ssh_private_key_file` or `ssh_password`".into(),
                ));
            }
        }
        if let Some(l) = &self.cd_label {
            if l.is_empty() || l.len() > 11 || !l.is_ascii() {
                return Err(BuildError::Config(format!(
                    "`cd_label = \"{l}\"` is not a FAT volume label (1 to 11 ASCII characters)"
                )));
            }
        }
        for name in self.cd_content.iter().flat_map(|m| m.keys()) {
            if httpserve::relative_path(name).is_none_or(|p| p.as_os_str().is_empty()) {
                return Err(BuildError::Config(format!(
                    "`cd_content` key `{name}` is not a relative path inside the volume"
                )));
            }
        }
        Ok(())
    }

    /// The files `cd_files` and `cd_content` put on the seed volume (a
    /// name ending in `/` is a folder), as [`cdfiles::plan`] maps them.
    async fn cd_extra(&self, template_dir: &Path) -> Result<Vec<(String, Vec<u8>)>, BuildError> {
        let content: Vec<(String, String)> = self
            .cd_content
            .iter()
            .flatten()
            .map(|(name, text)| (name.trim_start_matches('/').to_string(), text.clone()))
            .collect();
        let taken: Vec<(String, String)> = content
            .iter()
            .map(|(name, _)| (name.clone(), format!("`cd_content` key `{name}`")))
            .collect();
        let entries = self.cd_files.as_deref().unwrap_or_default();
        let mut out = vec![];
        for e in cdfiles::plan(template_dir, entries, &taken)? {
            match e {
                cdfiles::CdEntry::Folder { dest } => out.push((format!("{dest}/"), vec![])),
                cdfiles::CdEntry::File { dest, source } => {
                    let bytes = fs_err::tokio::read(&source).await.map_err(|e| {
                        BuildError::Config(format!("`cd_files`: cannot read `{dest}`: {e}"))
                    })?;
                    out.push((dest, bytes));
                }
            }
        }
        out.extend(content.into_iter().map(|(n, t)| (n, t.into_bytes())));
        Ok(out)
    }
}

fn which(bin: &str) -> bool {
    if bin.contains('/') {
        return Path::new(bin).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

pub struct QemuBuilder;

#[async_trait]
impl Builder for QemuBuilder {
    fn preflight(&self, job: &JobPlan) -> Result<(), BuildError> {
        let s = QemuSettings::from_plan(job)?;
        let machine = s.machine()?;
        if let Some(bin) = &machine.qemu_binary {
            if !which(bin) {
                return Err(BuildError::Config(format!(
                    "`qemu_binary = \"{bin}\"` is not an executable file or a program on PATH"
                )));
            }
        }
        let emulator = Arch::parse(s.arch.as_deref()).emulator();
        for (bin, package) in [
            (emulator, "qemu-system-x86 or qemu-system-arm"),
            ("qemu-img", "qemu-utils"),
        ] {
            if !which(bin) && (bin == "qemu-img" || machine.qemu_binary.is_none()) {
                return Err(BuildError::NotSupported(format!(
                    "`{bin}` is not installed (on Debian: `apt-get install {package}`)"
                )));
            }
        }
        if let Firmware::Uefi { secure_boot } = machine.firmware {
            firmware::files(Arch::parse(s.arch.as_deref()), secure_boot)?;
        }
        launch::tmpfs_root()?;
        Ok(())
    }

    async fn resolve_base(
        &self,
        job: &JobPlan,
        template_dir: &Path,
        _state_dir: &Path,
    ) -> Result<Option<String>, BuildError> {
        let s = QemuSettings::from_plan(job)?;
        let Some(spec) = s.start_checksum() else {
            return Ok(None);
        };
        let (name, file) = s.start_source()?.names(template_dir);
        let want = fetch::checksum(spec, &file, template_dir).await?;
        Ok(Some(base_label(&name, &want)))
    }

    async fn launch(&self, ctx: &JobContext) -> Result<Box<dyn Instance>, BuildError> {
        let s = QemuSettings::from_plan(&ctx.plan)?;
        s.machine()?;
        let install = s.iso_source()?.is_some();
        let source = s.start_source()?;
        let (base_name, file) = source.names(&ctx.template_dir);
        let want = match s.start_checksum() {
            Some(spec) => Some(fetch::checksum(spec, &file, &ctx.template_dir).await?),
            None => None,
        };
        let (base, verified) = match (&source, &want) {
            (BaseSource::Path(d), _) => (ctx.template_dir.join(d), false),
            (BaseSource::Urls(urls), Some(want)) => {
                let say = |m: String| ctx.message(m);
                let progress = |p: download::Progress<'_>| {
                    ctx.emit(crate::ui::Event::Download {
                        job: Some(ctx.name.clone()),
                        url: p.url.to_string(),
                        bytes: p.bytes,
                        total: p.total,
                        done: p.done,
                    })
                };
                let report = download::Report {
                    say: &say,
                    progress: &progress,
                };
                download::cached_base(urls, want, &ctx.state_dir, &report).await?
            }
            (BaseSource::Urls(_), None) => unreachable!("checked in from_plan"),
        };
        match &want {
            Some(want) if !verified => {
                ctx.message(format!("verifying `{}`", base.display()));
                fetch::verify(&base, want).await?;
            }
            Some(_) => {}
            None => ctx.message(format!(
                "warning: `insecure_skip_checksum = true`: `{}` is not verified",
                base.display()
            )),
        }
        let base_digest = want.map(|w| base_label(&base_name, &w));
        let start = if install {
            Start::Install { iso: &base }
        } else {
            Start::Disk(&base)
        };
        let booted = boot_from(ctx, &ctx.undo, &s, start, "").await?;
        Ok(Box::new(QemuInstance {
            settings: s,
            base_digest,
            overlay: booted.overlay,
            vm: booted.vm,
            qmp: booted.qmp,
            comm: booted.comm,
            _http: booted.http,
        }))
    }

    fn can_test(&self) -> bool {
        true
    }

    /// Boots the exported disk (on an overlay of its own, so the artifact
    /// is never written) with the source's machine settings and a fresh
    /// seed, reached over SSH like the build instance.
    async fn launch_artifact(
        &self,
        ctx: &JobContext,
        undo: &Undo,
        artifact: &ArtifactInfo,
    ) -> Result<Box<dyn ArtifactInstance>, BuildError> {
        let s = QemuSettings::from_plan(&ctx.plan)?;
        let disk = ctx.template_dir.join(&artifact.id);
        if let Some(want) = artifact
            .digest
            .as_deref()
            .and_then(|d| d.strip_prefix("sha256:"))
        {
            ctx.message(format!("verifying the artifact `{}`", disk.display()));
            let got = disk::sha256_file(&disk).await?;
            if got != want {
                return Err(BuildError::Config(format!(
                    "the artifact `{}` changed since it was built (sha256 {got}, built as {want})",
                    disk.display()
                )));
            }
        }
        let booted = boot(ctx, undo, &s, &disk, "-test").await?;
        Ok(Box::new(booted))
    }
}

/// A booted QEMU guest: its overlay, process, QMP and SSH connection.
struct Booted {
    overlay: PathBuf,
    vm: Arc<tokio::sync::Mutex<Child>>,
    #[allow(dead_code)]
    qmp: Qmp,
    comm: SshCommunicator,
    /// The build's HTTP server (`http_directory`), up while the guest is.
    http: Option<httpserve::HttpServer>,
}

/// What a guest boots: a disk (on an overlay), or an installer ISO onto
/// an empty disk of `disk_size`.
enum Start<'a> {
    Disk(&'a Path),
    Install { iso: &'a Path },
}

impl ArtifactInstance for Booted {
    fn communicator(&self) -> &dyn Communicator {
        &self.comm
    }
}

/// Boots `base` on a new overlay with the source's settings `s`: work
/// folder `NAME{suffix}`, private tmpfs folder, seed, QEMU, QMP, and the
/// wait for SSH. Every resource goes on `undo` before it exists.
async fn boot(
    ctx: &JobContext,
    undo: &Undo,
    s: &QemuSettings,
    base: &Path,
    suffix: &str,
) -> Result<Booted, BuildError> {
    boot_from(ctx, undo, s, Start::Disk(base), suffix).await
}

/// [`boot`], from a disk or an installer ISO.
async fn boot_from(
    ctx: &JobContext,
    undo: &Undo,
    s: &QemuSettings,
    start: Start<'_>,
    suffix: &str,
) -> Result<Booted, BuildError> {
    let resolve = |p: &str| ctx.template_dir.join(p);
    let machine = s.machine()?;
    // Before anything is created: a `cd_files` entry kiln refuses stops
    // the build here.
    let extra = s.cd_extra(&ctx.template_dir).await?;

    let work = ctx
        .state_dir
        .join("work")
        .join(sanitize(&ctx.build_id))
        .join(format!("{}{suffix}", sanitize(&ctx.name)));
    register_on(
        undo,
        Resource::TempDir { path: work.clone() },
        "qemu work directory",
    )
    .await?;
    fs_err::tokio::create_dir_all(&work)
        .await
        .map_err(BuildError::io("cannot create the work directory"))?;
    let overlay = work.join("overlay.qcow2");
    let size = s.disk_size.as_deref().and_then(parse_size);
    let (base, iso) = match start {
        Start::Disk(base) => {
            let base_info = disk::info(base).await?;
            disk::create_overlay(base, &base_info, &overlay, size).await?;
            (base, None)
        }
        Start::Install { iso } => {
            let size =
                size.ok_or_else(|| BuildError::Config("`iso_url` needs `disk_size`".into()))?;
            disk::create_empty(&overlay, size).await?;
            (iso, Some(iso))
        }
    };
    // The HTTP server first: the boot command types its address.
    let http = match (&s.http_directory, s.http_content.is_empty()) {
        (None, true) => None,
        (dir, _) => {
            let sink = ctx.message_sink();
            let server = httpserve::HttpServer::start(
                httpserve::Content {
                    directory: dir.as_deref().map(resolve),
                    files: s.http_content.clone(),
                },
                s.http_port_min.unwrap_or(httpserve::DEFAULT_PORT_MIN),
                s.http_port_max.unwrap_or(httpserve::DEFAULT_PORT_MAX),
                Arc::new(sink),
            )
            .await?;
            ctx.message(format!(
                "serving {} on 127.0.0.1:{port} (the guest's http://{}:{port}/)",
                dir.as_deref()
                    .map_or_else(|| "`http_content`".to_string(), |d| format!("`{d}`")),
                httpserve::GUEST_HOST_IP,
                port = server.port
            ));
            Some(server)
        }
    };

    // Sockets, the seed (user-data may carry secrets) and the probe
    // disk live in a private folder in memory.
    // Short: the QMP socket path must fit a `sockaddr_un` (108 bytes).
    let private = launch::tmpfs_root()?.join(format!(
        "kiln-qemu-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    ));
    register_on(
        undo,
        Resource::TempDir {
            path: private.clone(),
        },
        "qemu sockets and seed (tmpfs)",
    )
    .await?;
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&private)
            .map_err(BuildError::io(format!(
                "cannot create `{}`",
                private.display()
            )))?;
    }

    let username = s.ssh_username.clone().unwrap_or_else(|| "root".into());
    let (auth, public_key) = match (&s.ssh_private_key_file, &s.ssh_password) {
        (Some(file), _) => {
            let key = russh::keys::load_secret_key(resolve(file), None).map_err(|e| {
                BuildError::Config(format!("cannot read `ssh_private_key_file` `{file}`: {e}"))
            })?;
            (SshAuth::Key(Arc::new(key)), None)
        }
        (None, Some(p)) => (SshAuth::Password(p.clone()), None),
        (None, None) => {
            let key = seed::ephemeral_key()?;
            let line = seed::authorized_key(&key)?;
            (SshAuth::Key(Arc::new(key)), Some(line))
        }
    };
    let seed_path = private.join("seed.img");
    let mac = seed::random_mac();
    let cloud_init = seed_plan(s, public_key.is_some());
    if let Some(why) = cloud_init.err() {
        ctx.message(format!(
            "no cloud-init seed ({why}): the guest's own configuration must bring up its NIC (MAC {mac})"
        ));
    }
    let cloud_init = cloud_init.is_ok();
    let needs_seed = cloud_init || !extra.is_empty();
    if needs_seed {
        let hostname = format!("kiln-{}", short_id(&ctx.build_id));
        let instance_id = format!("kiln-{}", uuid::Uuid::new_v4().simple());
        let content = seed::SeedContent {
            instance_id: &instance_id,
            hostname: &hostname,
            username: &username,
            public_key: public_key.as_deref(),
            extra_user_data: s.user_data.as_deref(),
            mac: &mac,
        };
        if cloud_init {
            ctx.message(format!(
                "network: cloud-init renames the NIC with MAC {mac} to `{}` and configures it by DHCP (NoCloud `network-config`)",
                seed::GUEST_NIC
            ));
        }
        seed::write_volume(
            &seed_path,
            cloud_init.then_some(&content),
            &extra,
            s.cd_label.as_deref().unwrap_or("cidata"),
        )?;
        if !extra.is_empty() {
            ctx.message(format!(
                "seed volume `{}`: {} file(s) from `cd_files`/`cd_content`",
                s.cd_label.as_deref().unwrap_or("cidata"),
                extra.iter().filter(|(n, _)| !n.ends_with('/')).count()
            ));
        }
    }

    let arch = Arch::parse(s.arch.as_deref());
    let (accel, note) =
        launch::choose_accel(s.accelerator.as_deref().unwrap_or("auto"), arch, &private).await?;
    ctx.message(note);
    let qmp_socket = private.join("qmp");
    if qmp_socket.as_os_str().len() >= 108 {
        return Err(BuildError::Config(format!(
                "the control socket path `{}` is too long for a Unix socket; set KILN_TMPFS to a shorter tmpfs folder",
                qmp_socket.display()
            )));
    }
    let ssh_port = launch::free_port()?;
    let (kernel, initrd) = (
        s.kernel.as_deref().map(resolve),
        s.initrd.as_deref().map(resolve),
    );
    // UEFI: OVMF's code read-only, its variable store copied into the
    // work directory (on the undo stack) so the guest may write to it.
    let uefi = match machine.firmware {
        Firmware::Bios => None,
        Firmware::Uefi { secure_boot } => {
            let (code, vars_template) = firmware::files(arch, secure_boot)?;
            let vars = work.join("efivars.fd");
            firmware::copy_vars(arch, &vars_template, &vars).await?;
            ctx.message(format!(
                "firmware: UEFI (`{}`{})",
                code.display(),
                if secure_boot {
                    ", secure boot with Microsoft's keys enrolled"
                } else {
                    ""
                }
            ));
            Some((code, vars, secure_boot))
        }
    };
    let spec = VmSpec {
        arch,
        accel,
        machine: &machine,
        memory_mib: s
            .memory
            .as_deref()
            .and_then(parse_size)
            .map(|b| b >> 20)
            .unwrap_or(1024),
        overlay: &overlay,
        seed: needs_seed.then_some(seed_path.as_path()),
        qmp_socket: &qmp_socket,
        ssh_port,
        mac: &mac,
        kernel: kernel.as_deref(),
        initrd: initrd.as_deref(),
        append: s.append.as_deref(),
        uefi: uefi.as_ref().map(|(code, vars, secure_boot)| UefiFiles {
            code,
            vars,
            secure_boot: *secure_boot,
        }),
        cdrom: iso,
    };
    let mut child = launch::command(&spec)
        .spawn()
        .map_err(BuildError::io(format!(
            "cannot start `{}`",
            spec.emulator()
        )))?;
    // The pid exists only now; `kill_on_drop` covers the moment until
    // the journal has it.
    let pid = child.id().map(|p| p as i32).unwrap_or_default();
    register_on(
        undo,
        Resource::Process {
            pid,
            start_time: process_start_time(pid).unwrap_or(0),
            group: true,
        },
        "qemu process",
    )
    .await?;
    let console = stream_console(ctx, &mut child);
    ctx.message(format!(
        "booting `{}` ({} vCPU, {} MiB, {}); SSH on 127.0.0.1:{ssh_port}",
        base.display(),
        machine.cpus,
        spec.memory_mib,
        if accel == Accel::Kvm { "kvm" } else { "tcg" }
    ));
    let started = Instant::now();
    let qmp = Qmp::connect(&qmp_socket, QMP_CONNECT_LIMIT).await;
    let vm = Arc::new(tokio::sync::Mutex::new(child));
    let mut qmp = match qmp {
        Ok(q) => q,
        Err(e) => return Err(died_or(&vm, &console, e).await),
    };
    if iso.is_some() {
        let port = http.as_ref().map(|h| h.port);
        if let Err(e) = type_boot_command(ctx, s, &mut qmp, port).await {
            return Err(died_or(&vm, &console, e).await);
        }
    }

    let comm = SshCommunicator::new(SshTarget {
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], ssh_port)),
        username,
        auth,
    });
    let ssh_timeout = crate::builder::duration_or(&s.ssh_timeout, DEFAULT_SSH_TIMEOUT);
    let mut alive = {
        let (vm, console) = (vm.clone(), console.clone());
        let mut reported = Instant::now();
        move || match vm.try_lock().map(|mut c| c.try_wait()) {
            Ok(Ok(Some(status))) => Err(format!(
                "QEMU exited ({status}) before SSH was ready{}",
                console_tail(&console)
            )),
            _ => {
                if reported.elapsed() >= SSH_PROGRESS {
                    reported = Instant::now();
                    let last = console
                        .lock()
                        .ok()
                        .and_then(|l| l.back().cloned())
                        .unwrap_or_else(|| "(nothing yet)".into());
                    ctx.message(format!(
                        "waiting for SSH on 127.0.0.1:{ssh_port}: {}s of {}; console: {last}",
                        started.elapsed().as_secs(),
                        humantime::format_duration(ssh_timeout)
                    ));
                }
                Ok(())
            }
        }
    };
    if let Err(e) = comm.wait_ready(ssh_timeout, &mut alive).await {
        return Err(match e {
            CommError::Refused(why) if why.contains("was not ready within") => {
                BuildError::Comm(CommError::Refused(format!(
                    "{why}{}\n{SSH_TIMEOUT_CAUSES}",
                    console_tail(&console)
                )))
            }
            e => e.into(),
        });
    }
    ctx.message(format!(
        "SSH ready after {:.1}s (host key {})",
        started.elapsed().as_secs_f64(),
        comm.host_key_fingerprint().unwrap_or_default()
    ));
    Ok(Booted {
        overlay,
        vm,
        qmp,
        comm,
        http,
    })
}

/// Whether kiln's cloud-init files go on the seed: always (the network
/// config must reach images that configure another NIC name), unless the
/// template says `cloud_init = false` or puts its own files on a volume
/// labelled other than `cidata` while bringing its own credentials; the
/// error says which.
fn seed_plan(s: &QemuSettings, kiln_key: bool) -> Result<(), &'static str> {
    if s.cloud_init == Some(false) {
        return Err("`cloud_init = false`");
    }
    let label = s.cd_label.as_deref().unwrap_or("cidata");
    if !kiln_key && s.user_data.is_none() && !label.eq_ignore_ascii_case("cidata") {
        return Err("`cd_label` is not `cidata`");
    }
    Ok(())
}

/// Packer's defaults: wait 10s for the installer, 100ms between keys.
const DEFAULT_BOOT_WAIT: Duration = Duration::from_secs(10);
const DEFAULT_BOOT_KEY_INTERVAL: Duration = Duration::from_millis(100);

/// Waits `boot_wait`, then types `boot_command` over QMP.
async fn type_boot_command(
    ctx: &JobContext,
    s: &QemuSettings,
    qmp: &mut Qmp,
    http_port: Option<u16>,
) -> Result<(), BuildError> {
    let steps = s.boot_steps()?;
    let vars: Vec<(&str, String)> = match http_port {
        Some(p) => vec![
            ("http_ip", httpserve::GUEST_HOST_IP.to_string()),
            ("http_port", p.to_string()),
        ],
        None => vec![],
    };
    let wait = crate::builder::duration_or(&s.boot_wait, DEFAULT_BOOT_WAIT);
    let interval = crate::builder::duration_or(&s.boot_key_interval, DEFAULT_BOOT_KEY_INTERVAL);
    if steps.is_empty() {
        return Ok(());
    }
    ctx.message(format!(
        "waiting {} (`boot_wait`) before typing the boot command",
        humantime::format_duration(wait)
    ));
    tokio::time::sleep(wait).await;
    for (line, tokens) in s.boot_command.iter().zip(&steps) {
        // The log's redaction masks any secret the command holds.
        ctx.message(format!("typing: {}", bootcmd::display(line, &vars)));
        let actions = bootcmd::actions(tokens, &vars).map_err(BuildError::Config)?;
        for a in actions {
            match a {
                bootcmd::Action::Wait(d) => tokio::time::sleep(d).await,
                bootcmd::Action::Press(chord) => {
                    qmp.send_keys(&chord).await?;
                    tokio::time::sleep(interval).await;
                }
            }
        }
    }
    Ok(())
}

/// Registers a resource on `undo` before it is created.
async fn register_on(undo: &Undo, r: Resource, what: &str) -> Result<(), BuildError> {
    crate::builder::register_on(undo, r, what).await.map(drop)
}

fn short_id(build_id: &str) -> String {
    build_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(8)
        .collect()
}

/// How artifacts record their base: `PATH@sha256:HEX` (or the first URL).
fn base_label(name: &str, want: &fetch::Checksum) -> String {
    format!("{name}@{want}")
}

/// Where the base image comes from.
enum BaseSource {
    Path(String),
    Urls(Vec<String>),
}

impl BaseSource {
    /// How artifacts name the base, and the file name a checksum file
    /// lists it under.
    fn names(&self, template_dir: &Path) -> (String, String) {
        match self {
            BaseSource::Path(d) => (
                template_dir.join(d).display().to_string(),
                fetch::file_name(d),
            ),
            BaseSource::Urls(urls) => (urls[0].clone(), fetch::file_name(&urls[0])),
        }
    }
}

/// The last console lines, kept for error messages.
type ConsoleTail = Arc<std::sync::Mutex<std::collections::VecDeque<String>>>;
const CONSOLE_TAIL_LINES: usize = 20;

/// Streams the serial console (QEMU's stdout) and QEMU's own stderr to the
/// build log, keeping the last lines for errors.
fn stream_console(ctx: &JobContext, child: &mut Child) -> ConsoleTail {
    let tail: ConsoleTail = Arc::default();
    let sink = Arc::new(ctx.output_sink());
    let pipes: [(Stream, Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>); 2] = [
        (
            Stream::Stdout,
            child.stdout.take().map(|p| Box::new(p) as _),
        ),
        (
            Stream::Stderr,
            child.stderr.take().map(|p| Box::new(p) as _),
        ),
    ];
    for (stream, pipe) in pipes {
        let Some(pipe) = pipe else { continue };
        let (sink, tail) = (sink.clone(), tail.clone());
        tokio::spawn(async move {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            while reader
                .read_until(b'\n', &mut buf)
                .await
                .is_ok_and(|n| n > 0)
            {
                let line = plain_text(&String::from_utf8_lossy(&buf));
                buf.clear();
                {
                    let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                    if t.len() == CONSOLE_TAIL_LINES {
                        t.pop_front();
                    }
                    t.push_back(line.clone());
                }
                sink(stream, format!("console: {line}"));
            }
        });
    }
    tail
}

/// A console line without colour and cursor escapes (systemd's `[ OK ]`).
fn plain_text(line: &str) -> String {
    static ANSI: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"\x1b\[[0-9;?]*[ -/]*[@-~]").expect("valid regex")
    });
    ANSI.replace_all(line.trim_end_matches(['\n', '\r']), "")
        .replace('\r', "")
}

fn console_tail(tail: &ConsoleTail) -> String {
    let t = tail.lock().unwrap_or_else(|p| p.into_inner());
    if t.is_empty() {
        return String::new();
    }
    let lines: Vec<&str> = t.iter().map(String::as_str).collect();
    format!("; last console lines:\n  {}", lines.join("\n  "))
}

/// `err`, or that QEMU died (with its last words) when it did.
async fn died_or(
    vm: &tokio::sync::Mutex<Child>,
    console: &ConsoleTail,
    err: BuildError,
) -> BuildError {
    match vm.lock().await.try_wait() {
        Ok(Some(status)) => BuildError::Io {
            what: "QEMU".into(),
            source: std::io::Error::other(format!("exited ({status}){}", console_tail(console))),
        },
        _ => err,
    }
}

struct QemuInstance {
    settings: QemuSettings,
    base_digest: Option<String>,
    overlay: PathBuf,
    vm: Arc<tokio::sync::Mutex<Child>>,
    qmp: Qmp,
    comm: SshCommunicator,
    /// Stops serving `http_directory` when the instance goes.
    _http: Option<httpserve::HttpServer>,
}

impl QemuInstance {
    /// Asks the guest to power off and waits for QEMU to exit; kills it
    /// and fails after `shutdown_timeout` (the disk may be inconsistent).
    async fn shut_down(&mut self, ctx: &JobContext) -> Result<(), BuildError> {
        let limit =
            crate::builder::duration_or(&self.settings.shutdown_timeout, DEFAULT_SHUTDOWN_TIMEOUT);
        let started = Instant::now();
        match self.settings.shutdown_command.clone() {
            Some(command) => {
                ctx.message(format!("shutting down: `{command}`"));
                let cmd = RemoteCommand {
                    script: command,
                    timeout: Some(limit),
                    ..Default::default()
                };
                let mut out = |stream, line| ctx.output(stream, line);
                // The connection usually drops as the guest goes down.
                let _ = self.comm.exec(&cmd, &mut out).await;
            }
            None => {
                // From inside first: minimal images (no acpid, no logind)
                // ignore ACPI, and Packer habits leave `shutdown_command` out.
                let user = self.settings.ssh_username.as_deref().unwrap_or("root");
                if self.power_off_inside(ctx, user).await
                    && self.exited_within(POWEROFF_GRACE).await?
                {
                    ctx.message(format!(
                        "guest powered off from inside (`{}`) in {:.1}s",
                        poweroff_command(user),
                        started.elapsed().as_secs_f64()
                    ));
                    return Ok(());
                }
                ctx.message("shutting down: ACPI power-down over QMP".into());
                self.comm.disconnect().await;
                self.qmp.execute("system_powerdown").await?;
                if !self.exited_within(ACPI_NOTICE).await? {
                    ctx.message(format!(
                        "the guest has not reacted to ACPI power-down in {}s: images without acpid or systemd-logind ignore it (set `shutdown_command`); waiting up to {}",
                        ACPI_NOTICE.as_secs(),
                        humantime::format_duration(limit)
                    ));
                }
            }
        }
        let mut vm = self.vm.lock().await;
        let rest = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(rest, vm.wait()).await {
            Ok(status) => {
                let status = status.map_err(BuildError::io("waiting for QEMU"))?;
                ctx.message(format!("guest powered off ({status})"));
                Ok(())
            }
            Err(_) => {
                let _ = vm.start_kill();
                let _ = vm.wait().await;
                Err(BuildError::Io {
                    what: "shutdown".into(),
                    source: std::io::Error::other(format!(
                        "the guest did not power off within {}; QEMU was killed and nothing was exported",
                        humantime::format_duration(limit)
                    )),
                })
            }
        }
    }

    /// Asks the guest to power off over the connection; whether it took
    /// the request (a dropped connection counts: the guest is going down).
    async fn power_off_inside(&self, ctx: &JobContext, user: &str) -> bool {
        let cmd = RemoteCommand {
            script: poweroff_command(user),
            timeout: Some(POWEROFF_GRACE),
            ..Default::default()
        };
        let mut out = |stream, line| ctx.output(stream, line);
        match self.comm.exec(&cmd, &mut out).await {
            // A dropped connection or an error mid-way: the guest is
            // probably going down; `exited_within` tells.
            Ok(0) | Err(_) => true,
            Ok(code) => {
                ctx.message(format!(
                    "`{}` exited with {code}; falling back to ACPI",
                    poweroff_command(user)
                ));
                false
            }
        }
    }

    /// Whether QEMU exits within `wait`.
    async fn exited_within(&self, wait: Duration) -> Result<bool, BuildError> {
        let mut vm = self.vm.lock().await;
        match tokio::time::timeout(wait, vm.wait()).await {
            Ok(status) => {
                status.map_err(BuildError::io("waiting for QEMU"))?;
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }
}

/// How a user powers the guest off: root directly, others through sudo
/// (never prompting).
fn poweroff_command(user: &str) -> String {
    if user == "root" {
        "poweroff".into()
    } else {
        "sudo -n poweroff".into()
    }
}

#[async_trait]
impl Instance for QemuInstance {
    fn communicator(&self) -> &dyn Communicator {
        &self.comm
    }

    async fn keep_for_inspection(&mut self, ctx: &JobContext) -> Option<String> {
        // QEMU dies with its process handle (`kill_on_drop`): the handle is
        // leaked so the VM outlives kiln. Its pid stays journaled, and
        // `kiln cleanup` stops it.
        std::mem::forget(self.vm.clone());
        crate::builder::way_in(&self.comm, ctx).await
    }

    async fn snapshot(&mut self, ctx: &JobContext) -> Result<Vec<ArtifactInfo>, BuildError> {
        self.shut_down(ctx).await?;
        let output = ctx.template_dir.join(&self.settings.output);
        let format = self
            .settings
            .format
            .clone()
            .unwrap_or_else(|| "qcow2".into());
        if let Some(parent) = output.parent() {
            fs_err::tokio::create_dir_all(parent)
                .await
                .map_err(BuildError::io("cannot create the output folder"))?;
        }
        // Written beside the output and renamed: a failed export never
        // leaves a half image under the final name.
        let name = output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".into());
        let partial = output.with_file_name(format!(".{name}.kiln-partial"));
        let handle = ctx
            .undo
            .register(
                Resource::TempFile {
                    path: partial.clone(),
                },
                "partial export",
            )
            .await
            .map_err(BuildError::io("journal"))?;
        ctx.message(format!(
            "exporting {format}{} to `{}`",
            if self.settings.compress {
                " (compressed)"
            } else {
                ""
            },
            output.display()
        ));
        // What the build wrote is in the overlay: scan it before anything
        // is exported, signed or registered.
        if !ctx.secrets.is_empty() {
            let (overlay, secrets) = (self.overlay.clone(), ctx.secrets.clone());
            let findings = tokio::task::spawn_blocking(move || {
                crate::secrets::leak::scan_bytes(&overlay, &secrets)
            })
            .await
            .map_err(|e| BuildError::io("leak scan")(std::io::Error::other(e)))?
            .map_err(BuildError::io("cannot scan the disk for secrets"))?;
            if !findings.is_empty() {
                let list: Vec<String> = findings.iter().map(|f| f.what.clone()).collect();
                return Err(BuildError::Leak(format!(
                    "the disk holds {}",
                    list.join(", ")
                )));
            }
            ctx.message("leak scan: no secret in the data the build wrote".into());
        }
        disk::export(&self.overlay, &partial, &format, self.settings.compress).await?;
        let digest = disk::sha256_file(&partial).await?;
        fs_err::tokio::rename(&partial, &output)
            .await
            .map_err(BuildError::io("cannot move the exported image into place"))?;
        ctx.undo.release(handle).await;
        Ok(vec![ArtifactInfo {
            kind: format,
            id: output.display().to_string(),
            digest: Some(format!("sha256:{digest}")),
            base: self.base_digest.clone(),
            endpoint: None,
            signatures: vec![],
            manifest: None,
            hardening: vec![],
            runs: vec![],
            tests: None,
            identity: None,
            sbom: None,
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(v: serde_json::Value) -> QemuSettings {
        serde_json::from_value(v).unwrap()
    }

    /// kiln's cloud-init files (and with them the network config) go on
    /// the seed even with the template's own credentials; only
    /// `cloud_init = false` or a foreign `cd_label` leave them out.
    #[test]
    fn qemu_seed_carries_cloud_init_unless_told_not_to() {
        let s = settings(serde_json::json!({"output": "o"}));
        assert_eq!(seed_plan(&s, true), Ok(()));
        let own = serde_json::json!({"output": "o", "ssh_password": "p"});
        assert_eq!(seed_plan(&settings(own.clone()), false), Ok(()));
        let mut oemdrv = own.clone();
        oemdrv["cd_label"] = "OEMDRV".into();
        assert_eq!(
            seed_plan(&settings(oemdrv), false),
            Err("`cd_label` is not `cidata`")
        );
        let mut off = own.clone();
        off["cloud_init"] = false.into();
        let off = settings(off);
        assert_eq!(seed_plan(&off, false), Err("`cloud_init = false`"));
        off.check_cd().unwrap();
    }

    #[test]
    fn qemu_cloud_init_off_needs_own_credentials_and_no_user_data() {
        let e = settings(serde_json::json!({"output": "o", "cloud_init": false}))
            .check_cd()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`ssh_private_key_file` or `ssh_password`"),
            "{e}"
        );
        let e = settings(serde_json::json!({
            "output": "o", "cloud_init": false, "ssh_password": "p",
            "user_data": "#cloud-config\n"
        }))
        .check_cd()
        .unwrap_err()
        .to_string();
        assert!(e.contains("`user_data`"), "{e}");
    }

    #[test]
    fn qemu_console_lines_lose_their_escapes() {
        assert_eq!(
            plain_text("[\x1b[0;32m  OK  \x1b[0m] Started \x1b[0;1;39mssh.service\x1b[0m\r\n"),
            "[  OK  ] Started ssh.service"
        );
    }
}
