package loader

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultLiveTimeout bounds the wait for a module someone else is loading.
// Init functions that probe hardware or benchmark (raid6_pq) take seconds
// under emulation; udevd gives an event 180 s.
const DefaultLiveTimeout = 120 * time.Second

// ErrGone reports a module that disappeared while we waited for it to
// become live: its init failed in another loader, which sends no uevent.
var ErrGone = errors.New("module went away while loading (its init failed)")

// LoadError is a failed load of one module, with the errno by name.
type LoadError struct {
	Module string
	Path   string // "" for install commands and waits
	Op     string // finit_module, init_module, install, wait
	Err    error
}

func (e *LoadError) Error() string {
	var errno syscall.Errno
	name := ""
	if errors.As(e.Err, &errno) {
		name = " (" + unix.ErrnoName(errno) + ")"
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
	InFlight     int64
}

// ModuleState is the last known state of a module this loader dealt with.
type ModuleState struct {
	State   string // loading, live, builtin, failed
	Err     string `json:",omitempty"`
	Updated time.Time
}

// Loader hands modules to the kernel: at most once at a time per module
// across every caller in the process, and a load succeeds only when the
// module is built in or live. Its methods are safe for concurrent use.
type Loader struct {
	Kernel Kernel
	// Sysfs is the sysfs mount point, normally /sys.
	Sysfs string
	// LiveTimeout bounds waits for other loaders; 0 means DefaultLiveTimeout.
	LiveTimeout time.Duration
	// Failed, if set, is told of each failed load once, however many
	// callers shared it (the daemon logs there, not per event).
	Failed func(module string, err error)
	// NoShell refuses to run install commands through /bin/sh (a device
	// without a shell, or a locked-down one). "/bin/true" and "/bin/false"
	// still act as the disabling idiom they are, without a shell.
	NoShell bool

	ctx    context.Context // ends with Shutdown; loads run under it, not under a caller's
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	inflight map[string]*flight
	failures map[string]failure
	burst    uint64
	wake     map[string]chan struct{} // closed by ModuleEvent to wake waiters
	states   map[string]ModuleState

	loaded, failed, dedup, already, waited atomic.Uint64
	inFlight                               atomic.Int64
}

type flight struct {
	done chan struct{}
	err  error
}

type failure struct {
	err   error
	burst uint64
}

// NewLoader returns a loader using kernel and the sysfs mounted at sysfs.
func NewLoader(kernel Kernel, sysfs string) *Loader {
	ctx, cancel := context.WithCancel(context.Background())
	return &Loader{
		Kernel: kernel, Sysfs: sysfs, ctx: ctx, cancel: cancel,
		inflight: map[string]*flight{}, failures: map[string]failure{},
		wake: map[string]chan struct{}{}, states: map[string]ModuleState{},
	}
}

// Shutdown stops waits in progress and waits, until ctx ends, for loads
// already handed to the kernel (a system call cannot be interrupted).
func (l *Loader) Shutdown(ctx context.Context) error {
	l.cancel()
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

// Stats returns the counters so far.
func (l *Loader) Stats() Stats {
	return Stats{
		Loaded: l.loaded.Load(), Failed: l.failed.Load(), Deduplicated: l.dedup.Load(),
		AlreadyLive: l.already.Load(), Waited: l.waited.Load(), InFlight: l.inFlight.Load(),
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

// Ensure makes the module of one plan step built in or live. A module
// another caller is loading is waited for and its result shared; a module
// that failed in this burst fails again at once. ctx bounds only this
// caller's wait: the load itself goes on for the others.
func (l *Loader) Ensure(ctx context.Context, s Step) error {
	if s.Builtin && s.Path == "" && !s.HasInstall {
		l.already.Add(1)
		l.setState(s.Name, "builtin", nil)
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
	case l.failures[s.Name].err != nil && l.failures[s.Name].burst == l.burst:
		err := l.failures[s.Name].err
		l.mu.Unlock()
		l.dedup.Add(1)
		return err
	default:
		f = &flight{done: make(chan struct{})}
		l.inflight[s.Name] = f
		l.states[s.Name] = ModuleState{State: "loading", Updated: time.Now()}
		l.wg.Add(1)
		l.inFlight.Add(1)
		go l.fly(f, s)
	}
	l.mu.Unlock()
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fly performs one load for every caller waiting on f.
func (l *Loader) fly(f *flight, s Step) {
	defer l.wg.Done()
	f.err = l.load(s)
	l.mu.Lock()
	delete(l.inflight, s.Name)
	if f.err != nil && l.ctx.Err() == nil {
		l.failures[s.Name] = failure{f.err, l.burst}
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
	}
	l.mu.Lock()
	l.states[name] = ms
	l.mu.Unlock()
}

// load does the work for one module: nothing if live, wait if someone
// else is loading it, else run its install command or hand its file to
// the kernel.
func (l *Loader) load(s Step) error {
	if done, err := l.settled(s.Name); done {
		return err
	}
	if s.HasInstall {
		// No file lock here: an install command may well run modprobe
		// for this very module.
		return l.runInstall(s)
	}
	if s.Path == "" {
		return &LoadError{Module: s.Name, Op: "find", Err: fmt.Errorf("not in modules.dep: %w", unix.ENOENT)}
	}
	f, err := os.OpenFile(s.Path, os.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return &LoadError{Module: s.Name, Path: s.Path, Op: "open", Err: err}
	}
	// Other modautoload processes (the kernel's helpers, the command
	// line) lock the same file, so the kernel gets one finit_module per
	// module across processes too, not one per helper.
	if err := l.lock(f); err != nil {
		f.Close()
		return &LoadError{Module: s.Name, Path: s.Path, Op: "lock", Err: err}
	}
	// Whoever held the lock has loaded it, or failed, meanwhile.
	if done, err := l.settled(s.Name); done {
		f.Close()
		return err
	}
	// Since Linux 5.18 finit_module returns only after the module's init
	// and then every asynchronous job in the system (another
	// controller's disk scan): seconds after the module went live. So the
	// call runs on its own, holding the file and its lock, and the load
	// is done as soon as the kernel says live.
	result := make(chan error, 1)
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer f.Close() // and with it the lock
		result <- l.insert(s, f)
	}()
	err = l.untilLive(s.Name, result)
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
				return &LoadError{Module: s.Name, Path: s.Path, Op: "finit_module",
					Err: fmt.Errorf("its init failed and it is not loaded: %w", unix.EEXIST)}
			}
			return werr
		}
		return nil
	default:
		return err
	}
}

// untilLive waits for the outcome of our own finit_module: its error, or
// the module live (the add@/module uevent or initstate), whichever comes
// first. The kernel is working on it, so there is no timeout; shutdown
// ends the wait.
func (l *Loader) untilLive(name string, result <-chan error) error {
	delay := time.Millisecond
	for {
		ch := l.wakeChan(name)
		select {
		case err := <-result:
			return err
		default:
		}
		if st, err := readInitstate(l.Sysfs, name); err == nil && st == StateLive {
			return nil
		}
		poll := time.NewTimer(delay)
		select {
		case err := <-result:
			poll.Stop()
			return err
		case <-ch:
		case <-poll.C:
		case <-l.ctx.Done():
			poll.Stop()
			return &LoadError{Module: name, Op: "wait", Err: l.ctx.Err()}
		}
		poll.Stop()
		delay = min(delay*2, 50*time.Millisecond)
	}
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
// or someone else is loading it and we waited for the outcome. A module on
// its way out is waited for, then loaded again.
func (l *Loader) settled(name string) (bool, error) {
	st, err := readInitstate(l.Sysfs, name)
	if err != nil {
		return true, &LoadError{Module: name, Op: "read initstate", Err: err}
	}
	switch st {
	case StateLive:
		l.already.Add(1)
		return true, nil
	case StateComing:
		l.waited.Add(1)
		return true, l.waitLive(name)
	case StateGoing:
		if err := l.waitGone(name); err != nil {
			return true, err
		}
	}
	return false, nil
}

// lock takes an exclusive flock on the module file, polling so that a
// stuck holder cannot hold us past the live timeout or shutdown.
func (l *Loader) lock(f *os.File) error {
	deadline := time.Now().Add(l.liveTimeout())
	delay := time.Millisecond
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("held by another process for %s", l.liveTimeout())
		}
		select {
		case <-time.After(delay):
		case <-l.ctx.Done():
			return l.ctx.Err()
		}
		delay = min(delay*2, 50*time.Millisecond)
	}
}

func (l *Loader) liveTimeout() time.Duration {
	if l.LiveTimeout <= 0 {
		return DefaultLiveTimeout
	}
	return l.LiveTimeout
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
		image, derr := decompress(f, comp)
		if derr != nil {
			return &LoadError{Module: s.Name, Path: s.Path, Op: "decompress", Err: derr}
		}
		if err = l.Kernel.InitModule(image, s.Options); err != nil {
			return &LoadError{Module: s.Name, Path: s.Path, Op: "init_module", Err: err}
		}
		return nil
	}
	if err != nil {
		return &LoadError{Module: s.Name, Path: s.Path, Op: "finit_module", Err: err}
	}
	return nil
}

// waitLive waits until the module is live. The daemon's add@/module/NAME
// uevent wakes it at once; polling with backoff covers the one-shot tools
// and a failed init, which sends no uevent and removes the directory.
func (l *Loader) waitLive(name string) error {
	return l.waitFor(name, func(st Initstate) (bool, error) {
		switch st {
		case StateLive:
			return true, nil
		case StateAbsent, StateGoing:
			return false, &LoadError{Module: name, Op: "wait", Err: ErrGone}
		}
		return false, nil
	})
}

// waitGone waits until a going module has left.
func (l *Loader) waitGone(name string) error {
	return l.waitFor(name, func(st Initstate) (bool, error) { return st == StateAbsent, nil })
}

func (l *Loader) waitFor(name string, done func(Initstate) (bool, error)) error {
	timeout := l.liveTimeout()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	delay := time.Millisecond
	var last Initstate
	var ch chan struct{}
	defer func() {
		l.mu.Lock()
		if l.wake[name] == ch {
			delete(l.wake, name)
		}
		l.mu.Unlock()
	}()
	for {
		ch = l.wakeChan(name)
		st, err := readInitstate(l.Sysfs, name)
		if err != nil {
			return &LoadError{Module: name, Op: "wait", Err: err}
		}
		last = st
		if ok, err := done(st); ok || err != nil {
			return err
		}
		poll := time.NewTimer(delay)
		select {
		case <-ch:
		case <-poll.C:
		case <-deadline.C:
			poll.Stop()
			return &LoadError{Module: name, Op: "wait", Err: fmt.Errorf("timed out after %s (initstate %q)", timeout, last)}
		case <-l.ctx.Done():
			poll.Stop()
			return &LoadError{Module: name, Op: "wait", Err: l.ctx.Err()}
		}
		poll.Stop()
		delay = min(delay*2, 50*time.Millisecond)
	}
}

// runInstall runs a modprobe.d install command in place of loading, as
// kmod does: through /bin/sh -c, with $CMDLINE_OPTS replaced by the
// module's options and MODPROBE_MODULE set.
func (l *Loader) runInstall(s Step) error {
	cmd := strings.TrimSpace(s.Install)
	switch {
	case cmd == "/bin/true" || cmd == "true":
		return nil
	case cmd == "/bin/false" || cmd == "false":
		return &LoadError{Module: s.Name, Op: "install", Err: fmt.Errorf("disabled by %q in modprobe.d", cmd)}
	case l.NoShell:
		return &LoadError{Module: s.Name, Op: "install", Err: fmt.Errorf("install command %q not run: install commands are disabled", cmd)}
	}
	c := exec.CommandContext(l.ctx, "/bin/sh", "-c", strings.ReplaceAll(s.Install, "$CMDLINE_OPTS", s.Options))
	c.Env = append(os.Environ(), "MODPROBE_MODULE="+s.Name)
	out, err := c.CombinedOutput()
	if err != nil {
		return &LoadError{Module: s.Name, Op: "install", Err: fmt.Errorf("%q: %w: %s", s.Install, err, strings.TrimSpace(string(out)))}
	}
	return nil
}
