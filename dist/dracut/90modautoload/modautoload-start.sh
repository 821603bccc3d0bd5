#!/bin/sh
# pre-udev hook (dracut without systemd): start the daemon before udev, and
# wait until it listens (--ready-fd), at most 10 s.
mkdir -p /run/modautoload
fifo=/run/modautoload/initramfs.ready
rm -f "$fifo"
mkfifo "$fifo"
/usr/sbin/modautoload daemon --coldplug --log-target kmsg --ready-fd 3 3>"$fifo" </dev/null >/dev/null 2>&1 &
modautoload_pid=$!
(sleep 10 && kill -TERM "$modautoload_pid") 2>/dev/null &
modautoload_timer=$!
modautoload_ready=
read -r modautoload_ready <"$fifo"
kill "$modautoload_timer" 2>/dev/null
rm -f "$fifo"
if [ "$modautoload_ready" = READY=1 ]; then
    echo "$modautoload_pid" >/run/modautoload/initramfs.pid
else
    warn "modautoload: the daemon did not start (see dmesg)"
fi
unset modautoload_pid modautoload_timer modautoload_ready fifo
