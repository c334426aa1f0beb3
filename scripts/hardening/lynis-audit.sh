#!/usr/bin/env bash
# Runs Lynis (from the host's `lynis` package) inside an unpacked root
# filesystem: copies Lynis in, bind-mounts /proc, chroots, and prints the
# hardening index, tests performed, warnings and suggestions. The rootfs is
# changed (Lynis is copied in, logs written), so run it on a throw-away copy.
#
# Lynis reads kernel parameters from the running kernel, which a chroot
# shares with the host. To judge what the image would set at boot, Lynis
# runs in a fresh network namespace where the image's own
# /etc/sysctl.{conf,d} `net.ipv4.*`/`net.ipv6.*` settings are applied first
# (those are per namespace, as on a booted instance); `kernel.*` and `fs.*`
# are the host's and are never touched.
# Usage: lynis-audit.sh ROOTFS REPORT_DIR
set -euo pipefail
root=$(realpath "$1")
out=$2
mkdir -p "$out"
for p in /usr/sbin/lynis /usr/share/lynis /etc/lynis; do
  mkdir -p "$root$(dirname "$p")"
  cp -a "$p" "$root$(dirname "$p")/"
done
mkdir -p "$root/proc" "$root/var/log"
mount --bind /proc "$root/proc"
trap 'umount -l "$root/proc"' EXIT
unshare --net sh -c '
  cat "$1"/etc/sysctl.conf "$1"/etc/sysctl.d/*.conf 2>/dev/null | tr -d " \t" |
    grep -E "^net\.ipv(4|6)\.[a-z0-9_.]+=" | while IFS== read -r k v; do
      sysctl -q -w "$k=$v" || true
    done
  exec chroot "$1" /usr/sbin/lynis audit system --quick --no-colors \
    --logfile /var/log/lynis.log --report-file /var/log/lynis-report.dat
' sh "$root" >"$out/lynis.out" 2>&1 || true
cp "$root/var/log/lynis-report.dat" "$root/var/log/lynis.log" "$out/"
rep="$out/lynis-report.dat"
echo "hardening_index=$(sed -n 's/^hardening_index=//p' "$rep")"
echo "tests_performed=$(sed -n 's/^lynis_tests_done=//p' "$rep")"
echo "warnings=$(grep -c '^warning\[\]=' "$rep" || true)"
echo "suggestions=$(grep -c '^suggestion\[\]=' "$rep" || true)"
grep '^warning\[\]=' "$rep" | sed 's/^warning\[\]=/  warning: /' || true
grep '^suggestion\[\]=' "$rep" | sed 's/^suggestion\[\]=/  suggestion: /' || true
