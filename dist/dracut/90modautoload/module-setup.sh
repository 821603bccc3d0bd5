#!/bin/bash
# dracut module: modautoload loads the modules in the initramfs; udev keeps
# making device nodes and links, with its module loading masked, and the
# image's modprobe (the kernel's requests, the scripts' calls) is
# modautoload. Only included on request: dracut --add modautoload, or
# add_dracutmodules+=" modautoload " in /etc/dracut.conf.d/.

BIN=/usr/sbin/modautoload

check() {
    require_binaries "$BIN" || return 1
    return 255
}

depends() {
    echo kernel-modules
    return 0
}

install() {
    inst_simple "$BIN" /usr/sbin/modautoload
    # Before base's module installs kmod's modprobe there (dracut skips
    # files that exist).
    mkdir -p "$initdir/usr/sbin"
    ln -sf modautoload "$initdir/usr/sbin/modprobe"
    inst_multiple -o "/usr/lib/modautoload/rules.d/*.rules" "/etc/modautoload/rules.d/*.rules"
    # /etc/udev/rules.d shadows udev's file of that name, the one with
    # RUN{builtin}+="kmod load".
    mkdir -p "$initdir/etc/udev/rules.d"
    printf '# Emptied by the modautoload dracut module: modautoload loads the modules.\n' \
        >"$initdir/etc/udev/rules.d/80-drivers.rules"

    if dracut_module_included "systemd"; then
        inst_simple "$moddir/modautoload-initrd.service" "$systemdsystemunitdir/modautoload-initrd.service"
        inst_simple "$moddir/modautoload-initrd-settle.service" "$systemdsystemunitdir/modautoload-initrd-settle.service"
        $SYSTEMCTL -q --root "$initdir" enable modautoload-initrd.service modautoload-initrd-settle.service
    else
        inst_hook pre-udev 00 "$moddir/modautoload-start.sh"
        inst_hook pre-mount 00 "$moddir/modautoload-settle.sh"
        inst_hook cleanup 99 "$moddir/modautoload-stop.sh"
    fi
}
