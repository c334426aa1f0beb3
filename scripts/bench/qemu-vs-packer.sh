#!/usr/bin/env bash
# Wall time of the same QEMU image build with kiln and with Packer 1.6.6
# (Debian package `packer`): same cached Debian base
# (scripts/qemu/debian-image.sh), same direct kernel boot, TCG for both,
# same provisioner script, both export a standalone uncompressed qcow2.
# Packer gets SSH access the same way kiln does (a NoCloud seed with an
# ed25519 key, here an ISO made with xorriso) and `use_backing_file = false`
# (1.6.6 passes no backing format to qemu-img 7).
# Needs root, qemu-system-x86, qemu-utils, packer, xorriso, mmdebstrap.
#   scripts/bench/qemu-vs-packer.sh [KILN_BINARY] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
kiln=$(realpath "${1:-target/release/kiln}")
runs=${2:-1}
base=$(scripts/qemu/debian-image.sh)
sum=$(sha256sum "$base/disk.qcow2" | cut -c1-64)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

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
# the same user-data kiln writes (only an ed25519 host key is generated).
ssh-keygen -q -t ed25519 -N '' -f "$dir/id_ed25519"
mkdir "$dir/seed"
printf 'instance-id: packer-bench\nlocal-hostname: packer-bench\n' > "$dir/seed/meta-data"
printf '#cloud-config\nssh_genkeytypes: [ed25519]\ndisable_root: false\nssh_authorized_keys:\n  - %s\n' "$(cat "$dir/id_ed25519.pub")" > "$dir/seed/user-data"
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
kiln_total=0
packer_total=0
for run in $(seq "$runs"); do
  rm -rf "$dir/kiln-out" "$dir/state" "$dir/packer-out"
  t0=$(now)
  (cd "$dir" && KILN_STATE_DIR="$dir/state" "$kiln" build kiln.toml > "$dir/kiln.log" 2>&1) || { tail -20 "$dir/kiln.log"; exit 1; }
  t1=$(now)
  (cd "$dir" && PACKER_LOG=0 packer build -color=false packer.json > "$dir/packer.log" 2>&1) || { tail -20 "$dir/packer.log"; exit 1; }
  t2=$(now)
  k=$(echo "$t1 - $t0" | bc)
  p=$(echo "$t2 - $t1" | bc)
  echo "run $run: kiln ${k}s, packer ${p}s"
  kiln_total=$(echo "$kiln_total + $k" | bc)
  packer_total=$(echo "$packer_total + $p" | bc)
done
echo "kiln/packer = $(echo "scale=2; $kiln_total / $packer_total" | bc) (mean kiln $(echo "scale=1; $kiln_total / $runs" | bc)s, packer $(echo "scale=1; $packer_total / $runs" | bc)s, $runs run(s))"
