#!/bin/sh -e
# A stand-in for bento's update_packages.sh (written for kiln, not copied).
# Like bento's, it ends by rebooting into the updated system.
echo "update_packages ran (HOME_DIR=${HOME_DIR:-unset})"
cat /proc/sys/kernel/random/boot_id > /var/tmp/kiln-boot-before-update
echo "rebooting"
reboot
