//! UEFI firmware for `firmware = "uefi"`, per architecture: OVMF (Debian
//! `ovmf`) for x86_64, AAVMF (Debian `qemu-efi-aarch64`) for aarch64.
//! Which code file goes read-only into the first flash device, and the
//! build's own copy of the variable store for the second — on aarch64's
//! `virt` machine both must be exactly its flash size. Secure boot uses
//! the builds with Microsoft's keys enrolled, on both architectures.

use std::path::{Path, PathBuf};

use super::launch::Arch;
use crate::builder::BuildError;

/// The size of each of the aarch64 `virt` machine's two flash devices.
pub const VIRT_FLASH_SIZE: u64 = 64 << 20;

/// The firmware's code and the variable store to copy, for `arch`.
pub fn files(arch: Arch, secure_boot: bool) -> Result<(PathBuf, PathBuf), BuildError> {
    let (dir, code, vars, package) = match (arch, secure_boot) {
        (Arch::X86_64, true) => (
            "/usr/share/OVMF",
            "OVMF_CODE_4M.secboot.fd",
            "OVMF_VARS_4M.ms.fd",
            "ovmf",
        ),
        (Arch::X86_64, false) => (
            "/usr/share/OVMF",
            "OVMF_CODE_4M.fd",
            "OVMF_VARS_4M.fd",
            "ovmf",
        ),
        // Debian's secure-boot pairing (its firmware descriptor
        // `40-edk2-aarch64-secure-enrolled.json`): the one AAVMF build
        // (`.ms` links to it) with Microsoft's keys enrolled and secure
        // boot on in the variable store. No SMM on `virt`: the firmware
        // enforces signatures, but the store is not shielded from the
        // guest's kernel as OVMF's is behind SMM.
        (Arch::Aarch64, true) => (
            "/usr/share/AAVMF",
            "AAVMF_CODE.ms.fd",
            "AAVMF_VARS.ms.fd",
            "qemu-efi-aarch64",
        ),
        (Arch::Aarch64, false) => (
            "/usr/share/AAVMF",
            "AAVMF_CODE.fd",
            "AAVMF_VARS.fd",
            "qemu-efi-aarch64",
        ),
    };
    let dir = Path::new(dir);
    for f in [code, vars] {
        if !dir.join(f).is_file() {
            return Err(BuildError::NotSupported(format!(
                "`firmware = \"uefi\"` needs `{}` (on Debian: `apt-get install {package}`)",
                dir.join(f).display()
            )));
        }
    }
    let code = dir.join(code);
    if arch == Arch::Aarch64 {
        let len = std::fs::metadata(&code).map(|m| m.len()).unwrap_or(0);
        if len != VIRT_FLASH_SIZE {
            return Err(BuildError::NotSupported(format!(
                "`{}` has {len} bytes; the aarch64 `virt` machine's flash takes exactly {VIRT_FLASH_SIZE} (Debian's `qemu-efi-aarch64` ships it padded)",
                code.display()
            )));
        }
    }
    Ok((code, dir.join(vars)))
}

/// Copies the variable store `template` to `dest`, the build's own
/// writable copy; on aarch64 padded with zeros to the flash size (a
/// sparse file, so the padding takes no room).
pub async fn copy_vars(arch: Arch, template: &Path, dest: &Path) -> Result<(), BuildError> {
    fs_err::tokio::copy(template, dest)
        .await
        .map_err(BuildError::io("cannot copy the UEFI variable store"))?;
    if arch != Arch::Aarch64 {
        return Ok(());
    }
    let file = fs_err::tokio::OpenOptions::new()
        .write(true)
        .open(dest)
        .await
        .map_err(BuildError::io("cannot open the UEFI variable store"))?;
    let len = file
        .metadata()
        .await
        .map_err(BuildError::io("cannot read the UEFI variable store"))?
        .len();
    if len > VIRT_FLASH_SIZE {
        return Err(BuildError::Config(format!(
            "the UEFI variable store `{}` has {len} bytes, more than the `virt` machine's flash ({VIRT_FLASH_SIZE})",
            template.display()
        )));
    }
    file.set_len(VIRT_FLASH_SIZE)
        .await
        .map_err(BuildError::io("cannot pad the UEFI variable store"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_firmware_per_architecture() {
        // Which files, whether or not they are installed here.
        let named = |arch, sb| match files(arch, sb) {
            Ok((code, vars)) => format!("{} {}", code.display(), vars.display()),
            Err(e) => e.to_string(),
        };
        assert!(named(Arch::X86_64, false).contains("/usr/share/OVMF/OVMF_CODE_4M.fd"));
        assert!(named(Arch::X86_64, true).contains("OVMF_CODE_4M.secboot.fd"));
        let a = named(Arch::Aarch64, false);
        assert!(
            a.contains("/usr/share/AAVMF/AAVMF_CODE.fd") || a.contains("qemu-efi-aarch64"),
            "{a}"
        );
        let a = named(Arch::Aarch64, true);
        assert!(
            a == "/usr/share/AAVMF/AAVMF_CODE.ms.fd /usr/share/AAVMF/AAVMF_VARS.ms.fd"
                || a.contains("apt-get install qemu-efi-aarch64"),
            "{a}"
        );
    }

    #[tokio::test]
    async fn qemu_aarch64_vars_are_padded_to_the_flash_size() {
        let dir = tempfile::tempdir().unwrap();
        let template = dir.path().join("VARS.fd");
        std::fs::write(&template, vec![0x5au8; 4096]).unwrap();
        let dest = dir.path().join("efivars.fd");
        copy_vars(Arch::Aarch64, &template, &dest).await.unwrap();
        let got = std::fs::read(&dest).unwrap();
        assert_eq!(got.len() as u64, VIRT_FLASH_SIZE);
        assert!(got[..4096].iter().all(|b| *b == 0x5a));
        assert!(got[4096..].iter().all(|b| *b == 0));
        let x86 = dir.path().join("x86.fd");
        copy_vars(Arch::X86_64, &template, &x86).await.unwrap();
        assert_eq!(std::fs::metadata(&x86).unwrap().len(), 4096);
    }
}
