package daemon

import (
	"cmp"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/modautoload/modautoload/loader"
	"github.com/modautoload/modautoload/uevent"
)

// Timeline is what `status --timeline` and `why` show: the loads the
// daemon's Loader recorded (loader.Record), and for the loads that
// followed its start (coldplug, static lists) the critical path. Times
// are nanoseconds of CLOCK_MONOTONIC: since boot, as systemd-analyze
// counts.
type Timeline struct {
	NowNS int64 `json:"now_ns"`
	// Size is how many records the daemon keeps; Overwritten, how many
	// older ones it dropped.
	Size        int          `json:"size"`
	Overwritten uint64       `json:"overwritten"`
	Records     []LoadRecord `json:"records"`
	// Coldplug is the burst of loads from the daemon's start, with its
	// critical path; nil without --coldplug or static lists.
	Coldplug *Burst `json:"coldplug,omitempty"`
}

// LoadRecord is one loader.Record, with its result in words.
type LoadRecord struct {
	ID     uint64        `json:"id"`
	Module string        `json:"module"`
	For    string        `json:"for,omitempty"`
	Asker  *loader.Asker `json:"asker,omitempty"`
	// RequestedNS is when the request started on the module's plan,
	// StartedNS when the module was handed to the kernel (or its install
	// command ran), ReturnedNS when that call returned, DoneNS when the
	// result was known: live (which on Linux 5.18+ may come before the
	// return) or failed. 0: not reached.
	RequestedNS int64         `json:"requested_ns"`
	StartedNS   int64         `json:"started_ns,omitempty"`
	ReturnedNS  int64         `json:"returned_ns,omitempty"`
	DoneNS      int64         `json:"done_ns,omitempty"`
	Op          string        `json:"op"`
	Result      string        `json:"result"` // live, failed, loading
	Errno       string        `json:"errno,omitempty"`
	Error       string        `json:"error,omitempty"`
	Waits       []loader.Wait `json:"waits,omitempty"`
	Joined      uint32        `json:"joined,omitempty"`
	// ParentDrivers are the modules that drive the devices above the
	// asker's device, nearest first, as sysfs says when the timeline is
	// taken: the loads that may have created that device.
	ParentDrivers []string `json:"parent_drivers,omitempty"`
}

// Results of a LoadRecord.
const (
	ResultLive    = "live"
	ResultFailed  = "failed"
	ResultLoading = "loading"
)

// Burst is the boot's loads: those asked for from the daemon's start
// until the first pause of burstGap with no load in flight, pauses before
// the last load the coldplug's scan or a static list asked for aside (a
// slow scan may leave gaps between its loads; they are still the
// coldplug's). Their critical path is the chain of waits that ended last:
// the load done last, what it waited for longest, and so on back to a
// load that waited for nothing.
type Burst struct {
	StartNS int64 `json:"start_ns"`
	EndNS   int64 `json:"end_ns"`
	Loads   int   `json:"loads"`
	// Open: a load of the burst is still in flight (EndNS is now).
	Open         bool       `json:"open,omitempty"`
	CriticalPath []PathStep `json:"critical_path,omitempty"`
}

// PathStep is one load on the critical path, first to last.
type PathStep struct {
	ID     uint64 `json:"id,omitempty"` // 0: a dependency whose record was overwritten
	Module string `json:"module"`
	// HeldBy says how the step before held this one up: it was a
	// dependency this load waited for (LinkDependency, or
	// LinkSharedDependency when another request was loading it), or this
	// load's device appeared below the device that load was for, while it
	// was in the kernel (LinkDevice). "" for the first step.
	HeldBy string `json:"held_by,omitempty"`
}

// Links of the critical path (PathStep.HeldBy).
const (
	LinkDependency       = "dependency"
	LinkSharedDependency = "shared dependency"
	LinkDevice           = "device"
)

// Timeline returns the recorded loads and the critical path of the
// loads since the daemon started.
func (d *Daemon) Timeline() Timeline {
	recs, over := d.cfg.Loader.Timeline()
	tl := Timeline{NowNS: loader.MonotonicNow(), Overwritten: over, Size: d.cfg.Loader.TimelineLimit(),
		Records: make([]LoadRecord, len(recs))}
	drivers := map[string][]string{}
	for i, r := range recs {
		tl.Records[i] = loadRecord(r)
		if r.Asker == nil || r.Asker.DevPath == "" {
			continue
		}
		ds, ok := drivers[r.Asker.DevPath]
		if !ok {
			ds = parentDrivers(d.cfg.Sysfs, r.Asker.DevPath)
			drivers[r.Asker.DevPath] = ds
		}
		tl.Records[i].ParentDrivers = ds
	}
	if start := d.started.Load(); start != 0 && (d.cfg.Coldplug || len(d.cfg.Static) > 0) {
		tl.Coldplug = FindBurst(tl.Records, start, tl.NowNS)
	}
	return tl
}

func loadRecord(r loader.Record) LoadRecord {
	lr := LoadRecord{ID: r.ID, Module: r.Module, For: r.For, Asker: r.Asker, RequestedNS: r.Requested,
		StartedNS: r.Started, ReturnedNS: r.Returned, DoneNS: r.Done, Op: r.Op, Waits: r.Waits, Joined: r.Joined}
	switch {
	case r.Done == 0:
		lr.Result = ResultLoading
	case r.Err == nil:
		lr.Result = ResultLive
	default:
		lr.Result = ResultFailed
		lr.Error = r.Err.Error()
		var errno syscall.Errno
		if errors.As(r.Err, &errno) {
			lr.Errno = unix.ErrnoName(errno)
		}
	}
	return lr
}

// eventAsker says which event asked for name. A sysfs scan's events
// carry no seqnum: the first scan is the coldplug, later ones resyncs.
func (d *Daemon) eventAsker(ev *uevent.Event, name string) loader.Asker {
	a := loader.Asker{Kind: loader.AskedByUevent, Action: ev.Action, DevPath: ev.DevPath, Seqnum: ev.Seqnum, Name: name}
	if ev.Seqnum == 0 {
		a.Kind = loader.AskedByColdplug
		if d.resyncs.Load() > 0 {
			a.Kind = loader.AskedByResync
		}
	}
	return a
}

// requestAsker says who sent a load request: the helper says whether the
// kernel ran it; anything else is a command line.
func requestAsker(req Request) loader.Asker {
	a := loader.Asker{Kind: loader.AskedByCommand, Name: req.Name}
	if req.Asker != nil {
		a.PID = req.Asker.PID
		if req.Asker.Kind == loader.AskedByKernel {
			a.Kind = loader.AskedByKernel
		}
	}
	return a
}

// burstGap ends the boot's burst: a pause with nothing loading, longer
// than settle's quiet time (settleQuiet) so that a slow guest's cascade
// (USB enumeration after xhci_pci) stays in, short enough that a device
// plugged in after boot does not.
const burstGap = 500 * time.Millisecond

// FindBurst finds the boot's loads (see Burst) from start and their
// critical path; none without a load the coldplug or a static list asked
// for. now ends loads still in flight.
func FindBurst(recs []LoadRecord, start, now int64) *Burst {
	order := make([]int, 0, len(recs))
	lastBoot := int64(-1) // when the last coldplug or static load was asked for
	for i, r := range recs {
		if r.RequestedNS < start {
			continue
		}
		order = append(order, i)
		if a := r.Asker; a != nil && (a.Kind == loader.AskedByColdplug || a.Kind == loader.AskedByStatic) {
			lastBoot = max(lastBoot, r.RequestedNS)
		}
	}
	b := &Burst{StartNS: start, EndNS: start}
	if lastBoot < 0 {
		return b
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(recs[a].RequestedNS, recs[b].RequestedNS) })
	in := map[uint64]bool{}
	last := -1
	for _, i := range order {
		r := &recs[i]
		if r.RequestedNS > lastBoot && r.RequestedNS > b.EndNS+burstGap.Nanoseconds() {
			break
		}
		end := r.DoneNS
		if end == 0 {
			end, b.Open = now, true
		}
		if last < 0 || end >= b.EndNS {
			last = i
		}
		b.EndNS = max(b.EndNS, end)
		b.Loads++
		in[r.ID] = true
	}
	if last >= 0 {
		b.CriticalPath = criticalPath(recs, last, in)
	}
	return b
}

// criticalPath walks back from the load done last: to the dependency it
// waited for longest, or, for a load that waited for none, to the load
// whose device its own device appeared below. It stays within the burst
// (in) and stops at a load held by nothing known.
func criticalPath(recs []LoadRecord, last int, in map[uint64]bool) []PathStep {
	byID := make(map[uint64]int, len(recs))
	for i, r := range recs {
		byID[r.ID] = i
	}
	var path []PathStep
	seen := map[uint64]bool{}
	for cur := last; ; {
		r := &recs[cur]
		seen[r.ID] = true
		next, link := heldBy(recs, r, byID, in)
		if next >= 0 && !seen[recs[next].ID] {
			path = append(path, PathStep{ID: r.ID, Module: r.Module, HeldBy: link})
			cur = next
			continue
		}
		// A dependency recorded no longer, or before the burst, ends
		// the path by name.
		if w := longestWait(r); next < 0 && w != nil {
			dep := PathStep{Module: w.Module}
			if _, ok := byID[w.ID]; ok {
				dep.ID = w.ID
			}
			path = append(path, PathStep{ID: r.ID, Module: r.Module, HeldBy: waitLink(w)}, dep)
		} else {
			path = append(path, PathStep{ID: r.ID, Module: r.Module})
		}
		break
	}
	slices.Reverse(path)
	return path
}

// heldBy is the load that held r up, and how; -1 when none is known.
func heldBy(recs []LoadRecord, r *LoadRecord, byID map[uint64]int, in map[uint64]bool) (int, string) {
	if w := longestWait(r); w != nil {
		if i, ok := byID[w.ID]; ok && in[w.ID] {
			return i, waitLink(w)
		}
		return -1, ""
	}
	if i := deviceParent(recs, r, in); i >= 0 {
		return i, LinkDevice
	}
	return -1, ""
}

// longestWait is the wait of r that ended last among those for a load
// (a dependency already live held nothing up).
func longestWait(r *LoadRecord) *loader.Wait {
	var best *loader.Wait
	for i := range r.Waits {
		w := &r.Waits[i]
		if w.ID != 0 && (best == nil || w.End > best.End) {
			best = w
		}
	}
	return best
}

func waitLink(w *loader.Wait) string {
	if w.Shared {
		return LinkSharedDependency
	}
	return LinkDependency
}

// deviceParent finds the load that made r's device appear: a driver
// creates the devices below its own while it is in the kernel (virtio_pci
// creates virtio1 below its PCI device), and the kernel announces them at
// once. Of the loads of the modules driving the devices above r's
// (ParentDrivers) that were in the kernel by the time r was asked for, the
// one started last: usbhid's interface is below a USB device usbcore
// drives and a controller xhci_pci drives, and xhci_pci, which needs
// usbcore, is the later cause. Without ParentDrivers, the loads asked for
// by the devices above r's stand in: the nearest device's, the module
// asked for rather than a dependency, the one started last.
func deviceParent(recs []LoadRecord, r *LoadRecord, in map[uint64]bool) int {
	if r.Asker == nil || r.Asker.DevPath == "" {
		return -1
	}
	if len(r.ParentDrivers) > 0 {
		best := -1
		for i := range recs {
			p := &recs[i]
			if in[p.ID] && p.ID != r.ID && p.StartedNS != 0 && p.StartedNS <= r.RequestedNS && slices.Contains(r.ParentDrivers, p.Module) &&
				(best < 0 || p.StartedNS > recs[best].StartedNS) {
				best = i
			}
		}
		return best
	}
	best := -1
	for i := range recs {
		p := &recs[i]
		if !in[p.ID] || p.ID == r.ID || p.Asker == nil || p.StartedNS == 0 || p.StartedNS > r.RequestedNS ||
			!isAncestor(p.Asker.DevPath, r.Asker.DevPath) {
			continue
		}
		if best < 0 || betterParent(p, &recs[best]) {
			best = i
		}
	}
	return best
}

func betterParent(p, q *LoadRecord) bool {
	if len(p.Asker.DevPath) != len(q.Asker.DevPath) {
		return len(p.Asker.DevPath) > len(q.Asker.DevPath)
	}
	if (p.For == "") != (q.For == "") {
		return p.For == ""
	}
	return p.StartedNS > q.StartedNS
}

// maxDeviceDepth bounds the walk up a devpath; sysfs trees are a dozen
// deep at most.
const maxDeviceDepth = 32

// parentDrivers lists the modules driving the devices above devpath,
// nearest first, each once: sysfs links a bound device to its driver
// (DEVICE/driver), and a modular driver to its module (driver/module).
// Built-in drivers have no module link and are left out.
func parentDrivers(sysfs, devpath string) []string {
	if !strings.HasPrefix(devpath, "/devices/") || strings.Contains(devpath, "/..") || strings.Contains(devpath, "/./") {
		return nil
	}
	var out []string
	dir := devpath
	for range maxDeviceDepth {
		dir = dir[:strings.LastIndexByte(dir, '/')]
		if dir == "/devices" || dir == "" {
			break
		}
		target, err := os.Readlink(filepath.Join(sysfs, dir, "driver", "module"))
		if err != nil {
			continue
		}
		if m := filepath.Base(target); !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out
}

// isAncestor: dir is a strict ancestor of path, at a '/' boundary.
func isAncestor(dir, path string) bool {
	return dir != "" && len(path) > len(dir) && strings.HasPrefix(path, dir) && path[len(dir)] == '/'
}

// Why is what `modautoload why MODULE` shows of one module.
type Why struct {
	Module string    `json:"module"`
	Loads  []WhyLoad `json:"loads"`
}

// WhyLoad explains one recorded load of the module.
type WhyLoad struct {
	LoadRecord
	// NeededBy is the chain of modules that waited for this one, from
	// the one that needed it directly to the module its request asked
	// for.
	NeededBy []string `json:"needed_by,omitempty"`
	// AlsoNeededBy are modules of other requests that waited for this
	// load while it was in flight.
	AlsoNeededBy []string `json:"also_needed_by,omitempty"`
	// DeviceOf is the load that created the device whose event asked
	// for this one (see PathStep.HeldBy, LinkDevice).
	DeviceOf *PathStep `json:"device_of,omitempty"`
	// Critical: the load is on the coldplug's critical path.
	Critical bool `json:"critical,omitempty"`
}

// Explain answers `why MODULE` from a timeline: every recorded load of
// the module, oldest first; none when it was never recorded (loaded
// before the daemon started, built in, or overwritten).
func (tl *Timeline) Explain(module string) Why {
	module = strings.ReplaceAll(module, "-", "_")
	w := Why{Module: module}
	critical := map[uint64]bool{}
	if tl.Coldplug != nil {
		for _, s := range tl.Coldplug.CriticalPath {
			critical[s.ID] = true
		}
	}
	all := map[uint64]bool{}
	for _, r := range tl.Records {
		all[r.ID] = true
	}
	for i := range tl.Records {
		r := &tl.Records[i]
		if r.Module != module {
			continue
		}
		wl := WhyLoad{LoadRecord: *r, Critical: r.ID != 0 && critical[r.ID]}
		wl.NeededBy, wl.AlsoNeededBy = tl.dependents(r)
		if p := deviceParent(tl.Records, r, all); p >= 0 {
			wl.DeviceOf = &PathStep{ID: tl.Records[p].ID, Module: tl.Records[p].Module, HeldBy: LinkDevice}
		}
		w.Loads = append(w.Loads, wl)
	}
	return w
}

// dependents follows r's load up its request's plan: the module of the
// same request that waited for it, and the one that waited for that,
// until the module asked for. modules.dep lists every dependency, so the
// module asked for waits for all of them: of those that waited, the one
// with the fewest waits is the nearest. Modules of other requests that
// waited for the load are listed apart.
func (tl *Timeline) dependents(r *LoadRecord) (chain, others []string) {
	for i := range tl.Records {
		if d := &tl.Records[i]; d.ID != r.ID && waitsFor(d, r.ID, true) {
			others = append(others, d.Module)
		}
	}
	seen := map[uint64]bool{r.ID: true}
	for cur := r; cur.For != ""; {
		var next *LoadRecord
		for i := range tl.Records {
			d := &tl.Records[i]
			if !seen[d.ID] && waitsFor(d, cur.ID, false) && (next == nil || len(d.Waits) < len(next.Waits)) {
				next = d
			}
		}
		if next == nil {
			break
		}
		chain = append(chain, next.Module)
		seen[next.ID] = true
		cur = next
	}
	return chain, others
}

// waitsFor: d waited for load id, as a load another request started
// (shared) or its own.
func waitsFor(d *LoadRecord, id uint64, shared bool) bool {
	for _, w := range d.Waits {
		if w.ID == id && w.Shared == shared {
			return true
		}
	}
	return false
}
