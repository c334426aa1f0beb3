#!/usr/bin/env bash
# Makes a small base image kiln can build from without network: the host's
# static busybox with its applets, an os-release, passwd and group, as a
# plain tar (`from = "rootfs:FILE.tar"`). Reproducible: fixed owners and
# mtimes, sorted names.
#
#   scripts/demo/busybox-rootfs.sh OUT.tar
set -euo pipefail
out=${1:?usage: $0 OUT.tar}
busybox=$(command -v busybox || true)
[ -n "$busybox" ] || { echo "busybox-rootfs: busybox not found (apt-get install busybox-static)" >&2; exit 2; }
if ! file -L "$busybox" 2>/dev/null | grep -q 'statically linked' && ldd "$busybox" >/dev/null 2>&1; then
  echo "busybox-rootfs: $busybox is dynamically linked; install busybox-static" >&2
  exit 2
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,var/log,home}
chmod 0755 "$root"
chmod 1777 "$root/tmp"
chmod 0700 "$root/root"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
cat > "$root/etc/os-release" <<'OS'
ID=busybox
NAME="BusyBox"
PRETTY_NAME="BusyBox (kiln demo base)"
OS
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
mkdir -p "$(dirname "$out")"
tar --sort=name --numeric-owner --owner=0 --group=0 --mtime=@1600000000 \
  -C "$root" -cf "$out" .
echo "busybox-rootfs: wrote $out ($(du -h "$out" | cut -f1))"
