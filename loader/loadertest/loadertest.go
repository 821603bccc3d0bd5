// Package loadertest provides a fake kernel and sysfs, so code that loads
// modules can be tested without root or a kernel that loads modules.
package loadertest

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/modautoload/modautoload/loader/index"
)

// Kernel behaves like the module loader of a kernel before 6.5, as far as
// userspace can see: sysfs gets /sys/module/NAME before its initstate,
// initstate goes coming -> live (or going, then the directory vanishes),
// and a second finit_module of a module in progress waits, then gets
// EEXIST (live) or EBUSY (failed). It implements loader.Kernel.
type Kernel struct {
	// Sysfs is the fake sysfs root: pass it to the loader.
	Sysfs string
	// Live, if set, is told of each module going live, as the kernel
	// sends add@/module/NAME then. Set it before the first load.
	Live func(name string)
	mods map[string]Module

	mu      sync.Mutex
	calls   []string // module names in call order; "-NAME" for unloads
	images  map[string][]byte
	flags   map[string]int
	loading map[string]chan struct{}
}

// Module says how one module behaves; the zero value loads at once.
type Module struct {
	Window time.Duration // how long the directory exists without initstate
	Init   time.Duration // how long init runs
	Fail   error         // init's error: the module goes away
	// Linger keeps finit_module from returning after the module is live,
	// as Linux 5.18+ does while it waits for all asynchronous work.
	Linger time.Duration
	// During, if set, runs inside init, after Init: what an init does
	// that reaches back into user space, such as request_module().
	During func()
}

// NewKernel returns a fake kernel with an empty sysfs in a temporary
// directory; mods gives the behaviour of modules by name.
func NewKernel(t testing.TB, mods map[string]Module) *Kernel {
	t.Helper()
	sysfs := t.TempDir()
	if err := os.MkdirAll(filepath.Join(sysfs, "module"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(sysfs, "kernel"), 0o755); err != nil {
		t.Fatal(err)
	}
	if mods == nil {
		mods = map[string]Module{}
	}
	return &Kernel{Sysfs: sysfs, mods: mods, images: map[string][]byte{}, flags: map[string]int{}, loading: map[string]chan struct{}{}}
}

// SetModule sets how the module name behaves from its next load on.
func (k *Kernel) SetModule(name string, m Module) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.mods[name] = m
}

// FinitModule loads the module the file is named after.
func (k *Kernel) FinitModule(f *os.File, params string, flags int) error {
	name := index.ModuleName(f.Name())
	k.mu.Lock()
	k.flags[name] = flags
	k.mu.Unlock()
	return k.Load(name)
}

// InitModule loads the module whose name the image holds (test images
// are the module name).
func (k *Kernel) InitModule(image []byte, params string) error {
	name := strings.TrimSpace(string(image))
	k.mu.Lock()
	k.images[name] = image
	k.mu.Unlock()
	return k.Load(name)
}

// DeleteModule removes a module's sysfs directory.
func (k *Kernel) DeleteModule(name string, flags int) error {
	k.mu.Lock()
	k.calls = append(k.calls, "-"+name)
	k.mu.Unlock()
	dir := filepath.Join(k.Sysfs, "module", name)
	if _, err := os.Stat(dir); err != nil {
		return unix.ENOENT
	}
	return os.RemoveAll(dir)
}

// Load is a load of name by anyone: a loader under test, or another
// process a test simulates.
func (k *Kernel) Load(name string) error {
	k.mu.Lock()
	k.calls = append(k.calls, name)
	if ch, ok := k.loading[name]; ok {
		k.mu.Unlock()
		<-ch
		if k.live(name) {
			return unix.EEXIST
		}
		return unix.EBUSY
	}
	if k.live(name) {
		k.mu.Unlock()
		return unix.EEXIST
	}
	ch := make(chan struct{})
	k.loading[name] = ch
	defer func() {
		k.mu.Lock()
		delete(k.loading, name)
		close(ch)
		k.mu.Unlock()
	}()
	m := k.mods[name]
	k.mu.Unlock()
	return k.run(name, m)
}

func (k *Kernel) live(name string) bool {
	data, err := os.ReadFile(filepath.Join(k.Sysfs, "module", name, "initstate"))
	return err == nil && strings.TrimSpace(string(data)) == "live"
}

// run plays one module's life in sysfs.
func (k *Kernel) run(name string, m Module) error {
	dir := filepath.Join(k.Sysfs, "module", name)
	os.Mkdir(dir, 0o755)
	time.Sleep(m.Window)
	WriteState(dir, "coming")
	time.Sleep(m.Init)
	if m.During != nil {
		m.During()
	}
	if m.Fail != nil {
		WriteState(dir, "going")
		os.RemoveAll(dir)
		return m.Fail
	}
	WriteState(dir, "live")
	if k.Live != nil {
		k.Live(name)
	}
	time.Sleep(m.Linger)
	return nil
}

// ModuleIn makes name's sysfs directory show state, as for a load by
// another process ("" for the window before initstate), and returns the
// directory so the test can move it on with WriteState.
func (k *Kernel) ModuleIn(name, state string) string {
	dir := filepath.Join(k.Sysfs, "module", name)
	os.Mkdir(dir, 0o755)
	if state != "" {
		WriteState(dir, state)
	}
	return dir
}

// WriteState replaces the initstate file of a module directory at once,
// as sysfs shows a new value.
func WriteState(dir, state string) {
	tmp := filepath.Join(dir, ".initstate")
	os.WriteFile(tmp, []byte(state+"\n"), 0o644)
	os.Rename(tmp, filepath.Join(dir, "initstate"))
}

// Calls returns the load (and "-NAME" unload) calls so far, in order.
func (k *Kernel) Calls() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.calls...)
}

// ResetCalls forgets the calls so far.
func (k *Kernel) ResetCalls() {
	k.mu.Lock()
	k.calls = nil
	k.mu.Unlock()
}

// CallsOf counts the load calls for name.
func (k *Kernel) CallsOf(name string) int {
	n := 0
	for _, c := range k.Calls() {
		if c == name {
			n++
		}
	}
	return n
}

// Image returns what init_module got for name.
func (k *Kernel) Image(name string) []byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.images[name]
}

// Images counts init_module calls' images.
func (k *Kernel) Images() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.images)
}

// Flags returns the finit_module flags name was loaded with.
func (k *Kernel) Flags(name string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.flags[name]
}

// ModuleTree writes a module directory: modules.dep from deps (module ->
// its dependencies, deepest last), in order, and a small file per module.
func ModuleTree(t testing.TB, deps map[string][]string, order []string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "kernel"), 0o755); err != nil {
		t.Fatal(err)
	}
	var dep strings.Builder
	for _, m := range order {
		dep.WriteString("kernel/" + m + ".ko:")
		for _, d := range deps[m] {
			dep.WriteString(" kernel/" + d + ".ko")
		}
		dep.WriteString("\n")
		if err := os.WriteFile(filepath.Join(dir, "kernel", m+".ko"), []byte("\x7fELF "+m), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}
