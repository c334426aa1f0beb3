#!/bin/sh -e
# A stand-in for bento's motd.sh (written for kiln, not copied).
echo "motd ran (HOME_DIR=${HOME_DIR:-unset})"
