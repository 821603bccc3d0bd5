package main

import (
	"strings"

	"github.com/modautoload/modautoload/e2e"
)

// approach is one way of coldplugging the guest.
type approach struct {
	id, name string
	// setup runs before the clock starts: links, configuration.
	setup string
	// run starts the agent at time zero, coldplugs and returns once the
	// approach itself considers the work done. It sets AGENT to the pid
	// of the lasting agent process, whose memory is the agent's and whose
	// process tree's CPU time is (empty if there is none), and may print
	// E2E lines of its own.
	run string
	// settles says the approach knows when it is done (udevadm settle,
	// modautoload settle, the end of a loop); mdev does not, so its
	// "done" time is the harness's own quiet-period guess.
	settles bool
	// hotplug says an agent keeps listening after coldplug.
	hotplug bool
	files   []e2e.File
	// skip, when set, says why the approach cannot run in this build.
	skip string
}

// The device set of VM-TESTING.md (copied from e2e/loader_test.go's
// paritySet and parityQEMUArgs: test files cannot be imported).
var (
	devices = []string{
		"e1000,netdev=n0", "virtio-net-pci,netdev=n1", "virtio-rng-pci", "virtio-balloon-pci",
		"virtio-serial-pci", "virtio-scsi-pci", "qemu-xhci", "usb-kbd", "usb-tablet", "usb-ehci",
		"intel-hda", "hda-duplex,audiodev=snd0", "ES1370,audiodev=snd0", "i6300esb", "pvpanic", "ahci",
		"rtl8139,netdev=n2", "pcnet,netdev=n3", "lsi53c895a", "megasas",
	}
	qemuArgs = []string{
		"-netdev", "user,id=n0,restrict=on", "-netdev", "user,id=n1,restrict=on",
		"-netdev", "user,id=n2,restrict=on", "-netdev", "user,id=n3,restrict=on",
		"-audiodev", "none,id=snd0",
	}
)

// modprobe is kmod's modprobe in the guest, the loader of every approach
// but modautoload's (and the kernel's request_module helper for all).
const modprobe = e2e.KmodRefDir + "/modprobe"

func udevdApproach(u *udevBundle) approach {
	return approach{
		id: "udevd",
		// The upstream release; the Debian version is in the report's header.
		name: "systemd-udevd " + strings.FieldsFunc(u.version, func(r rune) bool { return r == '.' || r == '-' })[0],
		setup: `
ln -s udevadm /bin/systemd-udevd
mkdir -p /run/udev
`,
		// --daemon returns once the uevent and control sockets are bound,
		// so the triggers cannot outrun it; the manager is then the only
		// systemd-udevd process.
		run: `
systemd-udevd --daemon
AGENT=$(pidof systemd-udevd)
udevadm trigger --type=subsystems --action=add
udevadm trigger --type=devices --action=add
udevadm settle --timeout=120; echo "E2E:SETTLE_RC $?"
`,
		settles: true,
		hotplug: true,
		files:   u.files,
	}
}

// kmodLoop is what an initramfs without a daemon does: load every modalias
// present, again and again, until a round adds no module.
var kmodLoop = approach{
	id:   "kmod",
	name: "kmod modprobe -a fixpoint",
	run: `
n=-1 rounds=0
while m=$(wc -l </proc/modules); [ "$m" != "$n" ]; do
	n=$m rounds=$((rounds+1))
	find /sys/devices -name modalias -exec cat {} + | sort -u | xargs ` + modprobe + ` -a -b 2>/dev/null
done
echo "E2E:ROUNDS $rounds"
`,
	settles: true,
}

// mdev is busybox's daemon with the module rule its help text suggests,
// calling kmod's modprobe (busybox's own misses wildcard aliases).
var mdev = approach{
	id:   "mdev",
	name: "busybox mdev -d",
	setup: `
echo '$MODALIAS=.* 0:0 660 @` + modprobe + ` -b "$MODALIAS"' >/etc/mdev.conf
`,
	// mdev binds its socket, scans /sys/dev, then reads events: wait for
	// the socket so that no "add" is written before anyone listens. It
	// has no settle, so wait until its socket queue is empty and
	// /proc/modules has not changed for 2 s (the 2 s are not in the
	// coldplug time, which comes from the trace).
	run: `
mdev -df & AGENT=$!
i=0; until listening || [ $i -ge 1000 ]; do usleep 10000; i=$((i+1)); done
find /sys/devices -name uevent | while read -r f; do echo add >"$f"; done 2>/dev/null
last= quiet=0
while [ $quiet -lt 20 ]; do
	usleep 100000
	nmods; queued
	if [ "$n" = "$last" ] && [ $q = 0 ]; then quiet=$((quiet+1)); else quiet=0 last=$n; fi
done
`,
	hotplug: true,
}

// modautoloadApproach runs the daemon with its own coldplug scan and waits
// with its own settle, which waits for a daemon still starting.
func modautoloadApproach(bin, skip string) approach {
	a := approach{
		id:   "modautoload",
		name: "modautoload daemon",
		run: `
modautoload daemon --coldplug 2>/tmp/agent.log & AGENT=$!
modautoload settle --timeout 120s; echo "E2E:SETTLE_RC $?"
`,
		settles: true,
		hotplug: true,
		skip:    skip,
	}
	if bin != "" {
		a.files = []e2e.File{{Guest: "/bin/modautoload", Host: bin, Mode: 0o755}}
	}
	return a
}

// prologue prepares measurement: tracefs with a clock shared by all CPUs,
// the events counted (see liveProbe for the kprobe; ueventProbe and
// sendProbe are enabled for hotplug only), and kmod as the kernel's
// request_module helper in every approach (the kernel's requests are not
// what is compared).
const prologue = `
T=/sys/kernel/tracing
mount -t tracefs tracefs $T
echo mono >$T/trace_clock
echo 'p:` + liveProbe + ` async_synchronize_full' >>$T/kprobe_events
echo 'p:` + ueventProbe + ` dev_uevent action=+0(+24($arg2)):string devpath=+0(+32($arg2)):string' >>$T/kprobe_events
echo 'p:` + sendProbe + ` netlink_broadcast' >>$T/kprobe_events
for e in syscalls/sys_enter_finit_module syscalls/sys_exit_finit_module module/module_load module/module_request kprobes/` + liveProbe + `; do
	echo 1 >$T/events/$e/enable
done
echo ` + modprobe + ` >/proc/sys/kernel/modprobe
# Programs map where they did before (the second coldplug relies on it).
echo 0 >/proc/sys/kernel/randomize_va_space
mark() { echo "$1" >$T/trace_marker; }
modules() { cut -d' ' -f1 /proc/modules | sort | tr '\n' ' '; }
usercpu() { awk '/^cpu /{print $2+$3}' /proc/stat; }
# rss prints the resident set of process $1 in kB, from smaps_rollup, a
# walk of its page tables: 6.1's VmRSS and VmHWM lag behind a threaded
# process (each thread keeps up to 64 faults' counts to itself; the
# daemon's VmRSS said 3.4 MiB where its pages held 7.5). It is read at
# two moments only: sampled every 100 ms, the walk slowed the daemon's
# coldplug from 2.57 to 3.02 s (2 rounds each).
rss() { awk '/^Rss:/{print $2}' /proc/$1/smaps_rollup 2>/dev/null; }
hwm() { awk '/^VmHWM:/{print $2}' /proc/$1/status 2>/dev/null; }
live() { [ -e /sys/module/$1/initstate ] && read -r s </sys/module/$1/initstate && [ "$s" = live ]; }
# treecpu prints the user and system ticks (/proc/PID/stat fields 14, 15)
# of process $1 and all its descendants, each with its reaped children's
# (fields 16, 17), and how many processes that was. Exited children that
# were reaped are in their parent's cutime, the others are still in /proc
# (live, or zombies).
treecpu() { cat /proc/[0-9]*/stat 2>/dev/null | awk -v root="$1" '
{ s = $0; sub(/^[^(]*\(.*\) /, "", s); split(s, f, " "); ppid[$1] = f[2]; u[$1] = f[12] + f[14]; y[$1] = f[13] + f[15] }
END {
	tree[root] = 1
	do { grew = 0; for (p in ppid) if (!(p in tree) && (ppid[p] in tree)) { tree[p] = 1; grew = 1 } } while (grew)
	for (p in tree) if (p in u) { U += u[p]; S += y[p]; n++ }
	print U + 0, S + 0, n + 0
}'; }
# selfcpu sets cu and cs to this shell's user and system ticks with its
# reaped children's: builtins only, so that reading them costs nothing.
selfcpu() { read -r l </proc/$$/stat; l=${l##*) }; set -- $l; cu=$((${12}+${14})) cs=$((${13}+${15})); }
# listening: a uevent socket other than the kernel's own is bound.
listening() { awk 'NR>1 && $2==15 && $3!=0 {f=1} END{exit !f}' /proc/net/netlink; }
# queued sets q to the bytes waiting in listeners' uevent sockets, and
# nmods sets n to the number of modules: shell builtins only, no fork, so
# that polling costs the guest next to no CPU.
queued() { q=0; while read -r _ eth pid _ rmem _; do [ "$eth" = 15 ] && [ "$pid" != 0 ] && q=$((q+rmem)); done </proc/net/netlink; }
nmods() { n=0; while read -r _; do n=$((n+1)); done </proc/modules; }
# unchanged returns once the number of modules has stayed the same for
# 1 s (polled every 100 ms), or after 30 s; builtins only, as the guest is
# still measured when it runs.
unchanged() {
	last= quiet=0 polls=0
	while [ $quiet -lt 10 ] && [ $polls -lt 300 ]; do
		usleep 100000; nmods; polls=$((polls+1))
		if [ "$n" = "$last" ]; then quiet=$((quiet+1)); else quiet=0 last=$n; fi
	done
}
echo "E2E:BASE $(modules)"
AGENT=
`

// measured runs the approach between the start and settled markers and
// reports what can be read from the guest itself.
func measured(a approach) string {
	return a.setup + `
U0=$(usercpu)
selfcpu; CU0=$cu CS0=$cs
mark start
` + a.run + `
mark settled
if [ -n "$AGENT" ]; then
	# Stopped, the agent reaps no child while its tree is read: an
	# exiting worker is counted once, as a zombie or in its cutime.
	kill -STOP $AGENT
	echo "E2E:AGENT_CPU $(treecpu $AGENT)"
	kill -CONT $AGENT
	echo "E2E:RSS_COLDPLUG $(rss $AGENT)"
else
	# No lasting agent: the work is this shell's loop and its children.
	selfcpu; echo "E2E:AGENT_CPU $((cu-CU0)) $((cs-CS0)) 0"
fi
echo "E2E:USER_TICKS $(($(usercpu)-U0))"
# udevd's workers (named "(udev-worker)") are forked per event burst and
# killed when idle: read them now, while some may still live.
[ -n "$AGENT" ] && for f in $(grep -l "^PPid:[[:space:]]*$AGENT\$" /proc/[0-9]*/status 2>/dev/null); do
	echo "E2E:CHILD_RSS $(awk '/^VmHWM:/{print $2}' $f)"
done
# Drivers may still be probing when the approach says it is done (the
# HDA controller's work item asks the kernel for its codec's driver): the
# coldplug ends with the last module live before the module set stays
# unchanged for 1 s.
unchanged
mark quiet
echo "E2E:MODULES $(modules)"
`
}

// epilogue reports the events the trace buffer lost (none, or the figures
// are wrong), the agent's RSS once idle for 2 s and its peak, its uevent
// socket's drops, and the trace, which the host parses.
const epilogue = `
echo "E2E:TRACE_OVERRUN $(cat $T/per_cpu/cpu*/stats | awk '/^overrun:/{n+=$2} END{print n+0}')"
echo "E2E:DROPS $(awk 'NR>1 && $2==15 && $3!=0 {d+=$9} END{print d+0}' /proc/net/netlink)"
[ -n "$AGENT" ] && sleep 2 && echo "E2E:RSS_END $(rss $AGENT)" && echo "E2E:HWM $(hwm $AGENT)" && kill $AGENT
[ -f /tmp/agent.log ] && tail -n 40 /tmp/agent.log | sed 's/^/E2E:AGENT_LOG /'
grep -v '^#' $T/trace | sed 's/^/E2E:TRACE /'
`

// script is the guest's whole scenario for one round of a.
func script(a approach) string {
	s := prologue + measured(a)
	if a.hotplug {
		s += hotplugScript
	}
	return s + epilogue + secondColdplug(a)
}

// secondColdplug unloads every module and runs the approach again in the
// same guest, a fresh agent over the same devices, and reports its CPU
// time. Under TCG a program's first pass through its code costs extra
// user time: QEMU translates each block of guest code the first time it
// runs at that virtual address in that physical page, while the guest's
// clock runs on. The prologue turns address randomization off, so the
// second agent's code (and its libraries') is where the first one's was
// and runs translated already, as a real CPU runs any code: the
// difference between the passes is what translation cost. Tracing and
// every probe are off, so nothing here moves the trace's figures. Its
// E2E lines are the approach's own with SECOND_ before the key, so none
// overrides the first pass's.
func secondColdplug(a approach) string {
	run := strings.ReplaceAll(a.run, "E2E:", "E2E:SECOND_")
	return `
echo 0 >$T/tracing_on
echo 0 >$T/events/enable
# The first agent was told to stop; its workers go with it. One still
# running would be measured in the second pass's place: say so.
if [ -n "$AGENT" ]; then
	i=0; while [ -d /proc/$AGENT ] && [ $i -lt 100 ]; do usleep 50000; i=$((i+1)); done
	sleep 1
fi
echo "E2E:SECOND_STALE $(pidof systemd-udevd mdev modautoload)"
# Every module out, dependents first: as many passes as the deepest
# dependency chain.
for pass in 1 2 3 4 5 6 7 8 9 10; do
	left=$(modules)
	[ -z "$left" ] && break
	for m in $left; do rmmod $m 2>/dev/null; done
done
echo "E2E:SECOND_LEFT $(modules)"
AGENT=
t0=$(cut -d' ' -f1 /proc/uptime)
selfcpu; CU0=$cu CS0=$cs
` + run + `
t1=$(cut -d' ' -f1 /proc/uptime)
if [ -n "$AGENT" ]; then
	kill -STOP $AGENT
	echo "E2E:SECOND_CPU $(treecpu $AGENT)"
	kill -CONT $AGENT
else
	selfcpu; echo "E2E:SECOND_CPU $((cu-CU0)) $((cs-CS0)) 0"
fi
echo "E2E:SECOND_DONE $t0 $t1"
# As in the first pass: the module set once unchanged for 1 s.
unchanged
echo "E2E:SECOND_MODULES $(modules)"
[ -n "$AGENT" ] && kill $AGENT
[ -f /tmp/agent.log ] && tail -n 20 /tmp/agent.log | sed 's/^/E2E:SECOND_AGENT_LOG /'
`
}
