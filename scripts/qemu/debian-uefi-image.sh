#!/usr/bin/env bash
# A UEFI-bootable variant of scripts/qemu/debian-image.sh's Debian disk, for
# the QEMU builder's firmware tests:
#   disk.qcow2  GPT: partition 1 an EFI system partition whose removable-media
#               loader \EFI\BOOT\BOOTX64.EFI is a unified kernel image
#               (systemd-stub + the image's kernel, initrd and command line
#               `root=LABEL=root console=ttyS0`), partition 2 the ext4 root
# Firmware finds it with no boot entries and no kernel from the host. The
# loader is unsigned: secure boot refuses it.
#
# Cached beside the BIOS image, keyed by both scripts' contents:
#   ${KILN_QEMU_CACHE:-~/.cache/kiln/qemu}/debian-bookworm-uefi-<key>/
# Prints that directory on stdout. Needs what debian-image.sh needs, plus
# systemd-boot-efi (the stub), objcopy, sfdisk, mkfs.vfat and mtools.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cache_root="${KILN_QEMU_CACHE:-$HOME/.cache/kiln/qemu}"
key="$(cat "$0" "$here/debian-image.sh" | sha256sum | cut -c1-16)"
out="$cache_root/debian-bookworm-uefi-$key"
if [ -f "$out/disk.qcow2" ]; then
  echo "$out"
  exit 0
fi
bios="$("$here/debian-image.sh")"

mkdir -p "$cache_root"
exec 9>"$cache_root/.debian-bookworm-uefi.lock"
flock 9
if [ -f "$out/disk.qcow2" ]; then
  echo "$out"
  exit 0
fi
work="$(mktemp -d "$cache_root/.build-uefi-XXXXXX")"
trap 'rm -rf "$work"' EXIT

stub=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
printf 'root=LABEL=root console=ttyS0\n' > "$work/cmdline"
printf 'NAME=kiln-test\nID=debian\n' > "$work/os-release"
objcopy \
  --add-section .osrel="$work/os-release" --change-section-vma .osrel=0x20000 \
  --add-section .cmdline="$work/cmdline" --change-section-vma .cmdline=0x30000 \
  --add-section .linux="$bios/vmlinuz" --change-section-vma .linux=0x2000000 \
  --add-section .initrd="$bios/initrd.img" --change-section-vma .initrd=0x3000000 \
  "$stub" "$work/BOOTX64.EFI"

# The ESP: 64 MiB of FAT holding the one loader.
truncate -s 64M "$work/esp.img"
mkfs.vfat -n ESP "$work/esp.img" >&2
mmd -i "$work/esp.img" ::/EFI ::/EFI/BOOT
mcopy -i "$work/esp.img" "$work/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI

qemu-img convert -f qcow2 -O raw "$bios/disk.qcow2" "$work/root.img"
root_mib=$(( $(stat -c %s "$work/root.img") / 1048576 ))
# 1 MiB for the GPT, the ESP, the root, 1 MiB for the backup GPT.
truncate -s "$(( 1 + 64 + root_mib + 1 ))M" "$work/disk.raw"
sfdisk -q "$work/disk.raw" >&2 <<EOF
label: gpt
start=1MiB, size=64MiB, type=U, name=esp
start=65MiB, size=${root_mib}MiB, type=L, name=root
EOF
dd if="$work/esp.img" of="$work/disk.raw" bs=1M seek=1 conv=notrunc status=none
dd if="$work/root.img" of="$work/disk.raw" bs=1M seek=65 conv=notrunc,sparse status=none
mkdir -p "$work/out"
qemu-img convert -f raw -O qcow2 "$work/disk.raw" "$work/out/disk.qcow2"
chmod 0644 "$work/out/disk.qcow2"
mv "$work/out" "$out"
echo "$out"
