//! Starting `qemu-system-*`: choosing the accelerator (KVM only after a
//! probe guest really ran on it), the command line (QMP socket, user-mode
//! network forwarding a loopback port to the guest's SSH, serial console on
//! stdout) and the private tmpfs folder for sockets and the seed.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::machine::{DiskInterface, Machine, CONSOLE_ID, DISK_ID, NET_ID, SCSI_ID, SEED_ID};

/// The QEMU id of the installer CD-ROM.
const CDROM_ID: &str = "kiln-cdrom";
use crate::builder::BuildError;

/// How long the KVM probe guest may take: it runs a few instructions.
const KVM_PROBE_LIMIT: Duration = Duration::from_secs(5);
/// The probe guest's exit status: `isa-debug-exit` reports `(0x31 << 1) | 1`.
const KVM_PROBE_OK: i32 = 99;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

/// `arch` of the template: which emulator and machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    pub fn parse(s: Option<&str>) -> Arch {
        match s {
            Some("aarch64") => Arch::Aarch64,
            _ => Arch::X86_64,
        }
    }

    pub fn emulator(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Aarch64 => "qemu-system-aarch64",
        }
    }

    fn native(self) -> bool {
        match self {
            Arch::X86_64 => cfg!(target_arch = "x86_64"),
            Arch::Aarch64 => cfg!(target_arch = "aarch64"),
        }
    }
}

/// Picks the accelerator for `requested` (`auto`, `kvm`, `tcg`); the
/// returned note says why, for the build log.
pub async fn choose_accel(
    requested: &str,
    arch: Arch,
    scratch: &Path,
) -> Result<(Accel, String), BuildError> {
    match requested {
        "tcg" => Ok((Accel::Tcg, "accelerator: tcg (as requested)".into())),
        "kvm" => Ok((Accel::Kvm, "accelerator: kvm (as requested)".into())),
        _ if !arch.native() => Ok((
            Accel::Tcg,
            "accelerator: tcg (the guest architecture is not the host's)".into(),
        )),
        _ if !Path::new("/dev/kvm").exists() => {
            Ok((Accel::Tcg, "accelerator: tcg (no /dev/kvm)".into()))
        }
        _ => match probe_kvm(scratch).await {
            Ok(()) => Ok((Accel::Kvm, "accelerator: kvm (probe guest ran)".into())),
            Err(why) => Ok((
                Accel::Tcg,
                format!("accelerator: tcg, slower: /dev/kvm exists but a probe guest failed on it ({why})"),
            )),
        },
    }
}

/// Boots a one-sector guest under KVM that writes to `isa-debug-exit`: only
/// a KVM that really runs guest code makes QEMU exit with 99. It uses the
/// CPU model a KVM build guest gets (`-cpu host`): on some nested hosts the
/// default model runs while `host` aborts setting its MSRs.
async fn probe_kvm(scratch: &Path) -> Result<(), String> {
    let disk = scratch.join("kvm-probe.img");
    let mut sector = vec![0u8; 512];
    // mov al, 0x31; out 0xf4, al; hlt; jmp $
    sector[..7].copy_from_slice(&[0xb0, 0x31, 0xe6, 0xf4, 0xf4, 0xeb, 0xfe]);
    sector[510..].copy_from_slice(&[0x55, 0xaa]);
    fs_err::tokio::write(&disk, &sector)
        .await
        .map_err(|e| e.to_string())?;
    let mut drive = std::ffi::OsString::from("file=");
    drive.push(&disk);
    drive.push(",format=raw,if=floppy");
    let child = tokio::process::Command::new(Arch::X86_64.emulator())
        .args(["-accel", "kvm", "-machine", "pc", "-cpu", "host"])
        .args(["-m", "16", "-nodefaults"])
        .args(["-display", "none", "-no-reboot", "-no-user-config"])
        .args([
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-drive",
        ])
        .arg(drive)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", Arch::X86_64.emulator()))?;
    let result = tokio::time::timeout(KVM_PROBE_LIMIT, child.wait_with_output()).await;
    let _ = fs_err::tokio::remove_file(&disk).await;
    match result {
        Err(_) => Err(format!("it did not finish within {KVM_PROBE_LIMIT:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(out)) if out.status.code() == Some(KVM_PROBE_OK) => Ok(()),
        Ok(Ok(out)) => {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(format!(
                "exit {}: {}",
                out.status,
                err.lines().last().unwrap_or("").trim()
            ))
        }
    }
}

/// The folder for the VM's sockets and seed: a tmpfs, root-only. `KILN_TMPFS`
/// overrides the default `/dev/shm`.
pub fn tmpfs_root() -> Result<PathBuf, BuildError> {
    crate::secrets::tmpfs_dir("the VM's seed and control socket").map_err(BuildError::NotSupported)
}

/// Everything the command line needs.
pub struct VmSpec<'a> {
    pub arch: Arch,
    pub accel: Accel,
    pub machine: &'a Machine,
    pub memory_mib: u64,
    pub overlay: &'a Path,
    pub seed: Option<&'a Path>,
    pub qmp_socket: &'a Path,
    pub ssh_port: u16,
    /// The NIC's MAC address: the seed's network config matches it.
    pub mac: &'a str,
    pub kernel: Option<&'a Path>,
    pub initrd: Option<&'a Path>,
    pub append: Option<&'a str>,
    /// UEFI firmware in pflash (`firmware = "uefi"`).
    pub uefi: Option<UefiFiles<'a>>,
    /// An installer ISO (`iso_url`): a read-only CD-ROM booted once, so
    /// the installed disk boots after the installer's reboot.
    pub cdrom: Option<&'a Path>,
}

/// OVMF's code (read-only) and this build's copy of its variable store.
pub struct UefiFiles<'a> {
    pub code: &'a Path,
    pub vars: &'a Path,
    pub secure_boot: bool,
}

impl VmSpec<'_> {
    /// The emulator: `qemu_binary`, or the architecture's.
    pub fn emulator(&self) -> &str {
        self.machine
            .qemu_binary
            .as_deref()
            .unwrap_or(self.arch.emulator())
    }
}

fn path_opt(prefix: &str, path: &Path, suffix: &str) -> OsString {
    let mut s = OsString::from(prefix);
    s.push(path);
    s.push(suffix);
    s
}

/// The build disk and the seed on `machine.disk_interface`. The seed is
/// read-only except on IDE, whose hard disks cannot be (it is a per-build
/// copy on tmpfs).
fn disk_args(spec: &VmSpec<'_>, a: &mut Vec<OsString>) {
    let m = spec.machine;
    // The overlay is scratch: it is exported only after QEMU exited
    // normally, and QEMU writes back everything it holds when it exits,
    // so the guest's flushes need not reach the host's disk (they cost
    // seconds of a build under load). `disk_cache` overrides it.
    let default_cache = if m.disk_cache.is_none() {
        ",cache=unsafe"
    } else {
        ""
    };
    let disk_opts = format!("{}{default_cache}", m.disk_options());
    let mut drive = |file: &Path, opts: String| {
        a.push("-drive".into());
        a.push(path_opt("file=", file, &opts));
    };
    match m.disk_interface {
        DiskInterface::Virtio => {
            drive(spec.overlay, format!(",if=virtio,format=qcow2{disk_opts}"));
            if let Some(seed) = spec.seed {
                drive(seed, ",if=virtio,format=raw,readonly=on".into());
            }
        }
        DiskInterface::Ide => {
            drive(
                spec.overlay,
                format!(",if=ide,index=0,media=disk,format=qcow2{disk_opts}"),
            );
            if let Some(seed) = spec.seed {
                drive(seed, ",if=ide,index=1,media=disk,format=raw".into());
            }
        }
        DiskInterface::VirtioScsi => {
            drive(
                spec.overlay,
                format!(",if=none,id={DISK_ID},format=qcow2{disk_opts}"),
            );
            if let Some(seed) = spec.seed {
                drive(
                    seed,
                    format!(",if=none,id={SEED_ID},format=raw,readonly=on"),
                );
            }
            a.push("-device".into());
            a.push(format!("virtio-scsi-pci,id={SCSI_ID}").into());
            a.push("-device".into());
            a.push(format!("scsi-hd,drive={DISK_ID},bus={SCSI_ID}.0").into());
            if spec.seed.is_some() {
                a.push("-device".into());
                a.push(format!("scsi-hd,drive={SEED_ID},bus={SCSI_ID}.0").into());
            }
        }
        DiskInterface::Nvme => {
            drive(
                spec.overlay,
                format!(",if=none,id={DISK_ID},format=qcow2{disk_opts}"),
            );
            if let Some(seed) = spec.seed {
                drive(
                    seed,
                    format!(",if=none,id={SEED_ID},format=raw,readonly=on"),
                );
            }
            a.push("-device".into());
            a.push(format!("nvme,drive={DISK_ID},serial={DISK_ID}").into());
            if spec.seed.is_some() {
                a.push("-device".into());
                a.push(format!("nvme,drive={SEED_ID},serial={SEED_ID}").into());
            }
        }
    }
}

/// The arguments of the `qemu-system-*` command for `spec` (serial console
/// on stdout), without the program: a pure function of the spec.
pub fn args(spec: &VmSpec<'_>) -> Vec<OsString> {
    let m = spec.machine;
    let (accel, default_cpu) = match spec.accel {
        Accel::Kvm => ("kvm", "host"),
        Accel::Tcg => ("tcg", "max"),
    };
    let mut machine = m.machine_type.clone().unwrap_or_else(|| match spec.arch {
        Arch::X86_64 => "q35".into(),
        Arch::Aarch64 => "virt".into(),
    });
    // Secure boot's variable store is only safe behind SMM, which x86's
    // q35 has; aarch64's `virt` has none (AAVMF is built without it).
    let smm = spec.arch == Arch::X86_64
        && matches!(
            spec.uefi,
            Some(UefiFiles {
                secure_boot: true,
                ..
            })
        );
    if smm {
        machine.push_str(",smm=on");
    }
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(OsString::from));
    push(&["-machine", &machine, "-accel", accel]);
    push(&["-cpu", m.cpu_model.as_deref().unwrap_or(default_cpu)]);
    push(&["-smp", &m.smp()]);
    push(&["-m", &format!("{}M", spec.memory_mib)]);
    push(&["-nodefaults", "-no-user-config", "-display", "none"]);
    push(&["-chardev", &format!("stdio,id={CONSOLE_ID},signal=off")]);
    push(&["-serial", &format!("chardev:{CONSOLE_ID}")]);
    a.push("-qmp".into());
    a.push(path_opt("unix:", spec.qmp_socket, ",server=on,wait=off"));
    if let Some(uefi) = &spec.uefi {
        if smm {
            a.extend(
                ["-global", "driver=cfi.pflash01,property=secure,value=on"].map(OsString::from),
            );
        }
        a.push("-drive".into());
        a.push(path_opt(
            "if=pflash,unit=0,format=raw,readonly=on,file=",
            uefi.code,
            "",
        ));
        a.push("-drive".into());
        a.push(path_opt("if=pflash,unit=1,format=raw,file=", uefi.vars, ""));
    }
    disk_args(spec, &mut a);
    if let Some(iso) = spec.cdrom {
        a.push("-drive".into());
        a.push(path_opt(
            "file=",
            iso,
            &format!(",if=none,id={CDROM_ID},media=cdrom,readonly=on,format=raw"),
        ));
        a.push("-device".into());
        a.push(format!("ide-cd,drive={CDROM_ID}").into());
        // The disk first, then the CD: the empty disk does not boot, so
        // the installer does; after its reboot the installed disk boots.
        // (Not `once=d` like Packer: with it, QEMU 7.2 died of SIGSEGV
        // here on the reboot after the test install.)
        a.extend(["-boot", "order=cd"].map(OsString::from));
    }
    a.push("-netdev".into());
    a.push(
        format!(
            "user,id={NET_ID},hostfwd=tcp:127.0.0.1:{}-:22",
            spec.ssh_port
        )
        .into(),
    );
    a.push("-device".into());
    a.push(format!("{},netdev={NET_ID},mac={}", m.net_device, spec.mac).into());
    if let Some(k) = spec.kernel {
        a.push("-kernel".into());
        a.push(k.into());
    }
    if let Some(i) = spec.initrd {
        a.push("-initrd".into());
        a.push(i.into());
    }
    if let Some(ap) = spec.append {
        a.push("-append".into());
        a.push(ap.into());
    }
    for extra in &m.qemuargs {
        a.extend(extra.iter().map(OsString::from));
    }
    a
}

/// The `qemu-system-*` command for `spec`.
pub fn command(spec: &VmSpec<'_>) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(spec.emulator());
    c.args(args(spec))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    c
}

/// A loopback port nobody listens on right now (QEMU binds it itself).
pub fn free_port() -> Result<u16, BuildError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(BuildError::io("cannot find a free loopback port"))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::builder::qemu::machine::MachineSettings;

    fn machine(s: MachineSettings<'_>) -> Machine {
        Machine::from_settings(&s).unwrap()
    }

    fn spec<'a>(m: &'a Machine) -> VmSpec<'a> {
        VmSpec {
            arch: Arch::X86_64,
            accel: Accel::Tcg,
            machine: m,
            memory_mib: 1024,
            overlay: Path::new("/w/overlay.qcow2"),
            seed: Some(Path::new("/s/seed.img")),
            qmp_socket: Path::new("/s/qmp.sock"),
            ssh_port: 2222,
            mac: "52:54:00:6b:69:6c",
            kernel: None,
            initrd: None,
            append: None,
            uefi: None,
            cdrom: None,
        }
    }

    fn line(spec: &VmSpec<'_>) -> String {
        args(spec)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn qemu_command_line_has_qmp_hostfwd_and_serial() {
        let m = machine(MachineSettings::default());
        let mut spec = spec(&m);
        spec.kernel = Some(Path::new("/k/vmlinuz"));
        spec.append = Some("root=/dev/vda console=ttyS0");
        let line = line(&spec);
        assert!(
            line.starts_with("-machine q35 -accel tcg -cpu max -smp 2 -m 1024M"),
            "{line}"
        );
        assert!(
            line.contains("-qmp unix:/s/qmp.sock,server=on,wait=off"),
            "{line}"
        );
        assert!(line.contains("hostfwd=tcp:127.0.0.1:2222-:22"), "{line}");
        assert!(line.contains("-serial chardev:kiln-console"), "{line}");
        assert!(
            line.contains(
                "-drive file=/w/overlay.qcow2,if=virtio,format=qcow2,discard=unmap,cache=unsafe "
            ),
            "the scratch overlay ignores guest flushes by default: {line}"
        );
        assert!(
            line.contains("file=/s/seed.img,if=virtio,format=raw,readonly=on"),
            "{line}"
        );
        assert!(
            line.contains("-device virtio-net-pci,netdev=kiln-net,mac=52:54:00:6b:69:6c"),
            "{line}"
        );
        assert!(
            line.contains("-kernel /k/vmlinuz -append root=/dev/vda console=ttyS0"),
            "{line}"
        );
        assert!(!line.contains("-initrd"), "{line}");
        assert!(!line.contains("pflash"), "{line}");
        assert_eq!(spec.emulator(), "qemu-system-x86_64");
        let kvm = VmSpec {
            accel: Accel::Kvm,
            ..spec
        };
        assert!(line_of(&kvm).contains("-accel kvm -cpu host"));
    }

    fn line_of(spec: &VmSpec<'_>) -> String {
        line(spec)
    }

    #[test]
    fn qemu_machine_type_cpu_model_and_topology_reach_the_command_line() {
        let m = machine(MachineSettings {
            machine_type: Some("pc-i440fx-7.2"),
            cpu_model: Some("Haswell,-hle"),
            sockets: Some(2),
            cores: Some(3),
            cpus: Some(4),
            ..Default::default()
        });
        let line = line(&spec(&m));
        assert!(
            line.starts_with(
                "-machine pc-i440fx-7.2 -accel tcg -cpu Haswell,-hle -smp 4,sockets=2,cores=3 "
            ),
            "{line}"
        );
    }

    #[test]
    fn qemu_disk_settings_reach_the_command_line() {
        let m = machine(MachineSettings {
            disk_cache: Some("none"),
            disk_discard: Some("ignore"),
            disk_detect_zeroes: Some("on"),
            ..Default::default()
        });
        let line = line(&spec(&m));
        assert!(
            line.contains("-drive file=/w/overlay.qcow2,if=virtio,format=qcow2,discard=ignore,cache=none,detect-zeroes=on "),
            "{line}"
        );
        // The seed is not the build disk: none of them apply to it.
        assert!(
            line.contains("-drive file=/s/seed.img,if=virtio,format=raw,readonly=on "),
            "{line}"
        );
    }

    #[test]
    fn qemu_disk_interfaces_reach_the_command_line() {
        let iface = |name| {
            let m = machine(MachineSettings {
                disk_interface: Some(name),
                disk_detect_zeroes: Some("unmap"),
                ..Default::default()
            });
            line(&spec(&m))
        };
        let scsi = iface("virtio-scsi");
        for want in [
            "-drive file=/w/overlay.qcow2,if=none,id=kiln-disk,format=qcow2,discard=unmap,detect-zeroes=unmap",
            "-drive file=/s/seed.img,if=none,id=kiln-seed,format=raw,readonly=on",
            "-device virtio-scsi-pci,id=kiln-scsi",
            "-device scsi-hd,drive=kiln-disk,bus=kiln-scsi.0",
            "-device scsi-hd,drive=kiln-seed,bus=kiln-scsi.0",
        ] {
            assert!(scsi.contains(want), "{want} not in {scsi}");
        }
        assert!(!scsi.contains("if=virtio"), "{scsi}");
        let nvme = iface("nvme");
        for want in [
            "-drive file=/w/overlay.qcow2,if=none,id=kiln-disk,format=qcow2",
            "-device nvme,drive=kiln-disk,serial=kiln-disk",
            "-device nvme,drive=kiln-seed,serial=kiln-seed",
        ] {
            assert!(nvme.contains(want), "{want} not in {nvme}");
        }
        let ide = iface("ide");
        assert!(
            ide.contains(
                "-drive file=/w/overlay.qcow2,if=ide,index=0,media=disk,format=qcow2,discard=unmap"
            ),
            "{ide}"
        );
        assert!(
            ide.contains("-drive file=/s/seed.img,if=ide,index=1,media=disk,format=raw"),
            "{ide}"
        );
        assert!(!ide.contains("if=virtio"), "{ide}");
    }

    #[test]
    fn qemu_net_device_qemuargs_and_binary_reach_the_command_line() {
        let extra = vec![
            vec!["-device".to_string(), "virtio-rng-pci".to_string()],
            vec!["-boot".to_string(), "menu=on".to_string()],
        ];
        let m = machine(MachineSettings {
            net_device: Some("e1000"),
            qemuargs: &extra,
            qemu_binary: Some("/opt/qemu/bin/qemu-system-x86_64"),
            ..Default::default()
        });
        let spec = spec(&m);
        let line = line(&spec);
        assert!(
            line.contains("-device e1000,netdev=kiln-net,mac=52:54:00:6b:69:6c"),
            "{line}"
        );
        assert!(!line.contains("virtio-net"), "{line}");
        assert!(
            line.ends_with("-device virtio-rng-pci -boot menu=on"),
            "appended last: {line}"
        );
        assert_eq!(spec.emulator(), "/opt/qemu/bin/qemu-system-x86_64");
        let cmd = command(&spec);
        assert_eq!(
            cmd.as_std().get_program(),
            "/opt/qemu/bin/qemu-system-x86_64"
        );
    }

    #[test]
    fn qemu_installer_iso_is_a_read_only_cdrom_after_the_disk() {
        let m = machine(MachineSettings::default());
        let mut spec = spec(&m);
        assert!(!line(&spec).contains("cdrom"), "no ISO, no CD-ROM");
        spec.cdrom = Some(Path::new("/c/installer.iso"));
        let line = line(&spec);
        assert!(
            line.contains("-drive file=/c/installer.iso,if=none,id=kiln-cdrom,media=cdrom,readonly=on,format=raw -device ide-cd,drive=kiln-cdrom -boot order=cd"),
            "{line}"
        );
    }

    #[test]
    fn qemu_uefi_firmware_reaches_the_command_line() {
        let m = machine(MachineSettings {
            firmware: Some("uefi"),
            ..Default::default()
        });
        let mut spec = spec(&m);
        spec.uefi = Some(UefiFiles {
            code: Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd"),
            vars: Path::new("/w/efivars.fd"),
            secure_boot: false,
        });
        let line = line(&spec);
        assert!(line.starts_with("-machine q35 "), "{line}");
        assert!(
            line.contains("-drive if=pflash,unit=0,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd -drive if=pflash,unit=1,format=raw,file=/w/efivars.fd"),
            "{line}"
        );
        assert!(!line.contains("smm"), "{line}");
        spec.uefi = Some(UefiFiles {
            code: Path::new("/usr/share/OVMF/OVMF_CODE_4M.ms.fd"),
            vars: Path::new("/w/efivars.fd"),
            secure_boot: true,
        });
        let line = line_of(&spec);
        assert!(line.starts_with("-machine q35,smm=on "), "{line}");
        assert!(
            line.contains("-global driver=cfi.pflash01,property=secure,value=on"),
            "{line}"
        );
    }

    /// aarch64 with UEFI: `qemu-system-aarch64 -machine virt`, AAVMF's
    /// code read-only and the build's vars in the two pflash units, no
    /// `-kernel`, the disk and NIC on virtio PCI.
    #[test]
    fn qemu_aarch64_uefi_reaches_the_command_line() {
        let m = machine(MachineSettings {
            firmware: Some("uefi"),
            ..Default::default()
        });
        let mut spec = spec(&m);
        spec.arch = Arch::Aarch64;
        spec.uefi = Some(UefiFiles {
            code: Path::new("/usr/share/AAVMF/AAVMF_CODE.fd"),
            vars: Path::new("/w/efivars.fd"),
            secure_boot: false,
        });
        assert_eq!(spec.emulator(), "qemu-system-aarch64");
        let line = line(&spec);
        assert!(
            line.starts_with("-machine virt -accel tcg -cpu max "),
            "{line}"
        );
        assert!(
            line.contains("-drive if=pflash,unit=0,format=raw,readonly=on,file=/usr/share/AAVMF/AAVMF_CODE.fd -drive if=pflash,unit=1,format=raw,file=/w/efivars.fd"),
            "{line}"
        );
        assert!(
            line.contains("-drive file=/w/overlay.qcow2,if=virtio,format=qcow2"),
            "{line}"
        );
        assert!(
            line.contains("-device virtio-net-pci,netdev=kiln-net"),
            "{line}"
        );
        for absent in ["-kernel", "smm", "q35", "ide-cd"] {
            assert!(!line.contains(absent), "{absent}: {line}");
        }
        // Secure boot: AAVMF with Microsoft's keys in both pflash units,
        // and none of x86's SMM (a `secure` flash would be out of the
        // firmware's reach on `virt`).
        spec.uefi = Some(UefiFiles {
            code: Path::new("/usr/share/AAVMF/AAVMF_CODE.ms.fd"),
            vars: Path::new("/w/efivars.fd"),
            secure_boot: true,
        });
        let line = line_of(&spec);
        assert!(line.starts_with("-machine virt -accel tcg "), "{line}");
        assert!(
            line.contains("-drive if=pflash,unit=0,format=raw,readonly=on,file=/usr/share/AAVMF/AAVMF_CODE.ms.fd -drive if=pflash,unit=1,format=raw,file=/w/efivars.fd"),
            "{line}"
        );
        for absent in ["smm", "cfi.pflash01", "secure=on"] {
            assert!(!line.contains(absent), "{absent}: {line}");
        }
    }

    #[tokio::test]
    async fn qemu_accelerator_choice_honours_explicit_requests() {
        let dir = tempfile::tempdir().unwrap();
        let (a, note) = choose_accel("tcg", Arch::X86_64, dir.path()).await.unwrap();
        assert_eq!(a, Accel::Tcg);
        assert!(note.contains("requested"));
        let (a, _) = choose_accel("auto", Arch::Aarch64, dir.path())
            .await
            .unwrap();
        assert_eq!(a, Accel::Tcg);
    }
}
