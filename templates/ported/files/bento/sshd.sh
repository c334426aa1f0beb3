#!/bin/sh -e
# A stand-in for bento's sshd.sh (written for kiln, not copied).
echo "sshd ran (HOME_DIR=${HOME_DIR:-unset})"
