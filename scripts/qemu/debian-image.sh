#!/usr/bin/env bash
# Builds a small bootable Debian bookworm base image for the QEMU builder's
# tests and templates, without network access from the guest:
#   disk.qcow2  ext4 root filesystem on the whole disk (/dev/vda, no partitions)
#   vmlinuz, initrd.img  for direct kernel boot: append = "root=/dev/vda console=ttyS0"
# cloud-init (NoCloud only) and openssh-server (with sftp) are installed; the
# image has no SSH host keys and no login credentials until cloud-init runs.
# cloud-init makes the host key types it is told to (kiln asks for ed25519
# only); a drop-in runs `ssh-keygen -A` before sshd only when no host key
# exists at all (an image booted without cloud-init), so a boot does not spend
# seconds of TCG time making RSA and ECDSA keys nobody asked for. Debian's
# own cloud images have no such step: cloud-init alone makes their keys.
#
# The result is cached outside the clone, keyed by this script's contents:
#   ${KILN_QEMU_CACHE:-~/.cache/kiln/qemu}/debian-bookworm-<key>/
# Prints that directory on stdout. Needs root, mmdebstrap, mkfs.ext4, qemu-img.
set -euo pipefail

cache_root="${KILN_QEMU_CACHE:-$HOME/.cache/kiln/qemu}"
key="$(sha256sum "$0" | cut -c1-16)"
out="$cache_root/debian-bookworm-$key"
if [ -f "$out/disk.qcow2" ] && [ -f "$out/vmlinuz" ] && [ -f "$out/initrd.img" ]; then
  echo "$out"
  exit 0
fi

mkdir -p "$cache_root"
# One build at a time; a second caller waits and then reuses the result.
exec 9>"$cache_root/.debian-bookworm.lock"
flock 9
if [ -f "$out/disk.qcow2" ]; then
  echo "$out"
  exit 0
fi

work="$(mktemp -d "$cache_root/.build-XXXXXX")"
cleanup() {
  rm -rf "$work"
}
trap cleanup EXIT
rootfs="$work/rootfs"

mmdebstrap --variant=minbase --mode=root \
  --include=linux-image-cloud-amd64,initramfs-tools,systemd-sysv,udev,dbus,openssh-server,openssh-sftp-server,cloud-init,iproute2,netbase,e2fsprogs \
  --customize-hook='echo kiln-base > "$1/etc/hostname"' \
  --customize-hook='printf "/dev/vda / ext4 rw,errors=remount-ro 0 1\n" > "$1/etc/fstab"' \
  --customize-hook='mkdir -p "$1/etc/cloud/cloud.cfg.d" && printf "datasource_list: [ NoCloud, None ]\n" > "$1/etc/cloud/cloud.cfg.d/90-kiln-nocloud.cfg"' \
  --customize-hook='printf "[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\n" > "$1/etc/systemd/network/99-kiln-dhcp.network"' \
  --customize-hook='chroot "$1" systemctl enable systemd-networkd.service' \
  --customize-hook='chroot "$1" systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service systemd-networkd-wait-online.service' \
  --customize-hook='mkdir -p "$1/etc/systemd/system/ssh.service.d" && printf "[Service]\nExecStartPre=\nExecStartPre=/bin/sh -c \"ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1 || exec /usr/bin/ssh-keygen -A\"\nExecStartPre=/usr/sbin/sshd -t\n" > "$1/etc/systemd/system/ssh.service.d/kiln-host-keys.conf"' \
  --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
  --customize-hook='cp "$1"/boot/vmlinuz-* "$1/../vmlinuz" && cp "$1"/boot/initrd.img-* "$1/../initrd.img"' \
  --customize-hook='rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*' \
  bookworm "$rootfs" http://deb.debian.org/debian >&2

truncate -s 2G "$work/disk.raw"
mkfs.ext4 -q -L root -d "$rootfs" "$work/disk.raw" >&2
qemu-img convert -f raw -O qcow2 "$work/disk.raw" "$work/disk.qcow2"
rm -f "$work/disk.raw"
mkdir -p "$work/out"
mv "$work/disk.qcow2" "$work/vmlinuz" "$work/initrd.img" "$work/out/"
chmod 0644 "$work/out/"*
mv "$work/out" "$out"
echo "$out"
