// Package daemon is the event loop: kernel uevents in, rule decisions,
// module loads out, with coldplug, resync after lost events, settle and
// status. It ties together uevent (the source), rules (what an event may
// load) and loader (how modules load).
package daemon

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/modautoload/modautoload/loader"
	"github.com/modautoload/modautoload/loader/modlist"
	"github.com/modautoload/modautoload/rules"
	"github.com/modautoload/modautoload/uevent"
)

// Source is where events come from: a *uevent.Listener, or a fake.
type Source interface {
	Next(ctx context.Context) (uevent.Event, error)
	Stats() uevent.Stats
	Close() error
}

// Config sets a daemon up. Source, Resolver, Loader and Sysfs are required.
type Config struct {
	Source   Source
	Resolver *loader.CurrentResolver
	// Loader is told of every module uevent (ModuleEvent) and of lost
	// events (WakeAll), so its ModuleEvents may be set.
	Loader *loader.Loader
	// Rules returns the current event rules; nil means udev's defaults.
	Rules func() *rules.EventRules
	// Sysfs is the sysfs mount point (coldplug, resync, settle).
	Sysfs string
	// Jobs bounds the events handled at once.
	Jobs int
	// Coldplug handles every device present at start.
	Coldplug bool
	// Static are the static lists' entries (modlist.Read), loaded at
	// start beside coldplug; StaticKernelBlacklist are module_blacklist=
	// names, whose refusal is expected.
	Static                []modlist.Entry
	StaticKernelBlacklist []string
	// DryRun resolves and logs what would load, loading nothing.
	DryRun bool
	// ExitWhenIdle, if positive, ends Run once coldplug is done and the
	// daemon has been idle that long (initramfs hand-over).
	ExitWhenIdle time.Duration
	// MaxQueueBytes bounds the kernel events queued, in bytes
	// (eventBytes); beyond it events are dropped and a resync requested,
	// so a storm cannot eat the memory. A scan's events are bounded by
	// sysfs instead: one queued per device.
	MaxQueueBytes int64
	// Ready is called once the socket listens (and before coldplug), so
	// an init script may start triggering.
	Ready func()
	// StartSeqnum is the kernel's uevent seqnum read before the socket
	// was bound (ReadSeqnum): earlier events never reach us (coldplug
	// covers them), so settle must not wait for them; later ones are in
	// the socket.
	StartSeqnum uint64
	// Version is the daemon's version, reported in Status.
	Version string
	Log     zerolog.Logger

	// dropImage drops the executable's pages and trimMemory gives the
	// free heap back (tests watch them); nil means dropImagePages and
	// debug.FreeOSMemory. dropWait bounds the wait for the kernel before
	// the heap is given back (tests shorten it); 0 means dropWait.
	dropImage  func() (int64, error)
	trimMemory func()
	dropWait   time.Duration
}

// Daemon is one running event loop. Create it with New, run it with Run.
type Daemon struct {
	cfg Config

	mu         sync.Mutex
	changed    *sync.Cond // broadcast whenever the queue, work or seqnum moves
	queue      eventQueue
	lastSeq    uint64 // highest kernel seqnum received or covered by a resync
	resync     bool   // a resync is wanted (overrun or queue overflow)
	rescanning bool   // the resyncer is doing one
	coldDone   bool
	stopping   bool
	static     StaticStatus // the static lists' progress; Done when there are none
	requests   int          // load requests from the modprobe helper in progress
	// Memory due back to the system, given back only when the daemon is
	// idle (dropWhenIdle), so work in progress can set them: a scan's
	// heap at the dropper's first look, any work's garbage at its last.
	scanned  bool
	trimDue  bool
	workOver chan struct{} // to the imageDropper: some work may be over (workDone)
	// An overflow lasts from the first event dropped until the kernel
	// events queued are down to half the bound, so one that flaps at the
	// bound is logged once; overflowDropped counts its events.
	overflowing     bool
	overflowDropped uint64

	handled, skipped, refused, resyncs, dropped atomic.Uint64
	loadErrors                                  atomic.Uint64
	// started is when Run began, on the timeline's clock (Timeline).
	started atomic.Int64
}

// DefaultMaxQueueBytes bounds the queued kernel events: some 4,000 typical
// ones (a USB interface's add is charged about 950 bytes). Past it a
// resync costs less than the memory.
const DefaultMaxQueueBytes = 4 << 20

// New checks the configuration and returns a daemon ready to Run.
func New(cfg Config) (*Daemon, error) {
	if cfg.Source == nil || cfg.Resolver == nil || cfg.Loader == nil || cfg.Sysfs == "" {
		return nil, errors.New("daemon: Source, Resolver, Loader and Sysfs are required")
	}
	if cfg.Jobs <= 0 {
		cfg.Jobs = 4
	}
	if cfg.MaxQueueBytes <= 0 {
		cfg.MaxQueueBytes = DefaultMaxQueueBytes
	}
	if cfg.Rules == nil {
		cfg.Rules = func() *rules.EventRules { return nil }
	}
	if cfg.dropImage == nil {
		cfg.dropImage = dropImagePages
	}
	if cfg.trimMemory == nil {
		cfg.trimMemory = debug.FreeOSMemory
	}
	if cfg.dropWait <= 0 {
		cfg.dropWait = dropWait
	}
	d := &Daemon{cfg: cfg, queue: newEventQueue(), lastSeq: cfg.StartSeqnum, workOver: make(chan struct{}, 1)}
	d.static = StaticStatus{Listed: len(cfg.Static), Done: len(cfg.Static) == 0}
	d.changed = sync.NewCond(&d.mu)
	return d, nil
}

// Run handles events until ctx ends (SIGTERM) or, with ExitWhenIdle, the
// work is done. In-flight loads are given until the shutdown bound; a
// module handed to the kernel finishes loading regardless.
func (d *Daemon) Run(ctx context.Context) error {
	d.started.Store(loader.MonotonicNow())
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var wg sync.WaitGroup
	readerDone := make(chan error, 1)
	wg.Add(1)
	go func() { defer wg.Done(); readerDone <- d.read(ctx) }()
	for i := 0; i < d.cfg.Jobs; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); d.worker(ctx) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); d.resyncer() }()
	wg.Add(1)
	go func() { defer wg.Done(); d.imageDropper(ctx) }()
	if d.cfg.Ready != nil {
		d.cfg.Ready()
	}
	if len(d.cfg.Static) > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); d.loadStatic(ctx) }()
	}
	if d.cfg.Coldplug {
		d.scan("coldplug")
	}
	d.mu.Lock()
	d.coldDone = true
	d.workEndedLocked()
	d.changed.Broadcast()
	d.mu.Unlock()

	var err error
	idle := d.idleTimer(ctx)
	select {
	case <-ctx.Done():
	case err = <-readerDone:
	case <-idle:
		d.cfg.Log.Info().Dur("idle", d.cfg.ExitWhenIdle).Msg("idle after coldplug, exiting")
	}
	d.mu.Lock()
	d.stopping = true
	d.changed.Broadcast()
	d.mu.Unlock()
	cancel()
	d.cfg.Source.Close()
	wg.Wait()
	return err
}

// idleTimer fires once coldplug is done and the daemon has stayed idle
// for ExitWhenIdle; nil (never) without it.
func (d *Daemon) idleTimer(ctx context.Context) <-chan struct{} {
	if d.cfg.ExitWhenIdle <= 0 {
		return nil
	}
	fired := make(chan struct{})
	go func() {
		// Ten looks per idle period, but a ticker needs a positive period.
		tick := time.NewTicker(max(d.cfg.ExitWhenIdle/10, time.Millisecond))
		defer tick.Stop()
		var since time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if !d.idle() {
				since = time.Time{}
				continue
			}
			if since.IsZero() {
				since = time.Now()
			}
			if time.Since(since) >= d.cfg.ExitWhenIdle {
				close(fired)
				return
			}
		}
	}()
	return fired
}

// idle: coldplug and the static lists done, nothing queued or being
// handled, no load in flight.
func (d *Daemon) idle() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.idleLocked() && d.requests == 0
}

func (d *Daemon) idleLocked() bool {
	return d.coldDone && d.static.Done && !d.resync && !d.rescanning && d.queue.queued == 0 && d.queue.busy == 0 && d.cfg.Loader.Stats().InFlight == 0
}

// read takes events off the socket as fast as it can, so the kernel's
// buffer does not overflow: module events wake loader waiters, everything
// else is queued for the workers. A module event is queued too when a rule
// loads something for it, after the loader has seen it: the rule's load
// then runs on a worker, through the loader like any other, so it never
// delays a live notification and never loads a module twice.
func (d *Daemon) read(ctx context.Context) error {
	// Lost kernel events (an overrun, or a kernel message that could not
	// be read) may include a module's live notice: every waiter looks at
	// sysfs again, and the devices are read again from sysfs.
	overrun := func() {
		d.cfg.Log.Warn().Msg("resyncing from sysfs")
		d.cfg.Loader.WakeAll()
		d.requestResync()
	}
	for {
		ev, ok, err := NextEvent(ctx, d.cfg.Source, d.cfg.Log, overrun)
		if !ok {
			return err
		}
		if name, ok := strings.CutPrefix(ev.DevPath, "/module/"); ok && ev.Subsystem == "module" {
			d.cfg.Loader.ModuleEvent(name)
			if d.cfg.Rules().LoadsOnModuleEvent(&ev) {
				d.enqueue(ev, false)
			}
		} else {
			d.enqueue(ev, false)
		}
		d.mu.Lock()
		d.lastSeq = max(d.lastSeq, ev.Seqnum)
		d.changed.Broadcast()
		d.mu.Unlock()
	}
}

// NextEvent returns the next event of src for a reader that must go on
// whatever the socket brings: a dropped message (not the kernel's, or
// unparsable) and each skipped field are logged, an overrun (ENOBUFS) or
// a kernel message that could not be read is reported to overrun, and
// reading goes on. ok is false at
// the end: err is nil when ctx ended or the socket was closed, else what
// stopped the socket.
func NextEvent(ctx context.Context, src Source, log zerolog.Logger, overrun func()) (ev uevent.Event, ok bool, err error) {
	for {
		ev, err := src.Next(ctx)
		var drop *uevent.DropError
		switch {
		case err == nil:
			for _, def := range ev.Defects {
				log.Warn().Str("devpath", ev.DevPath).Uint64("seqnum", ev.Seqnum).Int("offset", def.Offset).
					Str("defect", def.Reason).Msg("uevent field skipped")
			}
			return ev, true, nil
		case ctx.Err() != nil, errors.Is(err, net.ErrClosed):
			return ev, false, nil
		case errors.Is(err, uevent.ErrOverrun):
			log.Warn().Err(err).Msg("kernel dropped uevents (ENOBUFS)")
			if overrun != nil {
				overrun()
			}
		case errors.As(err, &drop):
			log.Warn().Str("reason", drop.Reason).Uint32("sender_port", drop.Pid).Int64("sender_uid", drop.Uid).
				AnErr("parse", drop.Err).Msg("uevent dropped")
			if drop.Pid == 0 && overrun != nil {
				overrun() // the kernel's own message, lost to us
			}
		default:
			return ev, false, err
		}
	}
}

// enqueue queues an event. A scan's events bypass the bound: sysfs holds
// a bounded number of devices (the queue keeps one event per device from
// scans), and dropping them would only ask for the same scan again.
func (d *Daemon) enqueue(ev uevent.Event, fromScan bool) {
	size := eventBytes(&ev)
	d.mu.Lock()
	full := !fromScan && d.queue.kernelBytes+size > d.cfg.MaxQueueBytes
	overflowStarts, overflowEnded := false, uint64(0)
	if full {
		// Dropping is safe only because the resync re-reads sysfs.
		d.dropped.Add(1)
		d.resync = true
		overflowStarts = !d.overflowing
		d.overflowing = true
		d.overflowDropped++
	} else {
		d.queue.push(ev, fromScan, size)
		if d.overflowing && d.queue.kernelBytes <= d.cfg.MaxQueueBytes/2 {
			overflowEnded, d.overflowing, d.overflowDropped = d.overflowDropped, false, 0
		}
	}
	queued, bytes := d.queue.queued, d.queue.bytes
	d.changed.Broadcast()
	d.mu.Unlock()
	// Once per overflow, not once per event: a storm would flood the log.
	// Logged outside the lock: a slow log must not stall the workers.
	if overflowStarts {
		d.cfg.Log.Warn().Int("queued", queued).Int64("queue_bytes", bytes).Int64("max_queue_bytes", d.cfg.MaxQueueBytes).
			Msg("event queue full: dropping events until it has room; resyncing from sysfs")
	}
	if overflowEnded > 0 {
		d.cfg.Log.Info().Uint64("dropped", overflowEnded).Int("queued", queued).Msg("event queue has room again")
	}
}

func (d *Daemon) requestResync() {
	d.mu.Lock()
	d.resync = true
	d.changed.Broadcast()
	d.mu.Unlock()
}

// scan queues an "add" for every device in sysfs, and for every module
// a rule loads on (scanModules). Coldplug reads sysfs
// rather than writing "add" to every uevent file (udevadm trigger): the
// kernel would broadcast those to every listener (a udevd beside us, the
// initramfs's next init), and a storm of them is what overflows socket
// buffers. Devices that appear during the scan send their own events,
// and loading the same module twice is harmless here (the loader sees it
// live).
func (d *Daemon) scan(why string) {
	start := time.Now()
	seq := ReadSeqnum(d.cfg.Sysfs)
	w := uevent.Walker{Root: d.cfg.Sysfs}
	n := 0
	err := w.Walk(func(ev uevent.Event) error {
		n++
		d.enqueue(ev, true)
		return nil
	})
	modules, merr := d.scanModules()
	if merr != nil {
		d.cfg.Log.Warn().Err(merr).Str("scan", why).Msg("cannot list the modules in sysfs for the module event rules")
	}
	ev := d.cfg.Log.Info()
	if err != nil {
		ev = d.cfg.Log.Error().Err(err)
	}
	ev.Str("scan", why).Int("devices", n).Int("skipped", w.Skipped).Int("module_events", modules).
		Dur("took_ms", time.Since(start)).Msg("sysfs scanned")
	d.mu.Lock()
	// Whatever the kernel announced before the scan is covered by it.
	d.lastSeq = max(d.lastSeq, seq)
	d.scanned, d.trimDue = true, true
	d.changed.Broadcast()
	d.mu.Unlock()
}

// resyncer rescans sysfs whenever a resync is wanted and coldplug (which
// covers everything before it) is done, until the daemon stops. It does
// not wait for the queue to drain: events stuck behind one hung load must
// not keep every other device's lost events from being made good. Events
// lost during a scan ask for another one after it.
func (d *Daemon) resyncer() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for {
		for !d.stopping && !(d.coldDone && d.resync) {
			d.changed.Wait()
		}
		if d.stopping {
			return
		}
		d.resync, d.rescanning = false, true
		d.mu.Unlock()
		d.resyncs.Add(1)
		d.scan("resync")
		d.mu.Lock()
		d.rescanning = false
		d.workEndedLocked()
		d.changed.Broadcast()
	}
}

// worker handles queued events, one at a time, until the daemon stops.
func (d *Daemon) worker(ctx context.Context) {
	for {
		e, ok := d.next()
		if !ok {
			return
		}
		d.handle(ctx, &e.ev)
		d.dropIndexPages()
		d.mu.Lock()
		d.queue.finish(e)
		d.trimDue = true
		d.workEndedLocked()
		d.changed.Broadcast()
		d.mu.Unlock()
	}
}

// workEndedLocked, with d.mu held, runs wherever the daemon may have
// become idle (an event handled, coldplug, a resync, the static lists or a
// helper's load done). If it has, the burst is over: a module that failed
// may be tried again by the next, distinct event (whatever work ended
// last); and the imageDropper is told.
func (d *Daemon) workEndedLocked() {
	if d.idleLocked() && d.requests == 0 {
		d.cfg.Loader.NewBurst()
		d.workDone()
	}
}

// workDone tells the imageDropper that some work may be over (it looks
// whether the daemon is idle); it never blocks.
func (d *Daemon) workDone() {
	select {
	case d.workOver <- struct{}{}:
	default: // it has one pending already
	}
}

// imageDropper drops the executable's pages (dropImagePages) once some
// work is over and no more came for dropQuiet. A storm's bursts come
// closer together than that, and are not paid for with a drop each. The
// memory the work grew is given back later, once its finit_module calls
// are out of the kernel (they wait there for other drivers' asynchronous
// probes, on 6.1 for seconds after the module went live) and their
// threads have ended, and no work came for trimQuiet: a collection under
// TCG takes tens of milliseconds, and a hotplug that came during one
// waited for it (33 ms instead of 5, 2 of 25 in the bench, when the
// coldplug's calls returned during the first hotplug). It waits at most
// dropWait for the kernel, so a hung init does not keep the memory for
// good.
func (d *Daemon) imageDropper(ctx context.Context) {
	tick := time.NewTicker(dropQuiet)
	defer tick.Stop()
	// Kept over later work until the kernel has no call of ours: a hung
	// init is waited for once, not again after every piece of work.
	var deadline time.Time
	for {
		tick.Stop()
		select {
		case <-ctx.Done():
			return
		case <-d.workOver:
		}
		tick.Reset(dropQuiet)
		lastWork, dropped := time.Now(), false
		for {
			select {
			case <-ctx.Done():
				return
			case <-d.workOver:
				tick.Reset(dropQuiet)
				lastWork, dropped = time.Now(), false
				continue
			case <-tick.C:
			}
			inKernel := d.cfg.Loader.Stats().InKernel
			if inKernel == 0 {
				deadline = time.Time{}
			}
			if !dropped {
				idle, due := d.dropWhenIdle(false)
				if !idle || !due {
					// Busy: the work's end comes back here. Nothing
					// due back (a query): one drop is all.
					break
				}
				dropped = true
				if deadline.IsZero() {
					deadline = time.Now().Add(d.cfg.dropWait)
				}
			}
			if inKernel > 0 && time.Now().Before(deadline) || time.Since(lastWork) < trimQuiet {
				continue
			}
			if inKernel > 0 {
				d.cfg.Log.Debug().Int64("in_kernel", inKernel).Dur("waited", d.cfg.dropWait).
					Msg("finit_module calls still in the kernel; giving memory back regardless")
			}
			d.dropWhenIdle(true)
			break
		}
	}
}

// dropWhenIdle drops the executable's pages if the daemon is idle, and
// gives back the memory a scan grew, or with last (the work's calls are
// out of the kernel, or no longer waited for) any work's. It says whether
// the daemon was idle, and whether memory is still due back.
func (d *Daemon) dropWhenIdle(last bool) (idle, due bool) {
	d.mu.Lock()
	// Work that ended since the dropper's last look is not idle yet: its
	// signal is pending, and its own quiet spell (and calls) come first.
	idle = d.idleLocked() && d.requests == 0 && len(d.workOver) == 0
	trim := idle && (d.scanned || last && d.trimDue)
	if idle {
		// A scan's heap goes once; the rest of its work's with the
		// rest, at the last look.
		d.scanned = false
		if last {
			d.trimDue = false
		}
	}
	due = d.trimDue
	d.mu.Unlock()
	if !idle {
		return false, due
	}
	if trim {
		// Give what the work grew back to the system (an initramfs or a
		// small device has little to spare): a scan's heap right away,
		// any work's garbage once its calls are out of the kernel, when
		// their threads have ended too (a coldplug's 15-22, about 0.5
		// MiB). Idle after 5 hotplugs, the heap held 0.8 MiB of garbage
		// more than after coldplug. One collection per piece of work,
		// not per event, and none for a query.
		d.cfg.trimMemory()
	}
	kib, err := d.cfg.dropImage()
	if err != nil {
		d.cfg.Log.Debug().Err(err).Msg("cannot drop the executable's pages")
		return true, due
	}
	d.cfg.Log.Debug().Int64("kib", kib).Msg("dropped the executable's pages")
	return true, due
}

const (
	dropQuiet = 200 * time.Millisecond
	trimQuiet = time.Second
	dropWait  = 10 * time.Second
)

// dropIndexPages unmaps the index pages a request's lookups mapped (with
// the kernel's fault-around, 64 KiB for each page touched): kept over a
// coldplug they were 1.7 MiB more at its resident peak. They stay in
// the page cache (in an initramfs, in memory either way), from which the
// next lookup maps the few it needs: what this lowers is the resident set
// charged to the daemon (ps, top, the OOM killer's score), at no cost
// measured. Nothing to do, and no system call, if nothing was looked up.
func (d *Daemon) dropIndexPages() {
	if err := d.cfg.Resolver.DropPages(); err != nil {
		d.cfg.Log.Debug().Err(err).Msg("cannot drop the index pages")
	}
}

// next waits for an event free to start (see eventQueue for the order)
// and marks it busy; false once the daemon stops.
func (d *Daemon) next() (*entry, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for {
		if d.stopping {
			return nil, false
		}
		if e := d.queue.start(); e != nil {
			return e, true
		}
		d.changed.Wait()
	}
}

// handle decides what the event loads and loads it.
func (d *Daemon) handle(ctx context.Context, ev *uevent.Event) {
	d.handled.Add(1)
	rs := d.cfg.Rules()
	dec := rs.Decide(ev)
	names := dec.Modules
	if dec.LoadModalias && ev.Modalias != "" {
		names = append(names, ev.Modalias)
	}
	if len(names) == 0 {
		d.skipped.Add(1)
		return
	}
	for _, name := range names {
		d.load(ctx, name, rs, ev)
	}
}

// load resolves one name (a MODALIAS or a module) and loads what it
// resolves to, within the allow-list. The blacklist applies, as in udev's
// kmod builtin.
func (d *Daemon) load(ctx context.Context, name string, rs *rules.EventRules, ev *uevent.Event) {
	log := d.cfg.Log.With().Str("name", name).Str("devpath", ev.DevPath).Uint64("seqnum", ev.Seqnum).Logger()
	plans, err := d.plan(name, loader.ResolveOptions{UseBlacklist: true, Allowed: rs.Allowed})
	if err != nil {
		if !errors.Is(err, loader.ErrNotFound) {
			log.Warn().Err(err).Msg("lookup failed")
		}
		return
	}
	if d.cfg.DryRun {
		for _, p := range plans {
			log.Info().Str("module", p.Name).Bool("blacklisted", p.Blacklisted).Bool("refused", p.Refused).
				Int("steps", len(p.Steps)).AnErr("plan", p.Err).Msg("would load")
		}
		return
	}
	d.count(d.cfg.Loader.Load(ctx, plans, loader.LoadOptions{Parallel: true, Asker: d.eventAsker(ev, name)}), log)
}

// count adds results to the counters and notes them in the log.
func (d *Daemon) count(results []loader.Result, log zerolog.Logger) {
	for _, res := range results {
		switch {
		case res.Refused:
			d.refused.Add(1)
			log.Warn().Str("module", res.Module).Msg("refused: not in the allow-list")
		case res.Blacklisted:
			log.Debug().Str("module", res.Module).Msg("blacklisted")
		case res.Err != nil:
			// The loader logs each failure once (Loader.Failed);
			// every event that shared it only notes it.
			d.loadErrors.Add(1)
			log.Debug().Str("module", res.Module).Err(res.Err).Msg("load failed")
		default:
			log.Debug().Str("module", res.Module).Msg("live")
		}
	}
}

// plan resolves name against the current module database and
// configuration. The plans hold every decision, so the load that follows
// needs no resolver and holds nothing a reload or another request waits
// for.
func (d *Daemon) plan(name string, o loader.ResolveOptions) ([]loader.Planned, error) {
	var plans []loader.Planned
	err := d.cfg.Resolver.Use(func(r *loader.Resolver) error {
		var err error
		plans, err = r.Resolve(name, o)
		return err
	})
	return plans, err
}

// ReadSeqnum reads the kernel's last issued uevent seqnum.
func ReadSeqnum(sysfs string) uint64 {
	data, err := os.ReadFile(filepath.Join(sysfs, "kernel", "uevent_seqnum"))
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
	return n
}
