//! Starting `qemu-system-*`: choosing the accelerator (KVM only after a
//! probe guest really ran on it), the command line (QMP socket, user-mode
//! network forwarding a loopback port to the guest's SSH, serial console on
//! stdout) and the private tmpfs folder for sockets and the seed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

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
    pub cpus: u32,
    pub memory_mib: u64,
    pub overlay: &'a Path,
    pub seed: Option<&'a Path>,
    pub qmp_socket: &'a Path,
    pub ssh_port: u16,
    pub kernel: Option<&'a Path>,
    pub initrd: Option<&'a Path>,
    pub append: Option<&'a str>,
}

fn path_opt(prefix: &str, path: &Path, suffix: &str) -> std::ffi::OsString {
    let mut s = std::ffi::OsString::from(prefix);
    s.push(path);
    s.push(suffix);
    s
}

/// The `qemu-system-*` command for `spec`, serial console on stdout.
pub fn command(spec: &VmSpec<'_>) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(spec.arch.emulator());
    let (accel, cpu) = match spec.accel {
        Accel::Kvm => ("kvm", "host"),
        Accel::Tcg => ("tcg", "max"),
    };
    let machine = match spec.arch {
        Arch::X86_64 => "q35",
        Arch::Aarch64 => "virt",
    };
    c.args(["-machine", machine, "-accel", accel, "-cpu", cpu])
        .args(["-smp", &spec.cpus.to_string()])
        .args(["-m", &format!("{}M", spec.memory_mib)])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-chardev", "stdio,id=console,signal=off"])
        .args(["-serial", "chardev:console"])
        .arg("-qmp")
        .arg(path_opt("unix:", spec.qmp_socket, ",server=on,wait=off"))
        .arg("-drive")
        .arg(path_opt(
            "file=",
            spec.overlay,
            ",if=virtio,format=qcow2,discard=unmap",
        ));
    if let Some(seed) = spec.seed {
        c.arg("-drive")
            .arg(path_opt("file=", seed, ",if=virtio,format=raw,readonly=on"));
    }
    c.args([
        "-netdev",
        &format!("user,id=net0,hostfwd=tcp:127.0.0.1:{}-:22", spec.ssh_port),
    ])
    .args(["-device", "virtio-net-pci,netdev=net0"]);
    if let Some(k) = spec.kernel {
        c.arg("-kernel").arg(k);
    }
    if let Some(i) = spec.initrd {
        c.arg("-initrd").arg(i);
    }
    if let Some(a) = spec.append {
        c.args(["-append", a]);
    }
    c.stdin(Stdio::null())
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

    #[test]
    fn qemu_command_line_has_qmp_hostfwd_and_serial() {
        let spec = VmSpec {
            arch: Arch::X86_64,
            accel: Accel::Tcg,
            cpus: 2,
            memory_mib: 1024,
            overlay: Path::new("/w/overlay.qcow2"),
            seed: Some(Path::new("/s/seed.img")),
            qmp_socket: Path::new("/s/qmp.sock"),
            ssh_port: 2222,
            kernel: Some(Path::new("/k/vmlinuz")),
            initrd: None,
            append: Some("root=/dev/vda console=ttyS0"),
        };
        let cmd = command(&spec);
        let args: Vec<String> = cmd
            .as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let line = args.join(" ");
        assert!(line.contains("-accel tcg -cpu max"), "{line}");
        assert!(
            line.contains("-qmp unix:/s/qmp.sock,server=on,wait=off"),
            "{line}"
        );
        assert!(line.contains("hostfwd=tcp:127.0.0.1:2222-:22"), "{line}");
        assert!(line.contains("-serial chardev:console"), "{line}");
        assert!(
            line.contains("file=/s/seed.img,if=virtio,format=raw,readonly=on"),
            "{line}"
        );
        assert!(
            line.contains("-kernel /k/vmlinuz -append root=/dev/vda console=ttyS0"),
            "{line}"
        );
        assert!(!line.contains("-initrd"), "{line}");
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
