package loader

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/modautoload/modautoload/loader/loadertest"
)

// byModule indexes records by module; a module recorded twice fails.
func byModule(t *testing.T, recs []Record) map[string]Record {
	t.Helper()
	out := map[string]Record{}
	for _, r := range recs {
		if _, dup := out[r.Module]; dup {
			t.Errorf("%s recorded twice: %+v", r.Module, recs)
		}
		out[r.Module] = r
	}
	return out
}

// callsReturned waits until every finit_module call of l has returned: a
// load is done when its module is live, and its call's return is stamped
// after that, on its own thread.
func callsReturned(t *testing.T, l *Loader) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); l.Stats().InKernel > 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d finit_module calls still in the kernel", l.Stats().InKernel)
		}
	}
}

func checkTimes(t *testing.T, r Record) {
	t.Helper()
	if r.Requested == 0 || r.Started < r.Requested || r.Done < r.Started || r.Returned < r.Started {
		t.Errorf("%s: times out of order: requested %d, started %d, returned %d, done %d", r.Module, r.Requested, r.Started, r.Returned, r.Done)
	}
}

// One request loading a module after its dependency: a record for each,
// with who asked, the times in order, and the module's wait for the
// dependency it loaded itself.
func TestTimelineRecordsARequest(t *testing.T) {
	deps := map[string][]string{"virtio_net": {"net_failover", "failover"}, "net_failover": {"failover"}}
	dir := loadertest.ModuleTree(t, deps, []string{"failover", "net_failover", "virtio_net"})
	k := loadertest.NewKernel(t, map[string]loadertest.Module{"failover": {Init: 20 * time.Millisecond}})
	l := newTestLoader(t, k)
	asker := Asker{Kind: AskedByUevent, Action: "add", DevPath: "/devices/pci0000:00/0000:00:04.0/virtio1", Seqnum: 812, Name: "virtio:d00000001v00001AF4"}
	before := MonotonicNow()
	res, err := probe(l, newResolver(t, dir, ""), "virtio_net", ResolveOptions{}, LoadOptions{Parallel: true, Asker: asker})
	if err != nil || res[0].Err != nil {
		t.Fatalf("%+v, %v", res, err)
	}
	callsReturned(t, l)
	recs, over := l.Timeline()
	if over != 0 || len(recs) != 3 {
		t.Fatalf("%d records (%d overwritten), want 3: %+v", len(recs), over, recs)
	}
	m := byModule(t, recs)
	for _, r := range recs {
		checkTimes(t, r)
		if r.Requested < before || r.Op != OpLoad || r.Err != nil || r.Asker == nil || *r.Asker != asker {
			t.Errorf("record %+v (asker %+v)", r, r.Asker)
		}
	}
	if m["virtio_net"].For != "" || m["failover"].For != "virtio_net" || m["net_failover"].For != "virtio_net" {
		t.Errorf("For: %q %q %q", m["virtio_net"].For, m["failover"].For, m["net_failover"].For)
	}
	if m["failover"].Asker != m["virtio_net"].Asker {
		t.Error("the records of one request do not share its asker")
	}
	if len(m["failover"].Waits) != 0 {
		t.Errorf("failover waited for %+v", m["failover"].Waits)
	}
	nf := m["net_failover"]
	if len(nf.Waits) != 1 || nf.Waits[0].Module != "failover" || nf.Waits[0].ID != m["failover"].ID || nf.Waits[0].Shared || nf.Waits[0].Failed {
		t.Errorf("net_failover's waits %+v", nf.Waits)
	}
	if nf.Waits[0].End < m["failover"].Done || nf.Started < nf.Waits[0].End {
		t.Errorf("net_failover started at %d, failover done at %d, its wait ended at %d", nf.Started, m["failover"].Done, nf.Waits[0].End)
	}
	vn := m["virtio_net"]
	var waited []string
	for _, w := range vn.Waits {
		waited = append(waited, w.Module)
	}
	if strings.Join(waited, " ") != "failover net_failover" {
		t.Errorf("virtio_net waited for %v", waited)
	}
	// The IDs number the loads as they started.
	if !(m["failover"].ID < m["net_failover"].ID && m["net_failover"].ID < vn.ID) {
		t.Errorf("IDs %d %d %d", m["failover"].ID, m["net_failover"].ID, vn.ID)
	}

	// Asking again for what is live makes no record.
	if res, _ := probe(l, newResolver(t, dir, ""), "virtio_net", ResolveOptions{}, LoadOptions{Parallel: true}); res[0].Err != nil {
		t.Fatal(res[0].Err)
	}
	if recs, _ := l.Timeline(); len(recs) != 3 {
		t.Errorf("%d records after asking for live modules, want 3", len(recs))
	}
}

// Many requests at once, each for its own module that needs one slow
// shared dependency: the dependency is loaded once, its record counts the
// requests that joined it, and each module's wait names it, as shared
// unless its own request started it.
func TestTimelineConcurrentRequests(t *testing.T) {
	const n = 16
	deps := map[string][]string{}
	order := []string{"shared"}
	for i := range n {
		m := fmt.Sprintf("m%d", i)
		deps[m] = []string{"shared"}
		order = append(order, m)
	}
	dir := loadertest.ModuleTree(t, deps, order)
	k := loadertest.NewKernel(t, map[string]loadertest.Module{"shared": {Init: 200 * time.Millisecond}})
	l := newTestLoader(t, k)
	r := newResolver(t, dir, "")
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			asker := Asker{Kind: AskedByUevent, Action: "add", DevPath: fmt.Sprintf("/devices/d%d", i), Seqnum: uint64(100 + i), Name: fmt.Sprintf("m%d", i)}
			if res, err := probe(l, r, asker.Name, ResolveOptions{}, LoadOptions{Parallel: true, Asker: asker}); err != nil || res[0].Err != nil {
				t.Errorf("%+v %v", res, err)
			}
		}()
	}
	wg.Wait()
	callsReturned(t, l)
	recs, _ := l.Timeline()
	m := byModule(t, recs)
	if len(recs) != n+1 {
		t.Fatalf("%d records, want %d", len(recs), n+1)
	}
	sh := m["shared"]
	checkTimes(t, sh)
	if sh.Joined != n-1 {
		t.Errorf("shared: %d requests joined its load, want %d", sh.Joined, n-1)
	}
	started := 0
	for i := range n {
		r := m[fmt.Sprintf("m%d", i)]
		checkTimes(t, r)
		if r.Asker == nil || r.Asker.Seqnum != uint64(100+i) || r.For != "" {
			t.Errorf("%s asked by %+v, for %q", r.Module, r.Asker, r.For)
			continue
		}
		if len(r.Waits) != 1 || r.Waits[0].Module != "shared" || r.Waits[0].ID != sh.ID {
			t.Errorf("%s waits %+v, want shared (record %d)", r.Module, r.Waits, sh.ID)
			continue
		}
		own := r.Asker == sh.Asker
		if r.Waits[0].Shared == own {
			t.Errorf("%s: wait shared %v, but its request started the load: %v", r.Module, r.Waits[0].Shared, own)
		}
		if own {
			started++
		}
		if r.Started < sh.Done {
			t.Errorf("%s started at %d, before shared was live at %d", r.Module, r.Started, sh.Done)
		}
	}
	if started != 1 {
		t.Errorf("%d requests started shared's load, want 1", started)
	}
}

// A module another process is loading is waited for, and that wait is
// the record: nothing handed to the kernel, done when it went live.
func TestTimelineWaitForAnotherProcess(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"xfrm_user"})
	k := loadertest.NewKernel(t, nil)
	l := newTestLoader(t, k)
	modDir := k.ModuleIn("xfrm_user", "coming")
	go func() {
		time.Sleep(100 * time.Millisecond)
		loadertest.WriteState(modDir, "live")
	}()
	if err := l.ensure(context.Background(), step(dir, "xfrm_user"), false); err != nil {
		t.Fatal(err)
	}
	recs, _ := l.Timeline()
	if len(recs) != 1 {
		t.Fatalf("records %+v", recs)
	}
	r := recs[0]
	if r.Op != OpWait || r.Started != 0 || r.Returned != 0 || r.Err != nil || r.Done-r.Requested < int64(80*time.Millisecond) {
		t.Errorf("record %+v: want a wait of about 100ms, nothing handed to the kernel", r)
	}
}

// A failed load is recorded with its error; the dependent module is not
// tried and has no record; a request in the same burst shares the
// failure, pointing at its record.
func TestTimelineFailure(t *testing.T) {
	deps := map[string][]string{"kvm_amd": {"ccp"}, "other": {"ccp"}}
	dir := loadertest.ModuleTree(t, deps, []string{"ccp", "kvm_amd", "other"})
	k := loadertest.NewKernel(t, map[string]loadertest.Module{"ccp": {Fail: unix.ENODEV}})
	l := newTestLoader(t, k)
	r := newResolver(t, dir, "")
	if res, _ := probe(l, r, "kvm_amd", ResolveOptions{}, LoadOptions{Parallel: true}); !errors.Is(res[0].Err, unix.ENODEV) {
		t.Fatalf("%+v", res)
	}
	if res, _ := probe(l, r, "other", ResolveOptions{}, LoadOptions{Parallel: true}); !errors.Is(res[0].Err, unix.ENODEV) {
		t.Fatalf("%+v", res)
	}
	recs, _ := l.Timeline()
	if len(recs) != 1 || recs[0].Module != "ccp" || !errors.Is(recs[0].Err, unix.ENODEV) || recs[0].Done < recs[0].Returned {
		t.Fatalf("records %+v, want ccp's failure only", recs)
	}
}

// The ring keeps the last TimelineSize records, oldest first.
func TestTimelineRingWraps(t *testing.T) {
	var names []string
	for i := range 10 {
		names = append(names, fmt.Sprintf("m%d", i))
	}
	dir := loadertest.ModuleTree(t, nil, names)
	k := loadertest.NewKernel(t, nil)
	l := newTestLoader(t, k)
	l.TimelineSize = 4
	for _, n := range names {
		if err := l.ensure(context.Background(), step(dir, n), false); err != nil {
			t.Fatal(err)
		}
	}
	recs, over := l.Timeline()
	var got []string
	for _, r := range recs {
		got = append(got, fmt.Sprintf("%s#%d", r.Module, r.ID))
	}
	if strings.Join(got, " ") != "m6#7 m7#8 m8#9 m9#10" || over != 6 {
		t.Errorf("kept %v, %d overwritten; want the last 4 of 10, 6 overwritten", got, over)
	}

	// A negative size keeps nothing.
	k2 := loadertest.NewKernel(t, nil)
	l2 := newTestLoader(t, k2)
	l2.TimelineSize = -1
	if err := l2.ensure(context.Background(), step(dir, "m0"), false); err != nil {
		t.Fatal(err)
	}
	if recs, _ := l2.Timeline(); len(recs) != 0 {
		t.Errorf("records with the timeline off: %+v", recs)
	}
}

// An asker's strings are copied out of the event's message, which the
// record must not keep alive, and a CPU's long alias is cut.
func TestAskerRetainCopies(t *testing.T) {
	msg := []byte("add@/devices/system/cpu/cpu0\x00cpu:type:x86,ven0000fam0017mod0031:feature:," + strings.Repeat("0001,", 100))
	text := unsafe.String(&msg[0], len(msg))
	a := Asker{Kind: AskedByUevent, Action: text[:3], DevPath: text[4:28], Name: text[29:]}
	r := a.retain()
	for i := range msg {
		msg[i] = 'X'
	}
	if r.Action != "add" || r.DevPath != "/devices/system/cpu/cpu0" || !strings.HasPrefix(r.Name, "cpu:type:x86,ven0000fam0017mod0031:feature:,0001,") {
		t.Errorf("retained %+v changed with the message", r)
	}
	if len(r.Name) != maxAskerName+len("...") || !strings.HasSuffix(r.Name, "...") {
		t.Errorf("alias of %d bytes kept as %d: %q", len(a.Name), len(r.Name), r.Name)
	}
}

// What a record costs: its size, and a constant number of allocations
// (the record and its waits; the asker once per request), whether the
// ring is filling or wrapping.
func TestRecordCost(t *testing.T) {
	size := unsafe.Sizeof(Record{})
	t.Logf("Record: %d bytes; Wait: %d; Asker: %d", size, unsafe.Sizeof(Wait{}), unsafe.Sizeof(Asker{}))
	if size > 160 {
		t.Errorf("a Record takes %d bytes, more than 160", size)
	}
	steps := []Step{{Name: "dep"}, {Name: "m", After: []int{0}}}
	req := &request{asker: Asker{Kind: AskedByUevent, DevPath: "/devices/x", Name: "pci:v00001AF4d00001000"}}
	for _, ringSize := range []int{4, 1000} {
		l := NewLoader(nil, t.TempDir())
		l.TimelineSize = ringSize
		const runs = 200
		flights := make([]*flight, 0, runs+1)
		for range runs + 1 {
			p := newPlanRun(req, "m", steps, false)
			flights = append(flights, &flight{module: "m", plan: p, step: 1})
		}
		i := 0
		perRecord := testing.AllocsPerRun(runs, func() {
			f := flights[i]
			i++
			l.record(f, OpLoad)
			l.stamp(f, started)
			l.stamp(f, returned)
		})
		// A ring still growing pays for its slice now and then.
		want := 2.0
		if ringSize > runs {
			want = 2.1
		}
		if perRecord > want {
			t.Errorf("ring of %d: %.2f allocations per record, want at most %.1f", ringSize, perRecord, want)
		}
		t.Logf("ring of %d: %.2f allocations per record", ringSize, perRecord)
	}
}

// BenchmarkLoadTimeline loads one module (a dependency and the module,
// each handed to the fake kernel) per iteration, with the timeline on and
// off: the difference is what recording costs a load.
func BenchmarkLoadTimeline(b *testing.B) {
	for _, on := range []bool{true, false} {
		b.Run(fmt.Sprintf("timeline=%v", on), func(b *testing.B) {
			names := []string{"dep", "m"}
			dir := loadertest.ModuleTree(b, map[string][]string{"m": {"dep"}}, names)
			k := loadertest.NewKernel(b, nil)
			l := NewLoader(k, k.Sysfs)
			defer l.Shutdown(context.Background())
			if !on {
				l.TimelineSize = -1
			}
			plan := []Planned{{Module: &Module{Name: "m"}, Steps: []Step{step(dir, "dep"), step(dir, "m")}}}
			plan[0].Steps[1].After = []int{0}
			asker := Asker{Kind: AskedByUevent, Action: "add", DevPath: "/devices/pci0000:00/0000:00:04.0", Seqnum: 1, Name: "pci:v00001AF4d00001000"}
			b.ReportAllocs()
			for b.Loop() {
				res := l.Load(context.Background(), plan, LoadOptions{Parallel: true, Asker: asker})
				if res[0].Err != nil {
					b.Fatal(res[0].Err)
				}
				b.StopTimer()
				for _, n := range names {
					os.RemoveAll(filepath.Join(k.Sysfs, "module", n))
				}
				b.StartTimer()
			}
		})
	}
}
