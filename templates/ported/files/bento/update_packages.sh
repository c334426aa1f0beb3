#!/bin/sh -e
# A stand-in for bento's update_packages.sh (written for kiln, not copied).
echo "update_packages ran (HOME_DIR=${HOME_DIR:-unset})"
