#!/bin/sh
# pre-udev hook (dracut without systemd): start the daemon before udev. No
# wait for it to listen: it scans sysfs once it does, so an event sent
# before is not lost, and the pre-mount hook's settle waits for a daemon
# still starting.
mkdir -p /run/modautoload
/usr/sbin/modautoload daemon --coldplug --log-target kmsg </dev/null >/dev/null 2>&1 &
echo "$!" >/run/modautoload/initramfs.pid
