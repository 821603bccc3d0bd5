package daemon

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/modautoload/modautoload/loader/index"
	"github.com/modautoload/modautoload/loader/loadertest"
	"github.com/modautoload/modautoload/uevent"
)

// qev is a kernel event for the queue tests; seq tells them apart.
func qev(seq uint64, devpath string) uevent.Event {
	return uevent.Event{Action: "add", DevPath: devpath, Seqnum: seq}
}

// startAll starts every event free to start and returns their seqnums.
func startAll(q *eventQueue) (map[uint64]*entry, []uint64) {
	started := map[uint64]*entry{}
	var seqs []uint64
	for e := q.start(); e != nil; e = q.start() {
		started[e.ev.Seqnum] = e
		seqs = append(seqs, e.ev.Seqnum)
	}
	slices.Sort(seqs)
	return started, seqs
}

func TestQueueOneDeviceInOrder(t *testing.T) {
	q := newEventQueue()
	for i := uint64(1); i <= 3; i++ {
		q.push(qev(i, "/devices/usb1"), false, 1)
	}
	for want := uint64(1); want <= 3; want++ {
		started, seqs := startAll(&q)
		if !slices.Equal(seqs, []uint64{want}) {
			t.Fatalf("started %v, want only %d", seqs, want)
		}
		q.finish(started[want])
	}
	if q.queued != 0 || q.busy != 0 || q.bytes != 0 || len(q.nodes) != 0 {
		t.Errorf("drained queue keeps %d queued, %d busy, %d bytes, %d nodes", q.queued, q.busy, q.bytes, len(q.nodes))
	}
}

// While one device is busy, its parents and children wait; a path that
// merely shares a prefix, or another bus, does not.
func TestQueueRelatedDevicesWait(t *testing.T) {
	q := newEventQueue()
	q.push(qev(1, "/devices/pci0/usb1"), false, 1)
	busy := q.start()
	for seq, path := range []string{
		2: "/devices/pci0/usb1",       // same device
		3: "/devices/pci0/usb1/1-1",   // a child waits for its parent
		4: "/devices/pci0/usb10",      // a prefix is not a parent
		5: "/devices/platform/serial", // unrelated
		6: "/devices/pci0",            // a parent waits for its child
	} {
		if path != "" {
			q.push(qev(uint64(seq), path), false, 1)
		}
	}
	started, seqs := startAll(&q)
	if !slices.Equal(seqs, []uint64{4, 5}) {
		t.Fatalf("started %v beside a busy /devices/pci0/usb1, want [4 5]", seqs)
	}
	q.finish(started[4])
	q.finish(started[5])
	q.finish(busy)
	// Then in arrival order among relatives: 2, then 3 (a child of 2),
	// then 6 (the parent of all).
	for _, want := range []uint64{2, 3, 6} {
		started, seqs := startAll(&q)
		if !slices.Equal(seqs, []uint64{want}) {
			t.Fatalf("started %v, want [%d]", seqs, want)
		}
		q.finish(started[want])
	}
}

// udev's rule: an event also waits for an earlier relative that is only
// queued, not just for busy ones.
func TestQueueWaitsForEarlierQueuedRelative(t *testing.T) {
	q := newEventQueue()
	q.push(qev(1, "/devices/pci0/a"), false, 1)
	a := q.start()
	q.push(qev(2, "/devices/pci0"), false, 1)   // waits for a
	q.push(qev(3, "/devices/pci0/b"), false, 1) // unrelated to a, but waits for 2
	if _, seqs := startAll(&q); len(seqs) != 0 {
		t.Fatalf("started %v while their relatives were busy or queued before them", seqs)
	}
	q.finish(a)
	started, seqs := startAll(&q)
	if !slices.Equal(seqs, []uint64{2}) {
		t.Fatalf("started %v, want the parent [2]", seqs)
	}
	q.finish(started[2])
	if _, seqs := startAll(&q); !slices.Equal(seqs, []uint64{3}) {
		t.Fatalf("started %v, want [3]", seqs)
	}
}

// A scan's event waits only for its own device and holds back no other:
// a rescan's event for a bus must not put the bus behind a stuck child.
// Rescans refresh a device's waiting scan event rather than add one.
func TestQueueScanEventsOrderedByDeviceOnly(t *testing.T) {
	q := newEventQueue()
	q.push(qev(1, "/devices/pci0/stuck"), false, 1)
	stuck := q.start()
	q.push(qev(2, "/devices/pci0"), true, 10)
	q.push(qev(3, "/devices/pci0/stuck"), true, 10)
	q.push(qev(4, "/devices/pci0/stuck"), true, 20) // the next rescan
	q.push(qev(5, "/devices/pci0/other"), false, 1)
	started, seqs := startAll(&q)
	if !slices.Equal(seqs, []uint64{2, 5}) {
		t.Fatalf("started %v beside a stuck device, want the bus's scan event and the sibling [2 5]", seqs)
	}
	if q.queued != 1 || q.bytes != 20 {
		t.Errorf("%d queued, %d bytes; want the stuck device's one scan event, refreshed to 20 bytes", q.queued, q.bytes)
	}
	q.finish(started[2])
	q.finish(started[5])
	q.finish(stuck)
	started, seqs = startAll(&q)
	if len(seqs) != 1 || started[4] == nil {
		t.Fatalf("started %v, want the refreshed scan event 4", seqs)
	}
}

// TestQueueMatchesRule drives the queue with random arrivals, starts and
// finishes over overlapping devpaths and compares what it lets start with
// the rule checked against every earlier event.
func TestQueueMatchesRule(t *testing.T) {
	paths := []string{"/a", "/a/b", "/a/b/c", "/a/bc", "/a/b/c/d", "/a//b", "/a/", "/x", "/x/y", "/x/y/z", "/"}
	related := func(a, b string) bool {
		return a == b || strings.HasPrefix(b, a+"/") || strings.HasPrefix(a, b+"/")
	}
	type modelEvent struct {
		seq     uint64
		path    string
		scan    bool
		started bool
	}
	for seed := uint64(1); seed <= 200; seed++ {
		rng := rand.New(rand.NewPCG(seed, 9))
		q := newEventQueue()
		var model []*modelEvent // unfinished, in arrival order
		busy := map[uint64]*entry{}
		var seq uint64
		for step := 0; step < 300; step++ {
			switch r := rng.IntN(10); {
			case r < 5:
				seq++
				ev := &modelEvent{seq: seq, path: paths[rng.IntN(len(paths))], scan: rng.IntN(4) == 0}
				q.push(qev(ev.seq, ev.path), ev.scan, 1)
				// A scan's event refreshes the device's waiting one.
				refreshed := false
				for i := len(model) - 1; i >= 0; i-- {
					if m := model[i]; m.path == ev.path {
						if ev.scan && m.scan && !m.started {
							m.seq, refreshed = ev.seq, true
						}
						break
					}
				}
				if !refreshed {
					model = append(model, ev)
				}
			case r < 8:
				if e := q.start(); e != nil {
					busy[e.ev.Seqnum] = e
					for _, m := range model {
						if m.seq == e.ev.Seqnum {
							m.started = true
						}
					}
				}
			default:
				for s, e := range busy {
					q.finish(e)
					delete(busy, s)
					model = slices.DeleteFunc(model, func(m *modelEvent) bool { return m.seq == s })
					break
				}
			}
			var want, got []uint64
			for i, m := range model {
				free := !m.started
				for _, earlier := range model[:i] {
					if earlier.path == m.path || (!m.scan && !earlier.scan && related(earlier.path, m.path)) {
						free = false
					}
				}
				if free {
					want = append(want, m.seq)
				}
			}
			for e := q.readyHead; e != nil; e = e.nextReady {
				got = append(got, e.ev.Seqnum)
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("seed %d step %d: free to start %v, want %v", seed, step, got, want)
			}
			if q.queued+q.busy != len(model) || q.busy != len(busy) {
				t.Fatalf("seed %d step %d: %d queued + %d busy, want %d unfinished, %d busy", seed, step, q.queued, q.busy, len(model), len(busy))
			}
		}
		for len(model) > 0 {
			e := q.start()
			if e == nil {
				for _, e := range busy {
					q.finish(e)
					delete(busy, e.ev.Seqnum)
					model = slices.DeleteFunc(model, func(m *modelEvent) bool { return m.seq == e.ev.Seqnum })
				}
				continue
			}
			busy[e.ev.Seqnum] = e
		}
		if len(q.nodes) != 0 || q.bytes != 0 || q.kernelBytes != 0 {
			t.Fatalf("seed %d: drained queue keeps %d nodes, %d bytes", seed, len(q.nodes), q.bytes)
		}
	}
}

// stuckKernel is the fake kernel with one module whose init does not
// return until the test lets it.
type stuckKernel struct {
	*loadertest.Kernel
	module  string
	entered chan struct{} // closed when the stuck load reaches the kernel
	release func()
	gate    chan struct{}
}

func (k *stuckKernel) FinitModule(f *os.File, params string, flags int) error {
	if index.ModuleName(f.Name()) == k.module {
		select {
		case <-k.entered:
		default:
			close(k.entered)
		}
		<-k.gate
	}
	return k.Kernel.FinitModule(f, params, flags)
}

// waitEntered waits, at most 10 s, for the stuck load to reach the kernel.
func (k *stuckKernel) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-k.entered:
	case <-time.After(10 * time.Second):
		t.Fatalf("the load of %s never reached the kernel", k.module)
	}
}

// stuckRig is a rig whose module (a, b or slow) hangs in init until
// released; cleanup releases it before the rig stops.
func stuckRig(t *testing.T, module string, mutate func(*Config)) (*rig, *stuckKernel) {
	t.Helper()
	var sk *stuckKernel
	r := newRig(t, "", func(c *Config, k *loadertest.Kernel) {
		gate := make(chan struct{})
		sk = &stuckKernel{Kernel: k, module: module, entered: make(chan struct{}), gate: gate,
			release: sync.OnceFunc(func() { close(gate) })}
		c.Loader.Kernel = sk
		// Stuck means stuck for the whole test, however slow the host.
		c.Loader.LiveTimeout = time.Minute
		if mutate != nil {
			mutate(c)
		}
	})
	t.Cleanup(sk.release)
	return r, sk
}

// eventually polls cond until it holds or 10 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// A device stuck in a load that hangs holds back its own later events
// and its relatives', nothing else.
func TestStuckDeviceHoldsBackOnlyItsRelatives(t *testing.T) {
	r, sk := stuckRig(t, "slow", nil)
	r.send("add", "/devices/pci0/stuck", "dev:slow")
	sk.waitEntered(t)
	r.send("change", "/devices/pci0/stuck", "dev:a1")    // itself
	r.send("add", "/devices/pci0/stuck/child", "dev:a2") // a child
	r.send("change", "/devices/pci0", "")                // its parent
	r.send("add", "/devices/pci1/other", "dev:b1")       // another device
	eventually(t, "the other device's module", func() bool { return r.live("b") })
	eventually(t, "the other device's event done", func() bool { st := r.d.Status(); return st.Handled == 2 && st.Busy == 1 })
	if st := r.d.Status(); st.Queue != 3 || st.Busy != 1 || st.QueueBytes <= 0 {
		t.Errorf("queue %d (%d bytes), busy %d; want the 3 related events queued behind the 1 stuck", st.Queue, st.QueueBytes, st.Busy)
	}
	sk.release()
	r.settle()
	if st := r.d.Status(); st.Handled != 5 || st.Queue != 0 || st.QueueBytes != 0 || !r.live("slow") {
		t.Errorf("after the stuck load ended: handled %d, queue %d (%d bytes), slow live %v", st.Handled, st.Queue, st.QueueBytes, r.live("slow"))
	}
}

// lockedBuffer collects log lines written from the daemon's goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// rigEventBytes is what the queue charges for an event the rig sends.
func rigEventBytes(t *testing.T, action, devpath, modalias string) int64 {
	t.Helper()
	ev, err := uevent.Parse(fmt.Appendf(nil, "%s@%s\x00ACTION=%s\x00DEVPATH=%s\x00SUBSYSTEM=test\x00SEQNUM=99\x00MODALIAS=%s\x00",
		action, devpath, action, devpath, modalias))
	if err != nil {
		t.Fatal(err)
	}
	return eventBytes(&ev)
}

// A device stuck in a hung load keeps its own events queued until the
// queue overflows; the resync must run all the same and handle the
// device whose event was lost.
func TestOverflowResyncsBesideStuckDevice(t *testing.T) {
	bound := 3 * rigEventBytes(t, "change", "/devices/stuck", "dev:slow")
	var log lockedBuffer
	r, sk := stuckRig(t, "slow", func(c *Config) {
		c.MaxQueueBytes, c.Jobs = bound, 2
		c.Log = zerolog.New(io.MultiWriter(zerolog.NewTestWriter(t), &log))
	})
	r.device("pci0/lost", "dev:b-lost")
	r.send("add", "/devices/stuck", "dev:slow")
	sk.waitEntered(t)
	for i := 0; i < 10; i++ {
		r.send("change", "/devices/stuck", "dev:slow")
	}
	eventually(t, "the lost device's module after the resync", func() bool { return r.live("b") })
	eventually(t, "every event read", func() bool { return r.d.Status().Events.Received == 11 })
	// The resyncs' own events for the lost device drain; the stuck
	// device's do not.
	eventually(t, "the resyncs' events handled", func() bool { return r.d.Status().Queue == 3 })
	st := r.d.Status()
	if st.Dropped != 7 || st.Resyncs == 0 || st.QueueBytes > bound {
		t.Errorf("dropped %d, resyncs %d, queue %d (%d bytes of %d); want 7 dropped, a resync, 3 queued within the bound",
			st.Dropped, st.Resyncs, st.Queue, st.QueueBytes, bound)
	}
	if n := strings.Count(log.String(), "event queue full"); n != 1 {
		t.Errorf("the overflow was logged %d times, want once", n)
	}
	sk.release()
	r.settle()
}

// storm sends n events through the fake socket while one device is stuck:
// half are its children (held back), half other devices (handled at
// once); then the stuck load ends and everything drains. It returns the
// time spent queueing and draining (not the waits around them) and the
// queue's steps per event, and logs the heap.
func storm(t *testing.T, n int) (time.Duration, float64) {
	// Module a: once released, its init takes no time.
	r, sk := stuckRig(t, "a", func(c *Config) { c.MaxQueueBytes = 1 << 40 })
	r.send("add", "/devices/stuck", "dev:a")
	sk.waitEntered(t)
	messages := make([][]byte, n)
	seq := r.seq
	for i := range messages {
		seq++
		path := fmt.Sprintf("/devices/pci0/dev%d", i)
		if i%2 == 0 {
			path = fmt.Sprintf("/devices/stuck/child%d", i)
		}
		messages[i] = fmt.Appendf(nil, "add@%s\x00ACTION=add\x00DEVPATH=%s\x00SUBSYSTEM=test\x00SEQNUM=%d\x00", path, path, seq)
	}
	os.WriteFile(filepath.Join(r.kernel.Sysfs, "kernel", "uevent_seqnum"), fmt.Appendf(nil, "%d\n", seq), 0o644)

	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc
	peakHeap := sampleHeap()

	start := time.Now()
	for _, msg := range messages {
		r.src.SendKernel(msg)
	}
	eventually(t, "the storm queued behind and beside the stuck device", func() bool {
		st := r.d.Status()
		return st.Handled == uint64(1+n/2) && st.Queue == n/2 && st.Busy == 1
	})
	took := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&ms)
	held := ms.HeapAlloc - before
	charged := r.d.Status().QueueBytes

	start = time.Now()
	sk.release()
	eventually(t, "the storm drained", func() bool {
		st := r.d.Status()
		return st.Handled == uint64(1+n) && st.Queue == 0 && st.Busy == 0
	})
	took += time.Since(start)
	peak := peakHeap()
	r.settle()

	st := r.d.Status()
	if st.Dropped != 0 || st.QueueBytes != 0 {
		t.Fatalf("storm of %d: dropped %d, %d queue bytes left", n, st.Dropped, st.QueueBytes)
	}
	r.d.mu.Lock()
	steps := float64(r.d.queue.steps) / float64(n+1)
	nodes := len(r.d.queue.nodes)
	r.d.mu.Unlock()
	if nodes != 0 {
		t.Errorf("storm of %d: %d devpath nodes left in a drained queue", n, nodes)
	}
	// The heap held while the storm waits includes the socket's copies
	// of the messages and the loader's state, so it is only compared.
	t.Logf("storm of %d events: %v (%.0f ns/event); peak heap in use %.1f MiB; %d held back: %.1f MiB live, %.1f MiB charged; %.1f queue steps/event",
		n, took.Round(time.Millisecond), float64(took.Nanoseconds())/float64(n), float64(peak)/(1<<20),
		n/2, float64(held)/(1<<20), float64(charged)/(1<<20), steps)
	return took, steps
}

// TestQueueStormIsLinear: 100,000 events queued behind and beside a stuck
// device drain at the same cost per event as 10,000. The queue's steps
// per event are the exact measure (the old queue examined every queued
// event on every wake-up); wall time is checked too, without the race
// detector's overhead.
func TestQueueStormIsLinear(t *testing.T) {
	if testing.Short() {
		t.Skip("storm of 100,000 events")
	}
	smallTook, smallSteps := storm(t, 10_000)
	bigTook, bigSteps := storm(t, 100_000)
	// Depth 3 to 4 devpaths: a handful of nodes and entries per event.
	if bigSteps > 20 || bigSteps > 1.2*smallSteps {
		t.Errorf("queue steps per event: %.1f at 100,000 events, %.1f at 10,000; want a constant below 20", bigSteps, smallSteps)
	}
	small := float64(smallTook) / 10_000
	big := float64(bigTook) / 100_000
	if !raceEnabled && big > 4*small {
		t.Errorf("%.0f ns/event at 100,000 events, %.0f at 10,000: the cost grows with the queue", big, small)
	}
}

// BenchmarkQueueStorm queues n events behind a busy device and n beside
// it, then drains them, at n = 10,000 and 100,000. The two ns/event
// figures stay close while the queue is linear; quadratic work shows as
// the second growing tenfold.
func BenchmarkQueueStorm(b *testing.B) {
	sizes := []int{10_000, 100_000}
	events := make(map[int][]uevent.Event)
	for _, n := range sizes {
		for i := range n {
			path := fmt.Sprintf("/devices/pci0/dev%d", i)
			if i%2 == 0 {
				path = fmt.Sprintf("/devices/stuck/child%d", i)
			}
			events[n] = append(events[n], qev(uint64(i), path))
		}
	}
	took := make(map[int]time.Duration)
	for b.Loop() {
		for _, n := range sizes {
			start := time.Now()
			q := newEventQueue()
			q.push(qev(0, "/devices/stuck"), false, 1)
			stuck := q.start()
			for i := range events[n] {
				q.push(events[n][i], false, 1)
				// Workers keep up with the devices beside the stuck one.
				if e := q.start(); e != nil {
					q.finish(e)
				}
			}
			q.finish(stuck)
			for e := q.start(); e != nil; e = q.start() {
				q.finish(e)
			}
			took[n] += time.Since(start)
		}
	}
	for _, n := range sizes {
		b.ReportMetric(float64(took[n].Nanoseconds())/float64(b.N*n), fmt.Sprintf("ns/event@%d", n))
	}
}

// What the queue charges for an event covers the memory it holds: the
// parsed message, the entry and the devpath nodes, with a deep devpath
// where each event brings two nodes of its own.
func TestQueueChargeCoversMemory(t *testing.T) {
	const n = 20_000
	messages := make([][]byte, n)
	for i := range messages {
		dev := fmt.Sprintf("/devices/pci0000:00/0000:00:14.0/usb1/1-%d/1-%d:1.0", i, i)
		messages[i] = fmt.Appendf(nil, "add@%s\x00ACTION=add\x00DEVPATH=%s\x00SUBSYSTEM=usb\x00DEVTYPE=usb_interface\x00"+
			"PRODUCT=46d/c52b/1211\x00TYPE=0/0/0\x00INTERFACE=3/1/1\x00MODALIAS=usb:v046DpC52Bd1211dc00dsc00dp00ic03isc01ip01in00\x00SEQNUM=%d\x00",
			dev, dev, i+2)
	}
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc
	q := newEventQueue()
	q.push(qev(1, "/devices/pci0000:00/0000:00:14.0/usb1"), false, 1)
	busy := q.start() // everything below waits for it
	for _, msg := range messages {
		ev, err := uevent.Parse(msg)
		if err != nil {
			t.Fatal(err)
		}
		q.push(ev, false, eventBytes(&ev))
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	held := int64(ms.HeapAlloc - before)
	t.Logf("%d events: %d bytes held, %d charged (%.0f and %.0f per event)", n, held, q.bytes, float64(held)/n, float64(q.bytes)/n)
	if q.queued != n || held > q.bytes {
		t.Errorf("%d events queued hold %d bytes, charged %d", q.queued, held, q.bytes)
	}
	runtime.KeepAlive(busy)
}

// coldplugDevices coldplugs n fake devices (each with a MODALIAS the
// resolver must match by wildcard) and returns the time to settle and the
// largest heap in use seen meanwhile.
func coldplugDevices(t *testing.T, n int) (time.Duration, uint64) {
	t.Helper()
	runtime.GC() // what an earlier test left is not this one's peak
	var start time.Time
	r := newRig(t, "", func(c *Config, k *loadertest.Kernel) {
		for i := range n {
			device(k, fmt.Sprintf("platform/bus%d/dev%d", i%100, i), fmt.Sprintf("dev:a%d", i))
		}
		c.Coldplug = true
		start = time.Now()
	})
	peakHeap := sampleHeap()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	err := r.d.Settle(ctx)
	took := time.Since(start)
	peak := peakHeap()
	if err != nil {
		t.Fatalf("settle after coldplug of %d devices: %v", n, err)
	}
	if st := r.d.Status(); st.Handled < uint64(n) || st.Loads.Loaded != 1 {
		t.Errorf("%d devices: handled %d events, loaded %d modules; want every device and one module", n, st.Handled, st.Loads.Loaded)
	}
	return took, peak
}

// Coldplug cost is linear in the number of devices: sysfs walk, queue,
// resolution and the already-live check, per device.
func TestColdplugScalesLinearly(t *testing.T) {
	if testing.Short() {
		t.Skip("coldplug of 20,000 devices")
	}
	smallTook, smallPeak := coldplugDevices(t, 2_000)
	bigTook, bigPeak := coldplugDevices(t, 20_000)
	t.Logf("coldplug of 2,000 devices: %s, peak heap %d KiB; of 20,000: %s, peak heap %d KiB",
		smallTook, smallPeak>>10, bigTook, bigPeak>>10)
	small := float64(smallTook) / 2_000
	big := float64(bigTook) / 20_000
	if !raceEnabled && big > 4*small {
		t.Errorf("%.0f µs/device at 20,000 devices, %.0f at 2,000: the cost grows faster than the devices", big/1e3, small/1e3)
	}
}

// sampleHeap samples the heap in use every 10 ms until the function it
// returns is called, which returns the largest figure seen.
func sampleHeap() func() uint64 {
	var peak uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	return func() uint64 {
		close(stop)
		<-sampled
		return peak
	}
}
