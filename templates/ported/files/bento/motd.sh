#!/bin/sh -e
# A stand-in for bento's motd.sh (written for kiln, not copied).
echo "motd ran (HOME_DIR=${HOME_DIR:-unset})"
if [ -f /var/tmp/kiln-boot-before-update ]; then
  if [ "$(cat /var/tmp/kiln-boot-before-update)" != "$(cat /proc/sys/kernel/random/boot_id)" ]; then
    echo "motd runs after the update's reboot"
  fi
  rm -f /var/tmp/kiln-boot-before-update
fi
