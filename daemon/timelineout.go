package daemon

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"

	"github.com/modautoload/modautoload/loader"
)

// DescribeAsker says in a few words who asked for a load.
func DescribeAsker(a *loader.Asker) string {
	// Names and paths come from uevents and helper requests: printable
	// only, for the terminal that shows them.
	return loader.Printable(describeAsker(a), 1024)
}

func describeAsker(a *loader.Asker) string {
	if a == nil {
		return "unknown"
	}
	alias := ""
	if a.Name != "" {
		alias = " (" + a.Name + ")"
	}
	switch a.Kind {
	case loader.AskedByUevent:
		return fmt.Sprintf("uevent %s %s, seqnum %d%s", a.Action, a.DevPath, a.Seqnum, alias)
	case loader.AskedByColdplug, loader.AskedByResync:
		return a.Kind + " " + a.DevPath + alias
	case loader.AskedByKernel:
		return fmt.Sprintf("the kernel's request_module(%s), helper pid %d", a.Name, a.PID)
	case loader.AskedByStatic:
		if a.File == "kernel command line" {
			return fmt.Sprintf("kernel command line, word %d (%s)", a.Line, a.Name)
		}
		return fmt.Sprintf("%s:%d (%s)", a.File, a.Line, a.Name)
	case loader.AskedByCommand:
		if a.PID > 0 {
			return fmt.Sprintf("modprobe %s, pid %d", a.Name, a.PID)
		}
		return "modprobe " + a.Name
	}
	return a.Kind + alias
}

// seconds formats a time on the timeline's clock.
func seconds(ns int64) string { return fmt.Sprintf("%.3f", float64(ns)/1e9) }

// span formats the time from a to b, "-" when either is unknown.
func span(a, b int64) string {
	if a == 0 || b == 0 {
		return "-"
	}
	return fmt.Sprintf("%+.3f", float64(b-a)/1e9)
}

func resultText(r *LoadRecord) string {
	switch {
	case r.Result == ResultFailed && r.Errno != "":
		return "failed " + r.Errno
	case r.Result == ResultLive && r.Op == loader.OpWait:
		return "live (waited)"
	}
	return r.Result
}

// sortedRecords are the records in the order they were asked for.
func sortedRecords(tl *Timeline) []*LoadRecord {
	out := make([]*LoadRecord, len(tl.Records))
	for i := range tl.Records {
		out[i] = &tl.Records[i]
	}
	slices.SortStableFunc(out, func(a, b *LoadRecord) int {
		return cmp.Or(cmp.Compare(a.RequestedNS, b.RequestedNS), cmp.Compare(a.ID, b.ID))
	})
	return out
}

// WriteTimeline prints the timeline as `status --timeline` shows it: a
// line per load, then the coldplug's critical path.
func WriteTimeline(w io.Writer, tl *Timeline) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "timeline   %d loads recorded (the last %d are kept, %d overwritten); seconds since boot, now %s\n",
		len(tl.Records), tl.Size, tl.Overwritten, seconds(tl.NowNS))
	fmt.Fprintf(bw, "%6s %10s %8s %8s %8s  %-14s %-22s %s\n", "ID", "REQUESTED", "WAIT", "LOAD", "RETURN", "RESULT", "MODULE", "ASKED BY")
	for _, r := range sortedRecords(tl) {
		start := r.StartedNS
		if r.Op == loader.OpWait {
			start = r.RequestedNS
		}
		asked := DescribeAsker(r.Asker)
		if r.For != "" {
			asked = "for " + r.For + ": " + asked
		}
		if r.Joined > 0 {
			asked += fmt.Sprintf("; and %d more", r.Joined)
		}
		fmt.Fprintf(bw, "%6d %10s %8s %8s %8s  %-14s %-22s %s\n", r.ID, seconds(r.RequestedNS), span(r.RequestedNS, start),
			span(start, r.DoneNS), span(r.StartedNS, r.ReturnedNS), resultText(r), r.Module, asked)
	}
	if b := tl.Coldplug; b != nil {
		writeBurst(bw, tl, b)
	}
	return bw.Flush()
}

func writeBurst(w io.Writer, tl *Timeline, b *Burst) {
	state := ""
	if b.Open {
		state = ", still loading"
	}
	fmt.Fprintf(w, "coldplug   %d loads from %s to %s s (%.3f s)%s\n", b.Loads, seconds(b.StartNS), seconds(b.EndNS),
		float64(b.EndNS-b.StartNS)/1e9, state)
	if len(b.CriticalPath) == 0 {
		return
	}
	fmt.Fprintf(w, "critical path (the chain of waits that ended last):\n")
	var prev *LoadRecord
	for _, s := range b.CriticalPath {
		fmt.Fprintf(w, "  %s\n", describeStep(tl, s, prev))
		prev = tl.record(s.ID)
		if prev == nil {
			prev = &LoadRecord{Module: s.Module}
		}
	}
}

// describeStep is one step of a critical path: when its load was asked
// for and done, and how the step before (prev) held it up.
func describeStep(tl *Timeline, s PathStep, prev *LoadRecord) string {
	r := tl.record(s.ID)
	if r == nil {
		return fmt.Sprintf("%21s  %-22s (no longer recorded)", "", s.Module)
	}
	done := "…"
	if r.DoneNS != 0 {
		done = seconds(r.DoneNS)
	}
	why := DescribeAsker(r.Asker)
	switch {
	case prev == nil:
	case s.HeldBy == LinkDependency:
		why = "waited for its dependency " + prev.Module
	case s.HeldBy == LinkSharedDependency:
		why = "waited for its dependency " + prev.Module + ", another request's load; asked by " + why
	case s.HeldBy == LinkDevice:
		when := "while it loaded"
		if prev.DoneNS != 0 && r.RequestedNS >= prev.DoneNS {
			when = fmt.Sprintf("%.3f s after it was done", float64(r.RequestedNS-prev.DoneNS)/1e9)
		}
		why = fmt.Sprintf("its device appeared below one %s drives, asked for %s: %s", prev.Module, when, why)
	}
	return fmt.Sprintf("%9s → %9s  %-22s %s", seconds(r.RequestedNS), done, r.Module, why)
}

func (tl *Timeline) record(id uint64) *LoadRecord {
	if id == 0 {
		return nil
	}
	for i := range tl.Records {
		if tl.Records[i].ID == id {
			return &tl.Records[i]
		}
	}
	return nil
}

// WriteWhy prints why a module loaded: for each recorded load, who asked,
// what needed it, what it waited for, and its times.
func WriteWhy(w io.Writer, tl *Timeline, why Why) error {
	bw := bufio.NewWriter(w)
	if len(why.Loads) == 0 {
		fmt.Fprintf(bw, "%s: no load recorded: the daemon did not load it, or loaded it %d loads ago or more (overwritten), or it is built in\n",
			why.Module, tl.Size)
	}
	for _, l := range why.Loads {
		r := &l.LoadRecord
		fmt.Fprintf(bw, "%s: %s (load #%d)\n", r.Module, resultText(r), r.ID)
		if r.Error != "" {
			fmt.Fprintf(bw, "  error:       %s\n", r.Error)
		}
		fmt.Fprintf(bw, "  asked by:    %s\n", DescribeAsker(r.Asker))
		if len(l.NeededBy) > 0 {
			fmt.Fprintf(bw, "  needed by:   %s %s\n", r.Module, "← "+strings.Join(l.NeededBy, " ← "))
		} else if r.For != "" {
			fmt.Fprintf(bw, "  needed by:   %s (a dependency of it)\n", r.For)
		}
		if len(l.AlsoNeededBy) > 0 {
			fmt.Fprintf(bw, "  also needed: %s (other requests, which waited for this load)\n", strings.Join(l.AlsoNeededBy, ", "))
		}
		if r.Joined > 0 {
			fmt.Fprintf(bw, "  shared with: %d more requests for %s while it loaded\n", r.Joined, r.Module)
		}
		if d := l.DeviceOf; d != nil {
			fmt.Fprintf(bw, "  device:      appeared below a device %s drives (load #%d, handed to the kernel before this was asked for)\n", d.Module, d.ID)
		}
		if len(r.Waits) == 0 {
			fmt.Fprintf(bw, "  waited for:  no dependency\n")
		}
		for i, wt := range r.Waits {
			label := "  waited for:  "
			if i > 0 {
				label = "               "
			}
			how := "live already"
			switch {
			case wt.ID != 0 && wt.Shared:
				how = fmt.Sprintf("load #%d, another request's", wt.ID)
			case wt.ID != 0:
				how = fmt.Sprintf("load #%d, this request's", wt.ID)
			}
			if wt.Failed {
				how += ", failed"
			}
			fmt.Fprintf(bw, "%s%s until %s (%s)\n", label, wt.Module, seconds(wt.End), how)
		}
		fmt.Fprintf(bw, "  times:       requested %s", seconds(r.RequestedNS))
		if r.StartedNS != 0 {
			fmt.Fprintf(bw, ", handed to the kernel %s (%s)", seconds(r.StartedNS), span(r.RequestedNS, r.StartedNS))
		}
		if r.DoneNS != 0 {
			fmt.Fprintf(bw, ", %s %s", r.Result, seconds(r.DoneNS))
		}
		if r.ReturnedNS != 0 {
			call := "finit_module"
			if r.Op == loader.OpInstall {
				call = "its install command"
			}
			fmt.Fprintf(bw, ", %s returned %s", call, seconds(r.ReturnedNS))
		}
		fmt.Fprintln(bw)
		if l.Critical {
			fmt.Fprintf(bw, "  on the coldplug's critical path\n")
		}
	}
	return bw.Flush()
}

// SVG layout, in pixels.
const (
	svgRow      = 18
	svgTop      = 40
	svgLeft     = 10
	svgPlot     = 1100 // the time axis
	svgLabels   = 420  // room right of the last bar for its label
	svgLegendHt = 40
)

// WriteTimelineSVG draws the timeline as systemd-analyze plot draws units:
// one bar per load, in the order they were asked for, on a time axis in
// seconds since boot. A bar is the wait before the load (dependencies,
// the module's lock, room in the kernel), the load until the module was
// live (red when it failed), and finit_module's time in the kernel after
// that; a wait for another process's load is grey. Loads on the
// coldplug's critical path are outlined.
func WriteTimelineSVG(w io.Writer, tl *Timeline) error {
	recs := sortedRecords(tl)
	var t0, t1 int64
	for i, r := range recs {
		end := max(r.DoneNS, r.ReturnedNS, r.StartedNS, r.RequestedNS)
		if r.DoneNS == 0 {
			end = max(end, tl.NowNS)
		}
		if i == 0 || r.RequestedNS < t0 {
			t0 = r.RequestedNS
		}
		t1 = max(t1, end)
	}
	if t1 <= t0 {
		t1 = t0 + 1e9
	}
	scale := float64(svgPlot) / float64(t1-t0)
	x := func(ns int64) float64 { return svgLeft + float64(ns-t0)*scale }
	critical := map[uint64]bool{}
	if tl.Coldplug != nil {
		for _, s := range tl.Coldplug.CriticalPath {
			critical[s.ID] = true
		}
	}
	width := svgLeft + svgPlot + svgLabels
	height := svgTop + len(recs)*svgRow + svgLegendHt
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">
<style>
.wait{fill:#f2d9a0} .kernel{fill:#6a9fd4} .failed{fill:#d9534f} .linger{fill:#c7dcf0} .other{fill:#bbbbbb}
.critical rect{stroke:#000;stroke-width:1.5} .grid{stroke:#ddd} .axis{fill:#555}
</style>
<title>modautoload load timeline</title>
<rect width="100%%" height="100%%" fill="#fff"/>
`, width, height, width, height)
	writeGrid(bw, t0, t1, x, height-svgLegendHt)
	for i, r := range recs {
		y := svgTop + i*svgRow
		class := "load"
		if critical[r.ID] {
			class += " critical"
		}
		fmt.Fprintf(bw, `<g class="%s" id="load-%d"><title>%s</title>`, class, r.ID, esc(svgTitle(r)))
		end := r.DoneNS
		if end == 0 {
			end = tl.NowNS
		}
		bar := func(cls string, from, to int64) {
			if from == 0 || to < from {
				return
			}
			fmt.Fprintf(bw, `<rect class="%s" x="%.1f" y="%d" width="%.1f" height="%d"/>`, cls, x(from), y+2, math.Max(x(to)-x(from), 1), svgRow-4)
		}
		if r.Op == loader.OpWait {
			bar("other", r.RequestedNS, end)
		} else {
			bar("wait", r.RequestedNS, cmp.Or(r.StartedNS, end))
			kernel := "kernel"
			if r.Result == ResultFailed {
				kernel = "failed"
			}
			bar(kernel, r.StartedNS, end)
			if r.ReturnedNS > end {
				bar("linger", end, r.ReturnedNS)
			}
		}
		label := r.Module
		if r.StartedNS != 0 && r.DoneNS != 0 {
			label += fmt.Sprintf(" (%.0f ms)", float64(r.DoneNS-r.StartedNS)/1e6)
		}
		if r.Result == ResultFailed {
			label += " " + cmp.Or(r.Errno, "failed")
		}
		fmt.Fprintf(bw, `<text x="%.1f" y="%d">%s</text></g>`+"\n", x(max(end, r.ReturnedNS))+4, y+svgRow-5, esc(label))
	}
	ly := height - svgLegendHt + 16
	legend := []struct{ class, text string }{{"wait", "waiting (dependencies, lock)"}, {"kernel", "loading until live"},
		{"linger", "finit_module still in the kernel"}, {"failed", "failed"}, {"other", "another process loading it"}}
	lx := svgLeft
	for _, l := range legend {
		fmt.Fprintf(bw, `<rect class="%s" x="%d" y="%d" width="14" height="10"/><text x="%d" y="%d">%s</text>`+"\n", l.class, lx, ly, lx+18, ly+9, l.text)
		lx += 40 + 6*len(l.text)
	}
	if len(critical) > 0 {
		fmt.Fprintf(bw, `<text x="%d" y="%d">outlined: the coldplug's critical path</text>`+"\n", lx, ly+9)
	}
	fmt.Fprintln(bw, "</svg>")
	return bw.Flush()
}

// writeGrid draws a vertical line and a label every tick, some 10 ticks
// across.
func writeGrid(w io.Writer, t0, t1 int64, x func(int64) float64, bottom int) {
	tick := int64(1e6) // 1 ms, 2, 5, 10, ...
	for decade := tick; (t1-t0)/tick > 12 && decade <= 1e17; decade *= 10 {
		for _, f := range []int64{1, 2, 5} {
			if tick = f * decade; (t1-t0)/tick <= 12 {
				break
			}
		}
	}
	// Bounded, whatever times a timeline holds.
	for t, n := (t0+tick-1)/tick*tick, 0; t <= t1 && n < 100; t, n = t+tick, n+1 {
		fmt.Fprintf(w, `<line class="grid" x1="%.1f" y1="%d" x2="%.1f" y2="%d"/><text class="axis" x="%.1f" y="%d">%ss</text>`+"\n",
			x(t), svgTop-8, x(t), bottom, x(t)+2, svgTop-12, strings.TrimRight(strings.TrimRight(seconds(t), "0"), "."))
	}
}

func svgTitle(r *LoadRecord) string {
	s := fmt.Sprintf("#%d %s: %s; asked by %s; requested %s", r.ID, r.Module, resultText(r), DescribeAsker(r.Asker), seconds(r.RequestedNS))
	if r.StartedNS != 0 {
		s += ", started " + seconds(r.StartedNS)
	}
	if r.DoneNS != 0 {
		s += ", done " + seconds(r.DoneNS)
	}
	if r.ReturnedNS != 0 {
		s += ", returned " + seconds(r.ReturnedNS)
	}
	if r.Error != "" {
		s += "; " + r.Error
	}
	return s
}

// esc escapes text for XML character data and attributes. Bytes that
// are not valid UTF-8 and characters XML 1.0 does not allow (controls
// other than tab and newline) become U+FFFD, so a hostile module name or
// devpath cannot break the document. (encoding/xml would add 60 KiB to
// the binary for this.)
func esc(s string) string {
	var b strings.Builder
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		switch {
		case r == '<':
			b.WriteString("&lt;")
		case r == '>':
			b.WriteString("&gt;")
		case r == '&':
			b.WriteString("&amp;")
		case r == '"':
			b.WriteString("&quot;")
		case r == '\'':
			b.WriteString("&apos;")
		case r < 0x20 && r != '\t' && r != '\n', r == 0xFFFE, r == 0xFFFF:
			b.WriteRune(0xFFFD)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
