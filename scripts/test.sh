#!/usr/bin/env bash
# README's "Test": installs what the tests need (scripts/ci/install-deps.sh,
# from the machine's initial package state), checks that the install step
# resolves from that state (tests/ci/apt-plan.sh) and that every tool the
# tests start is on PATH, then the formatting and lint gates, the layer check,
# and every test. .ci/run calls exactly this.
#
#   scripts/test.sh           (as root: the OCI, QEMU and catalog tests need it)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  exec sudo -E "$0" "$@"
fi

# Compiled dependencies survive between runs, outside the clone.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kiln/target}"
export CARGO_TERM_COLOR=never
mkdir -p "$CARGO_TARGET_DIR"

echo "== install (scripts/ci/install-deps.sh)"
bash scripts/ci/install-deps.sh
echo "== install step resolves from the initial package state (tests/ci/apt-plan.sh)"
bash tests/ci/apt-plan.sh
echo "== tools on PATH"
bash scripts/ci/install-deps.sh --check
if [ -f scripts/ci/check-layers.sh ]; then
  echo "== layers point down (scripts/ci/check-layers.sh)"
  bash scripts/ci/check-layers.sh
fi
for t in tests/ci/*-test.sh; do
  [ -e "$t" ] || continue
  echo "== $t"
  bash "$t"
done

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test"
cargo test --locked --all-targets
