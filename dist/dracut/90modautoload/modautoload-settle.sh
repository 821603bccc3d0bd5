#!/bin/sh
# pre-mount hook (dracut without systemd): coldplug done before the root is
# mounted.
if read -r modautoload_pid 2>/dev/null </run/modautoload/initramfs.pid; then
    if ! kill -0 "$modautoload_pid" 2>/dev/null; then
        warn "modautoload: the daemon exited at start (see dmesg)"
    elif ! /usr/sbin/modautoload settle --timeout 60s; then
        warn "modautoload: not settled after 60 s; going on"
    fi
fi
unset modautoload_pid
