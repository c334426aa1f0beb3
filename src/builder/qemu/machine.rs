//! The machine a QEMU build boots: machine type, CPU model and topology,
//! disk and network devices, firmware and extra `qemuargs`. Checked once
//! from the template's settings (a bad value is an error naming it);
//! `launch` turns the result into command-line arguments.

use super::{DISK_CACHES, DISK_DETECT_ZEROES, DISK_DISCARDS, DISK_INTERFACES};
use crate::builder::BuildError;

/// The names kiln gives its own QEMU objects; `qemuargs` may not reuse or
/// reference them.
pub const CONSOLE_ID: &str = "kiln-console";
pub const NET_ID: &str = "kiln-net";
pub const DISK_ID: &str = "kiln-disk";
pub const SEED_ID: &str = "kiln-seed";
pub const SCSI_ID: &str = "kiln-scsi";
const KILN_IDS: &[&str] = &[CONSOLE_ID, NET_ID, DISK_ID, SEED_ID, SCSI_ID];

/// `disk_interface`: how the build disk (and the seed) are attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskInterface {
    Virtio,
    VirtioScsi,
    Ide,
    Nvme,
}

impl DiskInterface {
    fn parse(s: Option<&str>) -> Result<DiskInterface, BuildError> {
        Ok(match s.unwrap_or("virtio") {
            "virtio" => DiskInterface::Virtio,
            "virtio-scsi" => DiskInterface::VirtioScsi,
            "ide" => DiskInterface::Ide,
            "nvme" => DiskInterface::Nvme,
            other => return Err(bad("disk_interface", other, DISK_INTERFACES)),
        })
    }
}

/// `firmware`: BIOS (SeaBIOS, QEMU's default) or UEFI (OVMF in pflash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    Bios,
    Uefi { secure_boot: bool },
}

/// NICs QEMU's x86 and Arm machines offer (Packer's list, the ones QEMU
/// 7 still has).
pub const NET_DEVICES: &[&str] = &[
    "virtio-net-pci",
    "virtio-net",
    "e1000",
    "e1000e",
    "e1000-82544gc",
    "e1000-82545em",
    "rtl8139",
    "vmxnet3",
    "ne2k_pci",
    "pcnet",
    "i82550",
    "i82551",
    "i82557a",
    "i82557b",
    "i82557c",
    "i82558a",
    "i82558b",
    "i82559a",
    "i82559b",
    "i82559c",
    "i82559er",
    "i82562",
    "i82801",
];

/// The template's machine settings, as read from `[source.qemu.NAME]`.
#[derive(Debug, Default, Clone)]
pub struct MachineSettings<'a> {
    pub machine_type: Option<&'a str>,
    pub cpu_model: Option<&'a str>,
    pub cpus: Option<u32>,
    pub sockets: Option<u32>,
    pub cores: Option<u32>,
    pub disk_interface: Option<&'a str>,
    pub disk_cache: Option<&'a str>,
    pub disk_discard: Option<&'a str>,
    pub disk_detect_zeroes: Option<&'a str>,
    pub net_device: Option<&'a str>,
    pub qemuargs: &'a [Vec<String>],
    pub qemu_binary: Option<&'a str>,
    pub firmware: Option<&'a str>,
    pub secure_boot: bool,
}

/// The checked machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// `-machine` (without kiln's additions such as `smm=on`); `None`: the
    /// architecture's default (`q35`, `virt`).
    pub machine_type: Option<String>,
    /// `-cpu`; `None`: `host` under KVM, `max` under TCG.
    pub cpu_model: Option<String>,
    pub cpus: u32,
    pub sockets: Option<u32>,
    pub cores: Option<u32>,
    pub disk_interface: DiskInterface,
    pub disk_cache: Option<String>,
    pub disk_discard: String,
    pub disk_detect_zeroes: Option<String>,
    pub net_device: String,
    pub qemuargs: Vec<Vec<String>>,
    pub qemu_binary: Option<String>,
    pub firmware: Firmware,
}

fn bad(field: &str, value: &str, allowed: &[&str]) -> BuildError {
    BuildError::Config(format!(
        "`{field} = \"{value}\"` is not supported\nhint: one of {}",
        allowed
            .iter()
            .map(|a| format!("`{a}`"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

fn one_of(
    field: &str,
    value: Option<&str>,
    allowed: &[&str],
) -> Result<Option<String>, BuildError> {
    match value {
        None => Ok(None),
        Some(v) if allowed.contains(&v) => Ok(Some(v.to_string())),
        Some(v) => Err(bad(field, v, allowed)),
    }
}

/// A name that goes into one QEMU option value: no commas (they would add
/// properties), no spaces or control characters.
fn plain_name(field: &str, value: &str, extra: &str) -> Result<String, BuildError> {
    let ok = !value.is_empty()
        && !value.starts_with('-')
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c) || extra.contains(c));
    if ok {
        Ok(value.to_string())
    } else {
        Err(BuildError::Config(format!(
            "`{field} = {value:?}` is not a QEMU {} name (letters, digits, `.`, `_`, `-`{})",
            field.trim_end_matches("_type").trim_end_matches("_model"),
            if extra.is_empty() {
                String::new()
            } else {
                format!(", `{extra}` for features")
            }
        )))
    }
}

impl Machine {
    pub fn from_settings(s: &MachineSettings<'_>) -> Result<Machine, BuildError> {
        let machine_type = s
            .machine_type
            .map(|m| plain_name("machine_type", m, ""))
            .transpose()?;
        let cpu_model = s
            .cpu_model
            .map(|m| plain_name("cpu_model", m, ",+=")) // `Haswell,-hle,+x2apic`
            .transpose()?;
        for (field, v) in [("cpus", s.cpus), ("sockets", s.sockets), ("cores", s.cores)] {
            if let Some(n) = v {
                if !(1..=1024).contains(&n) {
                    return Err(BuildError::Config(format!(
                        "`{field} = {n}` is out of range (1 to 1024)"
                    )));
                }
            }
        }
        let slots = match (s.sockets, s.cores) {
            (None, None) => None,
            (sockets, cores) => Some(sockets.unwrap_or(1) * cores.unwrap_or(1)),
        };
        let cpus = match (s.cpus, slots) {
            (Some(c), Some(n)) if c > n => {
                return Err(BuildError::Config(format!(
                    "`cpus = {c}` does not fit `sockets` × `cores` = {n}\nhint: raise `sockets` or `cores`, or leave `cpus` out (it is then their product)"
                )))
            }
            (Some(c), _) => c,
            (None, Some(n)) => n,
            (None, None) => 2,
        };
        let disk_interface = DiskInterface::parse(s.disk_interface)?;
        let disk_cache = one_of("disk_cache", s.disk_cache, DISK_CACHES)?;
        let disk_discard = one_of("disk_discard", s.disk_discard, DISK_DISCARDS)?
            .unwrap_or_else(|| "unmap".into());
        let disk_detect_zeroes = one_of(
            "disk_detect_zeroes",
            s.disk_detect_zeroes,
            DISK_DETECT_ZEROES,
        )?;
        if disk_detect_zeroes.as_deref() == Some("unmap") && disk_discard != "unmap" {
            return Err(BuildError::Config(
                "`disk_detect_zeroes = \"unmap\"` needs `disk_discard = \"unmap\"`".into(),
            ));
        }
        let net_device = one_of("net_device", s.net_device, NET_DEVICES)?
            .unwrap_or_else(|| "virtio-net-pci".into());
        let qemu_binary = match s.qemu_binary {
            Some(b) if b.is_empty() || b.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                return Err(BuildError::Config(format!(
                    "`qemu_binary = {b:?}` is not a program name or path"
                )))
            }
            b => b.map(str::to_string),
        };
        let firmware = match (s.firmware.unwrap_or("bios"), s.secure_boot) {
            ("bios", false) => Firmware::Bios,
            ("bios", true) => {
                return Err(BuildError::Config(
                    "`secure_boot = true` needs `firmware = \"uefi\"`".into(),
                ))
            }
            ("uefi", secure_boot) => Firmware::Uefi { secure_boot },
            (other, _) => return Err(bad("firmware", other, &["bios", "uefi"])),
        };
        if firmware == (Firmware::Uefi { secure_boot: true })
            && machine_type.as_deref().is_some_and(|m| {
                !m.starts_with("q35") && !m.starts_with("pc-q35") && !m.starts_with("virt")
            })
        {
            return Err(BuildError::Config(format!(
                "`secure_boot = true` needs a q35 machine (SMM) on x86_64, or `virt` on aarch64, not `machine_type = \"{}\"`",
                machine_type.as_deref().unwrap_or_default()
            )));
        }
        let qemuargs = s
            .qemuargs
            .iter()
            .map(|a| check_qemuarg(a))
            .collect::<Result<_, _>>()?;
        Ok(Machine {
            machine_type,
            cpu_model,
            cpus,
            sockets: s.sockets,
            cores: s.cores,
            disk_interface,
            disk_cache,
            disk_discard,
            disk_detect_zeroes,
            net_device,
            qemuargs,
            qemu_binary,
            firmware,
        })
    }

    /// `-smp`'s value.
    pub fn smp(&self) -> String {
        let mut smp = self.cpus.to_string();
        if let Some(s) = self.sockets {
            smp.push_str(&format!(",sockets={s}"));
        }
        if let Some(c) = self.cores {
            smp.push_str(&format!(",cores={c}"));
        }
        smp
    }

    /// The build disk's `-drive` options after `file=…,format=…`.
    pub fn disk_options(&self) -> String {
        let mut o = format!(",discard={}", self.disk_discard);
        if let Some(c) = &self.disk_cache {
            o.push_str(&format!(",cache={c}"));
        }
        if let Some(z) = &self.disk_detect_zeroes {
            o.push_str(&format!(",detect-zeroes={z}"));
        }
        o
    }
}

/// Why an option in `qemuargs` is refused: it would replace or break what
/// kiln sets up itself (or has a setting for).
fn reserved(option: &str) -> Option<&'static str> {
    Some(match option {
        "-qmp" | "-qmp-pretty" | "-monitor" | "-mon" => "it would take over kiln's QMP control socket",
        "-serial" | "-nographic" | "-daemonize" | "-display" | "-curses" | "-sdl" => {
            "kiln needs QEMU in the foreground with the serial console on its stdout"
        }
        "-netdev" | "-net" | "-nic" => {
            "kiln's user-mode network carries the SSH port forward (`net_device` picks the NIC)"
        }
        "-drive" | "-blockdev" | "-hda" | "-hdb" | "-hdc" | "-hdd" | "-cdrom" | "-fda"
        | "-fdb" | "-sd" | "-mtdblock" | "-snapshot" => {
            "kiln attaches the build disk and the cloud-init seed itself (`disk_interface`, `disk_cache`… set how)"
        }
        "-bios" | "-pflash" => "use `firmware`",
        "-machine" | "-M" => "use `machine_type`",
        "-cpu" => "use `cpu_model`",
        "-smp" => "use `cpus`, `sockets` and `cores`",
        "-m" => "use `memory`",
        "-accel" | "-enable-kvm" | "-no-kvm" => "use `accelerator`",
        "-kernel" | "-initrd" | "-append" => "use `kernel`, `initrd` and `append`",
        "-S" | "-incoming" | "-loadvm" => "the guest would not boot the build disk",
        "-no-shutdown" => "QEMU must exit when the guest powers off",
        "-readconfig" | "-set" | "-runas" | "-run-with" | "-chroot" => {
            "it can change anything kiln set up"
        }
        _ => return None,
    })
}

/// One `qemuargs` entry: an option and its values, refused when it would
/// break kiln's control socket, network, disks or console.
fn check_qemuarg(arg: &[String]) -> Result<Vec<String>, BuildError> {
    let shown = format!("{arg:?}");
    let Some(first) = arg.first() else {
        return Err(BuildError::Config(
            "`qemuargs` has an empty entry; each entry is an option and its values, e.g. `[\"-device\", \"virtio-rng-pci\"]`".into(),
        ));
    };
    if !first.starts_with('-') || first.len() < 2 {
        return Err(BuildError::Config(format!(
            "`qemuargs` entry {shown} does not start with an option (`-name`)"
        )));
    }
    for value in arg {
        if value.starts_with('-') {
            let option = value
                .strip_prefix('-')
                .filter(|o| o.starts_with('-'))
                .unwrap_or(value);
            if let Some(why) = reserved(option) {
                return Err(BuildError::Config(format!(
                    "`qemuargs` entry {shown}: `{value}` is not allowed: {why}"
                )));
            }
        }
        for pair in value.split(',') {
            let v = pair.split_once('=').map_or(pair, |(_, v)| v);
            if KILN_IDS.contains(&v) || KILN_IDS.iter().any(|id| v.starts_with(&format!("{id}."))) {
                return Err(BuildError::Config(format!(
                    "`qemuargs` entry {shown}: `{pair}` uses `{v}`, which is kiln's own"
                )));
            }
        }
        if value.chars().any(|c| c.is_control()) {
            return Err(BuildError::Config(format!(
                "`qemuargs` entry {shown} has a control character"
            )));
        }
    }
    Ok(arg.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: MachineSettings<'_>) -> String {
        Machine::from_settings(&s).unwrap_err().to_string()
    }

    #[test]
    fn qemu_machine_defaults() {
        let m = Machine::from_settings(&MachineSettings::default()).unwrap();
        assert_eq!(m.cpus, 2);
        assert_eq!(m.smp(), "2");
        assert_eq!(m.disk_interface, DiskInterface::Virtio);
        assert_eq!(m.disk_options(), ",discard=unmap");
        assert_eq!(m.net_device, "virtio-net-pci");
        assert_eq!(m.firmware, Firmware::Bios);
    }

    #[test]
    fn qemu_machine_topology() {
        let m = Machine::from_settings(&MachineSettings {
            sockets: Some(2),
            cores: Some(2),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(m.smp(), "4,sockets=2,cores=2");
        let e = err(MachineSettings {
            cpus: Some(8),
            sockets: Some(1),
            cores: Some(4),
            ..Default::default()
        });
        assert!(e.contains("`cpus = 8` does not fit"), "{e}");
        assert!(err(MachineSettings {
            cores: Some(0),
            ..Default::default()
        })
        .contains("`cores = 0`"));
    }

    #[test]
    fn qemu_machine_bad_values_are_named() {
        for (s, want) in [
            (
                MachineSettings {
                    disk_interface: Some("scsi"),
                    ..Default::default()
                },
                "`disk_interface = \"scsi\"`",
            ),
            (
                MachineSettings {
                    disk_cache: Some("fast"),
                    ..Default::default()
                },
                "`disk_cache = \"fast\"`",
            ),
            (
                MachineSettings {
                    disk_detect_zeroes: Some("unmap"),
                    disk_discard: Some("ignore"),
                    ..Default::default()
                },
                "needs `disk_discard = \"unmap\"`",
            ),
            (
                MachineSettings {
                    net_device: Some("virtio-nett"),
                    ..Default::default()
                },
                "`net_device = \"virtio-nett\"`",
            ),
            (
                MachineSettings {
                    machine_type: Some("q35,smm=off"),
                    ..Default::default()
                },
                "`machine_type = \"q35,smm=off\"`",
            ),
            (
                MachineSettings {
                    cpu_model: Some("max -daemonize"),
                    ..Default::default()
                },
                "`cpu_model = \"max -daemonize\"`",
            ),
            (
                MachineSettings {
                    firmware: Some("coreboot"),
                    ..Default::default()
                },
                "`firmware = \"coreboot\"`",
            ),
            (
                MachineSettings {
                    secure_boot: true,
                    ..Default::default()
                },
                "needs `firmware = \"uefi\"`",
            ),
            (
                MachineSettings {
                    firmware: Some("uefi"),
                    secure_boot: true,
                    machine_type: Some("pc"),
                    ..Default::default()
                },
                "needs a q35 machine",
            ),
            (
                MachineSettings {
                    qemu_binary: Some("qemu system"),
                    ..Default::default()
                },
                "`qemu_binary = \"qemu system\"`",
            ),
        ] {
            let e = err(s);
            assert!(e.contains(want), "{e} lacks {want}");
        }
        // A CPU model may carry features.
        let m = Machine::from_settings(&MachineSettings {
            cpu_model: Some("Haswell,-hle,+x2apic"),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(m.cpu_model.as_deref(), Some("Haswell,-hle,+x2apic"));
    }

    #[test]
    fn qemu_qemuargs_that_would_break_kiln_are_refused_by_name() {
        let args = |a: &[&[&str]]| -> Vec<Vec<String>> {
            a.iter()
                .map(|x| x.iter().map(|s| s.to_string()).collect())
                .collect()
        };
        for (a, want) in [
            (args(&[&["-qmp", "tcp:0:4444"]]), "`-qmp` is not allowed"),
            (
                args(&[&["--monitor", "stdio"]]),
                "`--monitor` is not allowed",
            ),
            (
                args(&[&["-netdev", "user,id=n1"]]),
                "`-netdev` is not allowed",
            ),
            (args(&[&["-nic", "none"]]), "`-nic` is not allowed"),
            (
                args(&[&["-drive", "file=x.img"]]),
                "`-drive` is not allowed",
            ),
            (args(&[&["-daemonize"]]), "`-daemonize` is not allowed"),
            (args(&[&["-display", "gtk"]]), "`-display` is not allowed"),
            (args(&[&["-serial", "stdio"]]), "`-serial` is not allowed"),
            (args(&[&["-machine", "pc"]]), "use `machine_type`"),
            (args(&[&["-no-shutdown"]]), "`-no-shutdown` is not allowed"),
            (
                args(&[&["-device", "virtio-rng-pci", "-qmp", "stdio"]]),
                "`-qmp` is not allowed",
            ),
            (
                args(&[&["-device", "e1000,netdev=kiln-net"]]),
                "`netdev=kiln-net` uses `kiln-net`",
            ),
            (
                args(&[&["-device", "scsi-hd,drive=d1,bus=kiln-scsi.0"]]),
                "`bus=kiln-scsi.0` uses",
            ),
            (args(&[&["device", "x"]]), "does not start with an option"),
            (args(&[&[]]), "empty entry"),
        ] {
            let e = err(MachineSettings {
                qemuargs: &a,
                ..Default::default()
            });
            assert!(e.contains(want), "{e} lacks {want}");
        }
        let ok = args(&[
            &["-device", "virtio-rng-pci"],
            &["-object", "rng-random,id=rng0,filename=/dev/urandom"],
            &["-boot", "menu=on"],
        ]);
        let m = Machine::from_settings(&MachineSettings {
            qemuargs: &ok,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(m.qemuargs, ok);
    }
}
