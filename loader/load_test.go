package loader

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ulikunitz/xz"
	"golang.org/x/sys/unix"

	"github.com/modautoload/modautoload/loader/index"
)

// fakeKernel behaves like the module loader of a kernel before 6.5 as far
// as userspace can see: sysfs gets /sys/module/NAME before its initstate,
// initstate goes coming -> live (or going, then the directory vanishes),
// and a second finit_module of a module in progress waits, then gets
// EEXIST (live) or EBUSY (failed).
type fakeKernel struct {
	sysfs string
	mods  map[string]fakeModule // behaviour by module name; zero value: loads at once

	mu      sync.Mutex
	calls   []string // module names, in call order
	images  map[string][]byte
	flags   map[string]int
	loading map[string]chan struct{}
}

type fakeModule struct {
	window time.Duration // how long the directory exists without initstate
	init   time.Duration // how long init runs
	fail   error         // init's error: the module goes away
}

func newFakeKernel(t *testing.T, mods map[string]fakeModule) *fakeKernel {
	sysfs := t.TempDir()
	if err := os.MkdirAll(filepath.Join(sysfs, "module"), 0o755); err != nil {
		t.Fatal(err)
	}
	return &fakeKernel{sysfs: sysfs, mods: mods, images: map[string][]byte{}, flags: map[string]int{}, loading: map[string]chan struct{}{}}
}

func (k *fakeKernel) FinitModule(f *os.File, params string, flags int) error {
	name := index.ModuleName(f.Name())
	k.mu.Lock()
	k.flags[name] = flags
	k.mu.Unlock()
	return k.load(name)
}

func (k *fakeKernel) InitModule(image []byte, params string) error {
	name := strings.TrimSpace(string(image)) // test images hold the module name
	k.mu.Lock()
	k.images[name] = image
	k.mu.Unlock()
	return k.load(name)
}

func (k *fakeKernel) DeleteModule(name string, flags int) error {
	k.mu.Lock()
	k.calls = append(k.calls, "-"+name)
	k.mu.Unlock()
	dir := filepath.Join(k.sysfs, "module", name)
	if _, err := os.Stat(dir); err != nil {
		return unix.ENOENT
	}
	return os.RemoveAll(dir)
}

func (k *fakeKernel) load(name string) error {
	k.mu.Lock()
	k.calls = append(k.calls, name)
	if ch, ok := k.loading[name]; ok {
		k.mu.Unlock()
		<-ch
		if st, _ := readInitstate(k.sysfs, name); st == StateLive {
			return unix.EEXIST
		}
		return unix.EBUSY
	}
	if st, _ := readInitstate(k.sysfs, name); st == StateLive {
		k.mu.Unlock()
		return unix.EEXIST
	}
	ch := make(chan struct{})
	k.loading[name] = ch
	k.mu.Unlock()
	defer func() {
		k.mu.Lock()
		delete(k.loading, name)
		close(ch)
		k.mu.Unlock()
	}()
	return k.run(name, k.mods[name])
}

// run plays one module's life in sysfs.
func (k *fakeKernel) run(name string, m fakeModule) error {
	dir := filepath.Join(k.sysfs, "module", name)
	os.Mkdir(dir, 0o755)
	time.Sleep(m.window)
	writeState(dir, "coming")
	time.Sleep(m.init)
	if m.fail != nil {
		writeState(dir, "going")
		os.RemoveAll(dir)
		return m.fail
	}
	writeState(dir, "live")
	return nil
}

func writeState(dir, state string) {
	tmp := filepath.Join(dir, ".initstate")
	os.WriteFile(tmp, []byte(state+"\n"), 0o644)
	os.Rename(tmp, filepath.Join(dir, "initstate"))
}

func (k *fakeKernel) callsOf(name string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := 0
	for _, c := range k.calls {
		if c == name {
			n++
		}
	}
	return n
}

// moduleTree writes a module directory: modules.dep from deps (module ->
// its dependencies, deepest last) and a small file per module.
func moduleTree(t *testing.T, deps map[string][]string, order []string) string {
	t.Helper()
	dir := t.TempDir()
	var dep strings.Builder
	for _, m := range order {
		dep.WriteString("kernel/" + m + ".ko:")
		for _, d := range deps[m] {
			dep.WriteString(" kernel/" + d + ".ko")
		}
		dep.WriteString("\n")
		if err := os.MkdirAll(filepath.Join(dir, "kernel"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "kernel", m+".ko"), []byte("\x7fELF "+m), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func step(dir, name string) Step {
	return Step{Name: name, Path: filepath.Join(dir, "kernel", name+".ko"), Required: true}
}

func newTestLoader(t *testing.T, k *fakeKernel) *Loader {
	l := NewLoader(k, k.sysfs)
	l.LiveTimeout = 5 * time.Second
	t.Cleanup(func() { l.Shutdown(context.Background()) })
	return l
}

// The seed's bug: /sys/module/NAME exists, initstate does not yet. That
// is a load in progress; returning success then let socket() fail.
func TestEnsureWaitsThroughTheSysfsWindow(t *testing.T) {
	dir := moduleTree(t, nil, []string{"xfrm_user"})
	k := newFakeKernel(t, nil)
	l := newTestLoader(t, k)
	modDir := filepath.Join(k.sysfs, "module", "xfrm_user")
	os.Mkdir(modDir, 0o755) // another process's load: directory, no initstate
	go func() {
		time.Sleep(150 * time.Millisecond)
		writeState(modDir, "coming")
		time.Sleep(150 * time.Millisecond)
		writeState(modDir, "live")
	}()
	start := time.Now()
	if err := l.Ensure(context.Background(), step(dir, "xfrm_user")); err != nil {
		t.Fatal(err)
	}
	if st, _ := readInitstate(k.sysfs, "xfrm_user"); st != StateLive {
		t.Fatalf("returned while initstate is %q", st)
	}
	if time.Since(start) < 250*time.Millisecond {
		t.Error("returned before the module went live")
	}
	if n := k.callsOf("xfrm_user"); n != 0 {
		t.Errorf("finit_module called %d times for a module another process was loading", n)
	}
	if s := l.Stats(); s.Waited != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestEnsureWokenByModuleEvent(t *testing.T) {
	dir := moduleTree(t, nil, []string{"m"})
	k := newFakeKernel(t, nil)
	l := newTestLoader(t, k)
	modDir := filepath.Join(k.sysfs, "module", "m")
	os.Mkdir(modDir, 0o755)
	writeState(modDir, "coming")
	done := make(chan error)
	go func() { done <- l.Ensure(context.Background(), step(dir, "m")) }()
	time.Sleep(200 * time.Millisecond) // the poll interval has grown to its cap
	writeState(modDir, "live")
	l.ModuleEvent("m")
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Millisecond):
		t.Fatal("the add@/module uevent did not wake the waiter")
	}
}

func TestEnsureOnlyOnceForManyCallers(t *testing.T) {
	dir := moduleTree(t, nil, []string{"raid6_pq"})
	k := newFakeKernel(t, map[string]fakeModule{"raid6_pq": {window: 5 * time.Millisecond, init: 200 * time.Millisecond}})
	l := newTestLoader(t, k)
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for i := 0; i < 1000; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.Ensure(context.Background(), step(dir, "raid6_pq")); err != nil {
				errs <- err
				return
			}
			if st, _ := readInitstate(k.sysfs, "raid6_pq"); st != StateLive {
				errs <- errors.New("returned before live: " + string(st))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := k.callsOf("raid6_pq"); n != 1 {
		t.Errorf("finit_module called %d times, want exactly 1", n)
	}
	if s := l.Stats(); s.Loaded != 1 || s.Deduplicated+s.AlreadyLive != 999 {
		t.Errorf("stats %+v", s)
	}
}

// EEXIST: another process's finit_module won; wait for live, do not fail.
func TestEnsureKernelSaysEEXIST(t *testing.T) {
	dir := moduleTree(t, nil, []string{"m"})
	k := &eexistKernel{fakeKernel: newFakeKernel(t, nil)}
	l := NewLoader(k, k.sysfs)
	l.LiveTimeout = 5 * time.Second
	defer l.Shutdown(context.Background())
	if err := l.Ensure(context.Background(), step(dir, "m")); err != nil {
		t.Fatal(err)
	}
	if s := l.Stats(); s.Waited != 1 || s.Loaded != 0 {
		t.Errorf("stats %+v: want one wait, no load of ours", s)
	}
}

// eexistKernel answers EEXIST while another (invisible) load finishes.
type eexistKernel struct{ *fakeKernel }

func (k *eexistKernel) FinitModule(f *os.File, _ string, _ int) error {
	name := index.ModuleName(f.Name())
	dir := filepath.Join(k.sysfs, "module", name)
	os.Mkdir(dir, 0o755)
	writeState(dir, "coming")
	go func() { time.Sleep(100 * time.Millisecond); writeState(dir, "live") }()
	return unix.EEXIST
}

func TestEnsureFailureIsSharedAndNamed(t *testing.T) {
	dir := moduleTree(t, nil, []string{"pcspkr"})
	k := newFakeKernel(t, map[string]fakeModule{"pcspkr": {init: 100 * time.Millisecond, fail: unix.ENODEV}})
	l := newTestLoader(t, k)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = l.Ensure(context.Background(), step(dir, "pcspkr")) }()
	}
	wg.Wait()
	for _, err := range errs {
		if !errors.Is(err, unix.ENODEV) || !strings.Contains(err.Error(), "ENODEV") || !strings.Contains(err.Error(), "pcspkr") {
			t.Errorf("err = %v, want ENODEV named with the module", err)
		}
	}
	// The same burst: the failure is the answer, the kernel is not asked.
	if err := l.Ensure(context.Background(), step(dir, "pcspkr")); !errors.Is(err, unix.ENODEV) {
		t.Errorf("err = %v", err)
	}
	if n := k.callsOf("pcspkr"); n != 1 {
		t.Errorf("finit_module called %d times in one burst, want 1", n)
	}
	// A later, distinct event may try once more.
	l.NewBurst()
	l.Ensure(context.Background(), step(dir, "pcspkr"))
	if n := k.callsOf("pcspkr"); n != 2 {
		t.Errorf("finit_module called %d times after a new burst, want 2", n)
	}
	if st := l.States()["pcspkr"]; st.State != "failed" || !strings.Contains(st.Err, "ENODEV") {
		t.Errorf("state %+v", st)
	}
}

// Someone else's load fails: its init sends no uevent, the directory goes.
// The waiter must learn it at once, not at the timeout.
func TestEnsureOtherLoadFails(t *testing.T) {
	dir := moduleTree(t, nil, []string{"m"})
	k := newFakeKernel(t, map[string]fakeModule{"m": {init: 100 * time.Millisecond, fail: unix.ENODEV}})
	l := newTestLoader(t, k)
	go k.load("m")
	time.Sleep(30 * time.Millisecond)
	start := time.Now()
	err := l.Ensure(context.Background(), step(dir, "m"))
	if !errors.Is(err, ErrGone) && !errors.Is(err, unix.EBUSY) {
		t.Fatalf("err = %v, want the other load's failure", err)
	}
	if time.Since(start) > time.Second {
		t.Error("learned of the failure only after a long wait")
	}
}

func TestEnsureTimeout(t *testing.T) {
	dir := moduleTree(t, nil, []string{"stuck"})
	k := newFakeKernel(t, nil)
	l := NewLoader(k, k.sysfs)
	l.LiveTimeout = 150 * time.Millisecond
	defer l.Shutdown(context.Background())
	os.Mkdir(filepath.Join(k.sysfs, "module", "stuck"), 0o755)
	err := l.Ensure(context.Background(), step(dir, "stuck"))
	if err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("err = %v, want a timeout", err)
	}
	if k.callsOf("stuck") != 0 {
		t.Error("loaded a module that was coming")
	}
}

func TestEnsureCallerContext(t *testing.T) {
	dir := moduleTree(t, nil, []string{"slow"})
	k := newFakeKernel(t, map[string]fakeModule{"slow": {init: 300 * time.Millisecond}})
	l := newTestLoader(t, k)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := l.Ensure(ctx, step(dir, "slow")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	// The load went on for others: a second caller gets its result.
	if err := l.Ensure(context.Background(), step(dir, "slow")); err != nil {
		t.Fatal(err)
	}
	if n := k.callsOf("slow"); n != 1 {
		t.Errorf("finit_module called %d times", n)
	}
}

func TestProbeDependencyOrder(t *testing.T) {
	deps := map[string][]string{
		"uas":         {"usb_storage", "scsi_mod", "usbcore", "usb_common"},
		"usb_storage": {"scsi_mod", "usbcore", "usb_common"},
		"usbcore":     {"usb_common"},
	}
	dir := moduleTree(t, deps, []string{"usb_common", "usbcore", "scsi_mod", "usb_storage", "uas"})
	k := newFakeKernel(t, nil)
	l := newTestLoader(t, k)
	r := newResolver(t, dir, "")
	res, err := l.Probe(context.Background(), r, "uas", ProbeOptions{})
	if err != nil || len(res) != 1 || res[0].Err != nil {
		t.Fatalf("%+v, %v", res, err)
	}
	if got := strings.Join(k.calls, " "); got != "usb_common usbcore scsi_mod usb_storage uas" {
		t.Errorf("load order %s", got)
	}
	if _, err := l.Probe(context.Background(), r, "nope", ProbeOptions{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("err = %v", err)
	}
}

func TestRemoveWithDependencies(t *testing.T) {
	deps := map[string][]string{"uas": {"usb_storage", "usbcore"}, "usb_storage": {"usbcore"}, "other": {"usbcore"}}
	dir := moduleTree(t, deps, []string{"usbcore", "usb_storage", "uas", "other"})
	k := newFakeKernel(t, nil)
	l := newTestLoader(t, k)
	r := newResolver(t, dir, "")
	for _, m := range []string{"uas", "other"} {
		if _, err := l.Probe(context.Background(), r, m, ProbeOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// "other" still uses usbcore: the kernel counts it.
	os.WriteFile(filepath.Join(k.sysfs, "module", "usbcore", "refcnt"), []byte("1\n"), 0o644)
	k.calls = nil
	if err := l.Remove(r, "uas"); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(k.calls, " "); got != "-uas -usb_storage" {
		t.Errorf("removed %s, want uas then usb_storage, usbcore kept", got)
	}
	if err := l.Remove(r, "uas"); !errors.Is(err, ErrNotLoaded) {
		t.Errorf("second remove: %v", err)
	}
}

func TestProbeFailedDependencyStops(t *testing.T) {
	dir := moduleTree(t, map[string][]string{"top": {"dep"}}, []string{"dep", "top"})
	k := newFakeKernel(t, map[string]fakeModule{"dep": {fail: unix.ENOEXEC}})
	l := newTestLoader(t, k)
	res, err := l.Probe(context.Background(), newResolver(t, dir, ""), "top", ProbeOptions{})
	if err != nil || !errors.Is(res[0].Err, unix.ENOEXEC) {
		t.Fatalf("%+v, %v", res, err)
	}
	if k.callsOf("top") != 0 {
		t.Error("loaded a module whose dependency failed")
	}
}

func TestParallelIndependentLoads(t *testing.T) {
	dir := moduleTree(t, nil, []string{"a", "b"})
	k := newFakeKernel(t, map[string]fakeModule{"a": {init: 200 * time.Millisecond}, "b": {init: 200 * time.Millisecond}})
	l := newTestLoader(t, k)
	start := time.Now()
	var wg sync.WaitGroup
	for _, m := range []string{"a", "b"} {
		wg.Add(1)
		go func() { defer wg.Done(); l.Ensure(context.Background(), step(dir, m)) }()
	}
	wg.Wait()
	if d := time.Since(start); d > 350*time.Millisecond {
		t.Errorf("two independent 200 ms loads took %s: serialized", d)
	}
}

func TestInstallCommands(t *testing.T) {
	dir := moduleTree(t, nil, []string{"m"})
	k := newFakeKernel(t, nil)
	l := newTestLoader(t, k)
	out := filepath.Join(t.TempDir(), "out")
	ctx := context.Background()
	s := step(dir, "m")
	s.HasInstall, s.Options = true, "a=1"

	s.Install = "/bin/true"
	if err := l.Ensure(ctx, s); err != nil {
		t.Errorf("/bin/true: %v", err)
	}
	l.NewBurst()
	s.Install = "echo \"$MODPROBE_MODULE $CMDLINE_OPTS\" > " + out
	os.RemoveAll(filepath.Join(k.sysfs, "module", "m"))
	if err := l.Ensure(ctx, s); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out); string(b) != "m a=1\n" {
		t.Errorf("install command saw %q", b)
	}
	l.NewBurst()
	s.Install = "/bin/false"
	if err := l.Ensure(ctx, s); err == nil || !strings.Contains(err.Error(), "disabled") {
		t.Errorf("/bin/false: %v", err)
	}
	if k.callsOf("m") != 0 {
		t.Error("a module with an install command was loaded")
	}
	l.NewBurst()
	l.NoShell = true
	s.Install = "echo hi"
	if err := l.Ensure(ctx, s); err == nil {
		t.Error("ran a shell command with NoShell")
	}
}

func TestCompressedModules(t *testing.T) {
	dir := moduleTree(t, nil, []string{"zmod"})
	var buf bytes.Buffer
	w, _ := xz.NewWriter(&buf)
	w.Write([]byte("zmod"))
	w.Close()
	path := filepath.Join(dir, "kernel", "zmod.ko")
	os.WriteFile(path, buf.Bytes(), 0o644)

	// The kernel cannot decompress: userspace does, then init_module.
	k := newFakeKernel(t, nil)
	l := newTestLoader(t, k)
	if err := l.Ensure(context.Background(), step(dir, "zmod")); err != nil {
		t.Fatal(err)
	}
	if string(k.images["zmod"]) != "zmod" {
		t.Errorf("init_module got %q", k.images["zmod"])
	}

	// The kernel decompresses xz itself: hand it the file, flagged.
	k2 := newFakeKernel(t, nil)
	os.WriteFile(filepath.Join(k2.sysfs, "module", "compression"), []byte("xz\n"), 0o644)
	l2 := newTestLoader(t, k2)
	if err := l2.Ensure(context.Background(), step(dir, "zmod")); err != nil {
		t.Fatal(err)
	}
	if k2.flags["zmod"] != initCompressedFile || len(k2.images) != 0 {
		t.Errorf("flags %d, images %d: want finit_module with MODULE_INIT_COMPRESSED_FILE", k2.flags["zmod"], len(k2.images))
	}
}

func TestBuiltinNeedsNoKernel(t *testing.T) {
	k := newFakeKernel(t, nil)
	l := newTestLoader(t, k)
	if err := l.Ensure(context.Background(), Step{Name: "unix", Builtin: true, Required: true}); err != nil {
		t.Fatal(err)
	}
	if len(k.calls) != 0 {
		t.Error("the kernel was asked to load a built-in module")
	}
}

func TestBadModuleNames(t *testing.T) {
	k := newFakeKernel(t, nil)
	l := newTestLoader(t, k)
	for _, name := range []string{"../etc", "a/b", "", ".hidden", strings.Repeat("x", 60)} {
		if err := l.Ensure(context.Background(), Step{Name: name, Path: "/x", Required: true}); !errors.Is(err, ErrBadName) {
			t.Errorf("%q: err = %v", name, err)
		}
	}
}

// kvm_intel's init returns EEXIST when kvm_amd is loaded: the same errno
// as a duplicate load, but the module is gone. That is a failure, named.
func TestInitReturningEEXIST(t *testing.T) {
	dir := moduleTree(t, nil, []string{"kvm_intel"})
	k := newFakeKernel(t, map[string]fakeModule{"kvm_intel": {fail: unix.EEXIST}})
	l := newTestLoader(t, k)
	err := l.Ensure(context.Background(), step(dir, "kvm_intel"))
	if !errors.Is(err, unix.EEXIST) || !strings.Contains(err.Error(), "init failed") {
		t.Fatalf("err = %v, want EEXIST from init, reported as a failure", err)
	}
}

// Separate processes (the kernel's helpers) do not share a Loader; the
// lock on the module file keeps them to one finit_module all the same.
// Each Loader here stands for a process: flock conflicts between open
// files, not processes.
func TestOnlyOnceAcrossProcesses(t *testing.T) {
	dir := moduleTree(t, nil, []string{"xfrm_user"})
	k := newFakeKernel(t, map[string]fakeModule{"xfrm_user": {window: 20 * time.Millisecond, init: 100 * time.Millisecond}})
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := newTestLoader(t, k).Ensure(context.Background(), step(dir, "xfrm_user")); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := k.callsOf("xfrm_user"); n != 1 {
		t.Errorf("finit_module called %d times by 8 processes, want 1", n)
	}
}
