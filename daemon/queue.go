package daemon

import (
	"strings"
	"unsafe"

	"github.com/modautoload/modautoload/uevent"
)

// eventQueue holds every event from its arrival until a worker has
// finished it, and knows which may start. Every operation costs time in
// the length of the event's devpath, never in the length of the queue, so
// a storm of events queued behind one stuck device costs no more per
// event than a quiet day.
//
// Ordering is udev's rule for kernel events: an event waits for every
// earlier unfinished kernel event of its devpath, of an ancestor or of a
// descendant (a prefix at a '/' boundary); unrelated devices run in
// parallel. Events from a sysfs scan (coldplug, resync) wait only for the
// earlier events of their own devpath and hold back no other device: the
// walk's order says nothing about how devices changed in time, and a
// rescan's event for a bus must not put every device below it behind one
// load that hangs. The same-devpath order still keeps two events of one
// device off two workers at once.
//
// The waits are counted, not searched for. Devpaths form a trie of nodes,
// one per prefix; each node lists its unfinished events in arrival order.
// A kernel event at node N waits for:
//   - the event before it at N, which in turn waits for everything earlier
//     that N's events wait for;
//   - the latest kernel event of all N's ancestors, which waits for every
//     earlier one of them (ancestors of N are all related to each other);
//   - each kernel event below N that arrived after N's previous kernel
//     event (node.free counts them; each is charged to the first kernel
//     event of N after it, and when it finishes that event is N's oldest
//     kernel event, because everything earlier at N had to finish first).
//
// An event starts when its count of waits reaches zero.
type eventQueue struct {
	nodes    map[nodeKey]*node
	arrivals uint64
	// ready holds the events free to start, oldest first (an intrusive
	// list through entry.nextReady).
	readyHead, readyTail *entry
	queued, busy         int
	bytes                int64 // of the queued events, kernel and scan
	kernelBytes          int64 // of the queued kernel events: the part MaxQueueBytes bounds
	// steps counts the nodes and entries visited, so a test can hold the
	// work to a constant per event.
	steps uint64
}

// entry is one event from arrival until it is finished.
type entry struct {
	ev      uevent.Event
	scan    bool // from a sysfs scan
	started bool
	arrival uint64
	size    int64
	node    *node
	// blocks counts the unfinished events this one waits for.
	blocks int
	// next is the next event of the same devpath; nextKernel the next
	// kernel event of it.
	next, nextKernel *entry
	// waiters lists the kernel events below whose latest earlier
	// ancestor event this is, linked through their nextWaiter.
	waiters, nextWaiter *entry
	nextReady           *entry
}

// node is one devpath prefix with unfinished events at or below it.
type node struct {
	parent *node
	name   string // the last path component, the key in the parent
	// The unfinished events of exactly this devpath, oldest first, and
	// the kernel events among them.
	head, tail             *entry
	kernelHead, kernelTail *entry
	// free counts the unfinished kernel events below that arrived after
	// kernelTail: no kernel event of this devpath waits for them yet.
	free     int
	children int
}

type nodeKey struct {
	parent *node
	name   string
}

func newEventQueue() eventQueue {
	return eventQueue{nodes: map[nodeKey]*node{}}
}

// entryOverhead is what a queued event costs beside its strings: the
// entry with its Event, the node of its devpath and the node's map slot.
const entryOverhead = int64(unsafe.Sizeof(entry{}) + unsafe.Sizeof(node{}) + 2*unsafe.Sizeof(nodeKey{}))

// eventBytes is what the queue charges for an event. The fields are
// substrings of one message, so counting each one over-counts a little:
// the bound errs towards less memory.
func eventBytes(ev *uevent.Event) int64 {
	n := entryOverhead + int64(len(ev.Action)+len(ev.DevPath)+len(ev.Subsystem)+len(ev.Modalias)+len(ev.Driver))
	for _, p := range ev.Props {
		n += int64(unsafe.Sizeof(p)) + int64(len(p.Key)+len(p.Value))
	}
	for _, d := range ev.Defects {
		n += int64(unsafe.Sizeof(d)) + int64(len(d.Reason))
	}
	return n
}

// push queues an event of size bytes (eventBytes).
func (q *eventQueue) push(ev uevent.Event, scan bool, size int64) {
	n := q.node(ev.DevPath)
	if t := n.tail; scan && t != nil && t.scan && !t.started {
		// The last scan's event for this device has not started: refresh
		// it rather than queue the device twice, so scans that follow
		// one another cannot grow the queue past one event per device.
		q.bytes += size - t.size
		t.ev, t.size = ev, size
		return
	}
	q.arrivals++
	e := &entry{ev: ev, scan: scan, arrival: q.arrivals, size: size, node: n}
	if n.tail != nil {
		e.blocks++
		n.tail.next = e
	} else {
		n.head = e
	}
	n.tail = e
	if !scan {
		e.blocks += n.free
		n.free = 0
		var latest *entry
		for a := n.parent; a != nil; a = a.parent {
			q.steps++
			a.free++
			if t := a.kernelTail; t != nil && (latest == nil || t.arrival > latest.arrival) {
				latest = t
			}
		}
		if latest != nil {
			e.blocks++
			e.nextWaiter, latest.waiters = latest.waiters, e
		}
		if n.kernelTail != nil {
			n.kernelTail.nextKernel = e
		} else {
			n.kernelHead = e
		}
		n.kernelTail = e
		q.kernelBytes += size
	}
	q.queued++
	q.bytes += size
	if e.blocks == 0 {
		q.makeReady(e)
	}
}

// node returns the node of devpath, creating it and its ancestors as
// needed. The ancestors of "/a/b" are "/a" and "" (the prefixes before
// each '/'), as for every devpath the kernel sends.
func (q *eventQueue) node(devpath string) *node {
	var parent *node
	rest := devpath
	for {
		q.steps++
		name, after, more := strings.Cut(rest, "/")
		key := nodeKey{parent, name}
		n := q.nodes[key]
		if n == nil {
			// A copy, so a node that outlives its event does not keep
			// the event's whole message.
			key.name = strings.Clone(name)
			n = &node{parent: parent, name: key.name}
			q.nodes[key] = n
			if parent != nil {
				parent.children++
			}
		}
		if !more {
			return n
		}
		parent, rest = n, after
	}
}

func (q *eventQueue) makeReady(e *entry) {
	if q.readyTail != nil {
		q.readyTail.nextReady = e
	} else {
		q.readyHead = e
	}
	q.readyTail = e
}

func (q *eventQueue) release(e *entry) {
	q.steps++
	e.blocks--
	if e.blocks == 0 {
		q.makeReady(e)
	}
}

// start takes the oldest event free to start, nil if none is; the caller
// handles it and then calls finish.
func (q *eventQueue) start() *entry {
	e := q.readyHead
	if e == nil {
		return nil
	}
	q.steps++
	q.readyHead, e.nextReady = e.nextReady, nil
	if q.readyHead == nil {
		q.readyTail = nil
	}
	e.started = true
	q.queued--
	q.busy++
	q.bytes -= e.size
	if !e.scan {
		q.kernelBytes -= e.size
	}
	return e
}

// finish ends a started event and frees the events that waited for it.
func (q *eventQueue) finish(e *entry) {
	q.busy--
	n := e.node
	// e started, so every earlier event of its devpath had finished: it
	// is the oldest one left.
	n.head = e.next
	if n.head == nil {
		n.tail = nil
	} else {
		q.release(n.head)
	}
	if !e.scan {
		n.kernelHead = e.nextKernel
		if n.kernelHead == nil {
			n.kernelTail = nil
		}
		for w := e.waiters; w != nil; {
			// Unlinked as they go, so a waiter that lives on does not
			// keep finished ones alive.
			next := w.nextWaiter
			w.nextWaiter = nil
			q.release(w)
			w = next
		}
		e.waiters = nil
		for a := n.parent; a != nil; a = a.parent {
			q.steps++
			// Every kernel event of a that came before e has finished
			// (e waited for it); the first one after e, if any, was
			// charged with e.
			if a.kernelHead != nil {
				q.release(a.kernelHead)
			} else {
				a.free--
			}
		}
	}
	for m := n; m != nil && m.head == nil && m.children == 0; m = m.parent {
		q.steps++
		delete(q.nodes, nodeKey{m.parent, m.name})
		if m.parent != nil {
			m.parent.children--
		}
	}
}
