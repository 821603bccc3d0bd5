package daemon

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modautoload/modautoload/loader"
	"github.com/modautoload/modautoload/loader/index"
	"github.com/modautoload/modautoload/loader/loadertest"
)

// announcingKernel is the fake kernel sending add@/module/NAME once a
// module it loaded is live, as Linux 5.11+ does (before finit_module
// returns to the loader). It sends once the rig is ready: coldplug may
// load before newRig returns.
type announcingKernel struct {
	*loadertest.Kernel
	rig   **rig
	ready <-chan struct{}
}

func (k announcingKernel) FinitModule(f *os.File, params string, flags int) error {
	err := k.Kernel.FinitModule(f, params, flags)
	if err == nil {
		<-k.ready
		(*k.rig).sendEvent("add", "/module/"+index.ModuleName(f.Name()), "module", "")
	}
	return err
}

// newAnnouncingRig is newRig whose kernel announces the modules it
// loads; setup, if set, then changes the configuration (its loader too)
// and the fake kernel.
func newAnnouncingRig(t *testing.T, rulesText string, setup func(*Config, *loadertest.Kernel)) *rig {
	var r *rig
	ready := make(chan struct{})
	r = newRig(t, rulesText, func(c *Config, k *loadertest.Kernel) {
		ld := loader.NewLoader(announcingKernel{k, &r, ready}, k.Sysfs)
		ld.LiveTimeout = 5 * time.Second
		c.Loader = ld
		if setup != nil {
			setup(c, k)
		}
	})
	close(ready)
	return r
}

// A module event a rule matches loads the rule's modules; one it does not
// match (another module, a remove, a device whose name is a module's) is
// not even queued.
func TestModuleEventRuleLoads(t *testing.T) {
	r := newAnnouncingRig(t, `ACTION=="add", SUBSYSTEM=="module", KERNEL=="a", LOAD="outer"
ACTION=="remove", SUBSYSTEM=="module", DEVPATH=="/module/b", LOAD="slow"
`, nil)
	r.send("add", "/devices/pci0/dev1", "dev:a1")
	r.settle()
	if !r.live("a") || !r.live("outer") {
		t.Fatalf("a and outer not both live after a's module event; kernel saw %v", r.kernel.Calls())
	}
	if got := strings.Join(r.kernel.Calls(), " "); got != "a outer" {
		t.Errorf("kernel saw %s, want a then outer", got)
	}
	// The device event and a's module event; outer's matched no rule.
	if st := r.d.Status(); st.Handled != 2 {
		t.Errorf("handled %d events, want 2", st.Handled)
	}

	r.sendEvent("remove", "/module/a", "module", "")
	r.sendEvent("add", "/module/b", "module", "")
	r.sendEvent("add", "/module/slow", "module", "")
	r.send("add", "/devices/a", "")
	r.settle()
	if got := strings.Join(r.kernel.Calls(), " "); got != "a outer" {
		t.Errorf("non-matching events loaded: kernel saw %s", got)
	}
	if st := r.d.Status(); st.Handled != 3 || st.Skipped != 1 {
		t.Errorf("handled %d, skipped %d; want 3 and 1 (only the device event)", st.Handled, st.Skipped)
	}
	r.sendEvent("remove", "/module/b", "module", "")
	r.settle()
	if !r.live("slow") {
		t.Error("a rule on ACTION remove did not load")
	}
}

// A rule's load from a module event goes through the loader like any
// other: while it is stuck in the kernel, module events keep being read,
// device events are handled, another module's event asking for the same
// module waits for the load in flight instead of starting one, and settle
// waits for it.
func TestModuleEventRuleStuckHoldsNothingElse(t *testing.T) {
	release := make(chan struct{})
	r := newAnnouncingRig(t, `SUBSYSTEM=="module", KERNEL=="a", LOAD="outer"
SUBSYSTEM=="module", KERNEL=="b", LOAD="outer"
`, func(c *Config, k *loadertest.Kernel) {
		k.SetModule("outer", loadertest.Module{During: func() { <-release }})
		// Both rules must find outer's load in flight, however slow the
		// host: the test releases it.
		c.Loader.LiveTimeout = 10 * time.Minute
	})
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	r.send("add", "/devices/pci0/dev1", "dev:a1")
	eventually(t, "outer handed to the kernel", func() bool { return r.kernel.CallsOf("outer") == 1 })

	r.send("add", "/devices/pci0/dev2", "dev:b2")
	eventually(t, "b live while outer's init is stuck", func() bool { return r.live("b") })
	// The two devices' events and the module events of a and b.
	eventually(t, "b's module event read", func() bool { return r.d.Status().Events.Received == 4 })
	eventually(t, "b's rule waiting for outer", func() bool { return r.d.Status().Loads.Deduplicated == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	err := r.d.Settle(ctx)
	cancel()
	if err == nil {
		t.Error("settle returned while a rule's load was in the kernel")
	}

	close(release)
	released = true
	r.settle()
	if !r.live("outer") || r.kernel.CallsOf("outer") != 1 {
		t.Errorf("outer live %v after %d loads, want live after 1", r.live("outer"), r.kernel.CallsOf("outer"))
	}
}

// Rules that load a module from its own event, or two modules from each
// other's, end: loading a live module is a no-op that sends no event.
func TestModuleEventRuleLoopsEnd(t *testing.T) {
	r := newAnnouncingRig(t, `SUBSYSTEM=="module", KERNEL=="a", LOAD="a outer"
SUBSYSTEM=="module", KERNEL=="outer", LOAD="a"
`, nil)
	r.send("add", "/devices/pci0/dev1", "dev:a1")
	r.settle()
	if got := strings.Join(r.kernel.Calls(), " "); got != "a outer" {
		t.Errorf("kernel saw %s, want a then outer, once each", got)
	}
	st := r.d.Status()
	// The device event and the module events of a and outer, no more.
	if st.Handled != 3 || st.Events.Received != 3 {
		t.Errorf("handled %d of %d events, want 3 of 3", st.Handled, st.Events.Received)
	}
	// a asked for from its own event and from outer's: live, or its
	// first load still returning from the kernel.
	if st.Loads.Loaded != 2 || st.Loads.AlreadyLive+st.Loads.Deduplicated != 2 {
		t.Errorf("loads %+v, want 2 loaded and 2 answered without loading", st.Loads)
	}
}

// Coldplug and a resync give the rules an add for each module present, as
// udev's coldplug does: a module live before the daemon started, or whose
// event was lost, still gets its rules.
func TestModuleEventRulesColdplugAndResync(t *testing.T) {
	r := newAnnouncingRig(t, `ACTION=="add", SUBSYSTEM=="module", KERNEL=="a", LOAD="outer"
ACTION=="add", SUBSYSTEM=="module", KERNEL=="b", LOAD="slow"
`, func(c *Config, k *loadertest.Kernel) {
		c.Coldplug = true
		// Loaded before the daemon started, by someone else.
		if err := k.Load("a"); err != nil {
			t.Fatal(err)
		}
	})
	r.settle()
	if got := strings.Join(r.kernel.Calls(), " "); got != "a outer" {
		t.Errorf("kernel saw %s, want a (before the daemon) then outer (a's rule at coldplug)", got)
	}
	// b went live and its event was lost with others (ENOBUFS).
	if err := r.kernel.Load("b"); err != nil {
		t.Fatal(err)
	}
	r.src.Overrun()
	r.settle()
	if !r.live("slow") || r.kernel.CallsOf("slow") != 1 {
		t.Errorf("b's rule after the resync: slow live %v, %d loads; want live, 1", r.live("slow"), r.kernel.CallsOf("slow"))
	}
	if st := r.d.Status(); st.Resyncs != 1 || r.kernel.CallsOf("outer") != 1 {
		t.Errorf("%d resyncs, outer handed over %d times; want 1 and 1", st.Resyncs, r.kernel.CallsOf("outer"))
	}
}

// Without rules for module events, a scan does not even list the modules.
func TestModuleScanOnlyForModuleRules(t *testing.T) {
	list := func(rulesText string) (int, error) {
		r := newRig(t, rulesText, func(c *Config, k *loadertest.Kernel) {
			// Not a directory: listing it fails.
			dir := filepath.Join(k.Sysfs, "module")
			if err := os.Remove(dir); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dir, nil, 0o644); err != nil {
				t.Fatal(err)
			}
		})
		return r.d.scanModules()
	}
	if n, err := list(`SUBSYSTEM=="module", SKIP`); n != 0 || err != nil {
		t.Errorf("scanModules without module rules: %d queued, %v", n, err)
	}
	if _, err := list(`SUBSYSTEM=="module", LOAD="a"`); err == nil {
		t.Error("scanModules with a module rule did not list the modules")
	}
}

// A module still coming (a load in flight) gets no event from the scan:
// to the rules a module event means live, and its own add@/module event
// follows once it is.
func TestModuleScanSkipsModulesComing(t *testing.T) {
	r := newRig(t, `ACTION=="add", SUBSYSTEM=="module", KERNEL=="c", LOAD="outer"
`, nil)
	dir := filepath.Join(r.kernel.Sysfs, "module", "c")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		state string
		want  int
	}{{"coming\n", 0}, {"going\n", 0}, {"live\n", 1}} {
		if err := os.WriteFile(filepath.Join(dir, "initstate"), []byte(c.state), 0o644); err != nil {
			t.Fatal(err)
		}
		if n, err := r.d.scanModules(); err != nil || n != c.want {
			t.Errorf("initstate %q: %d events queued (%v), want %d", c.state, n, err, c.want)
		}
	}
}
