#!/bin/sh
# Lists the packages with pending security updates, one name per line, in
# a throw-away instance of an image (kiln's `security-updates` rebuild
# trigger). Exit 0 with the list (empty: none pending); exit 4 when the
# image has no package manager kiln knows. Changes nothing that is kept:
# the instance is thrown away.
set -u
if command -v apt-get >/dev/null 2>&1; then
  . /etc/os-release
  # Images made from the main suite alone (mmdebstrap, debootstrap) have
  # no security source: check against the distribution's one, as
  # unattended-upgrades would.
  if ! grep -rqs -- "-security" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    case "${ID:-}" in
      debian) echo "deb http://deb.debian.org/debian-security ${VERSION_CODENAME}-security main" \
                > /etc/apt/sources.list.d/kiln-security-check.list ;;
      ubuntu) echo "deb http://security.ubuntu.com/ubuntu ${VERSION_CODENAME}-security main universe" \
                > /etc/apt/sources.list.d/kiln-security-check.list ;;
    esac
  fi
  apt-get -qq update >/dev/null || { echo "apt-get update failed" >&2; exit 3; }
  apt-get -s -o Debug::NoLocking=1 upgrade 2>/dev/null \
    | awk '/^Inst / && tolower($0) ~ /security/ { print $2 }'
  exit 0
fi
if command -v dnf >/dev/null 2>&1; then
  dnf -q updateinfo list --security --available 2>/dev/null | awk 'NF >= 3 { print $3 }'
  exit 0
fi
if command -v yum >/dev/null 2>&1; then
  yum -q updateinfo list security available 2>/dev/null | awk 'NF >= 3 { print $3 }'
  exit 0
fi
echo "no apt-get, dnf or yum in the image" >&2
exit 4
