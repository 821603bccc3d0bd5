package modlist

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/modautoload/modautoload/loader"
	"github.com/modautoload/modautoload/loader/loadertest"
	"github.com/modautoload/modautoload/loader/modprobed"
)

// watchKernel records, for each finit_module call, the calls in progress
// at the same time, so a test can tell what overlapped what.
type watchKernel struct {
	*loadertest.Kernel
	mu      sync.Mutex
	active  map[string]int
	overlap map[string]map[string]bool // module -> modules in the kernel at the same time
	maxBusy int
}

func newWatchKernel(t *testing.T, mods map[string]loadertest.Module) *watchKernel {
	return &watchKernel{Kernel: loadertest.NewKernel(t, mods), active: map[string]int{}, overlap: map[string]map[string]bool{}}
}

func (k *watchKernel) FinitModule(f *os.File, params string, flags int) error {
	name := strings.TrimSuffix(filepath.Base(f.Name()), ".ko")
	k.mu.Lock()
	k.active[name]++
	busy := 0
	for other, n := range k.active {
		if n == 0 {
			continue
		}
		busy++
		if other != name {
			k.note(name, other)
			k.note(other, name)
		}
	}
	k.maxBusy = max(k.maxBusy, busy)
	k.mu.Unlock()
	err := k.Kernel.FinitModule(f, params, flags)
	k.mu.Lock()
	k.active[name]--
	k.mu.Unlock()
	return err
}

func (k *watchKernel) note(a, b string) {
	if k.overlap[a] == nil {
		k.overlap[a] = map[string]bool{}
	}
	k.overlap[a][b] = true
}

// fixture is a module tree, a resolver over it and a loader with a fake
// kernel.
type fixture struct {
	k *watchKernel
	r *loader.Resolver
	l *loader.Loader
}

func newFixture(t *testing.T, deps map[string][]string, order []string, mods map[string]loadertest.Module, blacklist ...string) *fixture {
	dir := loadertest.ModuleTree(t, deps, order)
	db, err := loader.OpenDB(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	k := newWatchKernel(t, mods)
	l := loader.NewLoader(k, k.Sysfs)
	l.LiveTimeout = 5 * time.Second
	t.Cleanup(func() { l.Shutdown(context.Background()) })
	return &fixture{k: k, r: &loader.Resolver{DB: db, Config: &modprobed.Config{Blacklist: blacklist}}, l: l}
}

func (f *fixture) loading() *Loading {
	return &Loading{Resolve: f.r.Resolve, Loader: f.l, Jobs: 8}
}

func (f *fixture) live(name string) bool {
	data, err := os.ReadFile(filepath.Join(f.k.Sysfs, "module", name, "initstate"))
	return err == nil && strings.TrimSpace(string(data)) == "live"
}

func names(ns ...string) []Entry {
	var out []Entry
	for i, n := range ns {
		out = append(out, Entry{Name: n, File: "t.conf", Line: i + 1})
	}
	return out
}

// Independent entries load side by side; a dependency several entries
// share is handed to the kernel once, before each of them, and every
// entry reported live is live.
func TestRunParallelSharedDependencyOnce(t *testing.T) {
	slow := loadertest.Module{Init: 200 * time.Millisecond}
	deps := map[string][]string{
		"nft_ct": {"nf_tables", "nf_conntrack", "libcrc32c"}, "xt_conntrack": {"nf_conntrack", "x_tables", "libcrc32c"},
		"nf_tables": {"libcrc32c"}, "nf_conntrack": {"libcrc32c"},
	}
	order := []string{"libcrc32c", "nf_conntrack", "nf_tables", "x_tables", "nft_ct", "xt_conntrack", "loop", "fuse", "overlay"}
	mods := map[string]loadertest.Module{}
	for _, m := range order {
		mods[m] = slow
	}
	f := newFixture(t, deps, order, mods)
	start := time.Now()
	out := f.loading().Run(context.Background(), names("nft_ct", "xt_conntrack", "loop", "fuse", "overlay"))
	took := time.Since(start)
	for _, o := range out {
		if o.Class() != Live {
			t.Errorf("%s: %s %v %+v", o.Entry.Name, o.Class(), o.Err, o.Modules)
		}
	}
	for _, m := range order {
		if n := f.k.CallsOf(m); n != 1 {
			t.Errorf("%s handed to the kernel %d times", m, n)
		}
		if !f.live(m) {
			t.Errorf("%s not live", m)
		}
	}
	// Sequentially, 9 modules of 200 ms; the longest chain is 3 deep.
	if took > 1200*time.Millisecond {
		t.Errorf("took %s: the entries did not load side by side", took)
	}
	if f.k.maxBusy < 3 {
		t.Errorf("at most %d finit_module calls at once", f.k.maxBusy)
	}
	calls := strings.Join(f.k.Calls(), " ")
	if strings.Index(calls, "libcrc32c") > strings.Index(calls, "nf_conntrack") ||
		strings.Index(calls, "nf_conntrack") > strings.Index(calls, "xt_conntrack") {
		t.Errorf("calls %s: a module before its dependency", calls)
	}
}

// A module marked alone overlaps no other load of the lists: it starts
// after the entries before it are done, and those after it wait for it.
func TestRunAlone(t *testing.T) {
	slow := loadertest.Module{Init: 100 * time.Millisecond}
	order := []string{"dep", "a", "b", "nvidia", "c", "d"}
	mods := map[string]loadertest.Module{"dep": slow, "a": slow, "b": slow, "nvidia": slow, "c": slow, "d": slow}
	f := newFixture(t, map[string][]string{"nvidia": {"dep"}}, order, mods)
	entries := names("a", "b", "nvidia", "c", "d")
	entries[2].Alone = true
	out := f.loading().Run(context.Background(), entries)
	for _, o := range out {
		if o.Class() != Live {
			t.Errorf("%s: %s", o.Entry.Name, o.Class())
		}
	}
	for _, m := range []string{"nvidia", "dep"} {
		for other := range f.k.overlap[m] {
			if other != "nvidia" && other != "dep" {
				t.Errorf("%s was in the kernel with %s", m, other)
			}
		}
	}
	if !f.k.overlap["a"]["b"] || !f.k.overlap["c"]["d"] {
		t.Errorf("the entries around the alone one did not load side by side: %v", f.k.overlap)
	}
	calls := f.k.Calls()
	at := func(m string) int { return slices.Index(calls, m) }
	if at("dep") < max(at("a"), at("b")) || at("nvidia") > min(at("c"), at("d")) {
		t.Errorf("calls %v: the alone module's plan is not between the others", calls)
	}
}

// The verdicts of systemd-modules-load: a name nothing answers to and a
// missing symbol are warnings; the blacklist, module_blacklist= and no
// hardware are skips; other errors fail, and so does a refusal by the
// allow-list.
func TestRunClasses(t *testing.T) {
	order := []string{"ok", "nodev", "nosym", "inval", "kbl", "perm", "bl", "notallowed", "needsinval"}
	mods := map[string]loadertest.Module{
		"nodev": {Fail: unix.ENODEV}, "nosym": {Fail: unix.ENOENT}, "inval": {Fail: unix.EINVAL},
		"kbl": {Fail: unix.EPERM}, "perm": {Fail: unix.EPERM},
	}
	f := newFixture(t, map[string][]string{"needsinval": {"inval"}}, order, mods, "bl")
	c := f.loading()
	c.KernelBlacklist = []string{"kbl"}
	c.Allowed = func(m string) bool { return m != "notallowed" }
	var mu sync.Mutex
	done := map[string]Class{}
	c.Done = func(o Outcome) {
		mu.Lock()
		done[o.Entry.Name] = o.Class()
		mu.Unlock()
	}
	out := c.Run(context.Background(), names("ok", "nodev", "nosym", "inval", "kbl", "perm", "bl", "notallowed", "needsinval", "nosuchthing", "bad[name"))
	want := map[string]Class{
		"ok": Live, "nodev": Skipped, "nosym": Missing, "inval": Failed, "kbl": Skipped, "perm": Failed,
		"bl": Skipped, "notallowed": Failed, "needsinval": Failed, "nosuchthing": Missing, "bad[name": Failed,
	}
	var sum Summary
	for _, o := range out {
		sum.Add(o)
		if o.Class() != want[o.Entry.Name] {
			t.Errorf("%s: %s (%v %+v), want %s", o.Entry.Name, o.Class(), o.Err, o.Modules, want[o.Entry.Name])
		}
		if done[o.Entry.Name] != o.Class() {
			t.Errorf("%s: Done was told %q", o.Entry.Name, done[o.Entry.Name])
		}
	}
	if sum != (Summary{Entries: 11, Live: 1, Skipped: 3, Missing: 2, Failed: 5}) {
		t.Errorf("summary %+v", sum)
	}
	if f.k.CallsOf("bl") != 0 || f.k.CallsOf("notallowed") != 0 || f.k.CallsOf("needsinval") != 0 {
		t.Errorf("calls %v: a blacklisted, refused or dependent-on-failed module was handed over", f.k.Calls())
	}
	if f.k.CallsOf("inval") != 1 {
		t.Errorf("inval handed over %d times: its failure is the answer for the entry that needs it", f.k.CallsOf("inval"))
	}
}

// Parameters from /etc/modules reach the kernel.
func TestRunParams(t *testing.T) {
	f := newFixture(t, nil, []string{"loop"}, nil)
	k := &paramKernel{Kernel: f.k.Kernel}
	l := loader.NewLoader(k, k.Sysfs)
	t.Cleanup(func() { l.Shutdown(context.Background()) })
	c := &Loading{Resolve: f.r.Resolve, Loader: l}
	out := c.Run(context.Background(), []Entry{{Name: "loop", Params: "max_loop=8 part_show=1", File: EtcModules, Line: 1}})
	if got := k.got(); out[0].Class() != Live || got != "max_loop=8 part_show=1" {
		t.Errorf("%s, params %q", out[0].Class(), got)
	}
}

// paramKernel records the parameters of the last finit_module call. The
// call runs on its own goroutine, and a load is done when sysfs says live,
// which orders nothing for the race detector: hence the lock.
type paramKernel struct {
	*loadertest.Kernel
	mu     sync.Mutex
	params string
}

func (k *paramKernel) FinitModule(f *os.File, params string, flags int) error {
	k.mu.Lock()
	k.params = params
	k.mu.Unlock()
	return k.Kernel.FinitModule(f, params, flags)
}

func (k *paramKernel) got() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.params
}

// An ended context stops the run: entries not started report it.
func TestRunCancelled(t *testing.T) {
	order := []string{"a", "b", "c"}
	release := make(chan struct{})
	f := newFixture(t, nil, order, map[string]loadertest.Module{"a": {During: func() { <-release }}})
	t.Cleanup(func() { close(release) }) // before the fixture's, which wait for a's init
	c := f.loading()
	c.Jobs = 1
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	out := c.Run(ctx, names("a", "b", "c"))
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Run took %s after its context ended", took)
	}
	for _, o := range out[1:] {
		if !errors.Is(o.Err, context.DeadlineExceeded) || o.Class() != Failed {
			t.Errorf("%s: %v %s", o.Entry.Name, o.Err, o.Class())
		}
	}
	if f.k.CallsOf("b") != 0 || f.k.CallsOf("c") != 0 {
		t.Errorf("calls %v after the context ended", f.k.Calls())
	}
}

// With the loads in the kernel bounded, a module several entries need
// goes first: it is not queued behind the leaves listed before them.
func TestRunSharedDependencyFirst(t *testing.T) {
	order := []string{"lib", "a1", "a2", "a3", "a4", "x", "y", "z"}
	mods := map[string]loadertest.Module{}
	for _, m := range order {
		mods[m] = loadertest.Module{Init: 30 * time.Millisecond}
	}
	f := newFixture(t, map[string][]string{"x": {"lib"}, "y": {"lib"}, "z": {"lib"}}, order, mods)
	f.l.MaxInKernel = 1
	out := f.loading().Run(context.Background(), names("a1", "a2", "a3", "a4", "x", "y", "z"))
	for _, o := range out {
		if o.Class() != Live {
			t.Errorf("%s: %s", o.Entry.Name, o.Class())
		}
	}
	if i := slices.Index(f.k.Calls(), "lib"); i > 1 {
		t.Errorf("calls %v: lib, which three entries need, queued behind leaves", f.k.Calls())
	}
}

// The chain of a big module goes before small leaves listed before it, so
// that the big one does not load last, alone.
func TestRunBigChainFirst(t *testing.T) {
	order := []string{"bigdep", "big", "a1", "a2", "a3"}
	mods := map[string]loadertest.Module{}
	for _, m := range order {
		mods[m] = loadertest.Module{Init: 30 * time.Millisecond}
	}
	f := newFixture(t, map[string][]string{"big": {"bigdep"}}, order, mods)
	plans, err := f.r.Resolve("big", loader.ResolveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	last := plans[0].Steps[len(plans[0].Steps)-1]
	if last.Name != "big" {
		t.Fatalf("plan %+v", plans[0].Steps)
	}
	if err := os.WriteFile(last.Path, make([]byte, 512<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	f.l.MaxInKernel = 1
	out := f.loading().Run(context.Background(), names("a1", "a2", "a3", "big"))
	for _, o := range out {
		if o.Class() != Live {
			t.Errorf("%s: %s", o.Entry.Name, o.Class())
		}
	}
	if i := slices.Index(f.k.Calls(), "bigdep"); i > 1 {
		t.Errorf("calls %v: the big module's dependency queued behind leaves", f.k.Calls())
	}
}

// Within one entry too, independent dependencies load side by side: a's
// init waits (up to a second) for b's to start, which only a parallel
// plan lets happen.
func TestRunEntryDependenciesSideBySide(t *testing.T) {
	var mu sync.Mutex
	started := 0
	inBoth := make(chan struct{})
	meet := loadertest.Module{During: func() {
		mu.Lock()
		if started++; started == 2 {
			close(inBoth)
		}
		mu.Unlock()
		select {
		case <-inBoth:
		case <-time.After(time.Second):
		}
	}}
	order := []string{"a", "b", "top"}
	f := newFixture(t, map[string][]string{"top": {"a", "b"}}, order, map[string]loadertest.Module{"a": meet, "b": meet})
	out := f.loading().Run(context.Background(), names("top"))
	if out[0].Class() != Live {
		t.Fatalf("%s: %v %+v", out[0].Class(), out[0].Err, out[0].Modules)
	}
	if !f.k.overlap["a"]["b"] {
		t.Errorf("calls %v: a and b, which top needs and which need nothing of each other, loaded one after the other", f.k.Calls())
	}
}
