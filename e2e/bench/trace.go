package main

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// event is one line of the guest's trace buffer.
type event struct {
	ts     float64 // seconds, trace clock "mono"
	pid    int     // the task (thread) that caused it
	kind   string  // "finit", "finit_ret", "load", "live", "request", "mark", "uevent", "uevent_sent"
	arg    string  // module name, request, marker text, a uevent's DEVPATH
	ret    int64   // finit_module's return value
	action string  // a uevent's ACTION
}

// ueventArgs matches the fetch arguments of ueventProbe.
var ueventArgs = regexp.MustCompile(`^action="ACTION=([^"]*)" devpath="DEVPATH=([^"]*)"$`)

// traceLine matches "  comm-PID  [CPU] FLAGS  TS: EVENT". comm may itself
// contain dashes and spaces, hence the greedy start.
var traceLine = regexp.MustCompile(`^.*-(\d+)\s+\[\d+\]\s+\S+\s+(\d+\.\d+):\s+(.*)$`)

// parseEvent reads one trace line; ok is false for events not counted.
// A line without the event header continues the previous event: the
// kernel prints a string argument as is, and some contain a newline (the
// HD-audio codec requests "hdaudio:v...a01\n", its sysfs modalias text).
func parseEvent(line string) (ev event, ok bool, err error) {
	m := traceLine.FindStringSubmatch(line)
	if m == nil {
		return event{}, false, nil
	}
	if ev.pid, err = strconv.Atoi(m[1]); err != nil {
		return event{}, false, err
	}
	if ev.ts, err = strconv.ParseFloat(m[2], 64); err != nil {
		return event{}, false, err
	}
	body := m[3]
	switch {
	case strings.HasPrefix(body, "sys_finit_module("):
		ev.kind = "finit"
	case strings.HasPrefix(body, "sys_finit_module -> "):
		// The return value is printed as an unsigned long in hex.
		u, err := strconv.ParseUint(strings.TrimPrefix(body, "sys_finit_module -> 0x"), 16, 64)
		if err != nil {
			return event{}, false, fmt.Errorf("trace line %q: %w", line, err)
		}
		ev.kind, ev.ret = "finit_ret", int64(u)
	case strings.HasPrefix(body, "module_load: "):
		ev.kind, ev.arg = "load", firstField(strings.TrimPrefix(body, "module_load: "))
	case strings.HasPrefix(body, liveProbe+": "):
		ev.kind = "live"
	case strings.HasPrefix(body, ueventProbe+": "):
		// "(dev_uevent+0x0/0x2f0) action=... devpath=...". A process
		// reading a uevent file also calls dev_uevent, with no ACTION or
		// DEVPATH yet: the fetch faults, and it is no uevent.
		_, args, _ := strings.Cut(body, ") ")
		m := ueventArgs.FindStringSubmatch(args)
		if m == nil {
			return event{}, false, nil
		}
		ev.kind, ev.action, ev.arg = "uevent", m[1], m[2]
	case strings.HasPrefix(body, sendProbe+": "):
		ev.kind = "uevent_sent"
	case strings.HasPrefix(body, "module_request: "):
		ev.kind, ev.arg = "request", firstField(strings.TrimPrefix(body, "module_request: "))
	case strings.HasPrefix(body, "tracing_mark_write: "):
		ev.kind, ev.arg = "mark", strings.TrimSpace(strings.TrimPrefix(body, "tracing_mark_write: "))
	default:
		return event{}, false, nil
	}
	return ev, true, nil
}

func firstField(s string) string {
	if f := strings.Fields(s); len(f) > 0 {
		return f[0]
	}
	return ""
}

// window is what the trace says happened between two markers.
type window struct {
	finit    int            // finit_module calls
	failed   map[string]int // failed calls by errno name
	loads    []string       // module_load events, in order
	requests []string       // the kernel's request_module calls
	lastLive float64        // seconds from the opening marker to the last module going live; 0 if none
	lastRet  float64        // seconds from the opening marker to the last successful finit_module return
	calls    []call         // finit_module calls that loaded a module
	uevents  []uevent       // device uevents, in order (only while their probes are enabled)
}

// uevent is one device uevent the kernel emitted. Times are the trace's.
type uevent struct {
	action, devpath string
	built           float64 // dev_uevent: the kernel is adding the device's variables
	sent            float64 // the netlink broadcast to listeners; 0 if none followed
}

// call is one finit_module call that got as far as loading a module (a
// duplicate refused with EEXIST names none: the trace only shows its fd).
// Times are the trace's.
type call struct {
	module string
	enter  float64 // the finit_module system call was entered
	load   float64 // module_load: the module is in memory, its init about to run
	live   float64 // its init succeeded; 0 if it failed
	exit   float64 // finit_module returned
	ret    int64
}

// liveProbe is the kprobe event that tells when a module went live. The
// kernel (6.1, kernel/module/main.c do_init_module) marks a module live,
// sends its add@/module uevent, then calls async_synchronize_full()
// before finit_module returns: that call waits for all async work in the
// system, such as another controller's SCSI scan, so a load can return
// seconds after the module went live. A probe on that call is the live
// moment; the module's own init may call it too, so the last hit of the
// loading task counts.
const liveProbe = "modlive"

// ueventProbe and sendProbe are the kprobe events that time device
// uevents. kobject_uevent_env() itself cannot be probed on Debian's 6.1
// (lib/ is built notrace), so ueventProbe sits on dev_uevent(), which it
// calls for every device to add the bus's variables; by then the event
// already holds ACTION and DEVPATH as its first two variables (envp[0]
// and envp[1] of struct kobj_uevent_env, at offsets 24 and 32). The
// broadcast to listeners comes after, in netlink_broadcast(), from the
// same task: sendProbe. The two can be far apart (the task may be
// preempted in between, e.g. by a listener woken by the previous event),
// so the broadcast is the moment the event was emitted.
const (
	ueventProbe = "devuevent"
	sendProbe   = "uevsend"
)

// timeline is a parsed trace with its markers.
type timeline struct {
	events []event
	marks  map[string]float64
}

func parseTrace(lines []string) (*timeline, error) {
	tl := &timeline{marks: map[string]float64{}}
	for _, l := range lines {
		ev, ok, err := parseEvent(l)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		if ev.kind == "mark" {
			tl.marks[ev.arg] = ev.ts
		}
		tl.events = append(tl.events, ev)
	}
	sort.SliceStable(tl.events, func(i, j int) bool { return tl.events[i].ts < tl.events[j].ts })
	return tl, nil
}

// between returns the events from marker from to marker to. A
// finit_module call entered in the window belongs to it whole: its load,
// live and return are read after the closing marker too. A loader that
// waits for live, not for the call's return (which 6.1 holds for all
// asynchronous work in the system), leaves calls open past any marker
// while their modules went live inside it.
func (tl *timeline) between(from, to string) (window, error) {
	t0, ok0 := tl.marks[from]
	t1, ok1 := tl.marks[to]
	if !ok0 || !ok1 {
		return window{}, fmt.Errorf("trace lacks the %q or %q marker", from, to)
	}
	w := window{failed: map[string]int{}}
	open := map[int]*call{} // calls in flight, by task: a syscall blocks its thread
	unsent := map[int]int{} // index in w.uevents of a uevent not yet broadcast, by task
	for _, ev := range tl.events {
		if ev.ts < t0 {
			continue
		}
		c := open[ev.pid]
		if ev.ts > t1 && (c == nil || (ev.kind != "load" && ev.kind != "live" && ev.kind != "finit_ret")) {
			continue
		}
		switch ev.kind {
		case "finit":
			w.finit++
			open[ev.pid] = &call{enter: ev.ts}
		case "load":
			w.loads = append(w.loads, ev.arg)
			if c != nil {
				c.module, c.load = ev.arg, ev.ts
			}
		case "live":
			if c != nil && c.module != "" {
				c.live = ev.ts
			}
		case "finit_ret":
			delete(open, ev.pid)
			if ev.ret != 0 {
				w.failed[errnoName(-ev.ret)]++
				if c != nil && c.module != "" {
					c.live = 0 // an async wait inside the failed init
				}
			} else {
				w.lastRet = ev.ts - t0
			}
			if c == nil || c.module == "" {
				continue
			}
			if ev.ret == 0 && c.live == 0 {
				return window{}, fmt.Errorf("%s loaded at %.6f without a %s event: is the kprobe set?", c.module, ev.ts, liveProbe)
			}
			c.exit, c.ret = ev.ts, ev.ret
			if c.live != 0 {
				w.lastLive = max(w.lastLive, c.live-t0)
			}
			w.calls = append(w.calls, *c)
		case "request":
			w.requests = append(w.requests, ev.arg)
		case "uevent":
			// A task emits its uevents one at a time: an earlier one
			// still unsent had no listener and is never broadcast.
			unsent[ev.pid] = len(w.uevents)
			w.uevents = append(w.uevents, uevent{action: ev.action, devpath: ev.arg, built: ev.ts})
		case "uevent_sent":
			// Broadcasts with no dev_uevent before them are other
			// netlink messages, or uevents of kobjects that are not
			// devices (add@/module/NAME).
			if i, ok := unsent[ev.pid]; ok {
				w.uevents[i].sent = ev.ts
				delete(unsent, ev.pid)
			}
		}
	}
	// Calls still in the kernel when the trace was read: their modules
	// went live all the same.
	for _, c := range open {
		if c.module != "" && c.live != 0 {
			w.lastLive = max(w.lastLive, c.live-t0)
		}
	}
	return w, nil
}

// span is the time between two markers, in seconds.
func (tl *timeline) span(from, to string) (float64, bool) {
	t0, ok0 := tl.marks[from]
	t1, ok1 := tl.marks[to]
	return t1 - t0, ok0 && ok1
}

// errnoName is the symbolic name of an errno value, e.g. "EEXIST".
func errnoName(e int64) string {
	if name := unix.ErrnoName(unix.Errno(e)); name != "" {
		return name
	}
	return fmt.Sprintf("errno %d", e)
}
