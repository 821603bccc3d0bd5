package daemon

import (
	"testing"
	"time"

	"github.com/modautoload/modautoload/loader/loadertest"
	"github.com/modautoload/modautoload/loader/modlist"
)

// daemon --static: the lists load at start beside coldplug, through the
// same per-module serialization (b and the coldplugged device's b are one
// load; a, b's dependency, is handed over once), settle waits for them,
// and status counts them.
func TestStaticListsBesideColdplug(t *testing.T) {
	var k *loadertest.Kernel
	r := newRig(t, "", func(c *Config, kernel *loadertest.Kernel) {
		k = kernel
		device(kernel, "pci0000:00/0000:00:01.0", "dev:b1")
		c.Coldplug = true
		c.Static = []modlist.Entry{
			{Name: "slow", File: "/etc/modules-load.d/x.conf", Line: 1},
			{Name: "b", File: "/etc/modules-load.d/x.conf", Line: 2},
			{Name: "nosuchmodule", File: "/etc/modules-load.d/x.conf", Line: 3},
		}
	})
	start := time.Now()
	r.settle()
	if took := time.Since(start); took < 250*time.Millisecond {
		t.Errorf("settled after %s, before the static list's slow module (300 ms) was live", took)
	}
	for _, m := range []string{"a", "b", "slow"} {
		if !r.live(m) {
			t.Errorf("%s not live after settle", m)
		}
		if n := k.CallsOf(m); n != 1 {
			t.Errorf("%s handed to the kernel %d times", m, n)
		}
	}
	st := r.d.Status()
	want := StaticStatus{Summary: modlist.Summary{Entries: 3, Live: 2, Missing: 1}, Listed: 3, Done: true}
	if st.Static == nil || *st.Static != want {
		t.Errorf("status static %+v, want %+v", st.Static, want)
	}
}

// Without lists, status has no static section and nothing waits for one.
func TestNoStaticLists(t *testing.T) {
	r := newRig(t, "", nil)
	r.settle()
	if st := r.d.Status(); st.Static != nil {
		t.Errorf("status static %+v", st.Static)
	}
}

// The daemon is not idle, so settle and --exit-when-idle do not return,
// while the lists are loading, even in a moment when no load is in flight
// (between an alone entry and the ones before it).
func TestNotIdleUntilStaticDone(t *testing.T) {
	r := newRig(t, "", nil)
	d, err := New(Config{Source: r.d.cfg.Source, Resolver: r.d.cfg.Resolver, Loader: r.ld, Sysfs: r.kernel.Sysfs,
		Static: []modlist.Entry{{Name: "a", File: "x.conf", Line: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	d.coldDone = true
	if d.idle() {
		t.Error("idle with the static lists not done")
	}
	d.static.Done = true
	if !d.idle() {
		t.Error("not idle with everything done")
	}
}
