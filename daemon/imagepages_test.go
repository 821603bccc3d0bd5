package daemon

import (
	"strings"
	"testing"
	"time"

	"github.com/modautoload/modautoload/loader/loadertest"
)

// imageCanary lives in the executable's writable data segment: a drop
// that threw that segment's private copies away would bring back 1.
var imageCanary = [4]uint64{1, 2, 3, 4}

func TestDropImagePagesKeepsPrivateCopies(t *testing.T) {
	imageCanary[0] = 42
	kib, err := dropImagePages()
	if err != nil {
		t.Fatal(err)
	}
	if kib <= 0 {
		t.Fatalf("dropped %d KiB of the test binary; its read-only data was surely mapped", kib)
	}
	if imageCanary[0] != 42 || imageCanary[3] != 4 {
		t.Fatalf("data segment after the drop: %v, want [42 2 3 4]", imageCanary)
	}
	// The code runs on, faulting back what it needs.
	if got := strings.Repeat("ab", 3); got != "ababab" {
		t.Fatal(got)
	}
}

func TestParseMappingLine(t *testing.T) {
	m, ok := parseMappingLine([]byte("00400000-005bb000 r-xp 00000000 fd:01 4952                               /bin/modautoload"))
	if !ok || m.start != 0x400000 || m.end != 0x5bb000 || m.perms != "r-xp" || m.major != 0xfd || m.minor != 1 || m.inode != 4952 {
		t.Fatalf("got %+v, %v", m, ok)
	}
	for _, line := range []string{
		"Rss:                 764 kB",
		"00400000-005bb000 r-xp 00000000 fd:01",             // no inode
		"005bb000-00400000 r-xp 00000000 fd:01 4952",        // ends before it starts
		"00400000-005bb000 r-x 00000000 fd:01 4952",         // perms
		"zz400000-005bb000 r-xp 00000000 fd:01 4952",        // address
		"00400000-005bb000 r-xp 00000000 fd01 4952",         // device
		"00400000-005bb000 r-xp 00000000 fd:01 -4952 /x",    // inode
		"VmFlags: rd ex mr mw me dw sd",                     // a smaps key
		"00400000-005bb000-00600000 r-xp 00000000 fd:01 49", // address
	} {
		if m, ok := parseMappingLine([]byte(line)); ok {
			t.Errorf("%q parsed as %+v", line, m)
		}
	}
}

// dropRig is a rig whose drops of the executable's pages are recorded (as
// times since it started), where module a's finit_module lingers in the
// kernel after a is live.
func dropRig(t *testing.T, linger time.Duration, coldplug bool) (*rig, chan time.Duration, time.Time) {
	drops := make(chan time.Duration, 16)
	start := time.Now()
	r := newRig(t, "", func(c *Config, k *loadertest.Kernel) {
		c.dropImage = func() (int64, error) { drops <- time.Since(start); return 1, nil }
		c.Coldplug = coldplug
		k.SetModule("a", loadertest.Module{Linger: linger})
		device(k, "/devices/a0", "dev:a0")
	})
	return r, drops, start
}

func collectDrops(drops chan time.Duration, d time.Duration) []time.Duration {
	var got []time.Duration
	for timeout := time.After(d); ; {
		select {
		case x := <-drops:
			got = append(got, x)
		case <-timeout:
			return got
		}
	}
}

// The executable's pages are dropped once the work is over and no more
// came for dropQuiet, and again when its calls have left the kernel (a
// finit_module lingering after the module went live); not once per
// piece of work that comes in quick succession.
func TestImageDroppedAfterWorkAndAgainAfterTheKernel(t *testing.T) {
	const linger = 900 * time.Millisecond
	r, drops, start := dropRig(t, linger, false)
	r.send("add", "/devices/a0", "dev:a0")
	for !r.live("a") { // not settle, which waits a quiet spell of its own
		if time.Since(start) > linger/2 {
			t.Fatal("a is not live")
		}
		time.Sleep(time.Millisecond)
	}
	for range 3 {
		time.Sleep(dropQuiet / 4)
		r.send("change", "/devices/a0", "dev:a0")
	}
	lastWork := time.Since(start) // the last event's handling ends later
	got := collectDrops(drops, linger+2*time.Second)
	if len(got) != 2 {
		t.Fatalf("drops %v, want 2: one after the work, one after the call's return at %v", got, linger)
	}
	if got[0] < lastWork+dropQuiet {
		t.Errorf("first drop %v after the first event, less than %v after the last work (%v)", got[0], dropQuiet, lastWork)
	}
	if got[0] >= linger {
		t.Errorf("first drop %v after the first event: it waited for the call (%v)", got[0], linger)
	}
	if got[1] < linger {
		t.Errorf("second drop %v after the first event, before the call returned (%v)", got[1], linger)
	}
}

// Coldplug's work is followed by the drops too; so is later work.
func TestImageDroppedAfterColdplug(t *testing.T) {
	const linger = 900 * time.Millisecond
	r, drops, _ := dropRig(t, linger, true)
	got := collectDrops(drops, linger+2*time.Second)
	if !r.live("a") {
		t.Fatal("coldplug did not load a")
	}
	if len(got) != 2 || got[1] < linger {
		t.Fatalf("drops %v after coldplug, want 2, the second after the call's return at %v", got, linger)
	}
	r.send("change", "/devices/a0", "dev:a0")
	if got := collectDrops(drops, 3*dropQuiet); len(got) != 1 {
		t.Fatalf("drops %v after an event, want 1", got)
	}
}
