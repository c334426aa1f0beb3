#!/usr/bin/env bash
# Time of `kiln build --skip-unchanged` when nothing changed: read the
# template, resolve the base tag in a local registry, fingerprint, look the
# fingerprint up in the catalog, exit 0 — nothing launched. Once with the
# on-disk catalog and, when PostgreSQL is installed, once with a local
# PostgreSQL catalog. Needs root, runc, docker-registry, busybox.
#   scripts/bench/skip-unchanged.sh [KILN_BINARY] [RUNS] [VERSIONS]
# VERSIONS: how many versions the catalog holds before timing (default 200).
set -euo pipefail
kiln=$(realpath "${1:-target/release/kiln}")
runs=${2:-20}
versions=${3:-200}
dir=$(mktemp -d)
chmod 755 "$dir"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
reg=127.0.0.1:$(free_port)
cat > "$dir/reg.yml" <<YML
version: 0.1
log: { level: error }
storage: { filesystem: { rootdirectory: $dir/registry } }
http: { addr: $reg }
YML
docker-registry serve "$dir/reg.yml" >/dev/null 2>&1 &
pids=$!
cleanup() {
  kill $pids 2>/dev/null || true
  [ -n "${pgbin:-}" ] && runuser -u postgres -- "$pgbin/pg_ctl" stop -m immediate -D "$dir/pg" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 50); do curl -sf "http://$reg/v2/" >/dev/null && break; sleep 0.1; done

mkdir -p "$dir/rootfs/bin" "$dir/rootfs/etc"
cp "$(command -v busybox)" "$dir/rootfs/bin/busybox"
for a in sh cat echo; do ln -sf busybox "$dir/rootfs/bin/$a"; done
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
echo 'echo hello > /etc/motd' > "$dir/provision.sh"
cat > "$dir/app.toml" <<TOML
[image]
name = "app"
version = "1.0.0"
[source.oci.a]
from = "registry:$reg/bench/base:1"
to = ["registry:$reg/bench/app:1"]
[[build]]
sources = ["oci.a"]
[[build.provisioner]]
type = "shell"
script = "provision.sh"
[build.register]
channels = ["dev"]
TOML

ms() { echo $(( $(date +%s%N) / 1000000 )); }
bench() { # $1: label; catalog from KILN_CATALOG
  export KILN_STATE_DIR="$dir/state-$1"
  "$kiln" build "$dir/base.toml" >/dev/null 2>&1
  "$kiln" build "$dir/app.toml" >/dev/null 2>&1
  manifest=$(ls "$KILN_STATE_DIR"/manifests/*/build.oci.a-1.json | head -1)
  for _ in $(seq "$versions"); do "$kiln" images register "$manifest" >/dev/null; done
  "$kiln" build "$dir/app.toml" >/dev/null 2>&1   # the newest version matches
  times=()
  for _ in $(seq "$runs"); do
    t0=$(date +%s%N)
    out=$("$kiln" build --skip-unchanged "$dir/app.toml")
    t1=$(date +%s%N)
    case "$out" in *skipped*) ;; *) echo "not skipped: $out" >&2; exit 1 ;; esac
    times+=($(( (t1 - t0) / 1000 )))
  done
  sorted=$(printf '%s\n' "${times[@]}" | sort -n)
  median=$(echo "$sorted" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  max=$(echo "$sorted" | tail -1)
  entries=$("$kiln" audit --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["entries"])')
  echo "$1 catalog ($entries log entries): --skip-unchanged median $((median / 1000)).$(( (median % 1000) / 100 )) ms, max $((max / 1000)).$(( (max % 1000) / 100 )) ms over $runs runs"
}

unset KILN_CATALOG
bench on-disk

pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort | tail -1 || true)
if [ -n "$pgbin" ] && id postgres >/dev/null 2>&1; then
  mkdir "$dir/pg" && chown postgres "$dir/pg"
  runuser -u postgres -- "$pgbin/initdb" -A trust -U postgres --no-sync -D "$dir/pg" >/dev/null
  port=$(free_port)
  runuser -u postgres -- "$pgbin/pg_ctl" start -w -D "$dir/pg" -l "$dir/pg/log" \
    -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir/pg" >/dev/null
  export KILN_CATALOG="postgres://postgres@127.0.0.1:$port/postgres"
  bench postgres
fi
