#!/bin/sh -e
# A stand-in for bento's cleanup_debian.sh (written for kiln, not copied).
echo "cleanup_debian ran (HOME_DIR=${HOME_DIR:-unset})"
