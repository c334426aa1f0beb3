#!/bin/sh -e
# A stand-in for bento's cleanup_dnf.sh (written for kiln, not copied).
echo "cleanup_dnf ran (HOME_DIR=${HOME_DIR:-unset})"
