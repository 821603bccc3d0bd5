package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/modautoload/modautoload/loader"
	"github.com/modautoload/modautoload/loader/loadertest"
)

// sendUnannounced sends a kernel event through the socket and leaves the
// seqnum file alone: with a seqnumPipe, the test says what it reads.
func (r *rig) sendUnannounced(action, devpath, modalias string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	r.src.SendKernel(fmt.Appendf(nil, "%s@%s\x00ACTION=%s\x00DEVPATH=%s\x00SUBSYSTEM=test\x00SEQNUM=%d\x00MODALIAS=%s\x00",
		action, devpath, action, devpath, r.seq, modalias))
}

// Settle waits for every event the kernel had issued when it was asked,
// not only for the ones the daemon has read: an event still in the
// socket is work to come.
func TestSettleWaitsForEventsStillInTheSocket(t *testing.T) {
	r := newRig(t, "", nil)
	p := newSeqnumPipe(t, r.kernel.Sysfs)
	p.end(t, 1) // the kernel has issued event 1; the daemon has not read it
	ctx, cancel := context.WithTimeout(context.Background(), 2*settleQuiet)
	defer cancel()
	err := r.d.Settle(ctx)
	if err == nil || !strings.Contains(err.Error(), "seqnum 0 of 1") {
		t.Fatalf("settle with event 1 unread: %v; want it not settled at seqnum 0 of 1", err)
	}
	r.sendUnannounced("add", "/devices/a0", "dev:a0")
	r.settle()
	if !r.live("a") {
		t.Error("settled before the event's module was live")
	}
}

// An event the kernel issues while settle waits out its quiet spell (a
// cascade: a loaded driver's new device) starts the wait over, even if
// the daemon is idle again by the end of the spell or has not read it.
func TestSettleStartsOverForAnEventDuringTheQuietSpell(t *testing.T) {
	r := newRig(t, "", nil)
	p := newSeqnumPipe(t, r.kernel.Sysfs)
	settled := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		settled <- r.d.Settle(ctx)
	}()
	// nextRead waits for settle's next read of the seqnum; settle must
	// not return meanwhile.
	nextRead := func(why string) int {
		t.Helper()
		type read struct {
			fd  int
			err error
		}
		got := make(chan read, 1)
		go func() { fd, err := p.reader(); got <- read{fd, err} }()
		select {
		case err := <-settled:
			t.Fatalf("settled (%v) %s", err, why)
		case rd := <-got:
			if rd.err != nil {
				t.Fatal(rd.err)
			}
			return rd.fd
		}
		return -1
	}
	// The target: nothing issued yet, and the daemon is idle.
	p.write(t, nextRead("before reading its target"), 0)
	// After the quiet spell the kernel has issued event 1, not yet read.
	p.write(t, nextRead("without looking at the seqnum after the quiet spell"), 1)
	// Settle must start over, with the new target.
	p.write(t, nextRead("though the kernel issued an event during the quiet spell"), 1)
	p.end(t, 1)
	r.sendUnannounced("add", "/devices/a0", "dev:a0")
	if err := <-settled; err != nil {
		t.Fatalf("settle: %v", err)
	}
	if !r.live("a") {
		t.Error("settled before the cascaded event's module was live")
	}
}

// A resync rescans sysfs for the events that were lost: until its scan
// is done the daemon is not idle, so neither settle nor --exit-when-idle
// may end while the lost devices are still being found.
func TestNotIdleDuringAResync(t *testing.T) {
	r := newRig(t, "", nil)
	p := newSeqnumPipe(t, r.kernel.Sysfs)
	r.device("pci0/lost", "dev:a-lost")
	r.src.Overrun()
	fd := p.await(t) // the resync's scan starts by reading the seqnum
	if r.d.idle() {
		t.Error("idle while a resync scans sysfs")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	err := r.d.idleAt(ctx, 0)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("settle's wait while a resync scans sysfs: %v; want it to wait", err)
	}
	p.write(t, fd, 0)
	p.end(t, 0)
	r.settle()
	if st := r.d.Status(); st.Resyncs != 1 || !r.live("a") {
		t.Errorf("%d resyncs, a live %v after the resync; want 1, true", st.Resyncs, r.live("a"))
	}
}

// A helper's load request is work from the moment it arrives, before its
// modules are in flight (while its name is being resolved): settle and
// --exit-when-idle wait for it.
func TestNotIdleWhileARequestResolves(t *testing.T) {
	resolving, resolve := make(chan struct{}), make(chan struct{})
	r := newRig(t, "", func(c *Config, _ *loadertest.Kernel) {
		// The daemon opens its module database at its first lookup,
		// which is this request's.
		open := c.Resolver.Open
		c.Resolver.Open = func() (*loader.Resolver, error) {
			close(resolving)
			<-resolve
			return open()
		}
	})
	// Idle first: coldplug (none) is done.
	start, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.d.idleAt(start, 0); err != nil {
		t.Fatal(err)
	}
	answered := make(chan Response, 1)
	go func() { answered <- r.d.Load(context.Background(), Request{Op: "load", Name: "dev:a0"}) }()
	<-resolving
	if r.d.idle() {
		t.Error("idle while a load request is being resolved")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	err := r.d.idleAt(ctx, 0)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("settle's wait while a load request is being resolved: %v; want it to wait", err)
	}
	close(resolve)
	if resp := <-answered; !resp.OK {
		t.Fatalf("load: %+v", resp)
	}
	if !r.d.idle() {
		t.Error("not idle once the request was answered")
	}
}
