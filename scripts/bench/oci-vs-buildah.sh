#!/usr/bin/env bash
# Wall time of the same OCI build with kiln and with buildah: same busybox
# base (pulled from a local registry), same provisioner script, result
# pushed to the same registry. Needs root, runc, buildah, docker-registry.
#   scripts/bench/oci-vs-buildah.sh [KILN_BINARY] [RUNS]
set -euo pipefail
kiln=$(realpath "${1:-target/release/kiln}")
runs=${2:-3}
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
reg=127.0.0.1:$port
cat > "$dir/reg.yml" <<YML
version: 0.1
log: { level: error }
storage: { filesystem: { rootdirectory: $dir/registry } }
http: { addr: $reg }
YML
docker-registry serve "$dir/reg.yml" >/dev/null 2>&1 &
regpid=$!
trap 'kill $regpid 2>/dev/null; buildah rm --all >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
for _ in $(seq 50); do curl -sf "http://$reg/v2/" >/dev/null && break; sleep 0.1; done

# The base: busybox, pushed by kiln from a rootfs tarball.
mkdir -p "$dir/rootfs/bin" "$dir/rootfs/etc" "$dir/rootfs/tmp"
cp "$(command -v busybox)" "$dir/rootfs/bin/busybox"
for a in sh cat echo rm mkdir seq head dd sha256sum; do ln -sf busybox "$dir/rootfs/bin/$a"; done
tar -C "$dir/rootfs" -cf "$dir/base.tar" .
cat > "$dir/base.toml" <<TOML
[image]
name = "base"
version = "1.0.0"
[source.oci.b]
from = "rootfs:base.tar"
to = ["registry:$reg/bench/base:1"]
[[build]]
sources = ["oci.b"]
TOML
KILN_STATE_DIR="$dir/state" "$kiln" build "$dir/base.toml" >/dev/null 2>&1

# The provisioner: 2,000 small files and one 20 MiB file.
cat > "$dir/provision.sh" <<'SH'
mkdir -p /opt/app
for i in $(seq 1 2000); do echo "file $i" > /opt/app/f$i.txt; done
dd if=/dev/urandom of=/opt/app/blob bs=1M count=20 2>/dev/null
sha256sum /opt/app/blob > /opt/app/blob.sha256
SH
cat > "$dir/kiln.toml" <<TOML
[image]
name = "bench"
version = "1.0.0"
[source.oci.b]
from = "registry:$reg/bench/base:1"
to = ["registry:$reg/bench/kiln:1"]
[[build]]
sources = ["oci.b"]
[[build.provisioner]]
type = "shell"
script = "provision.sh"
TOML

ms() { echo $(( $(date +%s%N) / 1000000 )); }
for i in $(seq "$runs"); do
  rm -rf "$dir/state"   # no warm base cache for either tool
  t0=$(ms)
  KILN_STATE_DIR="$dir/state" "$kiln" build "$dir/kiln.toml" >/dev/null 2>&1
  t1=$(ms)
  buildah rmi --all -f >/dev/null 2>&1 || true
  t2=$(ms)
  c=$(buildah from --tls-verify=false "$reg/bench/base:1" 2>/dev/null)
  buildah run "$c" -- sh -c "$(cat "$dir/provision.sh")"
  buildah commit --quiet "$c" "bench-peer:$i" >/dev/null
  buildah push --quiet --tls-verify=false "bench-peer:$i" "docker://$reg/bench/buildah:1"
  buildah rm "$c" >/dev/null
  t3=$(ms)
  kiln_ms=$((t1 - t0)); buildah_ms=$((t3 - t2))
  echo "run $i: kiln ${kiln_ms} ms, buildah ${buildah_ms} ms, ratio kiln/buildah $(python3 -c "print(round($kiln_ms/$buildah_ms, 2))")"
done
