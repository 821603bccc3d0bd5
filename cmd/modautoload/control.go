package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/modautoload/modautoload/daemon"
)

const settleHelp = `settle [--timeout D] [--control PATH]

Waits until the daemon has handled every uevent the kernel had issued
(its /sys/kernel/uevent_seqnum when settle started), no load is in flight,
and it stayed so with no newer uevent for 200ms, so that the devices a load
sets off (USB enumeration after xhci_pci) are waited for too. Exit status 0
when settled, 1 on timeout or without a daemon. A daemon still starting is
waited for.`

func runSettle(ctx context.Context, env *cliEnv, args []string) int {
	var (
		s       optSet
		timeout = 120 * time.Second
		control = daemon.DefaultControl
	)
	s.durationVar(&timeout, 't', "timeout", "DURATION", "give up after DURATION (default 120s)")
	s.stringVar(&control, 0, "control", "PATH", "the daemon's control socket (default "+daemon.DefaultControl+")")
	rest, code := parseArgs(env, "settle", settleHelp, &s, args)
	if code >= 0 {
		return code
	}
	if len(rest) > 0 {
		fmt.Fprintf(env.stderr, "modautoload settle: unexpected argument %q\n", rest[0])
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		resp, err := daemon.Ask(ctx, control, daemon.Request{Op: "settle", TimeoutMS: time.Until(deadline(ctx)).Milliseconds()}, daemon.Waits{})
		switch {
		case err == nil && resp.OK:
			return 0
		case err == nil:
			fmt.Fprintf(env.stderr, "modautoload settle: %s\n", resp.Error)
			return 1
		case errors.Is(err, daemon.ErrNoDaemon) && ctx.Err() == nil:
			// The daemon may not have created its socket yet.
			select {
			case <-time.After(20 * time.Millisecond):
				continue
			case <-ctx.Done():
			}
		}
		fmt.Fprintf(env.stderr, "modautoload settle: %v\n", errors.Join(err, ctx.Err()))
		return 1
	}
}

func deadline(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

const statusHelp = `status [--json | --prometheus] [--timeline [--svg FILE]] [--control PATH]

Prints the daemon's counters (events received, rejected, malformed,
defective, overruns, resyncs and dropped; the queue's length and bytes;
loads done, failed, deduplicated, already live, waited for, in flight,
still in the kernel and refused), each module's state and last error, and
the daemon's memory (resident, anonymous, mapped files, threads; the Go
heap in use, free and released; stacks; GC cycles). --prometheus prints
them in the Prometheus text format, as node_exporter's textfile collector
reads it (the daemon's --prometheus-file writes the same): modautoload_*
counters and gauges, modules by state, and for each module its failed
loads (modautoload_module_failures_total) and, while its last load failed,
its error (modautoload_module_failed). Exit status 1 without a daemon.

--timeline prints the daemon's last 256 loads instead (daemon
--timeline-size): for each, when it was asked for (seconds since boot,
CLOCK_MONOTONIC as systemd-analyze counts; dmesg's clock drifts from it by
NTP's correction), how long it waited before it was handed to the kernel (for
its dependencies, the module file's lock), how long until it was live,
when finit_module returned (on Linux 5.18+ after live, once asynchronous
probes are done), its result with the errno's name, and who asked: a
uevent (action, device, seqnum, MODALIAS), the coldplug's or a resync's
sysfs scan, the kernel's request_module through the modprobe helper, a
static list's file:line, or a command line. Then the coldplug: the loads
from the daemon's start until it first went quiet as settle sees it, and
its critical path, the chain of waits that ended last: from the load done
last back through the dependency it waited for longest, or the load whose
device its device appeared below, to a load that waited for nothing.
--svg FILE also draws it, one bar per load as systemd-analyze plot does.
--json prints the timeline as one JSON object. See also modautoload why.`

func runStatus(ctx context.Context, env *cliEnv, args []string) int {
	var (
		s        optSet
		jsonOut  bool
		promOut  bool
		timeline bool
		svgPath  string
		control  = daemon.DefaultControl
	)
	s.boolVar(&jsonOut, 0, "json", "print the status as one JSON object")
	s.boolVar(&promOut, 0, "prometheus", "print the status in the Prometheus text exposition format")
	s.boolVar(&timeline, 0, "timeline", "print the load timeline and the coldplug's critical path instead")
	s.stringVar(&svgPath, 0, "svg", "FILE", "with --timeline, also write the timeline as an SVG chart to FILE")
	s.stringVar(&control, 0, "control", "PATH", "the daemon's control socket (default "+daemon.DefaultControl+")")
	rest, code := parseArgs(env, "status", statusHelp, &s, args)
	if code >= 0 {
		return code
	}
	if len(rest) > 0 {
		fmt.Fprintf(env.stderr, "modautoload status: unexpected argument %q\n", rest[0])
		return 2
	}
	if jsonOut && promOut {
		fmt.Fprintln(env.stderr, "modautoload status: --json and --prometheus exclude each other")
		return 2
	}
	if svgPath != "" && !timeline || timeline && promOut {
		fmt.Fprintln(env.stderr, "modautoload status: --svg needs --timeline, which --prometheus excludes")
		return 2
	}
	if timeline {
		return statusTimeline(ctx, env, control, jsonOut, svgPath)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := daemon.Ask(ctx, control, daemon.Request{Op: "status"}, daemon.Waits{})
	if err == nil && !resp.OK {
		err = errors.New(resp.Error)
	}
	if err != nil {
		fmt.Fprintf(env.stderr, "modautoload status: %v\n", err)
		return 1
	}
	st := resp.Status
	if st == nil {
		fmt.Fprintln(env.stderr, "modautoload status: the daemon's answer holds no status")
		return 1
	}
	if promOut {
		if err := daemon.WritePrometheus(env.stdout, *st); err != nil {
			fmt.Fprintf(env.stderr, "modautoload status: %v\n", err)
			return 1
		}
		return 0
	}
	if jsonOut {
		b, _ := json.Marshal(st)
		fmt.Fprintf(env.stdout, "%s\n", b)
		return 0
	}
	e := st.Events
	fmt.Fprintf(env.stdout, "events     received %d, rejected %d, malformed %d, defective %d, overruns %d, resyncs %d, dropped %d\n",
		e.Received, e.Rejected, e.Malformed, e.Defective, e.Overruns, st.Resyncs, st.Dropped)
	fmt.Fprintf(env.stdout, "handling   handled %d, nothing to load %d, queued %d (%d bytes), busy %d, seqnum %d of %d, coldplug done %v\n",
		st.Handled, st.Skipped, st.Queue, st.QueueBytes, st.Busy, st.LastSeqnum, st.KernelSeqnum, st.ColdplugDone)
	l := st.Loads
	fmt.Fprintf(env.stdout, "loads      loaded %d, failed %d, deduplicated %d, already live %d, waited %d, in flight %d, in the kernel %d, refused %d; initstate polled %d times\n",
		l.Loaded, l.Failed, l.Deduplicated, l.AlreadyLive, l.Waited, l.InFlight, l.InKernel, st.Refused, l.Polls)
	if sl := st.Static; sl != nil {
		fmt.Fprintf(env.stdout, "static     listed %d, done %d (all %v): live %d, skipped %d, missing %d, failed %d\n",
			sl.Listed, sl.Entries, sl.Done, sl.Live, sl.Skipped, sl.Missing, sl.Failed)
	}
	m := st.Memory
	fmt.Fprintf(env.stdout, "memory     resident %d KiB (peak %d: anonymous %d, files %d, shmem %d), %d threads (Go code on %d at once); Go heap %d KiB in use, %d unused in its pages, %d free, %d released; stacks %d KiB; %d GC cycles (%.2f s CPU)\n",
		m.RSSKiB, m.PeakRSSKiB, m.AnonKiB, m.FileKiB, m.ShmemKiB, m.Threads, m.Procs, m.HeapObjects>>10, m.HeapUnused>>10, m.HeapFree>>10, m.HeapReleased>>10, m.Stacks>>10, m.GCCycles, m.GCCPUSeconds)
	names := make([]string, 0, len(st.Modules))
	for n := range st.Modules {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		m := st.Modules[n]
		fmt.Fprintf(env.stdout, "module     %-24s %-8s %s %s\n", n, m.State, m.Updated.Format(time.TimeOnly), m.Err)
	}
	return 0
}
