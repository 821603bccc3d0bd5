package main

import (
	"math"
	"strings"
	"testing"
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
	if want := (call{module: "button", load: 6.346034, live: 6.360000, exit: 6.363420}); len(w.calls) != 1 || w.calls[0] != want {
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
