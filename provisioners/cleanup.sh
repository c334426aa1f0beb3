#!/bin/sh
# Remove what must not ship in a golden image. Safe to run on any Linux
# guest; each step tolerates what is already absent.
set -eu
rm -f /etc/machine-id /var/lib/dbus/machine-id 2>/dev/null || true
: > /etc/machine-id 2>/dev/null || true
rm -f /etc/ssh/ssh_host_*key* 2>/dev/null || true
rm -rf /var/lib/cloud/instances/* /var/lib/cloud/instance 2>/dev/null || true
rm -f /root/.bash_history /home/*/.bash_history 2>/dev/null || true
if command -v apt-get >/dev/null 2>&1; then apt-get clean; rm -rf /var/lib/apt/lists/*; fi
if command -v dnf >/dev/null 2>&1; then dnf clean all >/dev/null; fi
find /var/log -type f -exec truncate -s 0 {} + 2>/dev/null || true
rm -rf /tmp/* /var/tmp/* 2>/dev/null || true
