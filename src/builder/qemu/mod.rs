//! `[source.qemu.NAME]`: disk images from a throw-away VM. Launch verifies
//! the base, boots QEMU on a copy-on-write overlay with a cloud-init seed
//! carrying an ephemeral SSH key, and hands provisioners an SSH
//! communicator; snapshot powers the guest off and exports a standalone,
//! hashed image. Every file and the QEMU process are on the undo stack.

// Parsed at `kiln validate` time too, whatever the features.
#[cfg_attr(not(feature = "qemu"), allow(dead_code))]
mod bootcmd;
#[cfg(feature = "qemu")]
mod build;
#[cfg(feature = "qemu")]
mod cdfiles;
#[cfg(feature = "qemu")]
mod disk;
#[cfg(feature = "qemu")]
mod download;
#[cfg(feature = "qemu")]
mod fetch;
#[cfg(feature = "qemu")]
mod firmware;
#[cfg(feature = "qemu")]
mod httpserve;
#[cfg(feature = "qemu")]
mod launch;
#[cfg(feature = "qemu")]
mod machine;
#[cfg(feature = "qemu")]
mod qmp;
#[cfg(feature = "qemu")]
mod seed;

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Builder;
use crate::template::schema::{Field, Kind, SettingProblem, STR_LIST};
use crate::template::Value;

const QEMUARGS: Kind = Kind::List(&STR_LIST);
const DISK_INTERFACES: &[&str] = &["virtio", "virtio-scsi", "ide", "nvme"];
const DISK_CACHES: &[&str] = &["writeback", "writethrough", "none", "unsafe", "directsync"];
const DISK_DISCARDS: &[&str] = &["unmap", "ignore"];
const DISK_DETECT_ZEROES: &[&str] = &["off", "on", "unmap"];

/// The settings of a QEMU source (see `../shared/spec/template.md`).
pub const FIELDS: &[Field] = &[
    Field::opt("disk", Kind::InputFile),
    Field::opt("disk_url", Kind::Str),
    Field::opt("disk_urls", STR_LIST),
    Field::opt("disk_checksum", Kind::Str),
    Field::opt("insecure_skip_checksum", Kind::Bool),
    Field::opt("disk_size", Kind::Size),
    Field::opt("accelerator", Kind::Enum(&["auto", "kvm", "tcg"])),
    Field::opt("arch", Kind::Enum(&["x86_64", "aarch64"])),
    Field::opt("cpus", Kind::Int),
    Field::opt("memory", Kind::Size),
    Field::opt("kernel", Kind::InputFile),
    Field::opt("initrd", Kind::InputFile),
    Field::opt("append", Kind::Str),
    Field::opt("user_data", Kind::Str),
    Field::opt("cloud_init", Kind::Bool),
    Field::opt("ssh_username", Kind::Str),
    Field::opt("ssh_password", Kind::Str).sensitive_ok(),
    Field::opt("ssh_private_key_file", Kind::InputFile),
    Field::opt("ssh_timeout", Kind::Duration),
    Field::opt("shutdown_command", Kind::Str),
    Field::opt("shutdown_timeout", Kind::Duration),
    Field::req("output", Kind::Path),
    Field::opt("format", Kind::Enum(&["qcow2", "raw"])),
    Field::opt("compress", Kind::Bool),
    Field::opt("machine_type", Kind::Str),
    Field::opt("cpu_model", Kind::Str),
    Field::opt("sockets", Kind::Int),
    Field::opt("cores", Kind::Int),
    Field::opt("disk_interface", Kind::Enum(DISK_INTERFACES)),
    Field::opt("disk_cache", Kind::Enum(DISK_CACHES)),
    Field::opt("disk_discard", Kind::Enum(DISK_DISCARDS)),
    Field::opt("disk_detect_zeroes", Kind::Enum(DISK_DETECT_ZEROES)),
    Field::opt("net_device", Kind::Str),
    Field::opt("qemuargs", QEMUARGS),
    Field::opt("qemu_binary", Kind::Str),
    Field::opt("firmware", Kind::Enum(&["bios", "uefi"])),
    Field::opt("secure_boot", Kind::Bool),
    Field::opt("iso_url", Kind::Str),
    Field::opt("iso_urls", STR_LIST),
    Field::opt("iso_checksum", Kind::Str),
    Field::opt("boot_wait", Kind::Duration),
    Field::opt("boot_command", STR_LIST).sensitive_ok(),
    Field::opt("boot_key_interval", Kind::Duration),
    Field::opt("http_directory", Kind::Path),
    Field::opt("http_content", Kind::Map(&Kind::Str)),
    Field::opt("http_port_min", Kind::Int),
    Field::opt("http_port_max", Kind::Int),
    Field::opt("cd_files", STR_LIST),
    Field::opt("cd_content", Kind::Map(&Kind::Str)),
    Field::opt("cd_label", Kind::Str),
];

/// The settings `kiln validate` checks beyond their types: each
/// `boot_command` string that does not parse, and each `cd_files` glob
/// that is not a pattern, with the characters at fault. A string holding
/// a secret is checked only when it is typed (its value is not known here
/// and must not be shown).
pub(super) fn settings_problems(settings: &BTreeMap<String, Value>) -> Vec<SettingProblem> {
    let mut out = vec![];
    for (i, line) in strings(settings, "boot_command") {
        let Err(e) = bootcmd::parse(line) else {
            continue;
        };
        let byte = |col: usize| line.char_indices().nth(col).map_or(line.len(), |(b, _)| b);
        out.push(SettingProblem {
            key: "boot_command",
            item: Some(i),
            bytes: Some(byte(e.column - 1)..byte(e.column - 1 + e.len)),
            message: format!("`boot_command[{i}]`: {}", e.message),
            help: Some(e.help),
        });
    }
    for (i, entry) in strings(settings, "cd_files") {
        let Err(e) = glob::Pattern::new(entry) else {
            continue;
        };
        let at = entry
            .char_indices()
            .nth(e.pos)
            .map_or(entry.len(), |(b, _)| b);
        let end = entry[at..].chars().next().map_or(at, |c| at + c.len_utf8());
        out.push(SettingProblem {
            key: "cd_files",
            item: Some(i),
            bytes: Some(at..end),
            message: format!("`cd_files[{i}]` is not a glob pattern: {}", e.msg),
            help: Some("`*`, `?`, `[…]` and `**` match names; `[[]` matches a `[`".into()),
        });
    }
    out
}

/// The string items of the list `key`, with their indexes.
fn strings<'a>(
    settings: &'a BTreeMap<String, Value>,
    key: &str,
) -> impl Iterator<Item = (usize, &'a str)> {
    let items = match settings.get(key) {
        Some(Value::List(items)) => items.as_slice(),
        _ => &[],
    };
    items.iter().enumerate().filter_map(|(i, v)| match v {
        Value::Str(s) => Some((i, s.as_str())),
        _ => None,
    })
}

pub(super) fn builder() -> Arc<dyn Builder> {
    #[cfg(feature = "qemu")]
    {
        Arc::new(build::QemuBuilder)
    }
    #[cfg(not(feature = "qemu"))]
    {
        super::unavailable("qemu", false, "issue #7")
    }
}
