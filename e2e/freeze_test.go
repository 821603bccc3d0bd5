package e2e

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Never freeze (issue 9, DESIGN.md invariant 7): a load that blocks must
// not stall the daemon, the helper or the kernel. Each test below runs the
// daemon with its default settings, with the binary installed as
// /sbin/modprobe and named in /proc/sys/kernel/modprobe, as a
// distribution would.

// sbinModprobe installs the binary as /sbin/modprobe (over busybox's
// link) and as the kernel's helper, as a distribution would. Scripts call
// it by its path: for a bare "modprobe" busybox's sh runs its own applet,
// whatever PATH says. The guest's clock for measurements is now().
const sbinModprobe = `
now() { cut -d' ' -f1 /proc/uptime; }
ln -sf /bin/modautoload /sbin/modprobe
echo /sbin/modprobe >/proc/sys/kernel/modprobe
echo "E2E:HELPER $(cat /proc/sys/kernel/modprobe) $(readlink /sbin/modprobe)"
`

// freezeSetup is sbinModprobe, then the daemon with its default settings,
// settled after coldplug.
var freezeSetup = sbinModprobe + startDaemon("--coldplug") + `
modautoload settle --timeout 60s; echo "E2E:COLD_RC $?"
`

// checkHelper fails the test if the guest did not install the binary as
// /sbin/modprobe and the kernel's helper.
func checkHelper(t *testing.T, res *Result) {
	t.Helper()
	if got := res.Value("HELPER"); got != "/sbin/modprobe /bin/modautoload" {
		t.Fatalf("helper setup: kernel helper and /sbin/modprobe link %q, want \"/sbin/modprobe /bin/modautoload\"", got)
	}
}

// checkFreezeSetup is checkHelper, and the daemon settled after coldplug.
func checkFreezeSetup(t *testing.T, res *Result) {
	t.Helper()
	checkHelper(t, res)
	if got := res.Value("COLD_RC"); got != "0" {
		t.Fatalf("the daemon did not settle after coldplug (settle exited %q); log:\n%s", got, logTail(res, 30))
	}
}

// kv parses a marker value of space-separated key=value words.
func kv(value string) map[string]string {
	m := map[string]string{}
	for _, w := range strings.Fields(value) {
		if k, v, ok := strings.Cut(w, "="); ok {
			m[k] = v
		}
	}
	return m
}

// span is the time between two guest uptimes, in seconds.
func span(t *testing.T, start, end string) float64 {
	t.Helper()
	a, err1 := strconv.ParseFloat(start, 64)
	b, err2 := strconv.ParseFloat(end, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("guest uptimes %q and %q are not numbers", start, end)
	}
	return b - a
}

// logTail is the end of the daemon's log (E2E:LOG lines) for a failure
// message.
func logTail(res *Result, n int) string {
	lines := res.Lines("LOG")
	if len(lines) == 0 {
		return "(no daemon log)"
	}
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// throughDaemon checks, in the daemon's status (modautoload status
// --json), that module was loaded through it and is live.
func throughDaemon(t *testing.T, status, module string) {
	t.Helper()
	var st statusJSON
	if err := json.Unmarshal([]byte(status), &st); err != nil {
		t.Errorf("no status from the daemon (%q: %v), so no telling whether %s was loaded through it", status, err, module)
		return
	}
	if m := st.Modules[module]; m.State != "live" {
		t.Errorf("the daemon's state of %s is %+v, want live: the load did not go through the daemon", module, m)
	}
}

// TestNeverFreezeSlowInit, point (a): while test_bpf runs its init (tens
// of seconds under TCG) in a load through the daemon, another load through
// the daemon returns at once. The guest powers off with test_bpf still
// coming.
func TestNeverFreezeSlowInit(t *testing.T) {
	Require(t)
	res := Boot(t.Context(), t, Scenario{
		Files: daemonFiles(t), Timeout: 3 * time.Minute,
		Script: freezeSetup + `
# A load through the daemon with nothing else going on, for comparison.
t0=$(now); timeout -s KILL 20 /sbin/modprobe nlmon; rc=$?; t1=$(now)
echo "E2E:BASELINE rc=$rc start=$t0 end=$t1"

/sbin/modprobe test_bpf >/tmp/test_bpf.out 2>&1 &
for i in $(seq 1200); do
	[ "$(cat /sys/module/test_bpf/initstate 2>/dev/null)" = coming ] && break
	sleep 0.05
done
echo "E2E:BPF_BEFORE $(cat /sys/module/test_bpf/initstate 2>/dev/null || echo absent)"
# Past the daemon's index check interval (3 s), so that a reload check
# falls inside test_bpf's load.
sleep 5
echo "E2E:BPF_STILL $(cat /sys/module/test_bpf/initstate 2>/dev/null || echo absent)"
t0=$(now); timeout -s KILL 20 /sbin/modprobe dummy; rc=$?; t1=$(now)
echo "E2E:DUMMY rc=$rc start=$t0 end=$t1 state=$(cat /sys/module/dummy/initstate 2>/dev/null || echo absent)"
# What a round trip to the daemon costs meanwhile, for comparison.
t0=$(now); timeout -s KILL 20 modautoload status >/dev/null; rc=$?; t1=$(now)
echo "E2E:STATUS_RTT rc=$rc start=$t0 end=$t1"
echo "E2E:BPF_AFTER $(cat /sys/module/test_bpf/initstate 2>/dev/null || echo absent)"
echo "E2E:STATUS $(timeout -s KILL 20 modautoload status --json)"
` + daemonLog,
	})
	checkFreezeSetup(t, res)
	base := kv(res.Value("BASELINE"))
	if base["rc"] != "0" {
		t.Fatalf("modprobe nlmon through an idle daemon exited %q; log:\n%s", base["rc"], logTail(res, 30))
	}
	if got := res.Value("BPF_BEFORE"); got != "coming" {
		t.Fatalf("test_bpf never showed initstate coming (last %q): the slow init was not exercised", got)
	}
	if got := res.Value("BPF_STILL"); got != "coming" {
		t.Fatalf("test_bpf was %q 5 s into its init, want coming: the slow init was not exercised", got)
	}
	dummy, rtt := kv(res.Value("DUMMY")), kv(res.Value("STATUS_RTT"))
	took := span(t, dummy["start"], dummy["end"])
	t.Logf("modprobe dummy took %.2f s while test_bpf was coming (modautoload status meanwhile: %.2f s, exit %s; modprobe nlmon before: %.2f s)",
		took, span(t, rtt["start"], rtt["end"]), rtt["rc"], span(t, base["start"], base["end"]))
	if dummy["rc"] != "0" || dummy["state"] != "live" {
		t.Errorf("modprobe dummy while test_bpf was coming: exit %s (137: killed after 20 s), dummy %s; want 0 and live; log:\n%s",
			dummy["rc"], dummy["state"], logTail(res, 30))
	}
	if took >= 1 {
		t.Errorf("modprobe dummy took %.2f s while test_bpf was coming, want under 1 s", took)
	}
	if got := res.Value("BPF_AFTER"); got != "coming" {
		t.Errorf("test_bpf was %q when modprobe dummy returned: the load did not overlap its init", got)
	}
	throughDaemon(t, res.Value("STATUS"), "dummy")
	var st statusJSON
	if json.Unmarshal([]byte(res.Value("STATUS")), &st) == nil {
		if m, ok := st.Modules["test_bpf"]; !ok {
			t.Errorf("the daemon knows nothing of test_bpf: its load did not go through the daemon")
		} else {
			t.Logf("the daemon's state of test_bpf meanwhile: %+v", m)
		}
	}
}

// resolvedJSON is one line of modautoload resolve --json.
type resolvedJSON struct {
	Alias   string `json:"alias"`
	Modules []struct {
		Name    string `json:"name"`
		Builtin bool   `json:"builtin"`
	} `json:"modules"`
}

// TestNeverFreezeNestedRequests, point (b): tcrypt's init asks the kernel
// for many crypto algorithms, each request running the helper, which hands
// it to the daemon while the daemon's own load of tcrypt is in progress.
// modprobe tcrypt returns (with an error: tcrypt fails by design), every
// module the kernel asked for is live, and the daemon still works.
func TestNeverFreezeNestedRequests(t *testing.T) {
	Require(t)
	res := Boot(t.Context(), t, Scenario{
		Files: daemonFiles(t), Timeout: 8 * time.Minute,
		Script: freezeSetup + traceSetup + `
echo >$T/trace
t0=$(now); timeout -s KILL 240 /sbin/modprobe tcrypt 2>/tmp/tcrypt.err; rc=$?; t1=$(now)
echo "E2E:TCRYPT rc=$rc start=$t0 end=$t1"
while read -r l; do echo "E2E:TCRYPT_ERR $l"; done </tmp/tcrypt.err
# Its init may outlast the daemon's live timeout: wait for it to end
# (the module is freed when init fails) before looking at what it asked
# for. Not after a deadlock (modprobe killed): it would never end.
[ $rc = 137 ] || for i in $(seq 1200); do [ -d /sys/module/tcrypt ] || break; sleep 0.1; done
echo "E2E:TCRYPT_AFTER $(cat /sys/module/tcrypt/initstate 2>/dev/null || echo gone) $(now)"
echo "E2E:REQUESTS $(count ' module_request: ')"
grep ' module_request: ' $T/trace | sed 's/.* module_request: //; s/ wait=[0-9]* call_site=.*//' | sort -u >/tmp/requested
modautoload resolve --json --stdin </tmp/requested >/tmp/resolved 2>/dev/null
echo "E2E:NAMES $(wc -l </tmp/requested)"
while read -r l; do echo "E2E:RESOLVED $l"; done </tmp/resolved
# Every module a requested name resolves to, as it is now; a module that
# is not live is handed to kmod, which says whether it can load here at all.
grep -o '"name":"[^"]*"' /tmp/resolved | cut -d'"' -f4 | sort -u >/tmp/modules
while read -r m; do echo "E2E:STATE $m $(cat /sys/module/$m/initstate 2>/dev/null || echo absent)"; done </tmp/modules
while read -r m; do
	[ "$(cat /sys/module/$m/initstate 2>/dev/null)" = live ] && continue
	out=$(timeout -s KILL 30 ` + KmodRefDir + `/modprobe $m 2>&1); echo "E2E:KMOD $m rc=$? $out"
done </tmp/modules
t0=$(now); timeout -s KILL 20 modautoload status --json >/dev/null; rc=$?; t1=$(now)
echo "E2E:STATUS_AFTER rc=$rc start=$t0 end=$t1"
t0=$(now); timeout -s KILL 30 /sbin/modprobe tun; rc=$?; t1=$(now)
echo "E2E:TUN rc=$rc start=$t0 end=$t1 state=$(cat /sys/module/tun/initstate 2>/dev/null || echo absent)"
echo "E2E:STATUS $(timeout -s KILL 20 modautoload status --json)"
` + daemonLog,
	})
	checkFreezeSetup(t, res)
	tc := kv(res.Value("TCRYPT"))
	took := span(t, tc["start"], tc["end"])
	switch tc["rc"] {
	case "137":
		t.Errorf("modprobe tcrypt had not returned after 240 s (killed); log:\n%s", logTail(res, 40))
	case "0":
		t.Errorf("modprobe tcrypt exited 0; tcrypt's init fails with EAGAIN by design, so success is a lie")
	case "1":
	default:
		t.Errorf("modprobe tcrypt exited %q, want 1 (EAGAIN from its init)", tc["rc"])
	}

	// Classify every name the kernel asked for.
	var none, builtin, modular []string
	modulesOf := map[string][]string{} // module -> the names that resolve to it
	for _, line := range res.Lines("RESOLVED") {
		var r resolvedJSON
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Errorf("resolve --json printed %q: %v", line, err)
			continue
		}
		switch {
		case len(r.Modules) == 0:
			none = append(none, r.Alias)
		case allBuiltin(r):
			builtin = append(builtin, r.Alias)
		default:
			modular = append(modular, r.Alias)
		}
		for _, m := range r.Modules {
			if !m.Builtin {
				modulesOf[m.Name] = append(modulesOf[m.Name], r.Alias)
			}
		}
	}
	requests, _ := strconv.Atoi(res.Value("REQUESTS"))
	if names, _ := strconv.Atoi(res.Value("NAMES")); names != len(res.Lines("RESOLVED")) {
		t.Errorf("the kernel asked for %d names, resolve answered %d", names, len(res.Lines("RESOLVED")))
	}
	t.Logf("modprobe tcrypt returned after %.1f s (exit %s); the kernel made %d module requests for %d names: %d resolve to nothing, %d to built-ins only %v, %d to modules (%d modules)",
		took, tc["rc"], requests, len(res.Lines("RESOLVED")), len(none), len(builtin), builtin, len(modular), len(modulesOf))
	if after := res.Value("TCRYPT_AFTER"); tc["rc"] != "137" && !strings.HasPrefix(after, "gone ") {
		t.Errorf("tcrypt's init had not ended 120 s after modprobe returned (initstate and uptime: %s)", after)
	}
	if tc["rc"] != "137" && len(modular) < 10 {
		t.Errorf("only %d requested names resolve to modules: tcrypt's nested requests were not exercised", len(modular))
	}

	// Each module a requested name resolves to is live, unless it cannot
	// load on this machine at all (a CPU-specific implementation, say
	// aesni_intel without AES-NI under TCG): then kmod fails on it too.
	state := map[string]string{}
	for _, l := range res.Lines("STATE") {
		m, st, _ := strings.Cut(l, " ")
		state[m] = st
	}
	kmod := map[string]string{}
	for _, l := range res.Lines("KMOD") {
		m, verdict, _ := strings.Cut(l, " ")
		kmod[m] = verdict
	}
	var live, excused []string
	for _, m := range sortedKeys(modulesOf) {
		switch v := kmod[m]; {
		case state[m] == "live":
			live = append(live, m)
		case state[m] == "":
			t.Errorf("no state reported for %s", m)
		case strings.HasPrefix(v, "rc=0"):
			t.Errorf("%s (asked for as %v) is %s after modprobe tcrypt, yet kmod loads it", m, modulesOf[m], state[m])
		case v == "":
			t.Errorf("%s is %s and was not handed to kmod", m, state[m])
		default:
			excused = append(excused, fmt.Sprintf("%s (%s)", m, v))
		}
	}
	t.Logf("%d modules live; %d cannot load on this machine, kmod fails on them too: %s", len(live), len(excused), strings.Join(excused, "; "))

	after := kv(res.Value("STATUS_AFTER"))
	if after["rc"] != "0" {
		t.Errorf("modautoload status after tcrypt exited %q (137: killed after 20 s); log:\n%s", after["rc"], logTail(res, 40))
	}
	tun := kv(res.Value("TUN"))
	if tun["rc"] != "0" || tun["state"] != "live" {
		t.Errorf("modprobe tun after tcrypt: exit %s (137: killed after 30 s), tun %s; want 0 and live", tun["rc"], tun["state"])
	} else {
		throughDaemon(t, res.Value("STATUS"), "tun")
	}
}

func allBuiltin(r resolvedJSON) bool {
	for _, m := range r.Modules {
		if !m.Builtin {
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// stuckInstall is an install command that never exits, for the module of
// the virtio-rng device.
const stuckInstall = "install virtio_rng /bin/sh -c 'while :; do sleep 1; done'\n"

// installBound is how long the daemon lets an install command run by
// default before it kills it and reports the load failed.
const installBound = 30 * time.Second

// TestNeverFreezeStuckInstall, point (c): an install command that never
// exits (for virtio_rng, found at coldplug) does not keep a device
// hotplugged meanwhile from getting its driver at once, and settle returns
// once the install command's bound has passed; the daemon's log names the
// command that was stopped.
func TestNeverFreezeStuckInstall(t *testing.T) {
	Require(t)
	vm := Start(t.Context(), t, Scenario{
		Files:   append(daemonFiles(t), File{Guest: "/etc/modprobe.d/stuck.conf", Data: []byte(stuckInstall)}),
		Devices: []string{"virtio-rng-pci"}, QMP: true, Timeout: 4 * time.Minute,
		// No settle after coldplug: it would wait for the stuck command.
		Script: sbinModprobe + startDaemon("--coldplug") + `
stuck() { ps -o pid,args | grep -v grep | grep -c 'while :; do sleep 1; done'; }
for i in $(seq 600); do [ "$(stuck)" -gt 0 ] && break; sleep 0.1; done
stuck_at=$(now)
# Past the daemon's index check interval (3 s), so that a reload check
# falls inside the stuck load before the next device comes.
sleep 5
echo "E2E:STUCK at=$stuck_at running=$(stuck)"
# The host now hotplugs a virtio keyboard (PCI device 1af4:1052).
kbd() { grep -l 0x1052 /sys/bus/pci/devices/*/device | wc -l; }
for i in $(seq 400); do [ "$(kbd)" -gt 0 ] && break; sleep 0.05; done
seen=$(now)
for i in $(seq 400); do [ "$(cat /sys/module/virtio_input/initstate 2>/dev/null)" = live ] && break; sleep 0.05; done
live=$(now)
echo "E2E:HOTPLUG device=$(kbd) seen=$seen live=$live state=$(cat /sys/module/virtio_input/initstate 2>/dev/null || echo absent) stuck=$(stuck)"
t0=$(now); modautoload settle --timeout 60s; rc=$?; t1=$(now)
echo "E2E:SETTLE rc=$rc start=$t0 end=$t1"
# The install command is reported failed only once it is gone.
for i in $(seq 30); do [ "$(stuck)" = 0 ] && break; sleep 0.1; done
echo "E2E:LEFT $(stuck)"
echo "E2E:RNG $(cat /sys/module/virtio_rng/initstate 2>/dev/null || echo absent)"
echo "E2E:STATUS $(timeout -s KILL 20 modautoload status --json)"
` + daemonLog,
	})
	st := kv(vm.Await("STUCK"))
	if st["running"] == "0" {
		vm.Wait()
		t.Fatal("the install command for virtio_rng never ran: the stuck install was not exercised")
	}
	if _, err := vm.QMP().Execute(t.Context(), "device_add", map[string]any{"driver": "virtio-keyboard-pci", "id": "kbd1"}); err != nil {
		t.Fatalf("device_add: %v", err)
	}
	res := vm.Wait()
	checkHelper(t, res)
	stuckAt := st["at"]

	hot := kv(res.Value("HOTPLUG"))
	if hot["device"] == "0" {
		t.Fatalf("the hotplugged virtio keyboard never appeared on the PCI bus (%s)", res.Value("HOTPLUG"))
	}
	if hot["state"] != "live" {
		t.Errorf("virtio_input %s 20 s after its device appeared, while virtio_rng's install command ran; log:\n%s", hot["state"], logTail(res, 30))
	} else {
		took := span(t, hot["seen"], hot["live"])
		t.Logf("virtio_input live %.2f s after its device appeared, %.1f s into the stuck install command", took, span(t, stuckAt, hot["live"]))
		if took > 5 {
			t.Errorf("virtio_input took %.2f s after its device appeared, want under 5 s", took)
		}
		if hot["stuck"] == "0" {
			t.Errorf("the install command had already ended when virtio_input went live: the overlap was not exercised")
		}
	}

	settle := kv(res.Value("SETTLE"))
	sinceStuck := span(t, stuckAt, settle["end"])
	t.Logf("settle exited %s, %.1f s after the install command started", settle["rc"], sinceStuck)
	if settle["rc"] != "0" {
		t.Errorf("settle exited %q (not settled after 60 s), want 0 within %v of the stuck install command", settle["rc"], installBound)
	} else if limit := (installBound + 15*time.Second).Seconds(); sinceStuck > limit {
		t.Errorf("settle returned %.1f s after the install command started, want under %.0f s (its bound plus slack)", sinceStuck, limit)
	}
	if left := res.Value("LEFT"); left != "0" {
		t.Errorf("%s processes of the install command still run after settle: it was not killed", left)
	}
	if rng := res.Value("RNG"); rng == "live" {
		t.Errorf("virtio_rng is live, yet its install command never loads it")
	}
	named := false
	for _, l := range res.Lines("LOG") {
		var e struct{ Level string }
		if json.Unmarshal([]byte(l), &e) != nil || e.Level != "warn" && e.Level != "error" {
			continue
		}
		if strings.Contains(l, "virtio_rng") && (strings.Contains(strings.ToLower(l), "install") || strings.Contains(l, "sleep 1")) {
			named = true
			t.Logf("daemon: %s", l)
		}
	}
	if !named {
		t.Errorf("no warning or error in the daemon's log names virtio_rng's install command; log:\n%s", logTail(res, 30))
	}
}

// TestNeverFreezeStoppedDaemonAndEMFILE, points (d) and (e), one guest:
// with the daemon stopped (SIGSTOP), the helper, run as the kernel runs
// it, gives up on the daemon within its deadline and loads the module
// itself; the daemon works again after SIGCONT. Then a daemon started with
// few file descriptors runs out of them under a pile of control
// connections, and answers again once they are gone.
func TestNeverFreezeStoppedDaemonAndEMFILE(t *testing.T) {
	Require(t)
	res := Boot(t.Context(), t, Scenario{
		Files:   append(daemonFiles(t), File{Guest: "/bin/connhold", Host: BuildBinary(t, "./e2e/guest/connhold"), Mode: 0o755}),
		Timeout: 3 * time.Minute,
		Script: freezeSetup + `
# (d) SIGSTOP: the kernel's helper must not wait for the daemon forever.
kill -STOP $DAEMON
t0=$(now); timeout -s KILL 30 /sbin/modprobe -q -- veth; rc=$?; t1=$(now)
# Read while the daemon is still stopped: it cannot have loaded veth.
echo "E2E:STOPPED rc=$rc start=$t0 end=$t1 state=$(cat /sys/module/veth/initstate 2>/dev/null || echo absent) daemon=$(sed 's/.*) //' /proc/$DAEMON/stat | cut -d' ' -f1)"
kill -CONT $DAEMON
timeout -s KILL 20 modautoload status --json >/dev/null; echo "E2E:CONT_STATUS rc=$?"
timeout -s KILL 30 /sbin/modprobe nlmon; echo "E2E:CONT_LOAD rc=$? state=$(cat /sys/module/nlmon/initstate 2>/dev/null || echo absent)"
echo "E2E:CONT_DAEMON $(timeout -s KILL 20 modautoload status --json)"

# (e) EMFILE: a daemon with 32 descriptors and 200 connections held open.
kill -TERM $DAEMON; wait $DAEMON; echo "E2E:STOP_RC $?"
(ulimit -n 32 && exec modautoload daemon --log-format json 2>>/tmp/daemon.log) &
DAEMON=$!
modautoload settle --timeout 60s; echo "E2E:LOWFD_RC $?"
echo "E2E:LOWFD limit=$(grep 'Max open files' /proc/$DAEMON/limits | tr -s ' ' | cut -d' ' -f4) idle=$(ls /proc/$DAEMON/fd | wc -l)"
timeout -s KILL 60 connhold --pid $DAEMON --conns 200 --hold 3s
t0=$(now); timeout -s KILL 20 modautoload status --json >/dev/null; rc=$?; t1=$(now)
echo "E2E:EMFILE_STATUS rc=$rc start=$t0 end=$t1"
timeout -s KILL 30 /sbin/modprobe ifb; echo "E2E:EMFILE_LOAD rc=$? state=$(cat /sys/module/ifb/initstate 2>/dev/null || echo absent)"
echo "E2E:STATUS $(timeout -s KILL 20 modautoload status --json)"
` + daemonLog,
	})
	checkFreezeSetup(t, res)

	// (d)
	stopped := kv(res.Value("STOPPED"))
	took := span(t, stopped["start"], stopped["end"])
	t.Logf("modprobe -q -- veth with the daemon stopped: exit %s after %.2f s", stopped["rc"], took)
	if stopped["daemon"] != "T" {
		t.Errorf("the daemon's state during the load was %q, want T (stopped): the test did not stop it", stopped["daemon"])
	}
	if stopped["rc"] != "0" || stopped["state"] != "live" {
		t.Errorf("modprobe -q -- veth with the daemon stopped: exit %s (137: killed after 30 s), veth %s; want 0 and live, loaded directly",
			stopped["rc"], stopped["state"])
	}
	if took >= 10 {
		t.Errorf("modprobe -q -- veth with the daemon stopped took %.2f s, want under 10 s (the 2 s wait for the daemon, then the load)", took)
	}
	if got := kv(res.Value("CONT_STATUS"))["rc"]; got != "0" {
		t.Errorf("modautoload status after SIGCONT exited %q; log:\n%s", got, logTail(res, 30))
	}
	if load := kv(res.Value("CONT_LOAD")); load["rc"] != "0" || load["state"] != "live" {
		t.Errorf("modprobe nlmon after SIGCONT: exit %s, nlmon %s; want 0 and live", load["rc"], load["state"])
	}
	throughDaemon(t, res.Value("CONT_DAEMON"), "nlmon")

	// (e)
	if got := res.Value("LOWFD_RC"); got != "0" {
		t.Fatalf("the daemon with 32 descriptors did not settle (settle exited %q); log:\n%s", got, logTail(res, 30))
	}
	low, hold := kv(res.Value("LOWFD")), kv(res.Value("HOLD"))
	t.Logf("daemon with %s descriptors (%s open when idle); connhold: %s %s", low["limit"], low["idle"], res.Value("HOLD"), res.Value("HOLD_DIAL_ERR"))
	if low["limit"] != "32" {
		t.Errorf("the daemon's descriptor limit is %q, want 32", low["limit"])
	}
	if hold["exhausted"] != "true" {
		t.Errorf("the daemon never ran out of descriptors (%s): the exhaustion was not exercised", res.Value("HOLD"))
	}
	recovered := kv(res.Value("EMFILE_STATUS"))
	if recovered["rc"] != "0" {
		t.Errorf("modautoload status after the descriptors were freed exited %q: the control server did not recover; log:\n%s", recovered["rc"], logTail(res, 30))
	} else {
		t.Logf("status answered %.2f s after the connections were closed", span(t, recovered["start"], recovered["end"]))
	}
	if load := kv(res.Value("EMFILE_LOAD")); load["rc"] != "0" || load["state"] != "live" {
		t.Errorf("modprobe ifb after the descriptors were freed: exit %s (137: killed after 30 s), ifb %s; want 0 and live", load["rc"], load["state"])
	} else {
		throughDaemon(t, res.Value("STATUS"), "ifb")
	}
}
