package e2e

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modautoload/modautoload/daemon"
	"github.com/modautoload/modautoload/loader"
)

// startDaemon starts the daemon in the guest in the background (its log in
// /tmp/daemon.log) with the given extra arguments; DAEMON holds its pid.
func startDaemon(args string) string {
	return `
modautoload daemon ` + args + ` --log-format json 2>>/tmp/daemon.log &
DAEMON=$!
`
}

// settleAndReport settles, then prints the module set and the daemon's
// status and log.
const settleAndReport = `
t0=$(cut -d' ' -f1 /proc/uptime)
modautoload settle --timeout 180s; echo "E2E:SETTLE_RC $?"
echo "E2E:SETTLED_AT $(cut -d' ' -f1 /proc/uptime) $t0"
echo "E2E:RSS $(awk '/^(Rss|Anonymous):/{printf "%s %s kB ", $1, $2}' /proc/$DAEMON/smaps_rollup)"
cut -d' ' -f1 /proc/modules | sort | while read -r m; do echo "E2E:MODULE $m"; done
echo "E2E:STATUS $(modautoload status --json)"
`

const daemonLog = `
while read -r l; do echo "E2E:LOG $l"; done </tmp/daemon.log
`

type statusJSON struct {
	Events struct {
		Received, Rejected, Malformed, Overruns uint64
	}
	Resyncs uint64
	Dropped uint64
	Refused uint64
	Loads   struct {
		Loaded, Failed, Deduplicated, Waited uint64
	}
	Modules map[string]struct {
		State, Err string
	}
}

func daemonStatus(t *testing.T, res *Result) statusJSON {
	t.Helper()
	var st statusJSON
	if err := json.Unmarshal([]byte(res.Value("STATUS")), &st); err != nil {
		t.Fatalf("status %q: %v", res.Value("STATUS"), err)
	}
	return st
}

func daemonFiles(t *testing.T) []File {
	return []File{{Guest: "/bin/modautoload", Host: BuildBinary(t, "./cmd/modautoload"), Mode: 0o755}}
}

// kmodFixpoint is the reference coldplug: kmod's modprobe -a -b over every
// modalias in sysfs, repeated until a round loads nothing new (loaded
// drivers create devices with new modaliases).
const kmodFixpoint = `
# The kernel's own requests (the HDA codec driver) go to kmod too.
echo ` + KmodRefDir + `/modprobe >/proc/sys/kernel/modprobe
prev=-1
while :; do
	find /sys/devices -name modalias -exec cat {} + | sort -u | xargs ` + KmodRefDir + `/modprobe -a -b 2>/dev/null
	n=$(wc -l </proc/modules)
	[ "$n" = "$prev" ] && break
	prev=$n
done
cut -d' ' -f1 /proc/modules | sort | while read -r m; do echo "E2E:MODULE $m"; done
`

// TestDaemonColdplugParity: after daemon --coldplug and settle, the loaded
// set contains everything kmod's fixpoint loop loads, nothing blacklisted,
// and nothing loads after settle returned.
func TestDaemonColdplugParity(t *testing.T) {
	Require(t)
	blacklist := File{Guest: "/etc/modprobe.d/test.conf", Data: []byte("blacklist pcspkr\nblacklist virtio_balloon\n")}
	ref := Boot(t.Context(), t, Scenario{
		Files: []File{blacklist}, Devices: DeviceSet, QEMUArgs: DeviceSetQEMUArgs, Timeout: 4 * time.Minute,
		Script: kmodFixpoint,
	})
	res := Boot(t.Context(), t, Scenario{
		Files: append(daemonFiles(t), blacklist), Devices: DeviceSet, QEMUArgs: DeviceSetQEMUArgs, Timeout: 4 * time.Minute,
		Script: helperSetup + startDaemon("--coldplug") + settleAndReport + `
sleep 3
echo "E2E:LATER $(cut -d' ' -f1 /proc/modules | sort | tr '\n' ' ')"
# Idle, the daemon drops its binary's read-only data from its resident
# set, and gives memory back once the coldplug's calls are out of the
# kernel: read from outside, which maps nothing of it.
for i in $(seq 40); do
	idle=$(awk '/^(Rss|Anonymous):/{printf "%s %s kB ", $1, $2}' /proc/$DAEMON/smaps_rollup)
	rss=$(echo $idle | cut -d' ' -f2)
	[ -n "$rss" ] && [ "$rss" -le ` + strconv.Itoa(idleRSSBoundKB) + ` ] && break
	sleep 0.25
done
echo "E2E:RSS_IDLE $idle"
echo "E2E:THREADS $(grep '^Threads:' /proc/$DAEMON/status | tr -dc 0-9)"
echo "E2E:COMM $(cat /proc/$DAEMON/comm)"
echo "E2E:INDEX_RSS $(awk '/^[0-9a-f]+-[0-9a-f]+ /{ix = $6 ~ /\/modules\.[a-z.]*bin$/} /^Rss:/{if (ix) kb += $2} END{print kb + 0}' /proc/$DAEMON/smaps)"
echo "E2E:STAT $(cat /proc/$DAEMON/stat)"
` + timelineReport + `
echo "E2E:RSS_LATER $(awk '/^(Rss|Anonymous):/{printf "%s %s kB ", $1, $2}' /proc/$DAEMON/smaps_rollup)"
` + daemonLog,
	})
	if res.Value("SETTLE_RC") != "0" {
		t.Fatalf("settle exited %q; log %q", res.Value("SETTLE_RC"), res.Lines("LOG"))
	}
	ours, kmods := res.Lines("MODULE"), ref.Lines("MODULE")
	if len(kmods) < 40 {
		t.Fatalf("kmod loaded only %d modules", len(kmods))
	}
	if missing := minus(kmods, ours); len(missing) > 0 {
		t.Errorf("the daemon did not load %v, which kmod's fixpoint loop loads", missing)
	}
	for _, m := range ours {
		if m == "pcspkr" || m == "virtio_balloon" {
			t.Errorf("blacklisted module %s loaded", m)
		}
	}
	if later := strings.Fields(res.Value("LATER")); strings.Join(later, " ") != strings.Join(ours, " ") {
		t.Errorf("modules loaded after settle returned: %v", minus(later, ours))
	}
	st := daemonStatus(t, res)
	t.Logf("daemon: %d modules (kmod %d), extra %v; loads %+v; memory at settle %s, idle %s, after the queries %s", len(ours), len(kmods), minus(ours, kmods), st.Loads, res.Value("RSS"), res.Value("RSS_IDLE"), res.Value("RSS_LATER"))
	// Cost guard (DESIGN.md invariant 8): the daemon's own CPU time for
	// the whole coldplug. Good runs measure 0.7 to 1.1 s user and 4.4 to
	// 6.5 s system on a quiet host (14 s system when other guests shared
	// its 2 cores: TCG guest time stretches with host load, system time
	// most, as it is mostly the kernel's own load work); a collector
	// running flat out (a 4 MiB GOMEMLIMIT measured 8.9 to 10.7 s user and
	// 14.2 to 21.7 s system) must fail.
	if utime, stime, err := procCPU(res.Value("STAT")); err != nil {
		t.Errorf("daemon CPU time: %v", err)
	} else {
		t.Logf("daemon CPU time after coldplug: user %v, system %v; memory %s", utime, stime, res.Value("RSS_LATER"))
		if utime > 2*time.Second {
			t.Errorf("daemon user CPU time after coldplug %v, more than 2 s", utime)
		}
		if utime+stime > 25*time.Second {
			t.Errorf("daemon CPU time after coldplug %v (user %v, system %v), more than 25 s", utime+stime, utime, stime)
		}
	}
	// Memory is read from smaps_rollup, a walk of the page tables: on
	// 6.1, VmRSS and VmHWM lag behind a threaded process (each thread
	// keeps up to 64 page faults' counts to itself) and said 3.4 MiB when
	// settle returned where the page tables held 7.5. Issue 10's goal, 6
	// MiB after coldplug, is the bound once the daemon is idle: it then
	// drops its binary's read-only data, and gives back the memory once
	// the coldplug's calls are out of the kernel. This version measured
	// 5.6-5.7 MiB idle, 3.5-3.7 of it anonymous (heap 0.6 MiB, 1.5 unused
	// in the heap's pages, stacks 0.7-0.9, runtime), 1.8 the binary's
	// code; 6.2-6.5 MiB when settle returned; 7.5 after the status,
	// timeline and why queries, which map code and data again. Huge pages
	// faulted before the flag was set (4.4 MiB more), the index pages
	// kept over the coldplug (1.7 MiB) or the read-only data kept (1.8
	// MiB) cross the bounds, a thread kept per finit_module call the
	// thread count's; the log line reports the figures.
	// Executed again without huge pages, the daemon keeps its name (ps,
	// pgrep and the dist scripts find it by name).
	if comm := res.Value("COMM"); comm != "modautoload" {
		t.Errorf("the daemon's process name is %q, want modautoload", comm)
	}
	threads, _ := strconv.Atoi(res.Value("THREADS"))
	indexKB, ierr := strconv.Atoi(res.Value("INDEX_RSS"))
	t.Logf("daemon after coldplug: %d threads, %d kB of index pages resident", threads, indexKB)
	if threads == 0 || threads > 12 {
		t.Errorf("daemon has %d threads after coldplug, want 1 to 12", threads)
	}
	if ierr != nil || indexKB > 256 {
		t.Errorf("index pages resident after coldplug: %q kB, want at most 256", res.Value("INDEX_RSS"))
	}
	memory := func(key string) (rss, anon int) {
		f := strings.Fields(res.Value(key))
		if len(f) < 6 || f[0] != "Rss:" || f[3] != "Anonymous:" {
			t.Errorf("no memory figures in %s: %q", key, res.Value(key))
			return 0, 0
		}
		rss, _ = strconv.Atoi(f[1])
		anon, _ = strconv.Atoi(f[4])
		return rss, anon
	}
	if rss, anon := memory("RSS"); rss > 8704 || anon > 5*1024 {
		t.Errorf("daemon memory when settle returned: %d kB resident, %d kB of it anonymous; want at most 8.5 and 5 MiB", rss, anon)
	}
	if rss, anon := memory("RSS_LATER"); rss > 8704 || anon > 5*1024 {
		t.Errorf("daemon memory after the queries: %d kB resident, %d kB of it anonymous; want at most 8.5 and 5 MiB", rss, anon)
	}
	if rss, anon := memory("RSS_IDLE"); rss > idleRSSBoundKB || anon > 4608 {
		t.Errorf("idle daemon's memory 3 to 13 s after settle: %d kB resident, %d kB of it anonymous; want at most %d and 4608 kB", rss, anon, idleRSSBoundKB)
	}
	checkTimeline(t, res)
}

// idleRSSBoundKB is issue 10's goal for the daemon's resident memory
// after coldplug, in kB.
const idleRSSBoundKB = 6 << 10

// clockTick is the unit of the CPU times in /proc/PID/stat (USER_HZ,
// 100 on every architecture Linux runs Go on).
const clockTick = 10 * time.Millisecond

// procCPU returns the user and system CPU time of a /proc/PID/stat line:
// fields 14 and 15, in clock ticks. The command name (field 2) is in
// parentheses and may hold spaces and parentheses itself, so the fields
// are counted from the last ')'.
func procCPU(stat string) (utime, stime time.Duration, err error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/PID/stat %q: no command name", stat)
	}
	// After the name: state (field 3) ... utime (14), stime (15).
	f := strings.Fields(stat[i+1:])
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("/proc/PID/stat %q: %d fields after the command name, want at least 13", stat, len(f))
	}
	u, err1 := strconv.ParseUint(f[11], 10, 32)
	s, err2 := strconv.ParseUint(f[12], 10, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("/proc/PID/stat %q: utime %q, stime %q are not tick counts", stat, f[11], f[12])
	}
	return time.Duration(u) * clockTick, time.Duration(s) * clockTick, nil
}

// TestDaemonHotplug: devices added over QMP while the daemon runs get their
// drivers, through the bus cascades; removing one does not upset it.
func TestDaemonHotplug(t *testing.T) {
	Require(t)
	vm := Start(t.Context(), t, Scenario{
		Files: daemonFiles(t), QMP: true,
		Devices:  []string{"qemu-xhci", "usb-kbd"},
		QEMUArgs: []string{"-audiodev", "none,id=snd0"},
		Script: startDaemon("--coldplug") + `
modautoload settle --timeout 120s; echo "E2E:COLD_RC $?"
echo "E2E:READY"
wait_live() {
	for i in $(seq 600); do [ "$(cat /sys/module/$1/initstate 2>/dev/null)" = live ] && { echo "E2E:LIVE $1 $(cut -d' ' -f1 /proc/uptime)"; return; }; sleep 0.05; done
	echo "E2E:NOT_LIVE $1"
}
wait_live virtio_input
wait_live snd_usb_audio
modautoload settle --timeout 60s; echo "E2E:HOT_RC $?"
echo "E2E:REMOVE"
for i in $(seq 100); do ls /sys/bus/virtio/devices | grep -q . || break; sleep 0.05; done
modautoload settle --timeout 60s; echo "E2E:DEL_RC $?"
echo "E2E:STATUS $(modautoload status --json)"
` + daemonLog,
	})
	vm.Await("READY")
	ctx := t.Context()
	for _, dev := range []map[string]any{
		{"driver": "virtio-keyboard-pci", "id": "kbd1"},
		{"driver": "usb-audio", "id": "snd1", "bus": "usb-bus.0", "audiodev": "snd0"},
	} {
		if _, err := vm.QMP().Execute(ctx, "device_add", dev); err != nil {
			t.Fatalf("device_add %v: %v", dev, err)
		}
	}
	vm.Await("REMOVE")
	if _, err := vm.QMP().Execute(ctx, "device_del", map[string]any{"id": "kbd1"}); err != nil {
		t.Errorf("device_del: %v", err)
	}
	res := vm.Wait()
	for _, k := range []string{"COLD_RC", "HOT_RC", "DEL_RC"} {
		if res.Value(k) != "0" {
			t.Errorf("%s = %q", k, res.Value(k))
		}
	}
	if nl := res.Lines("NOT_LIVE"); len(nl) > 0 {
		t.Errorf("drivers not live after hotplug: %v; log %q", nl, res.Lines("LOG"))
	}
	if st := daemonStatus(t, res); st.Modules["virtio_input"].State != "live" {
		t.Errorf("daemon's state of virtio_input: %+v", st.Modules["virtio_input"])
	}
}

// TestDaemonNothingLost: a receive buffer forced small and a storm of add
// triggers over all devices make the kernel drop events; the daemon
// counts the overruns, resyncs, and ends with the coldplug set. Then
// kill -9 in the middle of coldplug and a restart converge to the same set.
func TestDaemonNothingLost(t *testing.T) {
	Require(t)
	normal := Boot(t.Context(), t, Scenario{
		Files: daemonFiles(t), Devices: DeviceSet, QEMUArgs: DeviceSetQEMUArgs, Timeout: 4 * time.Minute,
		Script: helperSetup + startDaemon("--coldplug") + settleAndReport,
	})
	storm := Boot(t.Context(), t, Scenario{
		Files: daemonFiles(t), Devices: DeviceSet, QEMUArgs: DeviceSetQEMUArgs, Timeout: 4 * time.Minute,
		Script: helperSetup + startDaemon("--coldplug --rcvbuf 4096") + `
for round in 1 2 3; do
	find /sys/devices -name uevent | while read -r f; do echo add >"$f" 2>/dev/null; done
done
` + settleAndReport + daemonLog,
	})
	restart := Boot(t.Context(), t, Scenario{
		Files: daemonFiles(t), Devices: DeviceSet, QEMUArgs: DeviceSetQEMUArgs, Timeout: 4 * time.Minute,
		Script: helperSetup + startDaemon("--coldplug") + `
sleep 1.5
echo "E2E:KILLED_WITH $(wc -l </proc/modules)"
kill -9 $DAEMON; wait $DAEMON
` + startDaemon("--coldplug") + settleAndReport,
	})
	want := normal.Lines("MODULE")
	if len(want) < 40 {
		t.Fatalf("coldplug loaded only %d modules", len(want))
	}
	st := daemonStatus(t, storm)
	if st.Events.Overruns == 0 || st.Resyncs == 0 {
		t.Errorf("storm with a 4 KiB buffer: %d overruns, %d resyncs; the test did not make the kernel drop events", st.Events.Overruns, st.Resyncs)
	}
	for name, r := range map[string]*Result{"storm": storm, "restart": restart} {
		if r.Value("SETTLE_RC") != "0" {
			t.Errorf("%s: settle exited %q", name, r.Value("SETTLE_RC"))
		}
		if got := r.Lines("MODULE"); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%s: module set differs from coldplug: missing %v, extra %v", name, minus(want, got), minus(got, want))
		}
	}
	killed, _ := strconv.Atoi(restart.Value("KILLED_WITH"))
	t.Logf("storm: %d overruns, %d resyncs, %d dropped; restart after kill -9 with %d of %d modules",
		st.Events.Overruns, st.Resyncs, st.Dropped, killed, len(want))
}

// TestDaemonOnlyTheKernelSpeaks: forged uevents carrying the MODALIAS of a
// module nothing else loads make the daemon load nothing; they are counted.
func TestDaemonOnlyTheKernelSpeaks(t *testing.T) {
	Require(t)
	forge := BuildBinary(t, "./e2e/guest/forge")
	res := Boot(t.Context(), t, Scenario{
		Files: append(daemonFiles(t), File{Guest: "/bin/forge", Host: forge, Mode: 0o755}),
		Script: startDaemon("--coldplug") + `
modautoload settle --timeout 60s
forge --modalias pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00 --count 5
forge --devpath /devices/virtual/x --modalias pci:v000010ECd00008139sv00001AF4sd00001100bc02sc00i00
` + settleAndReport,
	})
	for _, m := range res.Lines("MODULE") {
		if m == "e1000" || m == "8139too" || m == "8139cp" {
			t.Errorf("forged event loaded %s", m)
		}
	}
	if st := daemonStatus(t, res); st.Events.Rejected != 6 {
		t.Errorf("rejected %d, want 6", st.Events.Rejected)
	}
}

// TestDaemonRules: a skip rule and allow-list mode hold against real
// events; a rule file with errors is reported with file:line and the
// defaults still work. Module events reach the rules: virtio_rng going
// live at coldplug loads loop, loop and virtio_rng loading each other
// ends, each handed to the kernel once, and dummy, live before the daemon
// started, gets its rule from coldplug's scan of /sys/module.
func TestDaemonRules(t *testing.T) {
	Require(t)
	skip := File{Guest: "/etc/modautoload/rules.d/10-skip.rules", Data: []byte(`# e1000 stays out
SUBSYSTEM=="pci", ENV{MODALIAS}=="pci:v00008086d0000100E*", SKIP
`)}
	broken := File{Guest: "/etc/modautoload/rules.d/20-broken.rules", Data: []byte("SUBSYSTEM=\"pci\", SKIP\nthis is not a rule\n")}
	modules := File{Guest: "/etc/modautoload/rules.d/30-modules.rules", Data: []byte(`ACTION=="add", SUBSYSTEM=="module", KERNEL=="virtio_rng", LOAD="loop"
ACTION=="add", SUBSYSTEM=="module", DEVPATH=="/module/loop", LOAD="virtio_rng loop"
ACTION=="add", SUBSYSTEM=="module", KERNEL=="dummy", LOAD="tun"
`)}
	devices := []string{"e1000,netdev=n0", "virtio-rng-pci", "virtio-balloon-pci"}
	qargs := []string{"-netdev", "user,id=n0,restrict=on"}
	res := Boot(t.Context(), t, Scenario{
		Files: append(daemonFiles(t), skip, broken, modules), Devices: devices, QEMUArgs: qargs,
		Script: helperSetup + `
modautoload modprobe dummy
` + traceSetup + startDaemon("--coldplug") + settleAndReport + `
echo "E2E:FINIT $(count 'sys_finit_module(')"
echo "E2E:LOADS $(count ' module_load: ')"
echo "E2E:LOOP_LOADS $(count ' module_load: loop')"
echo "E2E:RNG_LOADS $(count ' module_load: virtio_rng')"
` + daemonLog,
	})
	mods := strings.Join(res.Lines("MODULE"), " ")
	if strings.Contains(" "+mods+" ", " e1000 ") {
		t.Error("the skip rule did not keep e1000 out")
	}
	if res.Value("SETTLE_RC") != "0" {
		t.Errorf("settle exited %q with rules that load each other", res.Value("SETTLE_RC"))
	}
	for _, m := range []string{"virtio_rng", "loop", "dummy", "tun"} {
		if !strings.Contains(" "+mods+" ", " "+m+" ") {
			t.Errorf("%s not loaded: module event rules did not apply (modules: %s)", m, mods)
		}
	}
	st := daemonStatus(t, res)
	finit, _ := strconv.Atoi(res.Value("FINIT"))
	loads, _ := strconv.Atoi(res.Value("LOADS"))
	// module_load fires once load_module has passed the duplicate check
	// (inits that fail included): a second finit_module for a module
	// shows as a call without it, and as a load the daemon waited for.
	if res.Value("LOOP_LOADS") != "1" || res.Value("RNG_LOADS") != "1" || finit == 0 || finit != loads || st.Loads.Waited != 0 {
		t.Errorf("loop loaded %s times, virtio_rng %s; %d finit_module calls for %d loads, %d waited for; want 1, 1, one load per call, none waited",
			res.Value("LOOP_LOADS"), res.Value("RNG_LOADS"), finit, loads, st.Loads.Waited)
	}
	t.Logf("module event rules: loop and tun live, %d finit_module calls, %d loads, %d failed, %d deduplicated", finit, loads, st.Loads.Failed, st.Loads.Deduplicated)
	if !strings.Contains(mods, "virtio_rng") || !strings.Contains(mods, "virtio_pci") {
		t.Errorf("defaults did not load virtio modules beside a broken rule file: %s", mods)
	}
	logs := strings.Join(res.Lines("LOG"), "\n")
	for _, want := range []string{"20-broken.rules:1", "20-broken.rules:2"} {
		if !strings.Contains(logs, want) {
			t.Errorf("no error naming %s in the log", want)
		}
	}

	allow := File{Guest: "/etc/modautoload/rules.d/00-allow.rules", Data: []byte("ALLOW=\"virtio* e1000\"\n")}
	res = Boot(t.Context(), t, Scenario{
		Files: append(daemonFiles(t), allow), Devices: append(devices, "intel-hda", "hda-duplex,audiodev=snd0"),
		QEMUArgs: append(qargs, "-audiodev", "none,id=snd0"),
		Script:   startDaemon("--coldplug") + settleAndReport,
	})
	for _, m := range res.Lines("MODULE") {
		// The allowed drivers' dependencies are virtio_* too.
		if !strings.HasPrefix(m, "virtio") && m != "e1000" {
			t.Errorf("allow-list mode loaded %s", m)
		}
	}
	if st := daemonStatus(t, res); st.Refused == 0 {
		t.Error("allow-list mode refused nothing on a machine with an HDA controller")
	}
}

// TestDaemonNeverTwice: with the daemon running, uevent-driven and
// helper-driven requests for one module at the same moment, plus the
// kernel's own requests through the helper, hand each module to the
// kernel exactly once (counted by the daemon and by tracefs).
func TestDaemonNeverTwice(t *testing.T) {
	Require(t)
	storm := BuildBinary(t, "./e2e/guest/xfrmstorm")
	res := Boot(t.Context(), t, Scenario{
		Files:   append(daemonFiles(t), File{Guest: "/bin/xfrmstorm", Host: storm, Mode: 0o755}),
		Devices: []string{"virtio-rng-pci"},
		Script: helperSetup + traceSetup + startDaemon("--coldplug") + `
modautoload settle --timeout 60s
rmmod virtio_rng
modautoload settle --timeout 60s
echo >$T/trace
rng=$(dirname "$(grep -l d00000004 /sys/bus/virtio/devices/*/modalias)")
pids=
for i in $(seq 10); do
	echo add >"$rng/uevent" & pids="$pids $!"
	modautoload modprobe virtio_rng & pids="$pids $!"
done
wait $pids # not a bare wait: the daemon is a child too
modautoload settle --timeout 60s
echo "E2E:RNG_FINIT $(count 'sys_finit_module(')"
echo "E2E:RNG_LOADS $(count ' module_load: ')"
echo "E2E:RNG_STATE $(cat /sys/module/virtio_rng/initstate)"
echo >$T/trace
for round in $(seq 5); do
	xfrmstorm --threads 40
	rmmod xfrm_user xfrm_algo
done
modautoload settle --timeout 60s
echo "E2E:XFRM_FINIT $(count 'sys_finit_module(')"
echo "E2E:XFRM_LOADS $(count ' module_load: ')"
echo "E2E:XFRM_REQUESTS $(count ' module_request: ')"
echo "E2E:STATUS $(modautoload status --json)"
`,
	})
	if res.Value("RNG_STATE") != "live" || res.Value("RNG_FINIT") != "1" || res.Value("RNG_LOADS") != "1" {
		t.Errorf("virtio_rng: state %q, %s finit_module calls, %s loads; want live, 1, 1",
			res.Value("RNG_STATE"), res.Value("RNG_FINIT"), res.Value("RNG_LOADS"))
	}
	for _, l := range res.Lines("SOCKETS") {
		if l != "ok=40 failed=0" {
			t.Errorf("xfrm round: %s", l)
		}
	}
	if res.Value("XFRM_FINIT") != "10" || res.Value("XFRM_LOADS") != "10" {
		t.Errorf("xfrm: %s finit_module calls, %s loads for 5 rounds of 2 modules; want 10 and 10",
			res.Value("XFRM_FINIT"), res.Value("XFRM_LOADS"))
	}
	st := daemonStatus(t, res)
	if st.Loads.Deduplicated == 0 {
		t.Error("the daemon deduplicated nothing")
	}
	t.Logf("kernel requests %s; daemon loads %+v", res.Value("XFRM_REQUESTS"), st.Loads)
}

// timelineReport prints the daemon's load timeline (JSON and text), why
// virtio_net loaded, and the chart's size.
const timelineReport = `
echo "E2E:TIMELINE $(modautoload status --timeline --json)"
modautoload why virtio_net >/tmp/why.txt; echo "E2E:WHY_RC $?"
while IFS= read -r l; do echo "E2E:WHY $l"; done </tmp/why.txt
modautoload status --timeline --svg /tmp/timeline.svg >/tmp/timeline.txt; echo "E2E:TIMELINE_RC $?"
while IFS= read -r l; do echo "E2E:TL $l"; done </tmp/timeline.txt
echo "E2E:SVG_BYTES $(wc -c </tmp/timeline.svg)"
`

// checkTimeline checks the coldplug's timeline: a record per load, times
// in order, virtio_net asked for by its device's uevent (virtio_pci's
// probe created that device), the kernel's own requests through the
// helper, and a critical path ending with the load done last.
func checkTimeline(t *testing.T, res *Result) {
	t.Helper()
	var tl daemon.Timeline
	if err := json.Unmarshal([]byte(res.Value("TIMELINE")), &tl); err != nil {
		t.Fatalf("status --timeline --json: %v: %.300q", err, res.Value("TIMELINE"))
	}
	st := daemonStatus(t, res)
	if uint64(len(tl.Records)) < st.Loads.Loaded || tl.Overwritten != 0 {
		t.Errorf("%d records (%d overwritten) for %d modules loaded", len(tl.Records), tl.Overwritten, st.Loads.Loaded)
	}
	var kernelAsked []string
	var lastDone int64
	for _, r := range tl.Records {
		if r.Result == daemon.ResultLoading || r.RequestedNS <= 0 || r.DoneNS < r.RequestedNS ||
			r.StartedNS != 0 && (r.StartedNS < r.RequestedNS || r.DoneNS < r.StartedNS || r.ReturnedNS < r.StartedNS) {
			t.Errorf("record %d %s: times out of order or unfinished: %+v", r.ID, r.Module, r)
		}
		if r.Asker != nil && r.Asker.Kind == loader.AskedByKernel && r.Asker.PID > 0 {
			kernelAsked = append(kernelAsked, r.Module)
		}
		if tl.Coldplug != nil && r.RequestedNS >= tl.Coldplug.StartNS && r.RequestedNS <= tl.Coldplug.EndNS {
			lastDone = max(lastDone, r.DoneNS)
		}
	}
	if len(kernelAsked) == 0 {
		t.Error("no load asked for by the kernel through the helper (the HDA codec driver requests its codecs)")
	}
	why := tl.Explain("virtio_net")
	if len(why.Loads) != 1 {
		t.Fatalf("virtio_net: %d loads recorded; why says %q", len(why.Loads), res.Lines("WHY"))
	}
	vn := why.Loads[0]
	if a := vn.Asker; a == nil || a.Kind != loader.AskedByUevent || a.Action != "add" || a.Seqnum == 0 || !strings.Contains(a.DevPath, "/virtio") ||
		!strings.HasPrefix(a.Name, "virtio:") {
		t.Errorf("virtio_net asked by %+v, want the add uevent of its virtio device", vn.Asker)
	}
	if vn.Result != daemon.ResultLive || vn.StartedNS == 0 || vn.ReturnedNS == 0 {
		t.Errorf("virtio_net: %+v", vn.LoadRecord)
	}
	if vn.DeviceOf == nil || vn.DeviceOf.Module != "virtio_pci" {
		t.Errorf("virtio_net's device appeared below %+v, want virtio_pci's", vn.DeviceOf)
	}
	if res.Value("WHY_RC") != "0" || !strings.Contains(strings.Join(res.Lines("WHY"), "\n"), fmt.Sprintf("seqnum %d", vn.Asker.Seqnum)) {
		t.Errorf("why virtio_net exited %s: %q", res.Value("WHY_RC"), res.Lines("WHY"))
	}
	b := tl.Coldplug
	if b == nil || len(b.CriticalPath) == 0 || b.Open {
		t.Fatalf("no critical path: %+v", b)
	}
	end := b.CriticalPath[len(b.CriticalPath)-1]
	for _, r := range tl.Records {
		if r.ID == end.ID && r.DoneNS != lastDone {
			t.Errorf("the critical path ends with %s, done at %d; the coldplug's last load was done at %d", r.Module, r.DoneNS, lastDone)
		}
	}
	if b.CriticalPath[0].HeldBy != "" {
		t.Errorf("the critical path starts with a step held by %q", b.CriticalPath[0].HeldBy)
	}
	text := strings.Join(res.Lines("TL"), "\n")
	if res.Value("TIMELINE_RC") != "0" || !strings.Contains(text, "critical path") || !strings.Contains(text, end.Module) {
		t.Errorf("status --timeline exited %s:\n%s", res.Value("TIMELINE_RC"), text)
	}
	if n, _ := strconv.Atoi(res.Value("SVG_BYTES")); n < 1000 {
		t.Errorf("the chart has %q bytes", res.Value("SVG_BYTES"))
	}
	t.Logf("timeline: %d records, %d asked for by the kernel (%v); coldplug %d loads in %.3f s; critical path: %s",
		len(tl.Records), len(kernelAsked), kernelAsked, b.Loads, float64(b.EndNS-b.StartNS)/1e9, pathModules(b.CriticalPath))
	t.Logf("why virtio_net:\n%s", strings.Join(res.Lines("WHY"), "\n"))
}

func pathModules(p []daemon.PathStep) string {
	var s []string
	for _, st := range p {
		if st.HeldBy != "" {
			s = append(s, "("+st.HeldBy+")")
		}
		s = append(s, st.Module)
	}
	return strings.Join(s, " ")
}

// TestDaemonProcs: on a machine with more CPUs than the daemon runs Go code
// on (2; the runtime keeps memory per processor), the daemon starts with
// that many, and the commands it runs get the environment it was started
// with; a GOMAXPROCS the caller sets is the caller's.
func TestDaemonProcs(t *testing.T) {
	Require(t)
	res := Boot(t.Context(), t, Scenario{
		CPUs:  4,
		Files: append(daemonFiles(t), File{Guest: "/etc/modprobe.d/env.conf", Data: []byte("install dummy env >/tmp/install.env\n")}),
		Script: `
echo "E2E:CPUS $(nproc)"
for run in default caller; do
	[ $run = caller ] && export GOMAXPROCS=3
	modautoload daemon --log-format json 2>>/tmp/daemon.log &
	DAEMON=$!
	modautoload settle --timeout 60s
	rm -f /tmp/install.env
	modautoload modprobe dummy; echo "E2E:MODPROBE_$run $?"
	echo "E2E:PROCS_$run $(modautoload status --json | grep -o '"procs":[0-9]*' | tr -dc 0-9)"
	echo "E2E:ENV_$run $(grep -E '^(GOMAXPROCS|MODAUTOLOAD_)' /tmp/install.env | tr '\n' ' ')"
	echo "E2E:EXECENV_$run $(tr '\0' '\n' </proc/$DAEMON/environ | grep -E '^(GOMAXPROCS|MODAUTOLOAD_)' | tr '\n' ' ')"
	echo "E2E:MODPROBE_MODULE_$run $(grep -c '^MODPROBE_MODULE=dummy$' /tmp/install.env)"
	kill $DAEMON; wait $DAEMON
done
` + daemonLog,
	})
	if res.Value("CPUS") != "4" {
		t.Fatalf("guest has %q CPUs, want 4", res.Value("CPUS"))
	}
	for _, c := range []struct{ run, procs, execEnv, env string }{
		{"default", "2", "GOMAXPROCS=2 MODAUTOLOAD_LEAN_GOMAXPROCS=1", ""},
		{"caller", "3", "GOMAXPROCS=3", "GOMAXPROCS=3"},
	} {
		if rc := res.Value("MODPROBE_" + c.run); rc != "0" {
			t.Errorf("%s: modprobe dummy exited %q; log %q", c.run, rc, res.Lines("LOG"))
		}
		// The install command ran, in the daemon: kmod's variable is set.
		if n := res.Value("MODPROBE_MODULE_" + c.run); n != "1" {
			t.Fatalf("%s: no install command's environment (%q)", c.run, n)
		}
		if p := res.Value("PROCS_" + c.run); p != c.procs {
			t.Errorf("%s: the daemon runs Go code on %q threads at once, want %s", c.run, p, c.procs)
		}
		// The runtime started with the count: set later, the state it made
		// for the CPUs' count would stay.
		if env := strings.TrimSpace(res.Value("EXECENV_" + c.run)); env != c.execEnv {
			t.Errorf("%s: the daemon was executed with %q, want %q", c.run, env, c.execEnv)
		}
		if env := strings.TrimSpace(res.Value("ENV_" + c.run)); env != c.env {
			t.Errorf("%s: the install command's environment has %q, want %q", c.run, env, c.env)
		}
	}
}
