package daemon

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/modautoload/modautoload/loader/loadertest"
)

// queueState is how many events are queued and being handled, and how
// many have been handled, without Status (which reads the seqnum file).
func (r *rig) queueState() (queued, busy int, handled uint64) {
	r.d.mu.Lock()
	defer r.d.mu.Unlock()
	return r.d.queue.queued, r.d.queue.busy, r.d.handled.Load()
}

// A failure is the answer for every later event of the same burst, not
// only for those that shared the failed load: the burst lasts while any
// work is left (here a device whose init has not returned), not until
// the event that failed is done.
func TestFailureHeldForTheRestOfTheBurst(t *testing.T) {
	release := make(chan struct{})
	r := newRig(t, "", func(_ *Config, k *loadertest.Kernel) {
		k.SetModule("slow", loadertest.Module{During: func() { <-release }})
		k.SetModule("bad", loadertest.Module{Fail: unix.ENODEV})
	})
	// Before the rig's stop (cleanups run last first), which waits for
	// the init.
	released := false
	t.Cleanup(func() {
		if !released {
			close(release)
		}
	})
	r.send("add", "/devices/slow0", "dev:slow0")
	eventually(t, "slow in the kernel", func() bool { return r.kernel.CallsOf("slow") == 1 })
	r.send("add", "/devices/bad0", "dev:bad0")
	eventually(t, "bad0's event done beside slow0's", func() bool {
		q, busy, handled := r.queueState()
		return q == 0 && busy == 1 && handled == 2
	})
	// The kernel would load bad now: asking it again would show.
	r.kernel.SetModule("bad", loadertest.Module{})
	r.send("add", "/devices/bad1", "dev:bad1")
	eventually(t, "bad1's event done beside slow0's", func() bool {
		q, busy, handled := r.queueState()
		return q == 0 && busy == 1 && handled == 3
	})
	if n := r.kernel.CallsOf("bad"); n != 1 || r.live("bad") {
		t.Errorf("bad handed to the kernel %d times in one burst (live %v), want once", n, r.live("bad"))
	}
	released = true
	close(release)
	r.settle()
	// The burst is over: a later, distinct event may try once more.
	r.send("add", "/devices/bad2", "dev:bad2")
	r.settle()
	if n := r.kernel.CallsOf("bad"); n != 2 || !r.live("bad") {
		t.Errorf("bad handed to the kernel %d times, live %v, after the burst; want 2, true", n, r.live("bad"))
	}
}

// A resync is work like any other: a burst that ends with one ends when
// its scan is done, even if the scan finds nothing to queue, and a
// failure in it is not the answer to a later, distinct event.
func TestBurstEndsWithAResync(t *testing.T) {
	r := newRig(t, "", func(_ *Config, k *loadertest.Kernel) {
		k.SetModule("bad", loadertest.Module{Fail: unix.ENODEV})
	})
	if err := os.MkdirAll(filepath.Join(r.kernel.Sysfs, "devices"), 0o755); err != nil {
		t.Fatal(err)
	}
	p := newSeqnumPipe(t, r.kernel.Sysfs)
	r.src.Overrun()
	fd := p.await(t) // the resync's scan waits for the seqnum
	r.sendUnannounced("add", "/devices/bad0", "dev:bad0")
	eventually(t, "bad0's event done during the resync", func() bool {
		q, busy, handled := r.queueState()
		return q == 0 && busy == 0 && handled == 1
	})
	if n := r.kernel.CallsOf("bad"); n != 1 {
		t.Fatalf("bad handed to the kernel %d times, want 1", n)
	}
	p.write(t, fd, 1) // sysfs has no device: the scan queues nothing
	p.end(t, 1)
	r.settle()
	r.kernel.SetModule("bad", loadertest.Module{})
	r.send("add", "/devices/bad1", "dev:bad1")
	r.settle()
	if n := r.kernel.CallsOf("bad"); n != 2 || !r.live("bad") {
		t.Errorf("bad handed to the kernel %d times, live %v, after a burst that ended with a resync; want 2, true", n, r.live("bad"))
	}
}
