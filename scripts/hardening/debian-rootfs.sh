#!/usr/bin/env bash
# Builds (once) and caches an unhardened Debian bookworm minbase root
# filesystem as a tarball, the base of the hardening tests and of the
# Lynis yardstick. Prints the tarball's path on stdout.
#
# The cache key is every input: suite, variant, packages, mirror and this
# script's own content, so changing any of them builds a new tarball.
# Needs root and mmdebstrap; takes about 90 s the first time.
#
#   debian-rootfs.sh            minbase + openssh-server, cron, procps, iproute2, ca-certificates
#   debian-rootfs.sh minbase    plain minbase (nothing added)
#   debian-rootfs.sh cloud      minbase + cloud-init, openssh-server, cron (a cloud image's base)
#   debian-rootfs.sh ansible    minbase + ansible-core (the ansible-local provisioner's tests)
set -euo pipefail

SUITE="${KILN_DEBIAN_SUITE:-bookworm}"
MIRROR="${KILN_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
FLAVOUR="${1:-ssh}"
case "$FLAVOUR" in
  ssh) INCLUDE="openssh-server,cron,procps,iproute2,ca-certificates" ;;
  minbase) INCLUDE="" ;;
  cloud) INCLUDE="cloud-init,openssh-server,cron" ;;
  ansible) INCLUDE="ansible-core" ;;
  *) echo "error: unknown flavour \`$FLAVOUR\` (ssh, minbase, cloud, ansible)" >&2; exit 2 ;;
esac
CACHE="${KILN_CACHE_DIR:-$HOME/.cache/kiln}/debian-rootfs"

key=$( { echo "$SUITE $MIRROR $INCLUDE minbase"; cat "$0"; } | sha256sum | cut -c1-16)
out="$CACHE/$SUITE-$FLAVOUR-$key.tar"
if [ -s "$out" ]; then
  echo "$out"
  exit 0
fi
command -v mmdebstrap >/dev/null || { echo "error: mmdebstrap is not installed (apt-get install mmdebstrap)" >&2; exit 1; }
mkdir -p "$CACHE"
tmp=$(mktemp "$CACHE/.building.XXXXXX")
trap 'rm -f "$tmp"' EXIT
mmdebstrap --quiet --variant=minbase ${INCLUDE:+--include="$INCLUDE"} --format=tar \
  "$SUITE" "$tmp" "$MIRROR" >&2
mv "$tmp" "$out"
trap - EXIT
echo "$out"
