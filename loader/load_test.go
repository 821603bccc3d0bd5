package loader

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"golang.org/x/sys/unix"

	"github.com/modautoload/modautoload/loader/index"
	"github.com/modautoload/modautoload/loader/loadertest"
)

func step(dir, name string) Step {
	return Step{Name: name, Path: filepath.Join(dir, "kernel", name+".ko"), Required: true}
}

func newTestLoader(t *testing.T, k *loadertest.Kernel) *Loader {
	l := NewLoader(k, k.Sysfs)
	l.LiveTimeout = 5 * time.Second
	t.Cleanup(func() { l.Shutdown(context.Background()) })
	return l
}

// The seed's bug: /sys/module/NAME exists, initstate does not yet. That
// is a load in progress; returning success then let socket() fail.
func TestEnsureWaitsThroughTheSysfsWindow(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"xfrm_user"})
	k := loadertest.NewKernel(t, nil)
	l := newTestLoader(t, k)
	modDir := k.ModuleIn("xfrm_user", "") // another process's load: directory, no initstate
	go func() {
		time.Sleep(150 * time.Millisecond)
		loadertest.WriteState(modDir, "coming")
		time.Sleep(150 * time.Millisecond)
		loadertest.WriteState(modDir, "live")
	}()
	start := time.Now()
	if err := l.ensure(context.Background(), step(dir, "xfrm_user"), false); err != nil {
		t.Fatal(err)
	}
	if st, _ := readInitstate(k.Sysfs, "xfrm_user"); st != stateLive {
		t.Fatalf("returned while initstate is %q", st)
	}
	if time.Since(start) < 250*time.Millisecond {
		t.Error("returned before the module went live")
	}
	if n := k.CallsOf("xfrm_user"); n != 0 {
		t.Errorf("finit_module called %d times for a module another process was loading", n)
	}
	if s := l.Stats(); s.Waited != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestEnsureWokenByModuleEvent(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"m"})
	k := loadertest.NewKernel(t, nil)
	l := newTestLoader(t, k)
	modDir := k.ModuleIn("m", "coming")
	// No poll comes before the live timeout: only the uevent can end the
	// wait in time.
	l.pace = backoff{first: time.Hour, limit: time.Hour}
	done := goEnsure(l, step(dir, "m"))
	eventually(t, "the waiter listening for m's uevent", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.wake["m"] != nil
	})
	time.Sleep(50 * time.Millisecond) // its first look at sysfs, which finds m coming
	loadertest.WriteState(modDir, "live")
	l.ModuleEvent("m")
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second): // the live timeout is 5 s
		t.Fatal("the add@/module uevent did not wake the waiter")
	}
}

func TestEnsureOnlyOnceForManyCallers(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"raid6_pq"})
	k := loadertest.NewKernel(t, map[string]loadertest.Module{"raid6_pq": {Window: 5 * time.Millisecond, Init: 200 * time.Millisecond}})
	l := newTestLoader(t, k)
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for i := 0; i < 1000; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.ensure(context.Background(), step(dir, "raid6_pq"), false); err != nil {
				errs <- err
				return
			}
			if st, _ := readInitstate(k.Sysfs, "raid6_pq"); st != stateLive {
				errs <- errors.New("returned before live: " + string(st))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := k.CallsOf("raid6_pq"); n != 1 {
		t.Errorf("finit_module called %d times, want exactly 1", n)
	}
	if s := l.Stats(); s.Loaded != 1 || s.Deduplicated+s.AlreadyLive != 999 {
		t.Errorf("stats %+v", s)
	}
}

// EEXIST: another process's finit_module won, and its module is still
// coming. The load is done when the module is live (invariant 1), not
// when the kernel says EEXIST, and it is no failure.
func TestEnsureKernelSaysEEXIST(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"m"})
	k := &eexistKernel{Kernel: loadertest.NewKernel(t, nil), answered: make(chan struct{}), live: make(chan struct{})}
	goLive := sync.OnceFunc(func() { close(k.live) })
	l := NewLoader(k, k.Sysfs)
	l.LiveTimeout = 30 * time.Second
	t.Cleanup(func() { goLive(); l.Shutdown(context.Background()) })
	done := goEnsure(l, step(dir, "m"))
	waitClosed(t, k.answered, "finit_module called")
	select {
	case err := <-done:
		st, _ := readInitstate(k.Sysfs, "m")
		t.Fatalf("returned %v after EEXIST while initstate is %q", err, st)
	case <-time.After(500 * time.Millisecond):
	}
	goLive()
	if err := result(t, done, "ensure after m went live"); err != nil {
		t.Fatal(err)
	}
	if st, _ := readInitstate(k.Sysfs, "m"); st != stateLive {
		t.Errorf("returned while initstate is %q", st)
	}
	if s := l.Stats(); s.Waited != 1 || s.Loaded != 0 {
		t.Errorf("stats %+v: want one wait, no load of ours", s)
	}
}

// eexistKernel answers EEXIST while another (invisible) load is coming; it
// goes live when live is closed. answered is closed when it has answered.
type eexistKernel struct {
	*loadertest.Kernel
	answered, live chan struct{}
}

func (k *eexistKernel) FinitModule(f *os.File, _ string, _ int) error {
	name := index.ModuleName(f.Name())
	dir := filepath.Join(k.Sysfs, "module", name)
	os.Mkdir(dir, 0o755)
	loadertest.WriteState(dir, "coming")
	go func() { <-k.live; loadertest.WriteState(dir, "live") }()
	close(k.answered)
	return unix.EEXIST
}

func TestEnsureFailureIsSharedAndNamed(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"pcspkr"})
	k := loadertest.NewKernel(t, map[string]loadertest.Module{"pcspkr": {Init: 100 * time.Millisecond, Fail: unix.ENODEV}})
	l := newTestLoader(t, k)
	// Told once per failed load, whoever shared it: the daemon logs there
	// (invariant 3).
	var toldMu sync.Mutex
	var told []string
	l.Failed = func(module string, err error) {
		toldMu.Lock()
		defer toldMu.Unlock()
		if !errors.Is(err, unix.ENODEV) {
			t.Errorf("Failed told of %s with %v, want ENODEV", module, err)
		}
		told = append(told, module)
	}
	wantTold := func(want int, when string) {
		t.Helper()
		toldMu.Lock()
		defer toldMu.Unlock()
		if len(told) != want || (want > 0 && told[want-1] != "pcspkr") {
			t.Errorf("%s: Failed told of %q, want pcspkr %d times", when, told, want)
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = l.ensure(context.Background(), step(dir, "pcspkr"), false) }()
	}
	wg.Wait()
	for _, err := range errs {
		if !errors.Is(err, unix.ENODEV) || !strings.Contains(err.Error(), "ENODEV") || !strings.Contains(err.Error(), "pcspkr") {
			t.Errorf("err = %v, want ENODEV named with the module", err)
		}
	}
	wantTold(1, "8 callers sharing one failed load")
	// The same burst: the failure is the answer, the kernel is not asked.
	if err := l.ensure(context.Background(), step(dir, "pcspkr"), false); !errors.Is(err, unix.ENODEV) {
		t.Errorf("err = %v", err)
	}
	if n := k.CallsOf("pcspkr"); n != 1 {
		t.Errorf("finit_module called %d times in one burst, want 1", n)
	}
	wantTold(1, "the burst's failure given as the answer")
	// A later, distinct event may try once more.
	l.NewBurst()
	if err := l.ensure(context.Background(), step(dir, "pcspkr"), false); !errors.Is(err, unix.ENODEV) {
		t.Errorf("new burst: err = %v, want ENODEV", err)
	}
	if n := k.CallsOf("pcspkr"); n != 2 {
		t.Errorf("finit_module called %d times after a new burst, want 2", n)
	}
	wantTold(2, "a second failed load")
	// Two loads failed in the kernel; the deduplicated answer is not one.
	if st := l.States()["pcspkr"]; st.State != "failed" || !strings.Contains(st.Err, "ENODEV") || st.Failures != 2 {
		t.Errorf("state %+v, want failed with ENODEV and 2 failures", st)
	}
}

// Someone else's load fails: its init sends no uevent, the directory goes.
// The waiter must learn it at once, not at the timeout. The other load's
// init fails when the test says, once the waiter is waiting for it.
func TestEnsureOtherLoadFails(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"m"})
	initEnds := make(chan struct{})
	k := loadertest.NewKernel(t, map[string]loadertest.Module{"m": {During: func() { <-initEnds }, Fail: unix.ENODEV}})
	endInit := sync.OnceFunc(func() { close(initEnds) })
	l := newTestLoader(t, k)
	l.LiveTimeout = 30 * time.Second
	t.Cleanup(endInit)
	other := make(chan error, 1)
	go func() { other <- k.Load("m") }()
	eventually(t, "the other load shows in sysfs", func() bool {
		_, err := os.Stat(filepath.Join(k.Sysfs, "module", "m"))
		return err == nil
	})
	done := goEnsure(l, step(dir, "m"))
	eventually(t, "ensure waits for the other load", func() bool { return l.Stats().Waited == 1 })
	endInit()
	start := time.Now()
	if err := result(t, done, "ensure after the other load failed"); !errors.Is(err, ErrGone) {
		t.Fatalf("err = %v, want the other load's failure (ErrGone)", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("learned of the failure %s after it, the live timeout is 30 s: want at once", d)
	}
	if err := result(t, other, "the other load"); !errors.Is(err, unix.ENODEV) {
		t.Errorf("the other load: %v, want ENODEV", err)
	}
	if n := k.CallsOf("m"); n != 1 {
		t.Errorf("%d finit_module calls, want only the other's", n)
	}
}

// A module on its way out (initstate "going": being removed, or its init
// failed in another loader) is waited for until it has left, then handed
// to the kernel, once: not while it is going.
func TestEnsureWaitsForGoingModule(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"m"})
	k := loadertest.NewKernel(t, nil)
	l := newTestLoader(t, k)
	l.LiveTimeout = 30 * time.Second
	modDir := k.ModuleIn("m", "going")
	done := goEnsure(l, step(dir, "m"))
	select {
	case err := <-done:
		t.Fatalf("returned %v while m was going, after %d finit_module calls", err, k.CallsOf("m"))
	case <-time.After(300 * time.Millisecond):
	}
	if n := k.CallsOf("m"); n != 0 {
		t.Fatalf("%d finit_module calls while m was going, want none", n)
	}
	os.RemoveAll(modDir)
	if err := result(t, done, "ensure after m left"); err != nil {
		t.Fatal(err)
	}
	if n := k.CallsOf("m"); n != 1 {
		t.Errorf("%d finit_module calls after m left, want 1", n)
	}
	if st, _ := readInitstate(k.Sysfs, "m"); st != stateLive {
		t.Errorf("done while initstate is %q", st)
	}
}

func TestEnsureTimeout(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"stuck"})
	k := loadertest.NewKernel(t, nil)
	l := NewLoader(k, k.Sysfs)
	l.LiveTimeout = 150 * time.Millisecond
	defer l.Shutdown(context.Background())
	os.Mkdir(filepath.Join(k.Sysfs, "module", "stuck"), 0o755)
	err := l.ensure(context.Background(), step(dir, "stuck"), false)
	if !errors.Is(err, ErrNotLive) {
		t.Fatalf("err = %v, want ErrNotLive", err)
	}
	if k.CallsOf("stuck") != 0 {
		t.Error("loaded a module that was coming")
	}
}

func TestEnsureCallerContext(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"slow"})
	k := loadertest.NewKernel(t, map[string]loadertest.Module{"slow": {Init: 300 * time.Millisecond}})
	l := newTestLoader(t, k)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := l.ensure(ctx, step(dir, "slow"), false); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	// The load went on for others: a second caller gets its result.
	if err := l.ensure(context.Background(), step(dir, "slow"), false); err != nil {
		t.Fatal(err)
	}
	if n := k.CallsOf("slow"); n != 1 {
		t.Errorf("finit_module called %d times", n)
	}
}

func TestProbeDependencyOrder(t *testing.T) {
	deps := map[string][]string{
		"uas":         {"usb_storage", "scsi_mod", "usbcore", "usb_common"},
		"usb_storage": {"scsi_mod", "usbcore", "usb_common"},
		"usbcore":     {"usb_common"},
	}
	dir := loadertest.ModuleTree(t, deps, []string{"usb_common", "usbcore", "scsi_mod", "usb_storage", "uas"})
	k := loadertest.NewKernel(t, nil)
	l := newTestLoader(t, k)
	r := newResolver(t, dir, "")
	res, err := probe(l, r, "uas", ResolveOptions{}, LoadOptions{})
	if err != nil || len(res) != 1 || res[0].Err != nil {
		t.Fatalf("%+v, %v", res, err)
	}
	if got := strings.Join(k.Calls(), " "); got != "usb_common usbcore scsi_mod usb_storage uas" {
		t.Errorf("load order %s", got)
	}
	if _, err := probe(l, r, "nope", ResolveOptions{}, LoadOptions{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("err = %v", err)
	}
}

func TestRemoveWithDependencies(t *testing.T) {
	deps := map[string][]string{"uas": {"usb_storage", "usbcore"}, "usb_storage": {"usbcore"}, "other": {"usbcore"}}
	dir := loadertest.ModuleTree(t, deps, []string{"usbcore", "usb_storage", "uas", "other"})
	k := loadertest.NewKernel(t, nil)
	l := newTestLoader(t, k)
	r := newResolver(t, dir, "")
	for _, m := range []string{"uas", "other"} {
		if _, err := probe(l, r, m, ResolveOptions{}, LoadOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// "other" still uses usbcore: the kernel counts it.
	os.WriteFile(filepath.Join(k.Sysfs, "module", "usbcore", "refcnt"), []byte("1\n"), 0o644)
	k.ResetCalls()
	if err := l.Remove(r, "uas"); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(k.Calls(), " "); got != "-uas -usb_storage" {
		t.Errorf("removed %s, want uas then usb_storage, usbcore kept", got)
	}
	if err := l.Remove(r, "uas"); !errors.Is(err, ErrNotLoaded) {
		t.Errorf("second remove: %v", err)
	}
}

func TestProbeFailedDependencyStops(t *testing.T) {
	dir := loadertest.ModuleTree(t, map[string][]string{"top": {"dep"}}, []string{"dep", "top"})
	k := loadertest.NewKernel(t, map[string]loadertest.Module{"dep": {Fail: unix.ENOEXEC}})
	l := newTestLoader(t, k)
	res, err := probe(l, newResolver(t, dir, ""), "top", ResolveOptions{}, LoadOptions{})
	if err != nil || !errors.Is(res[0].Err, unix.ENOEXEC) {
		t.Fatalf("%+v, %v", res, err)
	}
	if k.CallsOf("top") != 0 {
		t.Error("loaded a module whose dependency failed")
	}
}

// Loads of independent modules run side by side: both inits are under way
// at once in the (fake) sysfs, each held until the test lets it end.
func TestParallelIndependentLoads(t *testing.T) {
	names := []string{"a", "b"}
	dir := loadertest.ModuleTree(t, nil, names)
	initsEnd := make(chan struct{})
	endInits := sync.OnceFunc(func() { close(initsEnd) })
	held := loadertest.Module{During: func() { <-initsEnd }}
	k := loadertest.NewKernel(t, map[string]loadertest.Module{"a": held, "b": held})
	l := newTestLoader(t, k)
	l.LiveTimeout = 30 * time.Second
	t.Cleanup(endInits)
	var done []<-chan error
	for _, m := range names {
		done = append(done, goEnsure(l, step(dir, m)))
	}
	eventually(t, "a and b initializing at once", func() bool {
		for _, m := range names {
			if st, _ := readInitstate(k.Sysfs, m); st != stateComing {
				return false
			}
		}
		return true
	})
	endInits()
	for i, m := range names {
		if err := result(t, done[i], m); err != nil {
			t.Errorf("%s: %v", m, err)
		}
	}
}

// MaxInKernel: no more modules in the kernel at once than it says, each
// slot given back as soon as its module is live (not when finit_module
// returns), and a wait for a slot bounded by the live timeout.
func TestMaxInKernel(t *testing.T) {
	names := []string{"a", "b", "c", "d"}
	dir := loadertest.ModuleTree(t, nil, append(names, "late"))
	mods := map[string]loadertest.Module{}
	for _, m := range names {
		mods[m] = loadertest.Module{Init: 100 * time.Millisecond, Linger: time.Second}
	}
	k := loadertest.NewKernel(t, mods)
	l := newTestLoader(t, k)
	l.MaxInKernel = 2
	start := time.Now()
	var wg sync.WaitGroup
	for _, m := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.ensure(context.Background(), step(dir, m), false); err != nil {
				t.Error(err)
			}
		}()
	}
	// The fake sysfs shows which modules are initializing.
	most := 0
	for time.Since(start) < 500*time.Millisecond {
		n := 0
		for _, m := range names {
			if st, _ := readInitstate(k.Sysfs, m); st == stateComing {
				n++
			}
		}
		most = max(most, n)
		time.Sleep(5 * time.Millisecond)
	}
	wg.Wait()
	took := time.Since(start)
	if most > 2 || most == 0 {
		t.Errorf("%d modules initializing at once with MaxInKernel 2", most)
	}
	// Two rounds of 100 ms inits; finit_module lingers 1 s after live,
	// which must not hold the slot.
	if took < 190*time.Millisecond || took > 900*time.Millisecond {
		t.Errorf("4 loads of 100 ms, 2 at once, took %s", took)
	}

	// A slot held for good (a holder in the kernel): the wait ends.
	l2 := NewLoader(k, k.Sysfs)
	l2.LiveTimeout, l2.MaxInKernel = 300*time.Millisecond, 1
	t.Cleanup(func() { l2.Shutdown(context.Background()) })
	release, err := l2.takeSlot("holder", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	start = time.Now()
	err = l2.ensure(context.Background(), step(dir, "late"), false)
	if err == nil || !strings.Contains(err.Error(), "no room in the kernel within 300ms") || time.Since(start) > time.Second {
		t.Errorf("a load waiting behind a held slot: %v after %s", err, time.Since(start))
	}
	if k.CallsOf("late") != 0 {
		t.Error("handed to the kernel without a slot")
	}
}

// A load waiting for room in the kernel holds no lock on its file. The
// module holding the room may be one whose init asks for this one
// (request_module), served by a helper process that takes the file's
// lock: locked first, the wait for room and the helper's wait for the
// lock would both run out the live timeout, and both modules fail.
func TestSlotWaitLeavesTheFileUnlocked(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"outer", "inner"})
	k := loadertest.NewKernel(t, nil)
	l := newTestLoader(t, k)
	l.MaxInKernel = 1
	slots := func() (used, waiting int) {
		l.slotMu.Lock()
		defer l.slotMu.Unlock()
		return l.slotsUsed, len(l.slotWait)
	}
	helper := make(chan error, 1)
	k.SetModule("outer", loadertest.Module{During: func() {
		// The kernel's helper for inner, once our load of inner waits
		// for room: its own open file, so its own lock.
		for _, w := slots(); w == 0; _, w = slots() {
			time.Sleep(time.Millisecond)
		}
		f, err := os.Open(step(dir, "inner").Path)
		if err != nil {
			helper <- err
			return
		}
		defer f.Close()
		deadline := time.Now().Add(2 * time.Second)
		for {
			err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err != nil {
			helper <- fmt.Errorf("the helper could not lock inner's file: %w", err)
			return
		}
		helper <- k.Load("inner")
	}})
	outer := make(chan error, 1)
	go func() { outer <- l.ensure(context.Background(), step(dir, "outer"), false) }()
	for used, _ := slots(); used == 0; used, _ = slots() {
		time.Sleep(time.Millisecond)
	}
	inner := make(chan error, 1)
	go func() { inner <- l.ensure(context.Background(), step(dir, "inner"), false) }()

	if err := result(t, helper, "the helper's load of inner"); err != nil {
		t.Error(err)
	}
	if err := result(t, outer, "outer"); err != nil {
		t.Errorf("outer: %v", err)
	}
	if err := result(t, inner, "inner"); err != nil {
		t.Errorf("inner: %v", err)
	}
	if n := k.CallsOf("inner"); n != 1 {
		t.Errorf("inner handed to the kernel %d times, want once (by the helper)", n)
	}
}

// Loads waiting for room in the kernel get it by priority, then in the
// order they came.
func TestSlotPriority(t *testing.T) {
	k := loadertest.NewKernel(t, nil)
	l := newTestLoader(t, k)
	l.MaxInKernel = 1
	release, err := l.takeSlot("holder", 0)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var order []string
	var wg sync.WaitGroup
	for i, w := range []struct {
		name     string
		priority int
	}{{"low", 0}, {"high", 5}, {"mid", 2}, {"high2", 5}, {"low2", 0}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rel, err := l.takeSlot(w.name, w.priority)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, w.name)
			mu.Unlock()
			rel()
		}()
		// Arrive one after the other.
		for waiting := 0; waiting < i+1; time.Sleep(time.Millisecond) {
			l.slotMu.Lock()
			waiting = len(l.slotWait)
			l.slotMu.Unlock()
		}
	}
	release()
	wg.Wait()
	if got := strings.Join(order, " "); got != "high high2 mid low low2" {
		t.Errorf("order %s", got)
	}
	if l.slotsUsed != 0 || len(l.slotWait) != 0 {
		t.Errorf("%d slots used, %d waiting after all released", l.slotsUsed, len(l.slotWait))
	}
}

func TestInstallCommands(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"m"})
	k := loadertest.NewKernel(t, nil)
	l := newTestLoader(t, k)
	out := filepath.Join(t.TempDir(), "out")
	ctx := context.Background()
	s := step(dir, "m")
	s.HasInstall, s.Options = true, "a=1"

	s.Install = "/bin/true"
	if err := l.ensure(ctx, s, false); err != nil {
		t.Errorf("/bin/true: %v", err)
	}
	l.NewBurst()
	s.Install = "echo \"$MODPROBE_MODULE $CMDLINE_OPTS\" > " + out
	os.RemoveAll(filepath.Join(k.Sysfs, "module", "m"))
	if err := l.ensure(ctx, s, false); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out); string(b) != "m a=1\n" {
		t.Errorf("install command saw %q", b)
	}
	l.NewBurst()
	s.Install = "/bin/false"
	if err := l.ensure(ctx, s, false); err == nil || !strings.Contains(err.Error(), "disabled") {
		t.Errorf("/bin/false: %v", err)
	}
	if k.CallsOf("m") != 0 {
		t.Error("a module with an install command was loaded")
	}
	l.NewBurst()
	l.NoShell = true
	s.Install = "echo hi"
	if err := l.ensure(ctx, s, false); err == nil {
		t.Error("ran a shell command with NoShell")
	}
}

func TestCompressedModules(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"zmod"})
	var buf bytes.Buffer
	w, _ := xz.NewWriter(&buf)
	w.Write([]byte("zmod"))
	w.Close()
	path := filepath.Join(dir, "kernel", "zmod.ko")
	os.WriteFile(path, buf.Bytes(), 0o644)

	// The kernel cannot decompress: userspace does, then init_module.
	k := loadertest.NewKernel(t, nil)
	l := newTestLoader(t, k)
	if err := l.ensure(context.Background(), step(dir, "zmod"), false); err != nil {
		t.Fatal(err)
	}
	if string(k.Image("zmod")) != "zmod" {
		t.Errorf("init_module got %q", k.Image("zmod"))
	}

	// The same for zstd, decoded by loader/zstd.go.
	enc, _ := zstd.NewWriter(nil)
	os.WriteFile(path, enc.EncodeAll([]byte("zmod"), nil), 0o644)
	enc.Close()
	kz := loadertest.NewKernel(t, nil)
	if err := newTestLoader(t, kz).ensure(context.Background(), step(dir, "zmod"), false); err != nil {
		t.Fatal(err)
	}
	if string(kz.Image("zmod")) != "zmod" {
		t.Errorf("zstd: init_module got %q", kz.Image("zmod"))
	}
	os.WriteFile(path, buf.Bytes(), 0o644)

	// The kernel decompresses xz itself: hand it the file, flagged.
	k2 := loadertest.NewKernel(t, nil)
	os.WriteFile(filepath.Join(k2.Sysfs, "module", "compression"), []byte("xz\n"), 0o644)
	l2 := newTestLoader(t, k2)
	if err := l2.ensure(context.Background(), step(dir, "zmod"), false); err != nil {
		t.Fatal(err)
	}
	if k2.Flags("zmod") != initCompressedFile || k2.Images() != 0 {
		t.Errorf("flags %d, images %d: want finit_module with MODULE_INIT_COMPRESSED_FILE", k2.Flags("zmod"), k2.Images())
	}
}

func TestBuiltinNeedsNoKernel(t *testing.T) {
	k := loadertest.NewKernel(t, nil)
	l := newTestLoader(t, k)
	if err := l.ensure(context.Background(), Step{Name: "unix", Builtin: true, Required: true}, false); err != nil {
		t.Fatal(err)
	}
	if len(k.Calls()) != 0 {
		t.Error("the kernel was asked to load a built-in module")
	}
}

// A built-in module is done at once even with an install command (a
// CIS-style "install usb-storage /bin/false"): libkmod skips a module in
// the kernel before its command. Its /sys/module directory (built-in
// modules with parameters have one) has no initstate, and is not a load
// coming.
func TestBuiltinWithInstallCommand(t *testing.T) {
	k := loadertest.NewKernel(t, nil)
	l := newTestLoader(t, k)
	os.MkdirAll(filepath.Join(k.Sysfs, "module", "usb_storage", "parameters"), 0o755)
	out := filepath.Join(t.TempDir(), "ran")
	for _, cmd := range []string{"/bin/false", "touch " + out} {
		start := time.Now()
		err := l.ensure(context.Background(), Step{Name: "usb_storage", Builtin: true, Required: true, HasInstall: true, Install: cmd}, false)
		if err != nil || time.Since(start) > time.Second {
			t.Errorf("install %q: %v after %v, want done at once", cmd, err, time.Since(start))
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("the install command of a built-in module ran")
	}
	if st := l.States()["usb_storage"]; st.State != "builtin" {
		t.Errorf("state %q, want builtin", st.State)
	}
}

// Nothing more is handed to the kernel for a caller that is gone, nor
// after Shutdown (SIGTERM): the error says so, and no finit_module is
// made.
func TestNoLoadAfterTheEnd(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"m", "n"})
	k := loadertest.NewKernel(t, nil)
	l := newTestLoader(t, k)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.ensure(ctx, step(dir, "m"), false); !errors.Is(err, context.Canceled) {
		t.Errorf("caller gone: %v, want context.Canceled", err)
	}
	if err := l.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	err := l.ensure(context.Background(), step(dir, "n"), false)
	if err == nil || !strings.Contains(err.Error(), "shutting down") {
		t.Errorf("after Shutdown: %v, want an error saying so", err)
	}
	if n := len(k.Calls()); n != 0 {
		t.Errorf("%d finit_module calls, want none", n)
	}
}

func TestBadModuleNames(t *testing.T) {
	k := loadertest.NewKernel(t, nil)
	l := newTestLoader(t, k)
	for _, name := range []string{"../etc", "a/b", "", ".hidden", strings.Repeat("x", 60)} {
		if err := l.ensure(context.Background(), Step{Name: name, Path: "/x", Required: true}, false); !errors.Is(err, ErrBadName) {
			t.Errorf("%q: err = %v", name, err)
		}
	}
}

// kvm_intel's init returns EEXIST when kvm_amd is loaded: the same errno
// as a duplicate load, but the module is gone. That is a failure, named.
func TestInitReturningEEXIST(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"kvm_intel"})
	k := loadertest.NewKernel(t, map[string]loadertest.Module{"kvm_intel": {Fail: unix.EEXIST}})
	l := newTestLoader(t, k)
	err := l.ensure(context.Background(), step(dir, "kvm_intel"), false)
	if !errors.Is(err, unix.EEXIST) || !strings.Contains(err.Error(), "init failed") {
		t.Fatalf("err = %v, want EEXIST from init, reported as a failure", err)
	}
}

// Separate processes (the kernel's helpers) do not share a Loader; the
// lock on the module file keeps them to one finit_module all the same.
// Each Loader here stands for a process: flock conflicts between open
// files, not processes.
func TestOnlyOnceAcrossProcesses(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"xfrm_user"})
	k := loadertest.NewKernel(t, map[string]loadertest.Module{"xfrm_user": {Window: 20 * time.Millisecond, Init: 100 * time.Millisecond}})
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := newTestLoader(t, k).ensure(context.Background(), step(dir, "xfrm_user"), false); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := k.CallsOf("xfrm_user"); n != 1 {
		t.Errorf("finit_module called %d times by 8 processes, want 1", n)
	}
}

// A process waiting for another's lock on the module file is done once the
// module is live, not when the other lets go of the file (its
// finit_module returns, on 6.1 after every async probe in the system).
func TestLockWaitEndsWhenLive(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"m"})
	k := loadertest.NewKernel(t, nil)
	l := newTestLoader(t, k)
	// The other process: holds the file's lock, and its module goes live.
	other, err := os.Open(step(dir, "m").Path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := unix.Flock(int(other.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	wentLive := make(chan struct{})
	go func() {
		defer close(wentLive)
		time.Sleep(100 * time.Millisecond)
		os.MkdirAll(filepath.Join(k.Sysfs, "module", "m"), 0o755)
		os.WriteFile(filepath.Join(k.Sysfs, "module", "m", "initstate"), []byte("live\n"), 0o644)
	}()
	start := time.Now()
	err = l.ensure(context.Background(), step(dir, "m"), false)
	<-wentLive
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("done %v after asking, want once m is live (100 ms), not when the other lets go of the file", took)
	}
	if n := len(k.Calls()); n != 0 {
		t.Errorf("%d finit_module calls, want none: the other process loaded it", n)
	}
}

func TestProbeAllowList(t *testing.T) {
	dir := loadertest.ModuleTree(t, map[string][]string{"good": {"dep"}}, []string{"dep", "good", "bad"})
	k := loadertest.NewKernel(t, nil)
	l := newTestLoader(t, k)
	r := newResolver(t, dir, "")
	allowed := func(m string) bool { return m == "good" }
	res, _ := probe(l, r, "bad", ResolveOptions{Allowed: allowed}, LoadOptions{})
	if len(res) != 1 || !res[0].Refused {
		t.Errorf("bad: %+v", res)
	}
	res, _ = probe(l, r, "good", ResolveOptions{Allowed: allowed}, LoadOptions{})
	if len(res) != 1 || res[0].Refused || res[0].Err != nil {
		t.Errorf("good: %+v", res)
	}
	if got := strings.Join(k.Calls(), " "); got != "dep good" {
		t.Errorf("loaded %s; want the allowed module and its dependency only", got)
	}
}

// kvm_amd needs irqbypass, kvm (which needs irqbypass) and ccp. In
// parallel, ccp's init runs beside kvm's instead of after it.
func TestProbeParallelPlan(t *testing.T) {
	deps := map[string][]string{"kvm_amd": {"ccp", "kvm", "irqbypass"}, "kvm": {"irqbypass"}}
	dir := loadertest.ModuleTree(t, deps, []string{"irqbypass", "kvm", "ccp", "kvm_amd"})
	slow := map[string]loadertest.Module{"kvm": {Init: 300 * time.Millisecond}, "ccp": {Init: 300 * time.Millisecond}}
	r := newResolver(t, dir, "")

	k := loadertest.NewKernel(t, slow)
	start := time.Now()
	res, err := probe(newTestLoader(t, k), r, "kvm_amd", ResolveOptions{}, LoadOptions{Parallel: true})
	if err != nil || res[0].Err != nil {
		t.Fatalf("%+v, %v", res, err)
	}
	if d := time.Since(start); d > 550*time.Millisecond {
		t.Errorf("took %s: kvm and ccp did not load side by side", d)
	}
	calls := strings.Join(k.Calls(), " ")
	if !strings.HasSuffix(calls, "kvm_amd") || strings.Index(calls, "irqbypass") > strings.Index(calls, "kvm ") {
		t.Errorf("order %s: a module before its dependencies", calls)
	}

	// A failed dependency: kvm_amd is not tried, the error says why.
	failing := map[string]loadertest.Module{"ccp": {Fail: unix.ENODEV}}
	k2 := loadertest.NewKernel(t, failing)
	res, _ = probe(newTestLoader(t, k2), r, "kvm_amd", ResolveOptions{}, LoadOptions{Parallel: true})
	if !errors.Is(res[0].Err, unix.ENODEV) || k2.CallsOf("kvm_amd") != 0 {
		t.Errorf("err %v, kvm_amd tried %d times", res[0].Err, k2.CallsOf("kvm_amd"))
	}
}

// finit_module returns seconds after the module is live on Linux 5.18+
// (async_synchronize_full). The load is done when the kernel says live.
func TestLiveBeforeFinitReturns(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"sym53c8xx"})
	k := loadertest.NewKernel(t, map[string]loadertest.Module{"sym53c8xx": {Init: 50 * time.Millisecond, Linger: 2 * time.Second}})
	l := newTestLoader(t, k)
	start := time.Now()
	if err := l.ensure(context.Background(), step(dir, "sym53c8xx"), false); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Ensure returned after %s: it waited for finit_module, not for live", d)
	}
	// The call is still in the kernel; asking again hands nothing over.
	if err := l.ensure(context.Background(), step(dir, "sym53c8xx"), false); err != nil {
		t.Fatal(err)
	}
	if n := k.CallsOf("sym53c8xx"); n != 1 {
		t.Errorf("finit_module called %d times", n)
	}
	if s := l.Stats(); s.Loaded != 1 {
		t.Errorf("stats %+v", s)
	}
}

// With every module uevent reported (the daemon), our own load ends on
// its live uevent and polls sysfs only as a safety net: a few reads for a
// 400 ms init where the one-shot tools' backoff makes a dozen.
func TestOwnLoadEndsOnItsUevent(t *testing.T) {
	for _, wired := range []bool{true, false} {
		dir := loadertest.ModuleTree(t, nil, []string{"sym53c8xx"})
		k := loadertest.NewKernel(t, map[string]loadertest.Module{"sym53c8xx": {Init: 400 * time.Millisecond, Linger: time.Second}})
		l := newTestLoader(t, k)
		if wired {
			l.ModuleEvents = true
			k.Live = l.ModuleEvent
		}
		start := time.Now()
		if err := l.ensure(context.Background(), step(dir, "sym53c8xx"), false); err != nil {
			t.Fatal(err)
		}
		d, polls := time.Since(start), l.Stats().Polls
		t.Logf("events wired %v: live after %s, %d polls", wired, d, polls)
		if d > time.Second {
			t.Errorf("events wired %v: returned after %s, not when the module went live", wired, d)
		}
		if wired && polls > 3 {
			t.Errorf("%d initstate polls during a 400 ms init whose uevent ends the wait, want at most 3", polls)
		}
		if !wired && polls < 5 {
			t.Errorf("%d initstate polls during a 400 ms init without uevents, want the backoff's 5 or more (13 on time)", polls)
		}
	}
}

// An overrun may have taken a live uevent with it: WakeAll makes the
// waits look at sysfs at once instead of at their next, distant poll.
func TestWakeAllAfterLostEvents(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"sym53c8xx"})
	k := loadertest.NewKernel(t, map[string]loadertest.Module{"sym53c8xx": {Init: 400 * time.Millisecond, Linger: time.Second}})
	l := newTestLoader(t, k)
	l.ModuleEvents = true // but the live uevent is lost: k.Live only wakes everyone, as an overrun does
	woke := make(chan time.Time, 1)
	k.Live = func(string) {
		go func() {
			time.Sleep(50 * time.Millisecond)
			woke <- time.Now()
			l.WakeAll()
		}()
	}
	if err := l.ensure(context.Background(), step(dir, "sym53c8xx"), false); err != nil {
		t.Fatal(err)
	}
	// The safety net's polls come at 50, 150, 350 and 750 ms: live at
	// 400 ms is seen at 750 unless WakeAll (at 450) ends the wait.
	if d := time.Since(<-woke); d > 200*time.Millisecond {
		t.Errorf("the wait ended %s after WakeAll", d)
	}
	if polls := l.Stats().Polls; polls > 3 {
		t.Errorf("%d polls, want at most 3 before WakeAll", polls)
	}
}

// goEnsure runs ensure for s in a goroutine; its error comes on the channel.
func goEnsure(l *Loader, s Step) <-chan error {
	done := make(chan error, 1)
	go func() { done <- l.ensure(context.Background(), s, false) }()
	return done
}

// The bounds below are for the test not to hang: generous for a loaded
// host under -race, far beyond what the waits they guard should take.

// result waits for the error on done, failing the test after 10 s.
func result(t *testing.T, done <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no answer after 10 s", what)
		return nil
	}
}

// waitClosed waits for ch to be closed, failing the test after 10 s.
func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not after 10 s", what)
	}
}

// eventually polls cond until it holds, failing the test after 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 10 s", what)
		}
	}
}

// probe resolves name and loads what it resolves to, as the commands do.
func probe(l *Loader, r *Resolver, name string, ro ResolveOptions, lo LoadOptions) ([]Result, error) {
	plans, err := r.Resolve(name, ro)
	if err != nil {
		return nil, err
	}
	return l.Load(context.Background(), plans, lo), nil
}

// ensure makes the module of one plan step built in or live. A module
// another caller is loading is waited for and its result shared; a module
// that failed in this burst fails again at once, unless retry. ctx bounds
// only this caller's wait: the load itself goes on for the others.
// (Tests only: the Loader's callers go through Load and its plans.)
func (l *Loader) ensure(ctx context.Context, s Step, retry bool) error {
	return l.ensureStep(ctx, s, retry, nil, 0)
}
