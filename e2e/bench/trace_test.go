package main

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modautoload/modautoload/e2e"
)

// traceSample is trimmed from a real guest's trace, with the
// "E2E:TRACE " prefix removed as Result.Lines does.
const traceSample = `             sh-93      [000] .....     5.557383: tracing_mark_write: start
  (udev-worker)-111     [000] ...1.     6.275347: sys_finit_module(fd: 5, uargs: 7fc190cc8efd, flags: 0)
  (udev-worker)-114     [000] ...1.     6.279183: sys_finit_module(fd: 5, uargs: 7fc190cc8efd, flags: 0)
  (udev-worker)-111     [001] .....     6.346034: module_load: button 
  (udev-worker)-111     [001] .....     6.360000: modlive: (async_synchronize_full+0x0/0x20)
  (udev-worker)-111     [001] .N.1.     6.363420: sys_finit_module -> 0x0
  (udev-worker)-114     [001] .N.1.     6.365060: sys_finit_module -> 0xffffffffffffffef
    kworker/1:3-133     [001] .....     8.769946: module_request: hdaudio:v1AF40022r00100101a01
 wait=1 call_site=snd_hda_codec_configure [snd_hda_codec]
       modprobe-158     [000] ...1.     8.800000: sys_finit_module(fd: 3, uargs: 55d0, flags: 0)
       modprobe-158     [000] .N.1.     8.900000: sys_finit_module -> 0xffffffffffffffed
             sh-93      [001] .....    12.215851: tracing_mark_write: settled
  (udev-worker)-116     [001] .....    12.536026: module_load: virtio_input 
  (udev-worker)-116     [001] .....    12.540000: sys_finit_module -> 0x0`

func TestTraceWindow(t *testing.T) {
	tl, err := parseTrace(strings.Split(traceSample, "\n"))
	if err != nil {
		t.Fatal(err)
	}
	w, err := tl.between("start", "settled")
	if err != nil {
		t.Fatal(err)
	}
	if w.finit != 3 {
		t.Errorf("finit = %d, want 3", w.finit)
	}
	if w.failed["EEXIST"] != 1 || w.failed["ENODEV"] != 1 || len(w.failed) != 2 {
		t.Errorf("failed = %v, want EEXIST 1, ENODEV 1", w.failed)
	}
	if strings.Join(w.loads, " ") != "button" {
		t.Errorf("loads = %v, want [button]: virtio_input came after settled", w.loads)
	}
	if strings.Join(w.requests, " ") != "hdaudio:v1AF40022r00100101a01" {
		t.Errorf("requests = %v", w.requests)
	}
	// Live at the probe, returned later; the load after the window does
	// not count.
	if want := 6.360000 - 5.557383; math.Abs(w.lastLive-want) > 1e-9 {
		t.Errorf("lastLive = %v, want %v", w.lastLive, want)
	}
	if want := 6.363420 - 5.557383; math.Abs(w.lastRet-want) > 1e-9 {
		t.Errorf("lastRet = %v, want %v", w.lastRet, want)
	}
	// Only the call that loaded a module is kept; the EEXIST and the
	// ENODEV without a module_load name none.
	if want := (call{module: "button", enter: 6.275347, load: 6.346034, live: 6.360000, exit: 6.363420}); len(w.calls) != 1 || w.calls[0] != want {
		t.Errorf("calls = %+v, want [%+v]", w.calls, want)
	}
	if _, err := tl.between("start", "hp-live"); err == nil {
		t.Error("a window to a missing marker gave no error")
	}
	// Without the kprobe a successful load has no live time: an error, not
	// a silently wrong figure.
	var noProbe []string
	for _, l := range strings.Split(traceSample, "\n") {
		if !strings.Contains(l, liveProbe) {
			noProbe = append(noProbe, l)
		}
	}
	tl, err = parseTrace(noProbe)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tl.between("start", "settled"); err == nil {
		t.Error("a load without a live event gave no error")
	}
}

// lingerTrace: the daemon's finit_module for joydev went live before the
// closing marker and returned after it, held by the kernel's wait for
// all asynchronous work; a second call went live before the marker and
// never returned before the trace was read.
const lingerTrace = `             sh-93      [000] .....     5.000000: tracing_mark_write: start
            exe-222     [000] ...1.     9.700000: sys_finit_module(fd: 9, uargs: 4a0, flags: 0)
            exe-222     [000] .....     9.842811: module_load: joydev 
            exe-222     [000] .....     9.843526: modlive: (async_synchronize_full+0x0/0x20)
            exe-223     [001] ...1.     9.800000: sys_finit_module(fd: 8, uargs: 4b0, flags: 0)
            exe-223     [001] .....     9.810000: module_load: sym53c8xx 
            exe-223     [001] .....     9.820000: modlive: (async_synchronize_full+0x0/0x20)
             sh-93      [001] .....    10.291349: tracing_mark_write: quiet
            exe-222     [000] .N.1.    11.900000: sys_finit_module -> 0x0
            exe-230     [001] ...1.    12.000000: sys_finit_module(fd: 8, uargs: 4c0, flags: 0)
            exe-230     [001] .....    12.010000: module_load: virtio_input 
            exe-230     [001] .....    12.020000: modlive: (async_synchronize_full+0x0/0x20)
            exe-230     [001] .N.1.    12.030000: sys_finit_module -> 0x0`

// A call entered in the window belongs to it whole: the module that went
// live last before the marker counts although its call returned after it
// (or not at all); a call entered after the marker does not.
func TestTraceWindowLingeringCalls(t *testing.T) {
	w := traceWindow(t, lingerTrace, "start", "quiet")
	if want := 9.843526 - 5.0; math.Abs(w.lastLive-want) > 1e-9 {
		t.Errorf("lastLive = %v, want %v (joydev)", w.lastLive, want)
	}
	if want := 11.9 - 5.0; math.Abs(w.lastRet-want) > 1e-9 {
		t.Errorf("lastRet = %v, want %v (joydev's return after the marker)", w.lastRet, want)
	}
	if w.finit != 2 || strings.Join(w.loads, " ") != "sym53c8xx joydev" {
		t.Errorf("finit %d, loads %v: want 2 calls, sym53c8xx and joydev", w.finit, w.loads)
	}
	if len(w.calls) != 1 || w.calls[0].module != "joydev" || w.calls[0].exit != 11.9 {
		t.Errorf("calls %+v: want joydev's, returned at 11.9", w.calls)
	}
}

// hotplugTrace is trimmed from a real guest's trace (udevd, the first
// hotplug): the PCI function's uevent, the virtio device's, a udevd worker
// loading virtio_input and the uevents of the input devices its init
// creates. The worker's own netlink_broadcast calls (udevd passing events
// on to its listeners) and its reads of uevent files (dev_uevent with no
// ACTION yet: "(fault)") are in it too.
const hotplugTrace = `              sh-93      [001] .....    22.950035: tracing_mark_write: hp-start 1
    kworker/u4:5-145     [000] .....    22.976068: devuevent: (dev_uevent+0x0/0x2f0) action="ACTION=add" devpath="DEVPATH=/devices/LNXSYSTM:00/LNXSYBUS:00/PNP0A03:00/device:1a/wakeup/wakeup25"
    kworker/u4:5-145     [000] .....    22.976815: uevsend: (netlink_broadcast+0x0/0x4f0)
    kworker/u4:5-145     [000] .....    22.979266: devuevent: (dev_uevent+0x0/0x2f0) action="ACTION=add" devpath="DEVPATH=/devices/pci0000:00/0000:00:1a.0"
    kworker/u4:5-145     [000] .....    22.979308: uevsend: (netlink_broadcast+0x0/0x4f0)
   (udev-worker)-120     [001] .....    22.979790: devuevent: (dev_uevent+0x0/0x2f0) action=(fault) devpath=(fault)
   (udev-worker)-120     [001] .....    22.980768: uevsend: (netlink_broadcast+0x0/0x4f0)
    kworker/u4:5-145     [000] .....    23.109609: devuevent: (dev_uevent+0x0/0x2f0) action="ACTION=add" devpath="DEVPATH=/devices/pci0000:00/0000:00:1a.0/virtio5"
    kworker/u4:5-145     [000] .....    23.109685: uevsend: (netlink_broadcast+0x0/0x4f0)
    kworker/u4:5-145     [000] .....    23.110225: devuevent: (dev_uevent+0x0/0x2f0) action="ACTION=bind" devpath="DEVPATH=/devices/pci0000:00/0000:00:1a.0"
    kworker/u4:5-145     [000] .....    23.110252: uevsend: (netlink_broadcast+0x0/0x4f0)
   (udev-worker)-120     [001] .....    23.111156: devuevent: (dev_uevent+0x0/0x2f0) action=(fault) devpath=(fault)
   (udev-worker)-120     [001] .....    23.113177: uevsend: (netlink_broadcast+0x0/0x4f0)
   (udev-worker)-120     [001] ...1.    23.115620: sys_finit_module(fd: 5, uargs: 7fc0321e0efd, flags: 0)
   (udev-worker)-120     [001] .....    23.124403: module_load: virtio_input 
   (udev-worker)-120     [001] .....    23.126507: devuevent: (dev_uevent+0x0/0x2f0) action="ACTION=add" devpath="DEVPATH=/devices/pci0000:00/0000:00:1a.0/virtio5/input/input7"
   (udev-worker)-120     [001] .....    23.126624: uevsend: (netlink_broadcast+0x0/0x4f0)
   (udev-worker)-120     [001] .....    23.177933: devuevent: (dev_uevent+0x0/0x2f0) action="ACTION=bind" devpath="DEVPATH=/devices/pci0000:00/0000:00:1a.0/virtio5"
   (udev-worker)-120     [001] .....    23.177957: uevsend: (netlink_broadcast+0x0/0x4f0)
   (udev-worker)-120     [001] .....    23.178064: uevsend: (netlink_broadcast+0x0/0x4f0)
   (udev-worker)-120     [001] .....    23.178158: modlive: (async_synchronize_full+0x0/0x20)
   (udev-worker)-120     [001] .N.1.    23.178460: sys_finit_module -> 0x0
   (udev-worker)-119     [001] .....    23.180135: uevsend: (netlink_broadcast+0x0/0x4f0)
           rmmod-191     [001] .....    24.304277: devuevent: (dev_uevent+0x0/0x2f0) action="ACTION=remove" devpath="DEVPATH=/devices/pci0000:00/0000:00:1a.0/virtio5/input/input7"
           rmmod-191     [001] .....    24.304330: uevsend: (netlink_broadcast+0x0/0x4f0)
              sh-93      [001] .....    25.950035: tracing_mark_write: hp-end 1`

const (
	hotplugPCI    = "/devices/pci0000:00/0000:00:1a.0"
	hotplugVirtio = "/devices/pci0000:00/0000:00:1a.0/virtio5"
)

func hotplugWindow(t *testing.T, trace string) window {
	t.Helper()
	return traceWindow(t, trace, "hp-start 1", "hp-end 1")
}

// traceWindow parses trace and returns its window between two markers.
func traceWindow(t *testing.T, trace, from, to string) window {
	t.Helper()
	tl, err := parseTrace(strings.Split(trace, "\n"))
	if err != nil {
		t.Fatal(err)
	}
	w, err := tl.between(from, to)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestUevents(t *testing.T) {
	w := hotplugWindow(t, hotplugTrace)
	// The faulted reads are no uevents; the workers' own broadcasts are
	// no uevent's emission.
	want := []uevent{
		{"add", "/devices/LNXSYSTM:00/LNXSYBUS:00/PNP0A03:00/device:1a/wakeup/wakeup25", 22.976068, 22.976815},
		{"add", hotplugPCI, 22.979266, 22.979308},
		{"add", hotplugVirtio, 23.109609, 23.109685},
		{"bind", hotplugPCI, 23.110225, 23.110252},
		{"add", hotplugVirtio + "/input/input7", 23.126507, 23.126624},
		{"bind", hotplugVirtio, 23.177933, 23.177957},
		{"remove", hotplugVirtio + "/input/input7", 24.304277, 24.304330},
	}
	if !slices.Equal(w.uevents, want) {
		t.Errorf("uevents:\n got %+v\nwant %+v", w.uevents, want)
	}
}

func TestTimeHotplug(t *testing.T) {
	w := hotplugWindow(t, hotplugTrace)
	h, err := timeHotplug(w, hotplugPCI, hotplugVirtio, "virtio_input")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"probe", h.probe, 23.109685 - 22.979308},
		{"reaction", h.reaction, 23.115620 - 23.109685},
		{"load", h.load, 23.178158 - 23.115620},
		{"total", h.total(), 23.178158 - 22.979308},
	} {
		if math.Abs(c.got-c.want) > 1e-9 {
			t.Errorf("%s = %.6f, want %.6f", c.name, c.got, c.want)
		}
	}

	for _, c := range []struct {
		name, trace, dev, driver, want string
	}{
		// The input device appears during the load: the load cannot be
		// a reaction to it.
		{"load before the uevent", hotplugTrace, hotplugVirtio + "/input/input7", "virtio_input", "before the uevent"},
		{"another driver", hotplugTrace, hotplugVirtio, "virtio_net", "no finit_module call loaded virtio_net"},
		{"no such device", hotplugTrace, hotplugVirtio + "x", "virtio_input", "kprobes set"},
		{"not broadcast", strings.Replace(hotplugTrace, "23.109685: uevsend", "23.109685: other", 1), hotplugVirtio, "virtio_input", "not broadcast"},
		{"init failed", strings.Replace(hotplugTrace, "sys_finit_module -> 0x0", "sys_finit_module -> 0xffffffffffffffed", 1), hotplugVirtio, "virtio_input", "ENODEV"},
	} {
		_, err := timeHotplug(hotplugWindow(t, c.trace), hotplugPCI, c.dev, c.driver)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want one saying %q", c.name, err, c.want)
		}
	}
}

// TestParseHotplugs runs the guest's whole report through: hotplugs
// windows, each the captured one moved later in time.
func TestParseHotplugs(t *testing.T) {
	var lines []string
	res := &e2e.Result{}
	for i := 1; i <= hotplugs; i++ {
		for _, l := range strings.Split(hotplugTrace, "\n") {
			m := traceLine.FindStringSubmatchIndex(l)
			ts, err := strconv.ParseFloat(l[m[4]:m[5]], 64)
			if err != nil {
				t.Fatal(err)
			}
			l = l[:m[4]] + fmt.Sprintf("%.6f", ts+float64(10*i)) + l[m[5]:]
			lines = append(lines, strings.NewReplacer("hp-start 1", fmt.Sprintf("hp-start %d", i), "hp-end 1", fmt.Sprintf("hp-end %d", i)).Replace(l))
		}
		res.Markers = append(res.Markers, e2e.Marker{Key: "HOTPLUG", Value: fmt.Sprintf("%d %s %s", i, hotplugPCI, hotplugVirtio)})
	}
	tl, err := parseTrace(lines)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := parseHotplugs(res, tl)
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != hotplugs {
		t.Fatalf("%d hotplugs, want %d", len(hs), hotplugs)
	}
	for i, h := range hs {
		if math.Abs(h.reaction-(23.115620-23.109685)) > 1e-6 {
			t.Errorf("hotplug %d: reaction %.6f", i+1, h.reaction)
		}
	}

	for _, c := range []struct {
		name, line, want string
	}{
		{"driver never bound", fmt.Sprintf("%d %s -", hotplugs, hotplugPCI), "did not bind"},
		{"device never appeared", fmt.Sprintf("%d - -", hotplugs), "never appeared"},
		{"out of order", fmt.Sprintf("1 %s %s", hotplugPCI, hotplugVirtio), "want 5"},
	} {
		bad := &e2e.Result{Markers: slices.Clone(res.Markers)}
		bad.Markers[hotplugs-1].Value = c.line
		if _, err := parseHotplugs(bad, tl); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want one saying %q", c.name, err, c.want)
		}
	}
	short := &e2e.Result{Markers: res.Markers[:hotplugs-1]}
	if _, err := parseHotplugs(short, tl); err == nil {
		t.Error("a missing hotplug gave no error")
	}
}

func TestParseAgentCPU(t *testing.T) {
	user, sys, procs, err := parseAgentCPU("AGENT_CPU", "121 1951 16")
	if err != nil || user != 1.21 || sys != 19.51 || procs != 16 {
		t.Errorf("parseAgentCPU = %v %v %v %v, want 1.21 19.51 16", user, sys, procs, err)
	}
	for _, bad := range []string{"", "1 2", "1 2 3 4", "1 x 3", "-1 2 3"} {
		if _, _, _, err := parseAgentCPU("AGENT_CPU", bad); err == nil {
			t.Errorf("parseAgentCPU(%q) gave no error", bad)
		}
	}
}

func TestParseSecond(t *testing.T) {
	result := func(lines ...string) *e2e.Result {
		var r e2e.Result
		for _, l := range lines {
			k, v, _ := strings.Cut(l, " ")
			r.Markers = append(r.Markers, e2e.Marker{Key: k, Value: v})
		}
		return &r
	}
	agent := approach{hotplug: true}
	good := []string{"SECOND_STALE ", "SECOND_LEFT ", "SECOND_SETTLE_RC 0", "SECOND_CPU 48 438 1", "SECOND_DONE 31.63 35.75", "SECOND_MODULES e1000 virtio_pci"}
	p, err := parseSecond(result(good...), agent)
	if err != nil || p.user != 0.48 || p.sys != 4.38 || p.procs != 1 || math.Abs(p.done-4.12) > 1e-9 || len(p.left) != 0 || strings.Join(p.modules, " ") != "e1000 virtio_pci" {
		t.Errorf("parseSecond = %+v, %v", p, err)
	}
	if p, err := parseSecond(result(append(good, "SECOND_LEFT floppy")...), agent); err != nil || strings.Join(p.left, " ") != "floppy" {
		t.Errorf("modules left: %+v, %v", p, err)
	}
	// kmod's loop has no agent: its shell's own times, no process.
	if _, err := parseSecond(result(append(good, "SECOND_CPU 48 438 0")...), approach{}); err != nil {
		t.Errorf("a loop's CPU: %v", err)
	}
	for _, c := range []struct {
		name, line, want string
	}{
		{"first agent still running", "SECOND_STALE 97", "still running"},
		{"settle failed", "SECOND_SETTLE_RC 1", "SECOND_SETTLE_RC 1"},
		{"agent not read", "SECOND_CPU 0 0 0", "no process of the agent"},
		{"no CPU", "SECOND_CPU ", "did not finish"},
		{"bad CPU", "SECOND_CPU 1 2", "E2E:SECOND_CPU"},
		{"no times", "SECOND_DONE 31.63", "SECOND_DONE"},
		{"bad time", "SECOND_DONE x 35.75", "SECOND_DONE"},
		{"time backwards", "SECOND_DONE 35.75 31.63", "SECOND_DONE"},
		{"nothing loaded", "SECOND_MODULES ", "loaded no module"},
	} {
		// The last line of a key is its value.
		if _, err := parseSecond(result(append(good, c.line)...), agent); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want one saying %q", c.name, err, c.want)
		}
	}
}

// The second coldplug's E2E lines never override the first pass's (a
// key's value is its last line), and it writes no trace marker.
func TestSecondColdplugKeys(t *testing.T) {
	for _, a := range []approach{udevdApproach(&udevBundle{version: "252.39-1"}), kmodLoop, mdev, modautoloadApproach("", "")} {
		s := secondColdplug(a)
		for _, line := range strings.Split(s, "\n") {
			for rest := line; ; {
				_, after, ok := strings.Cut(rest, "E2E:")
				if !ok {
					break
				}
				if !strings.HasPrefix(after, "SECOND_") {
					t.Errorf("%s: the second coldplug prints E2E:%s", a.id, strings.Fields(after)[0])
				}
				rest = after
			}
		}
		if strings.Contains(s, "mark ") {
			t.Errorf("%s: the second coldplug writes a trace marker", a.id)
		}
	}
	if !strings.Contains(prologue, "randomize_va_space") {
		t.Error("address randomization stays on: the second agent's code would not be where the first's was")
	}
}

func TestHostOthers(t *testing.T) {
	t0 := time.Unix(1000, 0)
	before := hostCPU{at: t0, busy: 100, ours: 40, ok: true}
	// 10 s: the host was busy 15 s, 12 of them ours.
	after := hostCPU{at: t0.Add(10 * time.Second), busy: 115, ours: 52, ok: true}
	if got := after.othersSince(before); math.Abs(got-0.3) > 1e-9 {
		t.Errorf("othersSince = %v, want 0.3 cores", got)
	}
	if got := after.othersSince(hostCPU{at: t0}); got != -1 {
		t.Errorf("othersSince an unread reading = %v, want -1", got)
	}
}

func TestStatFormat(t *testing.T) {
	r := &result{samples: []*sample{{coldplug: 6.5}, {coldplug: 6.1}, {coldplug: 7.25}}}
	st := r.stat(func(s *sample) float64 { return s.coldplug })
	if got := st.format(2); got != "6.50 (6.10–7.25)" {
		t.Errorf("format = %q", got)
	}
	same := &result{samples: []*sample{{finit: 67}, {finit: 67}}}
	if got := same.stat(func(s *sample) float64 { return float64(s.finit) }).format(0); got != "67" {
		t.Errorf("equal rounds format as %q, want 67", got)
	}
	if got := (&result{}).stat(func(s *sample) float64 { return s.coldplug }).format(1); got != "n/a" {
		t.Errorf("no rounds format as %q", got)
	}
}

func TestHasCommand(t *testing.T) {
	usage := []byte("usage: modautoload COMMAND [FLAGS]\n\ncommands:\n  daemon     load modules for uevents\n  modprobe   load\n\nmodautoload --version prints the version\n")
	if !hasCommand(usage, "daemon") || hasCommand(usage, "settle") || hasCommand(usage, "usage:") {
		t.Error("hasCommand misreads the command list")
	}
}
