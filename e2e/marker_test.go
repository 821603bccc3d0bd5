package e2e

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestParseMarker(t *testing.T) {
	for _, tc := range []struct {
		line string
		want Marker
		ok   bool
	}{
		{"E2E:KVER 6.1.0-56-amd64\n", Marker{"KVER", "6.1.0-56-amd64"}, true},
		{"E2E:BOOTED\r\n", Marker{"BOOTED", ""}, true},
		{"E2E:DONE rc=0", Marker{"DONE", "rc=0"}, true},
		{"[    2.345678] random: crng init doneE2E:RESULT a b  c \n", Marker{"RESULT", "a b  c"}, true},
		{"[    1.000000] nothing here\n", Marker{}, false},
		{"E2E: no key\n", Marker{}, false},
		{"E2E:bad/key x\n", Marker{}, false},
	} {
		got, ok := parseMarker(tc.line)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseMarker(%q) = %v, %v; want %v, %v", tc.line, got, ok, tc.want, tc.ok)
		}
	}
}

func TestResultLookup(t *testing.T) {
	r := &Result{Markers: []Marker{{"A", "1"}, {"B", "x"}, {"A", "2"}}}
	if got := r.Lines("A"); len(got) != 2 || got[0] != "1" || got[1] != "2" {
		t.Errorf("Lines(A) = %q", got)
	}
	if got := r.Value("A"); got != "2" {
		t.Errorf("Value(A) = %q, want the last one", got)
	}
	if got := r.Value("C"); got != "" {
		t.Errorf("Value(C) = %q, want empty", got)
	}
}

func TestProcCPU(t *testing.T) {
	for _, tc := range []struct {
		stat         string
		utime, stime time.Duration
		bad          bool
	}{
		{stat: "412 (modautoload) S 1 412 0 0 -1 4194560 1536 0 0 0 70 490 0 0 20 0 6 0 180 1261568 2048 18446744073709551615",
			utime: 700 * time.Millisecond, stime: 4900 * time.Millisecond},
		// A command name with spaces and a ')' of its own.
		{stat: "7 (a b) c) R 1 7 0 0 -1 0 0 0 0 0 893 1421 0 0 20 0 1 0 5 0 0 0",
			utime: 8930 * time.Millisecond, stime: 14210 * time.Millisecond},
		{stat: "", bad: true},
		{stat: "7 (x) R 1 7 0", bad: true},
		{stat: "7 (x) R 1 7 0 0 -1 0 0 0 0 0 -5 3 0", bad: true},
	} {
		u, s, err := procCPU(tc.stat)
		if (err != nil) != tc.bad || u != tc.utime || s != tc.stime {
			t.Errorf("procCPU(%q) = %v, %v, %v; want %v, %v, error %v", tc.stat, u, s, err, tc.utime, tc.stime, tc.bad)
		}
	}
}

// A guest kernel's first soft lockup report is kept and named in the exit
// reason, not mistaken in other lines; it asks for another boot only of a
// guest that did not finish (lockedUp), as one that did is judged as is.
func TestSoftLockupRecorded(t *testing.T) {
	boot := func(lines ...string) *VM {
		ctx, cancel := context.WithCancel(t.Context())
		t.Cleanup(cancel)
		vm := &VM{t: t, ctx: ctx, cancel: cancel, changed: make(chan struct{}), done: make(chan struct{})}
		for _, l := range lines {
			vm.addLine(l)
		}
		close(vm.done)
		return vm
	}
	first := "[   52.123456] watchdog: BUG: soft lockup - CPU#0 stuck for 48s! [sh:94]"
	stuck := boot("[    0.000000] Kernel command line: console=ttyS0 softlockup_panic=0\n", "E2E:BOOTED\r\n",
		first+"\r\n", "[   80.000001] watchdog: BUG: soft lockup - CPU#0 stuck for 74s! [sh:94]\n")
	if got := stuck.lockedUp(); got != first {
		t.Errorf("lockup %q, want the first report %q", got, first)
	}
	if got := stuck.exitReason(); !strings.Contains(got, "CPU#0 stuck for 48s") {
		t.Errorf("exit reason %q does not name the lockup", got)
	}
	if got := boot("E2E:BOOTED\n", first+"\n", "E2E:DONE rc=0\n").lockedUp(); got != "" {
		t.Errorf("a guest that finished after a lockup: %q, want no second boot", got)
	}
	if got := boot("E2E:BOOTED\n", "[    1.0] softlockup: disabled\n").lockedUp(); got != "" {
		t.Errorf("no lockup reported, yet %q", got)
	}
}
