#!/usr/bin/env bash
# Runs Lynis (from the host's `lynis` package) inside an unpacked root
# filesystem: copies Lynis in, bind-mounts /proc, chroots, and prints the
# hardening index, tests performed, warnings and suggestions. The rootfs is
# changed only under /usr/share/lynis, /etc/lynis, /usr/sbin/lynis and
# /var/log/lynis*, which is why callers run it on a throw-away copy.
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
chroot "$root" /usr/sbin/lynis audit system --quick --no-colors \
  --logfile /var/log/lynis.log --report-file /var/log/lynis-report.dat >"$out/lynis.out" 2>&1 || true
cp "$root/var/log/lynis-report.dat" "$root/var/log/lynis.log" "$out/"
rep="$out/lynis-report.dat"
echo "hardening_index=$(sed -n 's/^hardening_index=//p' "$rep")"
echo "tests_performed=$(sed -n 's/^lynis_tests_done=//p' "$rep")"
echo "warnings=$(grep -c '^warning\[\]=' "$rep" || true)"
echo "suggestions=$(grep -c '^suggestion\[\]=' "$rep" || true)"
grep '^warning\[\]=' "$rep" | sed 's/^warning\[\]=/  warning: /' || true
grep '^suggestion\[\]=' "$rep" | sed 's/^suggestion\[\]=/  suggestion: /' || true
