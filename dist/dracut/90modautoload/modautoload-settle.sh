#!/bin/sh
# pre-mount hook (dracut without systemd): coldplug done before the root is
# mounted.
if [ -f /run/modautoload/initramfs.pid ]; then
    /usr/sbin/modautoload settle --timeout 60s || warn "modautoload: not settled after 60 s; going on"
fi
