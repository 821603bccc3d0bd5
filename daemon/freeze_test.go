package daemon

import (
	"context"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/modautoload/modautoload/loader/loadertest"
	"github.com/modautoload/modautoload/loader/modlist"
)

// frequentChecks makes every use of the resolver look for changed files,
// which before took the resolver's write lock.
func frequentChecks(c *Config, _ *loadertest.Kernel) { c.Resolver.Interval = time.Millisecond }

// A module whose init asks the kernel for another module (the crypto API
// does, through request_module()) re-enters the daemon through the
// modprobe helper while its own load is in progress: that request must be
// served, or neither ever finishes.
func TestRequestModuleFromInitIsServed(t *testing.T) {
	r := newRig(t, "", frequentChecks)
	inner := make(chan Response, 1)
	r.kernel.SetModule("outer", loadertest.Module{Init: 20 * time.Millisecond, During: func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		inner <- r.d.Load(ctx, Request{Op: "load", Name: "inner"})
	}})
	r.send("add", "/devices/outer0", "dev:outer0")
	select {
	case resp := <-inner:
		if !resp.OK {
			t.Fatalf("the init's request failed: %+v", resp)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the request from inside an init was not served")
	}
	r.settle()
	if !r.live("outer") || !r.live("inner") {
		t.Errorf("outer live %v, inner live %v", r.live("outer"), r.live("inner"))
	}
}

// One slow init holds back only its own callers: another device's module
// loads meanwhile, however often the resolver looks for changed files.
func TestSlowLoadDoesNotStallOthers(t *testing.T) {
	r := newRig(t, "", frequentChecks)
	release := make(chan struct{})
	// Runs before the rig's stop (cleanups run last first), which waits
	// for the init.
	t.Cleanup(func() { close(release) })
	r.kernel.SetModule("slow", loadertest.Module{During: func() { <-release }})
	r.send("add", "/devices/slow0", "dev:slow0")
	eventually(t, "slow handed to the kernel", func() bool { return r.kernel.CallsOf("slow") > 0 })
	time.Sleep(20 * time.Millisecond) // past the check interval
	start := time.Now()
	r.send("add", "/devices/a0", "dev:a0")
	for !r.live("a") {
		if time.Since(start) > 2*time.Second {
			t.Fatalf("a not live after %s while slow was initializing", time.Since(start))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if r.live("slow") {
		t.Error("slow was already live: the test proved nothing")
	}
}

// A burst ends when the daemon is idle, whichever work ended last: a
// failure in a burst that ended with a helper's load, or with the static
// lists after coldplug, is not the answer to a later, distinct event.
func TestBurstEndsWhateverWorkEndsLast(t *testing.T) {
	for _, c := range []struct {
		name   string
		config func(*Config, *loadertest.Kernel)
		start  func(*rig) // the work that ends after bad failed
	}{
		{"a helper's load", nil, func(r *rig) {
			done := make(chan Response, 1)
			go func() { done <- r.d.Load(context.Background(), Request{Op: "load", Name: "slow"}) }()
			eventually(r.t, "the helper's load of slow in the kernel", func() bool { return r.kernel.CallsOf("slow") == 1 })
			r.send("add", "/devices/bad0", "dev:bad0")
			<-done
		}},
		{"the static lists after coldplug", func(c *Config, k *loadertest.Kernel) {
			c.Coldplug = true
			device(k, "bad0", "dev:bad0")
			c.Static = []modlist.Entry{{Name: "slow", File: "/etc/modules-load.d/x.conf", Line: 1}}
		}, func(*rig) {}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, "", func(cfg *Config, k *loadertest.Kernel) {
				k.SetModule("bad", loadertest.Module{Fail: unix.ENODEV, Init: 20 * time.Millisecond})
				k.SetModule("slow", loadertest.Module{Init: 500 * time.Millisecond})
				if c.config != nil {
					c.config(cfg, k)
				}
			})
			c.start(r)
			r.settle()
			if n := r.kernel.CallsOf("bad"); n != 1 || !r.live("slow") {
				t.Fatalf("%d loads of bad, slow live %v: want 1, true", n, r.live("slow"))
			}
			r.kernel.SetModule("bad", loadertest.Module{})
			r.send("add", "/devices/bad1", "dev:bad1")
			r.settle()
			if n := r.kernel.CallsOf("bad"); n != 2 || !r.live("bad") {
				t.Errorf("%d loads of bad, live %v, after a later event: want 2, true", n, r.live("bad"))
			}
		})
	}
}

// A failure is remembered for the burst of events that shares it, but an
// explicit request (the command line, the kernel's helper) asks the
// kernel again: a corrected "modprobe bad good=1" must not get the old
// error without the kernel being asked.
func TestExplicitRequestRetriesAFailure(t *testing.T) {
	r := newRig(t, "", nil)
	r.kernel.SetModule("bad", loadertest.Module{Fail: unix.EINVAL, Init: 200 * time.Millisecond})
	// A slow device keeps the burst open while we ask.
	r.kernel.SetModule("slow", loadertest.Module{Init: time.Second})
	r.send("add", "/devices/slow0", "dev:slow0")
	r.send("add", "/devices/bad0", "dev:bad0")
	r.send("add", "/devices/bad1", "dev:bad1")
	deadline := time.Now().Add(2 * time.Second)
	for r.d.Status().Modules["bad"].State != "failed" {
		if time.Now().After(deadline) {
			t.Fatal("bad never failed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := r.kernel.CallsOf("bad"); n != 1 {
		t.Fatalf("%d loads of bad for two events of one burst", n)
	}
	r.kernel.SetModule("bad", loadertest.Module{})
	resp := r.d.Load(context.Background(), Request{Op: "load", Name: "bad", Params: "good=1"})
	if !resp.OK {
		t.Errorf("explicit request: %+v", resp)
	}
	if n := r.kernel.CallsOf("bad"); n != 2 {
		t.Errorf("%d loads of bad after an explicit request, want 2", n)
	}
}

// The status accounts for memory from both sides: the kernel's count and
// the Go runtime's.
func TestStatusAccountsForMemory(t *testing.T) {
	r := newRig(t, "", nil)
	runtime.GC()
	m := r.d.Status().Memory
	if m.RSSKiB <= 0 || m.AnonKiB <= 0 || m.Threads <= 0 {
		t.Errorf("kernel figures missing: %+v", m)
	}
	if m.Procs != int64(runtime.GOMAXPROCS(0)) {
		t.Errorf("procs %d, GOMAXPROCS %d", m.Procs, runtime.GOMAXPROCS(0))
	}
	if m.HeapObjects == 0 || m.Stacks == 0 || m.GCCycles == 0 || m.GCCPUSeconds <= 0 {
		t.Errorf("runtime figures missing: %+v", m)
	}
	if m.HeapObjects > uint64(m.RSSKiB)<<10 {
		t.Errorf("heap in use %d bytes, more than the resident %d KiB: %+v", m.HeapObjects, m.RSSKiB, m)
	}
}
