#!/bin/sh
# A stand-in for the ported project's setup.sh (written for kiln): Docker
# on Amazon Linux 2023.
set -eu
dnf install -y -q docker
systemctl enable docker
