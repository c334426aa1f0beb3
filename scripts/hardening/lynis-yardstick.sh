#!/usr/bin/env bash
# The Lynis yardstick of kiln's hardening: Lynis' hardening index, tests,
# warnings and suggestions on a Debian bookworm minbase root filesystem
# before and after a kiln OCI build with `cis-level1` + `cleanup`
# (templates/debian-hardened.toml). Fails if a Lynis warning is left that
# one of kiln's rules claims to fix (its `lynis = [...]` ids).
#
#   scripts/hardening/lynis-yardstick.sh            # uses `kiln` on PATH
#   KILN=target/debug/kiln scripts/hardening/lynis-yardstick.sh
#   scripts/hardening/lynis-yardstick.sh cloud      # another base (debian-rootfs.sh flavours:
#                                                   # ssh (default), minbase, cloud)
#
# Needs root, lynis, mmdebstrap, runc, umoci and the Debian mirror.
# Results (reports, logs) are left in $OUT (default: a temporary folder).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
KILN=${KILN:-kiln}
OUT=${OUT:-$(mktemp -d /tmp/kiln-lynis.XXXXXX)}
mkdir -p "$OUT"
for tool in lynis mmdebstrap runc umoci unshare; do
  command -v "$tool" >/dev/null || { echo "error: $tool is not installed" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "error: needs root (chroot, mounts, runc)" >&2; exit 1; }

tarball=$("$here/debian-rootfs.sh" "${1:-ssh}")
work=$(mktemp -d /tmp/kiln-lynis-work.XXXXXX)
# Never follow a mount (lynis-audit.sh bind-mounts /proc while it runs).
trap 'rm -rf --one-file-system "$work"' EXIT

echo "== before: $tarball"
mkdir "$work/before"
tar -xf "$tarball" -C "$work/before"
"$here/lynis-audit.sh" "$work/before" "$OUT/before" | tee "$OUT/before.txt"

echo "== kiln build: cis-level1 + cleanup"
"$KILN" --state-dir "$work/state" build --json --var rootfs="$tarball" \
  --var output="$work/layout" "$repo/templates/debian-hardened.toml" >"$OUT/build.log" 2>&1 ||
  { tail -n 40 "$OUT/build.log"; echo "error: the kiln build failed (log: $OUT/build.log)" >&2; exit 1; }
umoci unpack --image "$work/layout:12.0.0" "$work/after" >/dev/null

echo "== after"
"$here/lynis-audit.sh" "$work/after/rootfs" "$OUT/after" | tee "$OUT/after.txt"

echo "== summary"
# Rules kiln applied a second time (a later rule undid them) or late.
echo "re-applied: $(grep -o '\[[a-z0-9-]*\] applying[ :][^,]*' "$OUT/build.log" | cut -d']' -f1 | tr -d '[' | sort -u | tr '\n' ' ')"
val() { sed -n "s/^$1=//p" "$2"; }
printf '%-8s %-15s %-7s %-9s %s\n' "" hardening_index tests warnings suggestions
for s in before after; do
  printf '%-8s %-15s %-7s %-9s %s\n' "$s" "$(val hardening_index "$OUT/$s.txt")" \
    "$(val tests_performed "$OUT/$s.txt")" "$(val warnings "$OUT/$s.txt")" "$(val suggestions "$OUT/$s.txt")"
done
# Warnings left that a kiln rule claims to fix.
claimed=$(grep -ho '^lynis = \[.*\]' "$repo"/provisioners/profiles/*.toml | grep -o '"[A-Z]*-[0-9]*"' | tr -d '"' | sort -u)
left=0
for id in $(sed -n 's/^warning\[\]=\([A-Z]*-[0-9]*\)|.*/\1/p' "$OUT/after/lynis-report.dat" | sort -u); do
  if echo "$claimed" | grep -qx "$id"; then
    echo "warning $id is left although a kiln rule claims to fix it"
    left=1
  fi
done
echo "results in $OUT"
exit $left
