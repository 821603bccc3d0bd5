#!/bin/sh
# cleanup hook (dracut without systemd), the last before switch_root: stop
# the daemon; SIGTERM gives loads in the kernel 10 s, and after 15 s the
# boot goes on without it.
if read -r modautoload_pid 2>/dev/null </run/modautoload/initramfs.pid && kill -TERM "$modautoload_pid" 2>/dev/null; then
    i=0
    while [ $i -lt 150 ] && [ -d "/proc/$modautoload_pid" ] && ! grep -q '^State:.*Z' "/proc/$modautoload_pid/status" 2>/dev/null; do
        sleep 0.1
        i=$((i + 1))
    done
    [ $i -ge 150 ] && warn "modautoload: daemon $modautoload_pid still running 15 s after SIGTERM"
fi
rm -rf /run/modautoload
unset modautoload_pid i
