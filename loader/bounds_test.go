package loader

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/modautoload/modautoload/loader/loadertest"
)

// Our own finit_module that outlives the live timeout is reported as not
// live, not as success, and the module is not handed to the kernel again
// while that call is still in the kernel.
func TestOwnLoadIsBounded(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"hung"})
	k := loadertest.NewKernel(t, map[string]loadertest.Module{"hung": {Init: 2 * time.Second}})
	l := newTestLoader(t, k)
	l.LiveTimeout = 200 * time.Millisecond

	start := time.Now()
	err := l.ensure(context.Background(), step(dir, "hung"), false)
	if !errors.Is(err, ErrNotLive) {
		t.Fatalf("err = %v, want ErrNotLive", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("returned after %s, the bound is 200ms", d)
	}
	if st := l.Stats(); st.InKernel != 1 || st.InFlight != 0 {
		t.Errorf("stats %+v: want the call counted in the kernel, no flight left", st)
	}
	// Asked again while the first call is still in the kernel: waited
	// for, never a second finit_module.
	l.NewBurst()
	err = l.ensure(context.Background(), step(dir, "hung"), true)
	if !errors.Is(err, ErrNotLive) {
		t.Errorf("second ensure: %v, want ErrNotLive", err)
	}
	if n := k.CallsOf("hung"); n != 1 {
		t.Errorf("%d finit_module calls while one was in the kernel", n)
	}
}

// A failure is the answer for the rest of the burst, but an explicit
// request (retry) asks the kernel again.
func TestRetryAsksTheKernelAgain(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"bad"})
	k := loadertest.NewKernel(t, map[string]loadertest.Module{"bad": {Fail: unix.EINVAL}})
	l := newTestLoader(t, k)
	ctx := context.Background()
	for range 3 {
		if err := l.ensure(ctx, step(dir, "bad"), false); !errors.Is(err, unix.EINVAL) {
			t.Fatalf("err = %v, want EINVAL", err)
		}
	}
	if n := k.CallsOf("bad"); n != 1 {
		t.Fatalf("%d calls within one burst, want 1", n)
	}
	if err := l.ensure(ctx, step(dir, "bad"), true); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("retry: %v, want EINVAL", err)
	}
	if n := k.CallsOf("bad"); n != 2 {
		t.Errorf("%d calls after an explicit retry, want 2", n)
	}
}

func installStep(dir, name, cmd string) Step {
	s := step(dir, name)
	s.HasInstall, s.Install = true, cmd
	return s
}

// A background child of an install command keeps its output open; the
// load must not wait for it.
func TestInstallCommandBackgroundChild(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"m"})
	k := loadertest.NewKernel(t, nil)
	l := newTestLoader(t, k)
	start := time.Now()
	if err := l.ensure(context.Background(), installStep(dir, "m", "true; sleep 3 &"), false); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("install command with a background child held the load %s", d)
	}
}

// An install command that never ends is killed, with its process group,
// after CommandTimeout, and reported as such.
func TestInstallCommandTimeout(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"m"})
	k := loadertest.NewKernel(t, nil)
	l := newTestLoader(t, k)
	l.CommandTimeout = 300 * time.Millisecond
	pidFile := filepath.Join(t.TempDir(), "child")
	start := time.Now()
	err := l.ensure(context.Background(), installStep(dir, "m", "sleep 100 & echo $! >"+pidFile+"; while :; do sleep 1; done"), false)
	if err == nil || !strings.Contains(err.Error(), "did not finish within 300ms") {
		t.Fatalf("err = %v, want a timeout", err)
	}
	var le *LoadError
	if !errors.As(err, &le) || le.Op != "install" {
		t.Errorf("err = %#v, want a LoadError of op install", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %s", d)
	}
	b, rerr := os.ReadFile(pidFile)
	if rerr != nil {
		t.Fatal(rerr)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	// Gone, or a zombie waiting for whoever reaps orphans here.
	running := func() bool {
		stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
		return err == nil && !strings.Contains(string(stat[strings.LastIndexByte(string(stat), ')')+1:]), " Z ")
	}
	deadline := time.Now().Add(2 * time.Second)
	for running() {
		if time.Now().After(deadline) {
			t.Fatalf("background child %d of the killed command still runs", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A chatty failing command: its output in the error is bounded.
func TestInstallCommandOutputBounded(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"m"})
	k := loadertest.NewKernel(t, nil)
	l := newTestLoader(t, k)
	err := l.ensure(context.Background(), installStep(dir, "m", "i=0; while [ $i -lt 20000 ]; do echo xxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done; false"), false)
	if err == nil {
		t.Fatal("a failing command succeeded")
	}
	if n := len(err.Error()); n > maxCommandOutput+512 {
		t.Errorf("error message of %d bytes", n)
	}
}

// A failed remove command is a remove failure, not an install one.
func TestRemoveCommandNamedRemove(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"m"})
	k := loadertest.NewKernel(t, nil)
	l := newTestLoader(t, k)
	r := newResolver(t, dir, "remove m /bin/false\n")
	err := l.Remove(r, "m")
	var le *LoadError
	if !errors.As(err, &le) || le.Op != "remove" {
		t.Fatalf("err = %v, want a LoadError of op remove", err)
	}
}

// File systems without flock (NFS without lockd, some FUSE and 9p roots)
// still load, as kmod does; the other flock errors still fail.
func TestLockUnsupported(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"m", "n"})
	k := loadertest.NewKernel(t, nil)
	l := newTestLoader(t, k)
	l.flock = func(int, int) error { return unix.ENOLCK }
	if err := l.ensure(context.Background(), step(dir, "m"), false); err != nil {
		t.Errorf("ENOLCK: %v", err)
	}
	l.flock = func(int, int) error { return unix.EBADF }
	if err := l.ensure(context.Background(), step(dir, "n"), false); !errors.Is(err, unix.EBADF) {
		t.Errorf("EBADF: %v, want it reported", err)
	}
}

// The module went live while another process held its file, and is
// gone again by the next look: the load fails saying so, and hands the
// kernel nothing (it was told the module was live).
func TestLockWaitLiveThenAway(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"m"})
	k := loadertest.NewKernel(t, nil)
	l := newTestLoader(t, k)
	// 1: another process holds the file; 2: the lock's look saw it live;
	// 3: the next look found it gone.
	var phase atomic.Int32
	l.flock = func(int, int) error {
		phase.CompareAndSwap(0, 1)
		return unix.EWOULDBLOCK
	}
	l.readState = func(sysfs, name string) (initstate, error) {
		switch {
		case phase.CompareAndSwap(1, 2):
			return stateLive, nil
		case phase.CompareAndSwap(2, 3):
			return stateAbsent, nil
		}
		return readInitstate(sysfs, name)
	}
	err := l.ensure(context.Background(), step(dir, "m"), false)
	var le *LoadError
	if !errors.As(err, &le) || le.Op != "lock" || !strings.Contains(err.Error(), "went live and away again") || phase.Load() != 3 {
		t.Errorf("err = %v (phase %d), want the lock's LoadError saying m went live and away", err, phase.Load())
	}
	if n := k.CallsOf("m"); n != 0 {
		t.Errorf("m handed to the kernel %d times, want 0", n)
	}
}

// Uses never wait for a reload in progress, and a reload never waits for
// uses: a slow open (a big index, a slow disk) holds nobody up, and the
// old snapshot stays usable until its last user is done.
func TestUseDoesNotWaitForReload(t *testing.T) {
	dir := t.TempDir()
	writeDir(t, dir, "kernel/a.ko:\n", "alias dev:A a\n")
	opened := make(chan struct{}, 1)
	release := make(chan struct{})
	var slow sync.Once
	cur := &CurrentResolver{
		Open: func() (*Resolver, error) {
			select {
			case opened <- struct{}{}:
			default:
				slow.Do(func() { <-release })
			}
			return newResolver(t, dir, ""), nil
		},
		Interval: time.Hour,
	}
	defer cur.Close()
	if err := cur.Use(func(*Resolver) error { return nil }); err != nil {
		t.Fatal(err)
	}
	reloaded := make(chan error, 1)
	go func() { reloaded <- cur.Reload() }()
	// A use holding its snapshot across the whole reload.
	held, heldDone := make(chan struct{}), make(chan error, 1)
	go func() {
		heldDone <- cur.Use(func(r *Resolver) error {
			<-held
			_, err := r.Lookup("dev:A")
			return err
		})
	}()
	for i := 0; i < 100; i++ {
		done := make(chan error, 1)
		go func() { done <- cur.Use(func(r *Resolver) error { _, err := r.Lookup("dev:A"); return err }) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(time.Second):
			t.Fatal("a use waited for the reload")
		}
	}
	close(release)
	if err := <-reloaded; err != nil {
		t.Fatal(err)
	}
	close(held)
	if err := <-heldDone; err != nil {
		t.Errorf("the use held across the reload: %v", err)
	}
}

// A module two alias patterns match is listed twice by Resolve, as
// libkmod lists it, and loaded and reported once by Load.
func TestTwiceListedLoadedOnce(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"m"})
	k := loadertest.NewKernel(t, nil)
	l := newTestLoader(t, k)
	r := newResolver(t, dir, "alias dev:x* m\nalias dev:* m\n")
	plans, err := r.Resolve("dev:x1", ResolveOptions{})
	if err != nil || len(plans) != 2 {
		t.Fatalf("Resolve: %d plans, %v; want m twice", len(plans), err)
	}
	res := l.Load(context.Background(), plans, LoadOptions{})
	if len(res) != 1 || res[0].Module != "m" || res[0].Err != nil {
		t.Errorf("results %+v, want m once", res)
	}
	if n := k.CallsOf("m"); n != 1 {
		t.Errorf("%d loads of m", n)
	}
}

// A module that stays "going" (a removal stuck in its exit function) is
// waited for only until the live timeout, and never handed to the kernel.
func TestGoingForeverIsBounded(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"m"})
	k := loadertest.NewKernel(t, nil)
	l := newTestLoader(t, k)
	l.LiveTimeout = 200 * time.Millisecond
	k.ModuleIn("m", "going")
	start := time.Now()
	err := result(t, goEnsure(l, step(dir, "m")), "ensure of a module going for ever")
	if !errors.Is(err, ErrNotLive) {
		t.Errorf("err = %v, want ErrNotLive", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("returned after %s, the live timeout is 200ms", d)
	}
	if n := k.CallsOf("m"); n != 0 {
		t.Errorf("%d finit_module calls for a module still going, want none", n)
	}
}

// Another process holds the module file's lock and the module never shows
// in sysfs (a helper stuck before its finit_module): the wait ends at the
// live timeout as "not live within the live timeout", as every wait for
// live does, and nothing is handed to the kernel.
func TestLockWaitIsBounded(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"m"})
	k := loadertest.NewKernel(t, nil)
	l := newTestLoader(t, k)
	l.LiveTimeout = 200 * time.Millisecond
	other, err := os.Open(step(dir, "m").Path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := unix.Flock(int(other.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = result(t, goEnsure(l, step(dir, "m")), "ensure of a module whose file another process holds")
	if !errors.Is(err, ErrNotLive) || !strings.Contains(err.Error(), "held by another process") {
		t.Errorf("err = %v, want ErrNotLive saying another process holds the file", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("returned after %s, the live timeout is 200ms", d)
	}
	if n := len(k.Calls()); n != 0 {
		t.Errorf("%d finit_module calls, want none", n)
	}
}

// SIGTERM: Shutdown waits for a call stuck in the kernel (it cannot be
// interrupted) only until its ctx ends, and says so; once the call
// returns, Shutdown has nothing left to wait for.
func TestShutdownIsBounded(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"hung"})
	initEnds := make(chan struct{})
	endInit := sync.OnceFunc(func() { close(initEnds) })
	k := loadertest.NewKernel(t, map[string]loadertest.Module{"hung": {During: func() { <-initEnds }}})
	l := NewLoader(k, k.Sysfs)
	l.LiveTimeout = 100 * time.Millisecond
	t.Cleanup(func() { endInit(); l.Shutdown(context.Background()) })
	if err := result(t, goEnsure(l, step(dir, "hung")), "ensure of a hung init"); !errors.Is(err, ErrNotLive) {
		t.Fatalf("err = %v, want ErrNotLive", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	shut := make(chan error, 1)
	go func() { shut <- l.Shutdown(ctx) }()
	if err := result(t, shut, "Shutdown with a 200ms bound and a call in the kernel"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown: %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Shutdown returned after %s, its bound is 200ms", d)
	}
	endInit()
	go func() { shut <- l.Shutdown(context.Background()) }()
	if err := result(t, shut, "Shutdown once the call returned"); err != nil {
		t.Errorf("Shutdown once the call returned: %v", err)
	}
}
