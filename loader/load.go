package loader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/modautoload/modautoload/internal/regfile"

	"golang.org/x/sys/unix"
)

// DefaultLiveTimeout bounds the wait for a module to go live, whoever
// loads it. Init functions that probe hardware or benchmark (raid6_pq)
// take seconds under emulation; udevd gives an event 180 s.
const DefaultLiveTimeout = 120 * time.Second

// DefaultCommandTimeout bounds a modprobe.d install or remove command;
// then its process group is killed. Such commands normally take
// milliseconds (/bin/true, a modprobe of something else).
const DefaultCommandTimeout = 30 * time.Second

// maxCommandOutput bounds what is kept of a command's output for its
// error message.
const maxCommandOutput = 4 << 10

// ErrNotLive reports a module still not live when the live timeout ran
// out: its init is still running (or stuck), or another process still
// holds its file. The load goes on, and the module is not handed to the
// kernel again meanwhile.
var ErrNotLive = errors.New("not live within the live timeout")

// ErrGone reports a module that disappeared while we waited for it to
// become live: its init failed in another loader, which sends no uevent.
var ErrGone = errors.New("module went away while loading (its init failed)")

// LoadError is a failed load of one module, with the errno by name and,
// for the kernel's answers to a load, what it means.
type LoadError struct {
	Module string
	Path   string // "" for install commands and waits
	Op     string // finit_module, init_module, install, wait
	Err    error
	// Options are the parameters handed to the kernel, and OptionsFrom
	// where they came from, for finit_module and init_module: a refused
	// parameter is named with its source.
	Options     string
	OptionsFrom []string
	// KernelLines holds the kernel's own lines about the module logged during
	// a refused finit_module or init_module (kmsg.go), sanitized.
	KernelLines []string
}

func (e *LoadError) Error() string {
	var errno syscall.Errno
	name := ""
	if errors.As(e.Err, &errno) {
		name = " (" + unix.ErrnoName(errno) + ")"
	}
	if why := explainLoad(e); why != "" {
		name += ": " + why
	}
	if len(e.KernelLines) > 0 {
		name += "; the kernel said: " + strings.Join(e.KernelLines, " | ")
	}
	if e.Path != "" {
		return fmt.Sprintf("%s %s (%s): %v%s", e.Op, e.Module, e.Path, e.Err, name)
	}
	return fmt.Sprintf("%s %s: %v%s", e.Op, e.Module, e.Err, name)
}

func (e *LoadError) Unwrap() error { return e.Err }

// Stats counts what a Loader did.
type Stats struct {
	Loaded       uint64 // modules this process handed to the kernel, now live
	Failed       uint64 // loads that failed
	Deduplicated uint64 // requests answered by a load already in flight or a failure of this burst
	AlreadyLive  uint64 // requests for modules that were already live or built in
	Waited       uint64 // modules someone else was loading, waited for until live
	InFlight     int64  // loads callers are waiting for
	InKernel     int64  // finit_module/init_module calls not yet returned, including loads given up on
	Polls        uint64 // initstate reads of waits at their poll timer (not those a uevent woke): few when uevents end the waits
}

// ModuleState is the last known state of a module this loader dealt with.
type ModuleState struct {
	State string // loading, live, builtin, failed
	Err   string `json:",omitempty"`
	// Failures counts this module's failed loads since the loader
	// started, so one that failed and later loaded still shows it.
	Failures uint64 `json:",omitempty"`
	Updated  time.Time
	// KernelLines are the kernel's own lines about the last failure.
	KernelLines []string `json:",omitempty"`
}

// Loader hands modules to the kernel: at most once at a time per module
// across every caller in the process, and a load succeeds only when the
// module is built in or live. Its methods are safe for concurrent use.
type Loader struct {
	Kernel Kernel
	// Sysfs is the sysfs mount point, normally /sys.
	Sysfs string
	// LiveTimeout bounds every wait for a module to go live, our own
	// finit_module's included; 0 means DefaultLiveTimeout.
	LiveTimeout time.Duration
	// CommandTimeout bounds install and remove commands; 0 means
	// DefaultCommandTimeout.
	CommandTimeout time.Duration
	// Failed, if set, is told of each failed load once, however many
	// callers shared it (the daemon logs there, not per event).
	Failed func(module string, err error)
	// NoShell refuses to run install commands through /bin/sh (a device
	// without a shell, or a locked-down one). "/bin/true" and "/bin/false"
	// still act as the disabling idiom they are, without a shell.
	NoShell bool
	// MaxInKernel, if positive, bounds the modules handed to the kernel
	// and not yet live (or failed) at once. A load is mostly the kernel's
	// CPU work, so more calls than CPUs at once only contend for its
	// locks; load-static sets it. The daemon must not: a module's init
	// may request another module through the helper, which the daemon
	// serves with this Loader, and that load would wait for a slot its
	// requester holds.
	MaxInKernel int
	// ModuleEvents says ModuleEvent is told of every add and remove
	// uevent of /module/NAME, and WakeAll of every overrun (the daemon).
	// A wait for our own finit_module then polls sysfs only as a safety
	// net, from 50 ms doubling to 1 s, not from 1 ms to 50 ms (a 400 ms
	// init: 3 reads instead of 13; the e2e coldplug's 69 loads: 55).
	// Waits for another process's load poll as before: its failed init
	// removes the module without a uevent.
	ModuleEvents bool
	// TimelineSize bounds the load records kept (Timeline): the last
	// TimelineSize loads; 0 means DefaultTimelineSize, negative none.
	TimelineSize int

	// MaxInKernel's room: slots in use, and the loads waiting for one,
	// highest Step.Priority first, then first come.
	slotMu    sync.Mutex
	slotsUsed int
	slotWait  []*slotWaiter

	flock func(fd, how int) error // unix.Flock; a seam for file systems without it
	// readState is readInitstate; a seam for states that change between
	// two reads microseconds apart.
	readState func(sysfs, name string) (initstate, error)
	// pace of a wait's polls of sysfs; zero is 1 ms doubling to 50 ms. A
	// seam for tests that must tell a wake by uevent from a poll.
	pace backoff

	ctx    context.Context // ends with Shutdown; loads run under it, not under a caller's
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	inflight map[string]*flight
	failures map[string]failure
	burst    uint64
	wake     map[string]chan struct{} // closed by ModuleEvent to wake waiters
	states   map[string]ModuleState
	tl       timeline

	loaded, failed, dedup, already, waited, polls atomic.Uint64
	inFlight, inKernel                            atomic.Int64
}

type slotWaiter struct {
	priority int
	granted  chan struct{} // closed when the slot is handed over
}

type flight struct {
	done chan struct{}
	err  error

	// For the timeline: the module, who started the load and when, and
	// its record once it has one (see record). joined and rec are
	// guarded by Loader.mu until done is closed.
	module    string
	requested int64
	plan      *planRun // nil for a load outside Load
	step      int      // the step of plan this load is
	joined    uint32
	rec       *Record
}

type failure struct {
	err   error
	burst uint64
	id    uint64 // the failed load's record, 0 if none
}

// NewLoader returns a loader using kernel and the sysfs mounted at sysfs.
func NewLoader(kernel Kernel, sysfs string) *Loader {
	ctx, cancel := context.WithCancel(context.Background())
	return &Loader{
		Kernel: kernel, Sysfs: sysfs, ctx: ctx, cancel: cancel, flock: unix.Flock, readState: readInitstate,
		inflight: map[string]*flight{}, failures: map[string]failure{},
		wake: map[string]chan struct{}{}, states: map[string]ModuleState{},
	}
}

// Shutdown stops waits in progress and waits, until ctx ends, for loads
// already handed to the kernel (a system call cannot be interrupted).
func (l *Loader) Shutdown(ctx context.Context) error {
	// Under l.mu: a flight started before is in wg when Wait looks, and
	// none starts after.
	l.mu.Lock()
	l.cancel()
	l.mu.Unlock()
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// NewBurst starts a new burst: modules that failed before may be tried
// again. Within a burst (the CPUs of one machine asking for the same
// modules, one coldplug) a failure is the answer for every request.
func (l *Loader) NewBurst() {
	l.mu.Lock()
	l.burst++
	l.mu.Unlock()
}

// ModuleEvent tells the loader of an add or remove uevent for
// /module/NAME, waking anyone waiting for that module at once instead of
// at their next poll.
func (l *Loader) ModuleEvent(name string) {
	l.mu.Lock()
	if ch, ok := l.wake[name]; ok {
		close(ch)
		delete(l.wake, name)
	}
	l.mu.Unlock()
}

// WakeAll wakes every waiter to look at sysfs again: uevents were lost
// (an overrun), and with them, maybe, a module's live notice.
func (l *Loader) WakeAll() {
	l.mu.Lock()
	for name, ch := range l.wake {
		close(ch)
		delete(l.wake, name)
	}
	l.mu.Unlock()
}

// Stats returns the counters so far.
func (l *Loader) Stats() Stats {
	return Stats{
		Loaded: l.loaded.Load(), Failed: l.failed.Load(), Deduplicated: l.dedup.Load(),
		AlreadyLive: l.already.Load(), Waited: l.waited.Load(), InFlight: l.inFlight.Load(),
		InKernel: l.inKernel.Load(), Polls: l.polls.Load(),
	}
}

// States returns the last known state of every module this loader dealt
// with.
func (l *Loader) States() map[string]ModuleState {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]ModuleState, len(l.states))
	for k, v := range l.states {
		out[k] = v
	}
	return out
}

// ensureStep makes the module of step i of plan p built in or live, and
// sets the step's state for the timeline: which load it came to (its own,
// another request's, none) and when it was done. A module another caller
// is loading is waited for and its result shared; a module that failed in
// this burst fails again at once, unless retry. ctx bounds only this
// caller's wait: the load itself goes on for the others.
func (l *Loader) ensureStep(ctx context.Context, s Step, retry bool, p *planRun, i int) error {
	outcome := func(id uint64, shared bool) {
		if p != nil {
			st := &p.state[i]
			st.id, st.shared, st.end = id, shared, MonotonicNow()
		}
	}
	// Built in: done, whatever its install command says; libkmod skips a
	// module in the kernel before looking at its command too. Its
	// /sys/module directory, if any, has no initstate ever.
	if s.Builtin && s.Path == "" {
		l.already.Add(1)
		l.setState(s.Name, "builtin", nil)
		outcome(0, false)
		return nil
	}
	if err := checkModuleName(s.Name); err != nil {
		return err
	}
	l.mu.Lock()
	f, ok := l.inflight[s.Name]
	switch {
	case ok:
		l.dedup.Add(1)
		// Another plan of the same request (two devices of one event's
		// module set) is not another request.
		if f.plan == nil || p == nil || f.plan.req != p.req {
			f.joined++
			if f.rec != nil {
				f.rec.Joined++
			}
		}
	case !retry && l.failures[s.Name].err != nil && l.failures[s.Name].burst == l.burst:
		fail := l.failures[s.Name]
		l.mu.Unlock()
		l.dedup.Add(1)
		outcome(fail.id, true)
		return fail.err
	case ctx.Err() != nil || l.ctx.Err() != nil:
		// A caller that is gone, or a loader shut down (SIGTERM), hands
		// nothing more to the kernel.
		l.mu.Unlock()
		if err := ctx.Err(); err != nil {
			return err
		}
		return fmt.Errorf("%s: not loaded: shutting down: %w", s.Name, l.ctx.Err())
	default:
		f = &flight{done: make(chan struct{}), module: s.Name, plan: p, step: i}
		if p != nil {
			f.requested = p.requested
		} else {
			f.requested = MonotonicNow()
		}
		l.inflight[s.Name] = f
		l.states[s.Name] = ModuleState{State: "loading", Updated: time.Now(), Failures: l.states[s.Name].Failures}
		l.wg.Add(1)
		l.inFlight.Add(1)
		go l.fly(f, s)
	}
	l.mu.Unlock()
	select {
	case <-f.done:
		// f.rec was set, if at all, before done was closed.
		var id uint64
		if f.rec != nil {
			id = f.rec.ID
		}
		outcome(id, p == nil || f.plan == nil || f.plan.req != p.req)
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fly performs one load for every caller waiting on f.
func (l *Loader) fly(f *flight, s Step) {
	defer l.wg.Done()
	f.err = l.load(s, f)
	doneAt := MonotonicNow()
	l.mu.Lock()
	delete(l.inflight, s.Name)
	var id uint64
	if f.rec != nil {
		f.rec.Done, f.rec.Err, id = doneAt, f.err, f.rec.ID
	}
	if f.err != nil && l.ctx.Err() == nil {
		l.failures[s.Name] = failure{f.err, l.burst, id}
		l.failed.Add(1)
	} else {
		delete(l.failures, s.Name)
	}
	l.mu.Unlock()
	if f.err == nil {
		l.setState(s.Name, "live", nil)
	} else {
		l.setState(s.Name, "failed", f.err)
		if l.Failed != nil && l.ctx.Err() == nil {
			l.Failed(s.Name, f.err)
		}
	}
	l.inFlight.Add(-1)
	close(f.done)
}

func (l *Loader) setState(name, state string, err error) {
	ms := ModuleState{State: state, Updated: time.Now()}
	if err != nil {
		ms.Err = err.Error()
		if le := (*LoadError)(nil); errors.As(err, &le) {
			ms.KernelLines = le.KernelLines
		}
	}
	l.mu.Lock()
	ms.Failures = l.states[name].Failures
	if state == "failed" {
		ms.Failures++
	}
	l.states[name] = ms
	l.mu.Unlock()
}

// load does the work for one module: nothing if live, wait if someone
// else is loading it, else run its install command or hand its file to
// the kernel.
func (l *Loader) load(s Step, fl *flight) error {
	if done, err := l.settled(s.Name, fl); done {
		return err
	}
	if s.HasInstall {
		// No file lock here: an install command may well run modprobe
		// for this very module.
		l.record(fl, OpInstall)
		l.stamp(fl, started)
		defer l.stamp(fl, returned)
		return l.runCommand("install", s.Name, s.Install, s.Options)
	}
	if s.Path == "" {
		return &LoadError{Module: s.Name, Op: "find", Err: fmt.Errorf("not in modules.dep: %w", unix.ENOENT)}
	}
	f, err := regfile.Open(s.Path)
	if err != nil {
		return &LoadError{Module: s.Name, Path: s.Path, Op: "open", Err: err}
	}
	// Room in the kernel first, the file's lock second: a module in the
	// kernel whose init asks for this one (request_module, served by a
	// helper process) must find the lock free while we wait for room,
	// or both wait out the live timeout.
	release, err := l.takeSlot(s.Name, s.Priority)
	if err != nil {
		f.Close()
		return err
	}
	// Other modautoload processes (the kernel's helpers, the command
	// line) lock the same file, so the kernel gets one finit_module per
	// module across processes too, not one per helper.
	held, err := l.lock(f, s.Name)
	if err != nil {
		release()
		f.Close()
		return &LoadError{Module: s.Name, Path: s.Path, Op: "lock", Err: err}
	}
	// Whoever held the lock, or the slot, has loaded it, or failed,
	// meanwhile.
	if done, err := l.settled(s.Name, fl); done {
		release()
		f.Close()
		return err
	}
	if !held {
		release()
		f.Close()
		return &LoadError{Module: s.Name, Path: s.Path, Op: "lock",
			Err: errors.New("went live and away again while another process held its file")}
	}
	// Since Linux 5.18 finit_module returns only after the module's init
	// and then every asynchronous job in the system (another
	// controller's disk scan): seconds after the module went live. So the
	// call runs on its own, holding the file and its lock, and the load
	// is done as soon as the kernel says live.
	l.record(fl, OpLoad)
	l.stamp(fl, started)
	// The kernel log is read only after a refusal, and only after the
	// slot and the file's lock are given up: a read of a full log takes
	// milliseconds. The clock read is the success path's only cost.
	since := KernelLogClock()
	result := make(chan error, 1)
	l.wg.Add(1)
	l.inKernel.Add(1)
	go func() {
		// The call holds its thread in the kernel for as long as the
		// init (and, since 5.18, the async probes) takes; the runtime
		// starts another for the daemon's other work, and would keep
		// every such thread, with 48 KiB of stacks, for the process's
		// life. A goroutine that exits locked ends its thread.
		runtime.LockOSThread()
		defer l.wg.Done()
		defer l.inKernel.Add(-1)
		defer f.Close() // and with it the lock
		err := l.insert(s, f)
		l.stamp(fl, returned)
		result <- err
	}()
	err = l.untilLive(s.Name, result)
	release()
	switch {
	case err == nil:
		l.loaded.Add(1)
		return nil
	case errors.Is(err, unix.EEXIST):
		// A loader outside our locks got there first; it is live or
		// about to be. Unless the module's own init said EEXIST
		// (kvm_intel when kvm_amd is loaded): then it is gone.
		l.waited.Add(1)
		if werr := l.waitLive(s.Name); werr != nil {
			if errors.Is(werr, ErrGone) {
				return l.kernelSaid(&LoadError{Module: s.Name, Path: s.Path, Op: "finit_module",
					Err: fmt.Errorf("its init failed and it is not loaded: %w", unix.EEXIST)}, s.Name, since)
			}
			return werr
		}
		return nil
	default:
		return l.kernelSaid(err, s.Name, since)
	}
}

// takeSlot waits for room in the kernel (MaxInKernel), bounded by the
// live timeout and shutdown. Waiting loads get the room in the order of
// their priority, then of their arrival; release hands it on.
func (l *Loader) takeSlot(name string, priority int) (release func(), err error) {
	if l.MaxInKernel <= 0 {
		return func() {}, nil
	}
	l.slotMu.Lock()
	if l.slotsUsed < l.MaxInKernel && len(l.slotWait) == 0 {
		l.slotsUsed++
		l.slotMu.Unlock()
		return l.releaseSlot, nil
	}
	w := &slotWaiter{priority: priority, granted: make(chan struct{})}
	i := sort.Search(len(l.slotWait), func(i int) bool { return l.slotWait[i].priority < priority })
	l.slotWait = slices.Insert(l.slotWait, i, w)
	l.slotMu.Unlock()
	t := time.NewTimer(l.liveTimeout())
	defer t.Stop()
	var why error
	select {
	case <-w.granted:
		return l.releaseSlot, nil
	case <-t.C:
		why = fmt.Errorf("no room in the kernel within %s (%d loads at once)", l.liveTimeout(), l.MaxInKernel)
	case <-l.ctx.Done():
		why = l.ctx.Err()
	}
	l.slotMu.Lock()
	defer l.slotMu.Unlock()
	select {
	case <-w.granted: // handed over while we gave up: take it
		return l.releaseSlot, nil
	default:
	}
	l.slotWait = slices.DeleteFunc(l.slotWait, func(x *slotWaiter) bool { return x == w })
	return nil, &LoadError{Module: name, Op: "wait", Err: why}
}

// releaseSlot hands a slot to the first waiting load, or frees it.
func (l *Loader) releaseSlot() {
	l.slotMu.Lock()
	defer l.slotMu.Unlock()
	if len(l.slotWait) == 0 {
		l.slotsUsed--
		return
	}
	close(l.slotWait[0].granted)
	l.slotWait = l.slotWait[1:]
}

// untilLive waits for the outcome of our own finit_module: its error, or
// the module live (the add@/module uevent or initstate), whichever comes
// first, bounded by the live timeout. Past it the call goes on in the
// kernel, holding the module file's lock, so nobody hands the module to
// the kernel again until it returns.
func (l *Loader) untilLive(name string, result <-chan error) error {
	return l.waitFor(name, result, func(st initstate) (bool, error) { return st == stateLive, nil })
}

// wakeChan returns the channel ModuleEvent closes for name. Taken before
// looking at sysfs, so an event between the look and the wait is not lost.
func (l *Loader) wakeChan(name string) chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	ch, ok := l.wake[name]
	if !ok {
		ch = make(chan struct{})
		l.wake[name] = ch
	}
	return ch
}

// settled reports whether sysfs leaves nothing to load: the module is live,
// or someone else is loading it and we waited for the outcome (recorded in
// f's timeline record). A module on its way out is waited for, then loaded
// again.
func (l *Loader) settled(name string, f *flight) (bool, error) {
	st, err := l.readState(l.Sysfs, name)
	if err != nil {
		return true, &LoadError{Module: name, Op: "read initstate", Err: err}
	}
	switch st {
	case stateLive:
		l.already.Add(1)
		return true, nil
	case stateComing:
		l.waited.Add(1)
		l.record(f, OpWait)
		return true, l.waitLive(name)
	case stateGoing:
		if err := l.waitGone(name); err != nil {
			return true, err
		}
	}
	return false, nil
}

// lock takes an exclusive flock on the module file, polling so that a
// stuck holder cannot hold us past shutdown or the live timeout (then the
// module is not live in time: ErrNotLive, as for any wait for live).
// Where the file system has no flock (NFS without lockd, some FUSE and 9p
// roots) there is nothing to take: loads in this process are still
// serialized, and kmod takes no lock at all. held is false when the module
// went live while another process held the lock: that process's
// finit_module keeps it until the call returns, on 6.1 seconds after live.
func (l *Loader) lock(f *os.File, name string) (held bool, err error) {
	deadline := time.Now().Add(l.liveTimeout())
	var b backoff
	for {
		err := l.flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, unix.ENOLCK), errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EINVAL):
			return true, nil
		case !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR):
			return false, err
		}
		if st, _ := l.readState(l.Sysfs, name); st == stateLive {
			return false, nil
		}
		if time.Now().After(deadline) {
			return false, fmt.Errorf("%w (%s; its file is held by another process)", ErrNotLive, l.liveTimeout())
		}
		if !b.sleep(l.ctx) {
			return false, l.ctx.Err()
		}
	}
}

func (l *Loader) liveTimeout() time.Duration {
	if l.LiveTimeout <= 0 {
		return DefaultLiveTimeout
	}
	return l.LiveTimeout
}

// Bound is the longest the loader lets the load of one module take: the
// live timeout, after an install command's time.
func (l *Loader) Bound() time.Duration { return l.liveTimeout() + l.commandTimeout() }

func (l *Loader) commandTimeout() time.Duration {
	if l.CommandTimeout <= 0 {
		return DefaultCommandTimeout
	}
	return l.CommandTimeout
}

// backoff spaces out polls of sysfs and of a lock: 1 ms, doubling to
// 50 ms, so a quick load is seen at once and a slow one costs little.
// A safety net's polls (safetyNet) start later and thin out further.
type backoff struct{ d, first, limit time.Duration }

// safetyNet is the backoff of a wait that something else ends first
// (the module's uevent or our own finit_module): its polls are there for
// a uevent lost without an overrun, and need not wake every millisecond.
func safetyNet() backoff { return backoff{first: 50 * time.Millisecond, limit: time.Second} }

func (b *backoff) next() time.Duration {
	first, limit := b.first, b.limit
	if first == 0 {
		first, limit = time.Millisecond, 50*time.Millisecond
	}
	b.d = min(max(2*b.d, first), limit)
	return b.d
}

// sleep waits for the next poll; false when ctx ended first.
func (b *backoff) sleep(ctx context.Context) bool {
	t := time.NewTimer(b.next())
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// insert hands the open module file to the kernel: the file descriptor when
// the kernel can read it (uncompressed, or compressed the way the kernel
// decompresses), else the decompressed image.
func (l *Loader) insert(s Step, f *os.File) error {
	comp, err := detectCompression(f)
	if err != nil {
		return &LoadError{Module: s.Name, Path: s.Path, Op: "read", Err: err}
	}
	switch {
	case comp == compNone:
		err = l.Kernel.FinitModule(f, s.Options, 0)
	case comp == kernelCompression(l.Sysfs):
		err = l.Kernel.FinitModule(f, s.Options, initCompressedFile)
	default:
		image, derr := decompress(f, comp, maxModuleSize)
		if derr != nil {
			return &LoadError{Module: s.Name, Path: s.Path, Op: "decompress", Err: derr}
		}
		if err = l.Kernel.InitModule(image, s.Options); err != nil {
			return &LoadError{Module: s.Name, Path: s.Path, Op: "init_module", Err: err, Options: s.Options, OptionsFrom: s.OptionsFrom}
		}
		return nil
	}
	if err != nil {
		return &LoadError{Module: s.Name, Path: s.Path, Op: "finit_module", Err: err, Options: s.Options, OptionsFrom: s.OptionsFrom}
	}
	return nil
}

// waitLive waits until a module someone else is loading is live. The
// daemon's add@/module/NAME uevent wakes it at once; polling with backoff
// covers the one-shot tools and a failed init, which sends no uevent and
// removes the directory.
func (l *Loader) waitLive(name string) error {
	return l.waitFor(name, nil, func(st initstate) (bool, error) {
		switch st {
		case stateLive:
			return true, nil
		case stateAbsent, stateGoing:
			return false, &LoadError{Module: name, Op: "wait", Err: ErrGone}
		}
		return false, nil
	})
}

// waitGone waits until a going module has left.
func (l *Loader) waitGone(name string) error {
	return l.waitFor(name, nil, func(st initstate) (bool, error) { return st == stateAbsent, nil })
}

// waitFor polls the module's initstate until done says so, woken early by
// ModuleEvent, bounded by the live timeout and shutdown. A non-nil result
// is our own finit_module's outcome, which ends the wait too.
func (l *Loader) waitFor(name string, result <-chan error, done func(initstate) (bool, error)) error {
	timeout := l.liveTimeout()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	b := l.pace
	if result != nil && l.ModuleEvents {
		// Our own load ends with its live uevent (or the kernel's
		// answer, which also brings a failed init): sysfs is polled
		// only in case an event was lost unreported.
		b = safetyNet()
	}
	var last initstate
	var ch chan struct{}
	defer func() {
		l.mu.Lock()
		if l.wake[name] == ch {
			delete(l.wake, name)
		}
		l.mu.Unlock()
	}()
	for {
		// Taken before looking at sysfs, so an event between the look
		// and the wait is not lost.
		ch = l.wakeChan(name)
		select {
		case err := <-result:
			return err
		default:
		}
		st, err := l.readState(l.Sysfs, name)
		if err != nil {
			return &LoadError{Module: name, Op: "wait", Err: err}
		}
		last = st
		if ok, err := done(st); ok || err != nil {
			return err
		}
		poll := time.NewTimer(b.next())
		select {
		case err := <-result:
			poll.Stop()
			return err
		case <-ch:
			// A uevent that did not end the wait (a kernel that sends
			// add@/module before the module is live): sysfs is the only
			// news from here on, so poll it at the quick pace.
			b = backoff{}
		case <-poll.C:
			l.polls.Add(1)
		case <-deadline.C:
			poll.Stop()
			return &LoadError{Module: name, Op: "wait", Err: fmt.Errorf("%w (%s, initstate %q)", ErrNotLive, timeout, last)}
		case <-l.ctx.Done():
			poll.Stop()
			return &LoadError{Module: name, Op: "wait", Err: l.ctx.Err()}
		}
		poll.Stop()
	}
}

// runCommand runs a modprobe.d install or remove command in place of
// loading or unloading, as kmod does: through /bin/sh -c, with
// $CMDLINE_OPTS replaced by the module's options and MODPROBE_MODULE set.
// It is bounded: past CommandTimeout its process group is killed, and
// background children it leaves holding its output do not hold us.
func (l *Loader) runCommand(op, module, command, options string) error {
	fail := func(err error) error { return &LoadError{Module: module, Op: op, Err: err} }
	switch cmd := strings.TrimSpace(command); {
	case cmd == "/bin/true" || cmd == "true":
		return nil
	case cmd == "/bin/false" || cmd == "false":
		return fail(fmt.Errorf("disabled by %q in modprobe.d", cmd))
	case l.NoShell:
		return fail(fmt.Errorf("%s command %q not run: commands are disabled", op, cmd))
	}
	timeout := l.commandTimeout()
	ctx, cancel := context.WithTimeout(l.ctx, timeout)
	defer cancel()
	c := exec.CommandContext(ctx, "/bin/sh", "-c", strings.ReplaceAll(command, "$CMDLINE_OPTS", options))
	c.Env = append(os.Environ(), "MODPROBE_MODULE="+module)
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	// The output goes to a pipe we drain ourselves rather than through
	// exec's copying, whose Wait would wait for every background child
	// holding the pipe ("install foo true; sleep 3 &").
	r, w, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	defer r.Close()
	c.Stdout, c.Stderr = w, w
	err = c.Start()
	w.Close()
	if err != nil {
		return fail(err)
	}
	var out boundedBuffer
	drained := make(chan struct{})
	go func() { defer close(drained); io.Copy(&out, r) }()
	err = c.Wait()
	r.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	<-drained
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fail(fmt.Errorf("%q did not finish within %s; killed: %s", command, timeout, out.text()))
	case err != nil:
		return fail(fmt.Errorf("%q: %w: %s", command, err, out.text()))
	}
	return nil
}

// boundedBuffer keeps the first maxCommandOutput bytes written to it and
// drops the rest, so a chatty command cannot fill memory.
type boundedBuffer struct{ b []byte }

func (o *boundedBuffer) Write(p []byte) (int, error) {
	if room := maxCommandOutput - len(o.b); room > 0 {
		o.b = append(o.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (o *boundedBuffer) text() string { return strings.TrimSpace(string(o.b)) }
