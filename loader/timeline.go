package loader

import (
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultTimelineSize is how many load records a Loader keeps: a boot's
// coldplug loads 50 to 200 modules on most machines (71 loads in the rig),
// so 256 holds a whole boot with room for hotplug, at about 500 bytes a
// load (the 144-byte record, its waits and the copy of who asked: 496
// bytes of heap a load measured with a request per module, less when a
// request loads several): some 125 KiB when full, nothing for the loads
// that never happened.
const DefaultTimelineSize = 256

// maxAskerName bounds the alias kept in a record. A CPU's modalias lists
// every feature flag (600 bytes and more); its head says which CPU.
const maxAskerName = 160

// Kinds of Asker.
const (
	AskedByUevent   = "uevent"   // a kernel uevent
	AskedByColdplug = "coldplug" // the daemon's sysfs scan at start
	AskedByResync   = "resync"   // a sysfs scan after lost events
	AskedByKernel   = "kernel"   // the kernel's request_module, through the modprobe helper
	AskedByStatic   = "static"   // a static list's line
	AskedByCommand  = "command"  // a command line (modprobe, load-static's caller)
)

// Asker says who asked for a load. The daemon fills it from the event,
// the helper's request or the list line; a Loader keeps one copy per
// request, shared by the records of every module that request loaded.
type Asker struct {
	Kind    string `json:"kind"`
	Action  string `json:"action,omitempty"`  // the uevent's action
	DevPath string `json:"devpath,omitempty"` // the uevent's device
	Seqnum  uint64 `json:"seqnum,omitempty"`  // the uevent's; 0 for a sysfs scan's
	// Name is what was asked for: the MODALIAS or module name.
	Name string `json:"name,omitempty"`
	File string `json:"file,omitempty"` // a static list's file and line
	Line int    `json:"line,omitempty"`
	PID  int    `json:"pid,omitempty"` // the modprobe process that asked
}

// retain returns a copy of a that shares no memory with the caller's: an
// event's fields are slices of its whole message, which a record must not
// keep alive. The strings are copied into one allocation.
func (a Asker) retain() *Asker {
	if len(a.Name) > maxAskerName {
		a.Name = a.Name[:maxAskerName] + "..."
	}
	a.Action = internAction(a.Action)
	var b strings.Builder
	b.Grow(len(a.DevPath) + len(a.Name) + len(a.File))
	b.WriteString(a.DevPath)
	b.WriteString(a.Name)
	b.WriteString(a.File)
	s := b.String()
	n1, n2 := len(a.DevPath), len(a.DevPath)+len(a.Name)
	a.DevPath, a.Name, a.File = s[:n1], s[n1:n2], s[n2:]
	return &a
}

// internAction returns the kernel's action names as constants, so a
// record costs nothing for them; any other is copied.
func internAction(s string) string {
	for _, a := range [...]string{"add", "remove", "change", "move", "online", "offline", "bind", "unbind"} {
		if s == a {
			return a
		}
	}
	return strings.Clone(s)
}

// How a recorded load was carried out (Record.Op).
const (
	OpLoad    = "load"    // handed to the kernel (finit_module or init_module)
	OpInstall = "install" // a modprobe.d install command ran instead
	OpWait    = "wait"    // another process was loading it: waited until live
)

// Record is one load the Loader carried out: one per module handed to the
// kernel (or to its install command, or waited for while another process
// loaded it), not one per request: requests for a module in flight share
// its record (Joined). Times are nanoseconds of CLOCK_MONOTONIC (time
// since boot, systemd-analyze's clock; dmesg's runs raw, unslewed by NTP:
// see kmsgSlack); 0 is not reached.
type Record struct {
	// ID numbers the records from 1 in the order their loads started.
	ID     uint64
	Module string
	// For is the module the request asked for when this one loaded as
	// its dependency (or soft dependency); "" when it is that module.
	For   string
	Asker *Asker // nil when the caller said nothing
	// Requested is when the request started on the module's plan; the
	// time until Started went to the dependencies (Waits), the module
	// file's lock and room in the kernel.
	Requested int64
	Started   int64 // finit_module (or the install command) called
	Returned  int64 // finit_module returned: since Linux 5.18 after live, once async probes are done
	Done      int64 // live, or failed: the load's result was known
	Op        string
	Err       error // nil: live
	// Waits are the dependencies the module's start waited for.
	Waits []Wait
	// Joined counts the other requests that asked for the module while
	// this load was in flight and shared its result.
	Joined uint32
}

// Wait is one dependency a load waited for before it started.
type Wait struct {
	Module string `json:"module"`
	// ID is the record of the dependency's load, 0 when it had none (it
	// was live or built in already).
	ID  uint64 `json:"id,omitempty"`
	End int64  `json:"end_ns"` // when the dependency was done
	// Shared: the dependency's load was another request's, in flight
	// when this one asked for it: this load waited on someone else.
	Shared bool `json:"shared,omitempty"`
	Failed bool `json:"failed,omitempty"` // the dependency failed
}

// MonotonicNow is the time on the timeline's clock, CLOCK_MONOTONIC in
// nanoseconds, for callers that mark their own moments on it (the
// daemon's coldplug start).
func MonotonicNow() int64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) != nil {
		return 0
	}
	return ts.Nano()
}

// timeline is the ring of the last records, guarded by Loader.mu.
type timeline struct {
	recs        []*Record // oldest at next once full
	next        int
	lastID      uint64
	overwritten uint64
}

// TimelineLimit is how many records the Loader keeps (TimelineSize
// resolved): 0 when it keeps none.
func (l *Loader) TimelineLimit() int { return l.timelineSize() }

func (l *Loader) timelineSize() int {
	switch {
	case l.TimelineSize < 0:
		return 0
	case l.TimelineSize == 0:
		return DefaultTimelineSize
	}
	return l.TimelineSize
}

// Timeline returns copies of the records kept, oldest first, and how
// many older ones were overwritten. Loads in flight are included; their
// missing times are 0.
func (l *Loader) Timeline() (recs []Record, overwritten uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := &l.tl
	recs = make([]Record, 0, len(t.recs))
	for i := range t.recs {
		recs = append(recs, *t.recs[(t.next+i)%len(t.recs)])
	}
	return recs, t.overwritten
}

// request is one Load call: who asked, kept once for every record it
// makes.
type request struct {
	asker    Asker
	retained *Asker // made by the first record, under Loader.mu
}

// planRun is one plan being carried out: the request, when it started
// and, per step, what became of it, for the records of the steps after.
type planRun struct {
	req       *request
	module    string // the module the plan is for
	requested int64
	steps     []Step
	state     []stepState
}

type stepState struct {
	done chan struct{} // closed when the step is done (runParallel)
	err  error
	// The step's outcome, for the waits of the steps after it.
	id     uint64
	end    int64
	shared bool
}

func newPlanRun(req *request, module string, steps []Step, parallel bool) *planRun {
	p := &planRun{req: req, module: module, requested: MonotonicNow(), steps: steps, state: make([]stepState, len(steps))}
	if parallel {
		for i := range p.state {
			p.state[i].done = make(chan struct{})
		}
	}
	return p
}

// record puts f's load in the timeline, the first time it does something
// worth one: it is handed to the kernel or its install command, or waited
// for while another process loads it. A module found live makes no record,
// so the events of a storm asking for modules already loaded cost nothing
// here. Later calls only update Op.
func (l *Loader) record(f *flight, op string) {
	size := l.timelineSize()
	if size == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if f.rec != nil {
		f.rec.Op = op
		return
	}
	r := &Record{Module: f.module, Requested: f.requested, Op: op, Joined: f.joined}
	if p := f.plan; p != nil {
		if p.req.retained == nil {
			p.req.retained = p.req.asker.retain()
		}
		r.Asker = p.req.retained
		if p.module != f.module {
			r.For = p.module
		}
		if after := p.steps[f.step].After; len(after) > 0 {
			// The steps before this one are done (it started after
			// them): their state is settled.
			r.Waits = make([]Wait, len(after))
			for k, j := range after {
				st := &p.state[j]
				r.Waits[k] = Wait{Module: p.steps[j].Name, ID: st.id, End: st.end, Shared: st.shared, Failed: st.err != nil}
			}
		}
	}
	t := &l.tl
	t.lastID++
	r.ID = t.lastID
	f.rec = r
	if len(t.recs) < size {
		t.recs = append(t.recs, r)
		return
	}
	t.recs[t.next] = r
	t.next = (t.next + 1) % len(t.recs)
	t.overwritten++
}

// stamp sets one time of f's record to now, if it has one.
func (l *Loader) stamp(f *flight, at func(*Record) *int64) {
	now := MonotonicNow()
	l.mu.Lock()
	if f.rec != nil {
		*at(f.rec) = now
	}
	l.mu.Unlock()
}

func started(r *Record) *int64  { return &r.Started }
func returned(r *Record) *int64 { return &r.Returned }
