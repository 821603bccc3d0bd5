package daemon

import (
	"bufio"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// maxLabelValue bounds a label value: a module's error can carry up to
// 4 KiB of an install command's output, too much for a time series name.
const maxLabelValue = 256

// metric is one family of the exposition: its samples share name, help
// and type.
type metric struct {
	name, help, kind string
	samples          []sample
}

type sample struct {
	labels [][2]string // name, value
	value  string
}

func value(v uint64) []sample { return []sample{{value: strconv.FormatUint(v, 10)}} }
func signed(v int64) []sample { return []sample{{value: strconv.FormatInt(v, 10)}} }
func kib(v int64) []sample    { return signed(v * 1024) }
func boolean(v bool) []sample {
	if v {
		return value(1)
	}
	return value(0)
}
func labelled(v uint64, labels ...[2]string) sample {
	return sample{labels: labels, value: strconv.FormatUint(v, 10)}
}

// WritePrometheus writes st in the Prometheus text exposition format
// (version 0.0.4), the format node_exporter's textfile collector reads:
// the daemon's counters, its queue and memory, how many modules are in
// each state, and each module's failed loads.
func WritePrometheus(w io.Writer, st Status) error {
	e, l, m := st.Events, st.Loads, st.Memory
	metrics := []metric{
		{"modautoload_uevents_received_total", "Kernel uevents accepted.", "counter", value(e.Received)},
		{"modautoload_uevents_rejected_total", "Uevent messages refused because the kernel did not send them.", "counter", value(e.Rejected)},
		{"modautoload_uevents_malformed_total", "Kernel messages with no usable event.", "counter", value(e.Malformed)},
		{"modautoload_uevents_defective_total", "Accepted uevents with fields skipped or repaired.", "counter", value(e.Defective)},
		{"modautoload_uevent_overruns_total", "Times the kernel dropped uevents for a full receive buffer (ENOBUFS).", "counter", value(e.Overruns)},
		{"modautoload_resyncs_total", "Rescans of sysfs after lost or dropped events.", "counter", value(st.Resyncs)},
		{"modautoload_events_dropped_total", "Events dropped because the queue was full (a resync follows).", "counter", value(st.Dropped)},
		{"modautoload_events_handled_total", "Events and coldplugged devices handled.", "counter", value(st.Handled)},
		{"modautoload_events_nothing_to_load_total", "Handled events that asked for no module.", "counter", value(st.Skipped)},
		{"modautoload_modules_refused_total", "Modules refused because the allow-list does not name them.", "counter", value(st.Refused)},
		{"modautoload_event_load_errors_total", "Module loads asked for by events that ended in an error, one per event sharing a failure.", "counter", value(st.LoadErrors)},
		{"modautoload_modules_loaded_total", "Modules this daemon handed to the kernel that went live.", "counter", value(l.Loaded)},
		{"modautoload_module_loads_failed_total", "Module loads that failed.", "counter", value(l.Failed)},
		{"modautoload_load_requests_deduplicated_total", "Load requests answered by a load in flight or a failure of the same burst.", "counter", value(l.Deduplicated)},
		{"modautoload_load_requests_already_live_total", "Load requests for modules already live or built in.", "counter", value(l.AlreadyLive)},
		{"modautoload_modules_waited_total", "Modules another loader was loading, waited for until live.", "counter", value(l.Waited)},
		{"modautoload_initstate_polls_total", "Reads of /sys/module/NAME/initstate by waits that no uevent ended first.", "counter", value(l.Polls)},
		{"modautoload_loads_in_flight", "Module loads callers are waiting for.", "gauge", signed(l.InFlight)},
		{"modautoload_loads_in_kernel", "finit_module calls not yet returned, loads given up on included.", "gauge", signed(l.InKernel)},
		{"modautoload_queue_events", "Events queued.", "gauge", signed(int64(st.Queue))},
		{"modautoload_queue_bytes", "Bytes of kernel events queued.", "gauge", signed(st.QueueBytes)},
		{"modautoload_events_in_progress", "Events being handled.", "gauge", signed(int64(st.Busy))},
		{"modautoload_control_requests_in_progress", "Load requests from the modprobe helper in progress.", "gauge", signed(int64(st.Requests))},
		{"modautoload_uevent_last_seqnum", "Highest kernel uevent sequence number received or covered by a scan.", "gauge", value(st.LastSeqnum)},
		{"modautoload_uevent_kernel_seqnum", "The kernel's last uevent sequence number (/sys/kernel/uevent_seqnum).", "gauge", value(st.KernelSeqnum)},
		{"modautoload_coldplug_done", "1 once the coldplug scan at start is done.", "gauge", boolean(st.ColdplugDone)},
		{"modautoload_resident_memory_bytes", "The daemon's resident memory (Rss of /proc/self/smaps_rollup).", "gauge", kib(m.RSSKiB)},
		{"modautoload_resident_memory_peak_bytes", "The daemon's peak resident memory (VmHWM; before Linux 6.2 it lags behind a threaded process).", "gauge", kib(m.PeakRSSKiB)},
		{"modautoload_go_heap_objects_bytes", "Go heap memory held by live and unswept objects.", "gauge", value(m.HeapObjects)},
		{"modautoload_threads", "The daemon's threads.", "gauge", signed(m.Threads)},
	}
	if st.Version != "" {
		metrics = append([]metric{{"modautoload_build_info", "The daemon's version, as a label; always 1.", "gauge",
			[]sample{labelled(1, [2]string{"version", st.Version})}}}, metrics...)
	}
	metrics = append(metrics, moduleMetrics(st)...)

	bw := bufio.NewWriter(w)
	for _, m := range metrics {
		bw.WriteString("# HELP " + m.name + " " + escapeHelp(m.help) + "\n")
		bw.WriteString("# TYPE " + m.name + " " + m.kind + "\n")
		for _, s := range m.samples {
			bw.WriteString(m.name)
			if len(s.labels) > 0 {
				bw.WriteByte('{')
				for i, l := range s.labels {
					if i > 0 {
						bw.WriteByte(',')
					}
					bw.WriteString(l[0] + `="` + escapeLabel(l[1]) + `"`)
				}
				bw.WriteByte('}')
			}
			bw.WriteString(" " + s.value + "\n")
		}
	}
	return bw.Flush()
}

// moduleStates are the states a module can be in, so that every state has
// a sample, zero included, and a query need not guess which exist.
var moduleStates = []string{"loading", "live", "builtin", "failed", "removed"}

// moduleMetrics are the per-module families: modules per state, and for
// each module that ever failed, its failures and, while its last load
// failed, the error. Families without samples are left out.
func moduleMetrics(st Status) []metric {
	names := make([]string, 0, len(st.Modules))
	perState := map[string]uint64{}
	for n, ms := range st.Modules {
		names = append(names, n)
		perState[ms.State]++
	}
	sort.Strings(names)
	states := append([]string(nil), moduleStates...)
	for s := range perState {
		if !slices.Contains(states, s) {
			states = append(states, s)
		}
	}
	sort.Strings(states[len(moduleStates):])
	byState := metric{"modautoload_modules", "Modules the daemon dealt with, by their last state.", "gauge", nil}
	for _, s := range states {
		byState.samples = append(byState.samples, labelled(perState[s], [2]string{"state", s}))
	}
	failures := metric{"modautoload_module_failures_total", "Failed loads of a module since the daemon started.", "counter", nil}
	failed := metric{"modautoload_module_failed", "1 for a module whose last load failed, with its error.", "gauge", nil}
	for _, n := range names {
		ms := st.Modules[n]
		if ms.Failures > 0 {
			failures.samples = append(failures.samples, labelled(ms.Failures, [2]string{"module", n}))
		}
		if ms.State == "failed" {
			failed.samples = append(failed.samples, labelled(1, [2]string{"module", n}, [2]string{"error", ms.Err}))
		}
	}
	out := []metric{byState}
	for _, m := range []metric{failures, failed} {
		if len(m.samples) > 0 {
			out = append(out, m)
		}
	}
	return out
}

// escapeHelp escapes a HELP text as the format asks: backslash and
// newline.
func escapeHelp(s string) string { return escape(s, false) }

// escapeLabel makes any string a valid label value: UTF-8, at most
// maxLabelValue bytes before escaping (cut at a character boundary), with
// backslash, double quote and newline escaped.
func escapeLabel(s string) string {
	if len(s) > maxLabelValue {
		cut := maxLabelValue
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return escape(s, true)
}

// escape writes s with backslash and newline escaped, and double quote
// too in a label value; bytes that are not UTF-8 become U+FFFD. (A loop,
// not strings.Replacer: the binary stays smaller.)
func escape(s string, label bool) string {
	var b strings.Builder
	for _, r := range s { // an invalid byte comes as utf8.RuneError
		switch {
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '"' && label:
			b.WriteString(`\"`)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
