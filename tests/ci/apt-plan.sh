#!/usr/bin/env bash
# Proves the install step resolves from the machine's initial package state
# (tests/ci/dpkg-status.initial.gz: /var/lib/dpkg/status of a fresh machine
# of the project's kind, with qemu-utils 10.0 from bookworm-backports).
#
# 1. The old install line (`qemu-system-x86 qemu-utils` together) fails
#    there: the fixture really holds the conflict.
# 2. The command scripts/ci/install-deps.sh plans resolves: apt installs the
#    emulator and keeps a qemu-utils (qemu-img) of the matching version.
# Needs apt's package lists (`apt-get update`), as the install step does.
set -euo pipefail
cd "$(dirname "$0")/../.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/admin/info" "$tmp/admin/updates"
gzip -dc tests/ci/dpkg-status.initial.gz > "$tmp/admin/status"
apt_sim() {
  apt-get -o Dir::State::status="$tmp/admin/status" -o Debug::NoLocking=1 \
    install --dry-run --no-install-recommends --allow-downgrades "$@" 2>&1
}
fail() { echo "apt-plan: FAIL: $*" >&2; exit 1; }

if ! apt-cache policy qemu-system-x86 | grep -q 'Candidate: [0-9]'; then
  apt-get update -qq
fi

# 1. The conflict is real in the fixture.
out=$(apt_sim qemu-system-x86 qemu-utils) && fail "installing qemu-system-x86 and qemu-utils together resolved; the fixture lacks the conflict"
grep -q 'held broken packages\|unmet dependencies' <<<"$out" || fail "unexpected apt answer: $out"
out=$(apt_sim qemu-system-x86) || true
grep -q '^Remv qemu-utils' <<<"$out" || fail "installing the emulator alone should remove qemu-utils in the fixture"
echo "apt-plan: the initial state holds the conflict (together: broken; emulator alone: removes qemu-utils)"

# 2. What the install step plans resolves, keeping qemu-img.
mapfile -t args < <(DPKG_ADMINDIR="$tmp/admin" bash scripts/ci/install-deps.sh --plan)
[ "${#args[@]}" -gt 0 ] || fail "install-deps planned nothing from the initial state"
printf '%s\n' "${args[@]}" | grep -q '^qemu-system-x86$' || fail "plan lacks qemu-system-x86: ${args[*]}"
out=$(apt_sim "${args[@]}") || fail "planned install does not resolve: $out"
grep -q '^E:' <<<"$out" && fail "apt error: $out"
grep -q '^Remv qemu-utils' <<<"$out" && fail "plan removes qemu-utils (qemu-img)"
grep -q '^Inst qemu-system-x86 ' <<<"$out" || fail "plan does not install qemu-system-x86: $out"
for p in qemu-system-arm qemu-efi-aarch64; do
  printf '%s\n' "${args[@]}" | grep -q "^$p\$" || fail "plan lacks $p: ${args[*]}"
  grep -q "^Inst $p " <<<"$out" || fail "plan does not install $p: $out"
done
sys_v=$(sed -n 's/^Inst qemu-system-x86 (\([^ ]*\) .*/\1/p' <<<"$out")
arm_v=$(sed -n 's/^Inst qemu-system-arm (\([^ ]*\) .*/\1/p' <<<"$out")
[ "$sys_v" = "$arm_v" ] || fail "qemu-system-x86 $sys_v and qemu-system-arm $arm_v differ"
utils_v=$(sed -n 's/^Inst qemu-utils \(\[[^]]*\] \)\?(\([^ ]*\) .*/\2/p' <<<"$out")
[ -n "$utils_v" ] || utils_v=$(gzip -dc tests/ci/dpkg-status.initial.gz | awk '/^Package: qemu-utils$/{f=1} f&&/^Version:/{print $2; exit}')
[ "$sys_v" = "$utils_v" ] || fail "emulator $sys_v and qemu-utils $utils_v differ"
echo "apt-plan: ok: ${#args[@]} packages resolve from the initial state; qemu-system-x86, qemu-system-arm and qemu-utils all at $sys_v"
