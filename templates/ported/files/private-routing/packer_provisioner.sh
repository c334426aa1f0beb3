#!/bin/sh
# A stand-in for the ported project's packer_provisioner.sh (written for
# kiln): the application's packages on Amazon Linux 2.
set -eu
yum install -y -q httpd
systemctl enable httpd
