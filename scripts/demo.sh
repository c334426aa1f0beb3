#!/usr/bin/env bash
# README's "Run": sets up what is needed and runs kiln's main job on an
# embedded default. It bakes templates/demo-oci.toml: a busybox base made
# here (no network), provisioned in a runc container, hardened, signed with a
# key generated for the demo, written to an OCI layout and to a registry
# started on loopback, registered in the on-disk catalog; then
# `kiln verify` and `kiln audit` of it. Everything lands in .kiln-demo/ (KILN_DEMO_DIR).
#
#   scripts/demo.sh            (as root: runc needs it)
#
# KILN_DEMO_FEATURES picks the builders compiled in (default: oci, which
# leaves the AWS SDK out and builds in a few minutes; "default" builds all);
# KILN_BIN names a kiln binary to use instead of building one; KILN_DEMO_DIR
# the work folder (default .kiln-demo).
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\n== %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  exec sudo -E "$0" "$@"
fi

say "installing what the demo needs (runc, busybox-static, docker-registry)"
need=()
for p in runc busybox-static docker-registry; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

features=${KILN_DEMO_FEATURES:-oci}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kiln/target}"
if [ -n "${KILN_BIN:-}" ]; then
  kiln=$KILN_BIN # a kiln already built (the tests use this)
else
  say "building kiln (release, features: $features) into $CARGO_TARGET_DIR"
  if [ "$features" = default ]; then
    cargo build --release --locked
  else
    cargo build --release --locked --no-default-features --features "$features"
  fi
  kiln="$CARGO_TARGET_DIR/release/kiln"
fi

work=$(realpath -m "${KILN_DEMO_DIR:-.kiln-demo}")
mkdir -p "$work"
chmod 0700 "$work"
export KILN_STATE_DIR="$work/state" KILN_CATALOG="$work/catalog"
# The demo key's password: generated once, kept beside it (demo only; a real
# pipeline takes it from its secret store).
[ -f "$work/password" ] || (umask 077; head -c 18 /dev/urandom | base64 > "$work/password")
export KILN_PASSWORD
KILN_PASSWORD=$(cat "$work/password")

say "base image: busybox rootfs"
[ -f "$work/base.tar" ] || scripts/demo/busybox-rootfs.sh "$work/base.tar"
say "signing key"
[ -f "$work/cosign.key" ] || "$kiln" keygen --out "$work/cosign"

say "registry on loopback"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
regdir=$(mktemp -d)
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' "$regdir/data" "$port" > "$regdir/config.yml"
docker-registry serve "$regdir/config.yml" >"$regdir/log" 2>&1 &
regpid=$!
trap 'kill $regpid 2>/dev/null; rm -rf "$regdir"' EXIT
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
echo "docker-registry at 127.0.0.1:$port"

say "kiln validate + build"
# Relative paths in a template resolve against its folder: hand it ours.
vars=(--var "registry=127.0.0.1:$port" --var "base=$work/base.tar"
      --var "out=$work/out" --var "key=$work/cosign.key")
"$kiln" validate "${vars[@]}" templates/demo-oci.toml
"$kiln" build "${vars[@]}" templates/demo-oci.toml

say "kiln verify"
"$kiln" verify --key "$work/cosign.pub" "registry:127.0.0.1:$port/demo:1.0.0"

say "kiln audit"
"$kiln" audit
"$kiln" images list

say "done: image in $work/out/demo (OCI layout), catalog in $work/catalog"
