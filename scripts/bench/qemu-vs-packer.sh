#!/usr/bin/env bash
# Wall time of the same QEMU image build with kiln and with Packer 1.6.6
# (Debian package `packer`): same cached Debian base
# (scripts/qemu/debian-image.sh), same direct kernel boot, TCG for both,
# same provisioner script, both export a standalone uncompressed qcow2.
# Packer gets SSH access the same way kiln does (a NoCloud seed with an
# ed25519 key and the same network-config, matching its NIC's MAC, here an
# ISO made with xorriso) and `use_backing_file = false` (1.6.6 passes no
# backing format to qemu-img 7).
# Needs root, qemu-system-x86, qemu-utils, packer, xorriso, mmdebstrap,
# python3 (timestamps the logs).
#   scripts/bench/qemu-vs-packer.sh [KILN_BINARY] [RUNS]
# Each run's logs, every line prefixed with the Unix time it was read, and
# a per-run timeline (boot to SSH, provisioning, shutdown, export, rest)
# go to BENCH_LOGS (default: a temporary folder, removed at the end).
set -euo pipefail
cd "$(dirname "$0")/../.."
kiln=$(realpath "${1:-target/release/kiln}")
runs=${2:-1}
base=$(scripts/qemu/debian-image.sh)
sum=$(sha256sum "$base/disk.qcow2" | cut -c1-64)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
logs=${BENCH_LOGS:-$dir/logs}
mkdir -p "$logs"

cat > "$dir/provision.sh" <<'SH'
#!/bin/sh
set -e
mkdir -p /opt/app
for i in $(seq 1 500); do echo "file $i" > /opt/app/f$i.txt; done
echo benchmarked > /etc/kiln-bench
sync
SH

cat > "$dir/kiln.toml" <<TOML
[image]
name = "bench"
version = "1.0.0"
[source.qemu.b]
disk = "$base/disk.qcow2"
disk_checksum = "sha256:$sum"
kernel = "$base/vmlinuz"
initrd = "$base/initrd.img"
append = "root=/dev/vda console=ttyS0"
accelerator = "tcg"
cpus = 2
memory = "1GiB"
output = "kiln-out/bench.qcow2"
[[build]]
sources = ["qemu.b"]
[[build.provisioner]]
type = "shell"
script = "provision.sh"
TOML

# Packer's access: a key pair and a cloud-init seed ISO carrying it, with
# the same user-data and network-config kiln writes (only an ed25519 host
# key is generated; the NIC with Packer's MAC, QEMU's default for the first
# NIC, is named eth0 and configured by DHCP).
ssh-keygen -q -t ed25519 -N '' -f "$dir/id_ed25519"
mkdir "$dir/seed"
printf 'instance-id: packer-bench\nlocal-hostname: packer-bench\n' > "$dir/seed/meta-data"
printf '#cloud-config\nssh_genkeytypes: [ed25519]\ndisable_root: false\nssh_authorized_keys:\n  - %s\n' "$(cat "$dir/id_ed25519.pub")" > "$dir/seed/user-data"
printf 'version: 1\nconfig:\n  - type: physical\n    name: eth0\n    mac_address: "52:54:00:12:34:56"\n    subnets:\n      - type: dhcp\n' > "$dir/seed/network-config"
xorriso -as mkisofs -quiet -V cidata -J -r -o "$dir/seed.iso" "$dir/seed" 2>/dev/null

cat > "$dir/packer.json" <<JSON
{
  "builders": [{
    "type": "qemu",
    "iso_url": "$base/disk.qcow2",
    "iso_checksum": "sha256:$sum",
    "disk_image": true,
    "use_backing_file": false,
    "format": "qcow2",
    "output_directory": "$dir/packer-out",
    "vm_name": "bench.qcow2",
    "accelerator": "tcg",
    "cpus": 2,
    "memory": 1024,
    "headless": true,
    "disk_interface": "virtio",
    "net_device": "virtio-net",
    "qemuargs": [
      ["-cpu", "max"],
      ["-kernel", "$base/vmlinuz"],
      ["-initrd", "$base/initrd.img"],
      ["-append", "root=/dev/vda console=ttyS0"],
      ["-drive", "file=$dir/packer-out/bench.qcow2,if=virtio,cache=writeback,discard=ignore,format=qcow2"],
      ["-drive", "file=$dir/seed.iso,if=virtio,format=raw,readonly=on"]
    ],
    "communicator": "ssh",
    "ssh_username": "root",
    "ssh_private_key_file": "$dir/id_ed25519",
    "ssh_timeout": "10m",
    "shutdown_command": "poweroff"
  }],
  "provisioners": [{"type": "shell", "script": "$dir/provision.sh"}]
}
JSON

now() { date +%s.%N; }
# Prefixes each line with the time it was read (milliseconds).
stamp() { python3 -u -c 'import sys, time
for line in sys.stdin: sys.stdout.write("%.3f %s" % (time.time(), line))'; }
# The first line of log $1 matching $2: its time, relative to $3.
at() { awk -v t0="$3" -v re="$2" '$0 ~ re { printf "%.1f", $1 - t0; exit }' "$1"; }
timeline() { # log t0 t_end pattern-per-phase...
  local log=$1 t0=$2 end=$3 out="" prev=0 name re t
  shift 3
  while [ $# -gt 0 ]; do
    name=$1 re=$2
    shift 2
    t=$(at "$log" "$re" "$t0")
    [ -n "$t" ] || { out="$out $name ?"; continue; }
    out="$out $name $(echo "$t - $prev" | bc)"
    prev=$t
  done
  echo "$out, rest $(echo "$end - $t0 - $prev" | bc)"
}
kiln_total=0
packer_total=0
for run in $(seq "$runs"); do
  rm -rf "$dir/kiln-out" "$dir/state" "$dir/packer-out"
  klog="$logs/kiln-$run.log" plog="$logs/packer-$run.log"
  # Alternate which tool goes first: the load of a shared machine drifts.
  run_kiln() {
    t0=$(now)
    (cd "$dir" && KILN_STATE_DIR="$dir/state" "$kiln" build kiln.toml 2>&1 | stamp > "$klog"; exit "${PIPESTATUS[0]}") || { tail -20 "$klog"; exit 1; }
    t1=$(now)
  }
  run_packer() {
    p0=$(now)
    (cd "$dir" && PACKER_LOG=1 packer build -color=false packer.json 2>&1 | stamp > "$plog"; exit "${PIPESTATUS[0]}") || { tail -20 "$plog"; exit 1; }
    t2=$(now)
  }
  if [ $((run % 2)) -eq 1 ]; then run_kiln; run_packer; else run_packer; run_kiln; fi
  k=$(echo "$t1 - $t0" | bc)
  p=$(echo "$t2 - $p0" | bc)
  echo "run $run: kiln ${k}s, packer ${p}s (load $(cut -d' ' -f1-3 /proc/loadavg))"
  echo "  kiln:  $(timeline "$klog" "$t0" "$t1" start 'booting `' boot-to-ssh 'SSH ready after' provision ': snapshot$' shutdown 'powered off' export 'artifact (qcow2|raw) ')"
  echo "  packer:$(timeline "$plog" "$p0" "$t2" start 'Executing /usr/bin/qemu-system' boot-to-ssh 'Connected to SSH' provision 'Gracefully halting' shutdown 'VM shut down' export 'Builds finished')"
  kiln_total=$(echo "$kiln_total + $k" | bc)
  packer_total=$(echo "$packer_total + $p" | bc)
done
echo "kiln/packer = $(echo "scale=2; $kiln_total / $packer_total" | bc) (mean kiln $(echo "scale=1; $kiln_total / $runs" | bc)s, packer $(echo "scale=1; $packer_total / $runs" | bc)s, $runs run(s))"
