package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/modautoload/modautoload/loader/modprobed"
)

// The fixture is depmod's output for 41 real Debian modules (see
// loader/index/testdata/README.md). Expected answers were checked against
// kmod's modprobe on the same files; e2e/resolve_test.go compares the whole
// Debian tree with libkmod.
const fixture = "index/testdata/mini"

func newResolver(t *testing.T, dir, config string) *Resolver {
	t.Helper()
	db, err := OpenDB(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	confDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(confDir, "test.conf"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := modprobed.Load(modprobed.LoadOptions{Paths: []string{confDir}, ModuleDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Problems) > 0 {
		t.Fatalf("config problems: %v", cfg.Problems)
	}
	return &Resolver{DB: db, Config: cfg}
}

// summary renders a resolution compactly: "module[alias]: step step...",
// steps as name, name(builtin), name{install}, name=options, ?name for a
// soft dependency.
func summary(t *testing.T, r *Resolver, name string, useBlacklist bool) string {
	t.Helper()
	planned, err := r.Resolve(name, ResolveOptions{UseBlacklist: useBlacklist})
	if err != nil && !errors.Is(err, ErrNotFound) {
		t.Fatalf("Resolve(%q): %v", name, err)
	}
	var out []string
	for _, p := range planned {
		s := p.Name
		if p.Alias != "" {
			s += "[" + p.Alias + "]"
		}
		if p.Blacklisted {
			out = append(out, s+": blacklisted")
			continue
		}
		var steps []string
		for _, st := range p.Steps {
			x := st.Name
			if !st.Required {
				x = "?" + x
			}
			switch {
			case st.HasInstall:
				x += "{" + st.Install + "}"
			case st.Builtin:
				x += "(builtin)"
			case st.Path == "":
				x += "(missing)"
			}
			if st.Options != "" {
				x += "=" + st.Options
			}
			steps = append(steps, x)
		}
		out = append(out, s+": "+strings.Join(steps, " "))
	}
	return strings.Join(out, "; ")
}

func TestLookupSourcesInOrder(t *testing.T) {
	r := newResolver(t, fixture, "")
	cases := []struct{ in, want string }{
		// By name: modules.dep lists all dependencies, deepest last; they
		// load first.
		{"uas", "uas: usb_common usbcore scsi_common scsi_mod usb_storage uas"},
		{"usb-storage", "usb_storage: usb_common usbcore scsi_common scsi_mod usb_storage"},
		// By MODALIAS through modules.alias.
		{"virtio:d00000004v00001AF4", "virtio_rng[virtio:d00000004v00001AF4]: virtio_ring virtio virtio_rng"},
		// Exported symbols through modules.symbols.
		{"symbol:usb_register_driver", "usbcore[symbol:usb_register_driver]: usb_common usbcore"},
		// Built in, by name and by builtin alias.
		{"unix", "unix: unix(builtin)"},
		{"char-major-4-64", "8250[char_major_4_64]: 8250(builtin)"},
		{"no-such-thing", ""},
	}
	for _, tc := range cases {
		if got := summary(t, r, tc.in, false); got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.in, got, tc.want)
		}
	}
}

func TestLookupKeepsLibkmodDuplicates(t *testing.T) {
	r := newResolver(t, fixture, "")
	// Two acpi_cpufreq patterns match this ACPI alias; libkmod lists the
	// module twice and so do we (the loader deduplicates).
	mods, err := r.Lookup("acpi:ACPI0007:")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range mods {
		names = append(names, m.Name)
	}
	if len(names) < 2 {
		t.Fatalf("acpi:ACPI0007: matched %v", names)
	}
}

const policy = `alias my-nic e1000e
alias storage* uas
blacklist virtio_rng
blacklist e1000e
options e1000e IntMode=1
options storage* quirks=x
install virtio_blk /bin/true
install dummy echo dummy
softdep virtio_net pre: crc32c_intel post: virtio-rng
softdep hid pre: usbhid
softdep usbhid pre: hid
`

func TestPolicy(t *testing.T) {
	r := newResolver(t, fixture, policy)
	cases := []struct {
		in        string
		blacklist bool
		want      string
	}{
		// A modprobe.d alias wins over everything; options written for
		// the alias pattern apply to the module reached through it.
		{"storage1", false, "uas[storage*]: usb_common usbcore scsi_common scsi_mod usb_storage uas=quirks=x "},
		// The blacklist keeps out modules reached through an alias...
		{"my-nic", false, "e1000e[my_nic]: blacklisted"},
		{"virtio:d00000004v00001AF4", false, "virtio_rng[virtio:d00000004v00001AF4]: blacklisted"},
		// ...not one asked for by name, unless -b.
		{"e1000e", false, "e1000e: e1000e=IntMode=1 "},
		{"e1000e", true, "e1000e: blacklisted"},
		// An install command replaces the load; found by exact name it is
		// the module itself.
		{"virtio_blk", false, "virtio_blk: virtio_ring virtio virtio_blk{/bin/true}"},
		{"dummy", false, "dummy: dummy{echo dummy}"},
		// Soft dependencies load around the module and are not required;
		// a blacklisted one reached by name still loads, and its
		// dependencies are listed again, all as libkmod does (loading
		// skips what is already live).
		{"virtio_net", false, "virtio_net: virtio_ring virtio failover net_failover ?crc32c_intel virtio_net virtio_ring virtio ?virtio_rng"},
	}
	for _, tc := range cases {
		if got := summary(t, r, tc.in, tc.blacklist); got != tc.want {
			t.Errorf("%s (-b %v):\n got %s\nwant %s", tc.in, tc.blacklist, got, tc.want)
		}
	}
	// A softdep cycle ends: each module object is planned once.
	got := summary(t, r, "hid", false)
	if strings.Count(got, "usbhid") != 1 || !strings.HasSuffix(got, " hid") {
		t.Errorf("softdep cycle hid <-> usbhid planned as %s", got)
	}
}

func TestPlanExtraOptions(t *testing.T) {
	r := newResolver(t, fixture, "options e1000e IntMode=1\n")
	mods, err := r.Lookup("e1000e")
	if err != nil || len(mods) != 1 {
		t.Fatal(mods, err)
	}
	for _, tc := range []struct{ extra, want string }{{"", "IntMode=1 "}, {"a=b", "IntMode=1 a=b"}} {
		steps, err := r.Plan(mods[0], tc.extra, "", false)
		if err != nil {
			t.Fatal(err)
		}
		if got := steps[len(steps)-1].Options; got != tc.want {
			t.Errorf("extra %q: options %q, want %q (libkmod's concatenation)", tc.extra, got, tc.want)
		}
	}
}

func TestBadNames(t *testing.T) {
	r := newResolver(t, fixture, "")
	for _, in := range []string{"pci:v[0", "a]b", "nul\x00byte", strings.Repeat("x", 5000)} {
		if _, err := r.Lookup(in); !errors.Is(err, ErrBadName) {
			t.Errorf("Lookup(%.20q) = %v, want ErrBadName", in, err)
		}
	}
	if got, err := normalizeAlias("usb-storage:v[-_]x-y"); err != nil || got != "usb_storage:v[-_]x_y" {
		t.Errorf("normalizeAlias = %q, %v", got, err)
	}
}

// A modules.dep that names files outside the module directory is refused:
// nothing in an index may make us load an arbitrary file.
func TestModulePathsStayInside(t *testing.T) {
	dir := t.TempDir()
	dep := "kernel/ok.ko:\n../../../tmp/evil.ko:\n/tmp/abs.ko:\nkernel/dep-escape.ko: ../outside.ko\n"
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644); err != nil {
		t.Fatal(err)
	}
	r := newResolver(t, dir, "")
	if got := summary(t, r, "ok", false); got != "ok: ok" {
		t.Errorf("ok: %s", got)
	}
	for _, name := range []string{"evil", "abs", "dep_escape"} {
		_, err := r.Resolve(name, ResolveOptions{})
		if err == nil || !strings.Contains(err.Error(), "is not inside") {
			t.Errorf("%s: err = %v, want a refusal", name, err)
		}
	}
}

func TestOpenDBNeedsModulesDep(t *testing.T) {
	if _, err := OpenDB(t.TempDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("err = %v, want not-exist", err)
	}
}

// A long-lived resolver (the daemon's) must not grow with the number of
// lookups: its caches hold only what the indexes contain, never inputs.
func TestResolverMemoryBounded(t *testing.T) {
	r := newResolver(t, fixture, policy)
	data, err := os.ReadFile(filepath.Join(fixture, "modules.alias"))
	if err != nil {
		t.Fatal(err)
	}
	var real []string
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) == 3 {
			real = append(real, strings.NewReplacer("*", "1", "?", "2", "[", "", "]", "").Replace(f[1]))
		}
	}
	pass := func(round int) uint64 {
		for i := 0; i < 20000; i++ {
			in := real[i%len(real)]
			if i%2 == 1 { // a new name every time: never seen before
				in = fmt.Sprintf("%s-%d-%d", in, round, i)
			}
			if _, err := r.Resolve(in, ResolveOptions{}); err != nil && !errors.Is(err, ErrBadName) && !errors.Is(err, ErrNotFound) {
				t.Fatal(err)
			}
		}
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	pass(0) // fills the caches
	before := pass(1)
	pass(2)
	after := pass(3)
	if after > before+256<<10 {
		t.Errorf("heap grew from %d to %d bytes over 40,000 more lookups", before, after)
	}
	t.Logf("heap %d -> %d bytes", before, after)
}

// Plan orders what must be ordered and nothing else: a module after its
// dependencies and its soft pre-dependencies, a soft post-dependency
// after the module.
func TestPlanAfter(t *testing.T) {
	r := newResolver(t, fixture, policy)
	mods, err := r.Lookup("virtio_net")
	if err != nil {
		t.Fatal(err)
	}
	steps, err := r.Plan(mods[0], "", "", false)
	if err != nil {
		t.Fatal(err)
	}
	at := func(name string) int {
		for i, s := range steps {
			if s.Name == name {
				return i
			}
		}
		t.Fatalf("%s not planned", name)
		return -1
	}
	waits := func(a, b string) bool { return slices.Contains(steps[at(a)].After, at(b)) }
	for _, c := range [][2]string{
		{"virtio_net", "virtio"}, {"virtio_net", "net_failover"}, {"net_failover", "failover"},
		{"virtio_net", "crc32c_intel"}, {"virtio_rng", "virtio_net"},
	} {
		if !waits(c[0], c[1]) {
			t.Errorf("%s does not wait for %s: %+v", c[0], c[1], steps)
		}
	}
	if waits("crc32c_intel", "virtio") || waits("failover", "virtio_ring") {
		t.Error("unrelated modules ordered")
	}
}

// DropPages runs after every event the daemon handles: it must not
// allocate.
func TestDropPagesAllocatesNothing(t *testing.T) {
	r := newResolver(t, fixture, "")
	allocs := testing.AllocsPerRun(20, func() {
		if err := r.DB.DropPages(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("DropPages allocated %v times per call", allocs)
	}
}
