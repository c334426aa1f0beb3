#!/bin/sh -e
# A stand-in for bento's networking_debian.sh (written for kiln, not copied).
echo "networking_debian ran (HOME_DIR=${HOME_DIR:-unset})"
