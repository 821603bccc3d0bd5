package main

import (
	"fmt"
	"html"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
	"time"
)

// result is every round of one approach.
type result struct {
	approach approach
	samples  []*sample
	errs     []string // rounds that failed, with why
}

// stat summarises one figure over the rounds.
type stat struct {
	med, min, max float64
	n             int
}

// stat summarises f over the rounds; negative values mean "not measured".
func (r *result) stat(f func(*sample) float64) stat {
	var xs []float64
	for _, s := range r.samples {
		if v := f(s); v >= 0 {
			xs = append(xs, v)
		}
	}
	return summarize(xs)
}

func summarize(xs []float64) stat {
	if len(xs) == 0 {
		return stat{}
	}
	xs = slices.Clone(xs)
	sort.Float64s(xs)
	med := xs[len(xs)/2]
	if len(xs)%2 == 0 {
		med = (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
	}
	return stat{med: med, min: xs[0], max: xs[len(xs)-1], n: len(xs)}
}

// format prints "median (min–max)", or just the value when all rounds
// agree, with prec decimals.
func (s stat) format(prec int) string {
	if s.n == 0 {
		return "n/a"
	}
	v := func(x float64) string { return fmt.Sprintf("%.*f", prec, x) }
	if v(s.min) == v(s.max) {
		return v(s.med)
	}
	return fmt.Sprintf("%s (%s–%s)", v(s.med), v(s.min), v(s.max))
}

// anchor is the result the others are compared with: systemd-udevd's.
func anchor(results []*result) *result {
	for _, r := range results {
		if r.approach.id == "udevd" && len(r.samples) > 0 {
			return r
		}
	}
	return nil
}

func markdown(e env, results []*result) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("# Coldplug benchmark\n\n")
	p("%s; host %s; guest Linux %s (Debian) under %s, TCG, 2 vCPUs, 2048 MiB; %d rounds per approach, each in a freshly booted guest; harness wall time %v",
		e.date, e.host, e.kernel, e.qemu, e.rounds, e.wall.Round(time.Second))
	if e.waited >= time.Second {
		p(", of which %v waiting for other qemu guests on the host to finish", e.waited.Round(time.Second))
	}
	p(".\n\n")
	p("Devices (VM-TESTING.md): %s.\n\n", strings.Join(devices, " "))

	columns := []string{"approach", "modules live", "finit_module calls", "failed calls", "coldplug s, median (min–max)",
		"vs udevd", "last load returned s", "done s", "agent peak RSS", "user CPU s", "hotplug ms"}
	p("| %s |\n|---%s|\n", strings.Join(columns, " | "), strings.Repeat("|--:", len(columns)-1))
	ref := anchor(results)
	coldplug := func(s *sample) float64 { return s.coldplug }
	for _, r := range results {
		a := r.approach
		if len(r.samples) == 0 {
			why := a.skip
			if why == "" {
				why = "every round failed (see notes)"
			}
			p("| %s | skipped: %s |%s\n", a.name, why, strings.Repeat("|", len(columns)-2))
			continue
		}
		cp := r.stat(coldplug)
		ratio := "n/a"
		if ref != nil {
			ratio = fmt.Sprintf("%.2f×", cp.med/ref.stat(coldplug).med)
		}
		done := "n/a (no settle)"
		if a.settles {
			done = r.stat(func(s *sample) float64 { return s.done }).format(2)
		}
		rss := "n/a (a process per call)"
		if st := r.stat(func(s *sample) float64 { return float64(s.rssKiB) / 1024 }); a.id != "kmod" {
			rss = st.format(1) + " MiB"
		}
		hotplug := "n/a (no listener)"
		if a.hotplug {
			hotplug = r.stat(func(s *sample) float64 { return s.hotplugMS }).format(0)
		}
		name := a.name
		if len(r.errs) > 0 {
			name += fmt.Sprintf(" (%d of %d rounds)", len(r.samples), len(r.samples)+len(r.errs))
		}
		p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", name,
			r.stat(func(s *sample) float64 { return float64(len(s.modules)) }).format(0),
			r.stat(func(s *sample) float64 { return float64(s.finit) }).format(0),
			failedCalls(r),
			cp.format(2), ratio,
			r.stat(func(s *sample) float64 { return s.returned }).format(2),
			done, rss,
			r.stat(func(s *sample) float64 { return s.userCPU }).format(2),
			hotplug)
	}
	p("\n![coldplug seconds per approach](bench.svg)\n\n")

	p("How each figure is taken, in the guest:\n\n")
	p("- *coldplug s*: from a trace marker written just before the agent starts to the last module going live (tracefs, clock `mono`; live is a kprobe on the `async_synchronize_full()` that 6.1's `do_init_module()` calls right after marking the module live).\n")
	p("- *last load returned s*: to the last `finit_module` that returned 0. That call first waits for all async work in the system (e.g. another controller's SCSI scan), so it can return seconds after the module went live; a loader that waits for the return is held up by other drivers' probing.\n")
	p("- *done s*: from the same marker until the approach said it was done (`udevadm settle`, `modautoload settle`, the loop's last round). mdev has no such notion: the harness waits for its socket queue to be empty and `/proc/modules` to stay unchanged for 2 s.\n")
	p("- *finit_module calls* and *failed calls*: `sys_enter_finit_module` / `sys_exit_finit_module` events during coldplug, by every process (agent, workers, modprobe children, the kernel's request_module helper). Failures by errno are medians over the rounds: EEXIST and EBUSY are duplicate loads (another caller loaded the module, or its load was still in flight), ENODEV an init that found no hardware.\n")
	p("- *agent peak RSS*: `VmHWM` of the lasting agent process just before it is stopped: the udevd manager (its workers are forked and killed again; see notes), the mdev daemon (not the shell and modprobe it forks per event), the modautoload daemon.\n")
	p("- *user CPU s*: user+nice time of all guest CPUs during coldplug (`/proc/stat`), i.e. what userspace spent; the kernel's own load work is system time and is not counted.\n")
	p("- *hotplug ms*: after coldplug, QMP `device_add` of a `virtio-keyboard-pci`; from its PCI function appearing in sysfs to `/sys/module/virtio_input/initstate` reading `live` (5 ms polling).\n")
	p("- The kernel's request_module helper is kmod's modprobe in every guest; loaders are kmod %s except modautoload's own; udev is Debian's %s; busybox is %s.\n\n",
		strings.TrimPrefix(e.kmod, "kmod version "), e.udev, e.busybox)

	p("## Module sets\n\n")
	p("%s", moduleSets(results, ref))

	p("\n## Notes\n\n")
	for _, r := range results {
		for _, n := range notes(r) {
			p("- %s: %s\n", r.approach.name, n)
		}
	}
	return b.String()
}

// moduleSets compares what each approach loaded with udevd's set (the
// union over rounds), and reports sets that vary between rounds.
func moduleSets(results []*result, ref *result) string {
	var b strings.Builder
	union := func(r *result, f func(*sample) []string) []string {
		set := map[string]bool{}
		for _, s := range r.samples {
			for _, m := range f(s) {
				set[m] = true
			}
		}
		return slices.Sorted(maps.Keys(set))
	}
	mods := func(s *sample) []string { return s.modules }
	var base []string
	for _, r := range results {
		base = append(base, union(r, func(s *sample) []string { return s.base })...)
	}
	if len(base) == 0 {
		fmt.Fprintf(&b, "Every guest started with no module loaded.\n")
	} else {
		fmt.Fprintf(&b, "Loaded before any agent started, in some guest: %s.\n", strings.Join(slices.Compact(slices.Sorted(slices.Values(base))), " "))
	}
	var refSet []string
	if ref != nil {
		refSet = union(ref, mods)
		fmt.Fprintf(&b, "\nsystemd-udevd loaded (%d): %s.\n\n", len(refSet), strings.Join(refSet, " "))
	}
	for _, r := range results {
		if len(r.samples) == 0 {
			continue
		}
		all := union(r, mods)
		if ref != nil && r != ref {
			var diff []string
			if extra := minus(all, refSet); len(extra) > 0 {
				diff = append(diff, "also "+strings.Join(extra, " "))
			}
			if missing := minus(refSet, all); len(missing) > 0 {
				diff = append(diff, "not "+strings.Join(missing, " "))
			}
			if len(diff) == 0 {
				diff = append(diff, "the same set as systemd-udevd")
			}
			fmt.Fprintf(&b, "- %s: %s.\n", r.approach.name, strings.Join(diff, "; "))
		}
		// Modules not loaded in every round.
		var varying []string
		for _, m := range all {
			n := 0
			for _, s := range r.samples {
				if slices.Contains(s.modules, m) {
					n++
				}
			}
			if n < len(r.samples) {
				varying = append(varying, fmt.Sprintf("%s (%d of %d)", m, n, len(r.samples)))
			}
		}
		if len(varying) > 0 {
			fmt.Fprintf(&b, "- %s: not loaded in every round: %s.\n", r.approach.name, strings.Join(varying, ", "))
		}
	}
	return b.String()
}

func minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// failedCalls is the failed finit_module calls, total and by errno,
// most frequent first, e.g. "43 (41–45): EEXIST 35, ENODEV 5, EBUSY 3".
func failedCalls(r *result) string {
	total := r.stat(func(s *sample) float64 { return float64(sum(s.failed)) }).format(0)
	names := map[string]bool{}
	for _, s := range r.samples {
		for e := range s.failed {
			names[e] = true
		}
	}
	type count struct {
		errno string
		med   float64
	}
	var counts []count
	for e := range names {
		counts = append(counts, count{e, r.stat(func(s *sample) float64 { return float64(s.failed[e]) }).med})
	}
	sort.Slice(counts, func(i, j int) bool {
		if counts[i].med != counts[j].med {
			return counts[i].med > counts[j].med
		}
		return counts[i].errno < counts[j].errno
	})
	var parts []string
	for _, c := range counts {
		parts = append(parts, fmt.Sprintf("%s %g", c.errno, c.med))
	}
	if len(parts) == 0 {
		return total
	}
	return total + ": " + strings.Join(parts, ", ")
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// notes are the per-approach details the table has no room for.
func notes(r *result) []string {
	var out []string
	out = append(out, r.errs...)
	if r.approach.skip != "" || len(r.samples) == 0 {
		return out
	}
	requests := map[string]int{}
	drops, rounds, children, childKiB := 0, 0, 0, 0
	var loads []string
	var waited time.Duration
	for _, s := range r.samples {
		for _, q := range s.requests {
			requests[q]++
		}
		drops += s.drops
		rounds = max(rounds, s.rounds)
		children = max(children, len(s.childKiB))
		for _, k := range s.childKiB {
			childKiB = max(childKiB, k)
		}
		loads = append(loads, fmt.Sprintf("%.1f", s.hostLoad))
		waited += s.waited
	}
	n := len(r.samples)
	out = append(out, "host load average (1 min) after each round (the guest itself accounts for about 2): "+strings.Join(loads, " "))
	if waited >= time.Second {
		out = append(out, fmt.Sprintf("waited %v in all for other qemu guests on the host to finish before its rounds", waited.Round(time.Second)))
	}
	if slow := slowest(r.samples, 3, func(c call) float64 { return c.live - c.load }); slow != "" {
		out = append(out, "longest inits, from module_load to live (each module's longest per round, median over rounds): "+slow)
	}
	if slow := slowest(r.samples, 3, func(c call) float64 { return c.exit - c.live }); slow != "" {
		out = append(out, "longest waits in finit_module after the module was live (async_synchronize_full): "+slow)
	}
	if len(requests) > 0 {
		var parts []string
		for _, q := range slices.Sorted(maps.Keys(requests)) {
			parts = append(parts, fmt.Sprintf("%s ×%d", q, requests[q]))
		}
		out = append(out, fmt.Sprintf("the kernel's own request_module calls during coldplug, over %d rounds: %s", n, strings.Join(parts, ", ")))
	}
	if drops > 0 {
		out = append(out, fmt.Sprintf("%d uevents dropped on its socket over %d rounds (/proc/net/netlink)", drops, n))
	}
	if rounds > 0 {
		out = append(out, fmt.Sprintf("up to %d rounds to the fixpoint (the last loads nothing)", rounds))
	}
	if children > 0 {
		out = append(out, fmt.Sprintf("up to %d child processes (udevd's workers) alive when coldplug was done, the largest with a peak RSS of %.1f MiB (not in the table)",
			children, float64(childKiB)/1024))
	}
	return out
}

// slowest names the n modules for which the span f of their successful
// calls was longest.
func slowest(samples []*sample, n int, f func(call) float64) string {
	longest := map[string][]float64{}
	for _, s := range samples {
		per := map[string]float64{}
		for _, c := range s.calls {
			if c.ret == 0 {
				per[c.module] = max(per[c.module], f(c))
			}
		}
		for m, d := range per {
			longest[m] = append(longest[m], d)
		}
	}
	type mod struct {
		name string
		med  float64
	}
	var mods []mod
	for name, ds := range longest {
		mods = append(mods, mod{name, summarize(ds).med})
	}
	sort.Slice(mods, func(i, j int) bool {
		if mods[i].med != mods[j].med {
			return mods[i].med > mods[j].med
		}
		return mods[i].name < mods[j].name
	})
	var parts []string
	for _, m := range mods[:min(n, len(mods))] {
		parts = append(parts, fmt.Sprintf("%s %.2f s", m.name, m.med))
	}
	return strings.Join(parts, ", ")
}

// chart draws coldplug seconds per approach as horizontal bars (median)
// with min–max whiskers.
func chart(results []*result) string {
	const (
		width, labelW, rowH, top, right = 760, 200, 36, 44, 70
		plotW                           = width - labelW - right
	)
	height := top + rowH*len(results) + 40
	coldplug := func(s *sample) float64 { return s.coldplug }
	top1 := 1.0
	for _, r := range results {
		top1 = max(top1, r.stat(coldplug).max)
	}
	step := tickStep(top1)
	scaleMax := math.Ceil(top1/step) * step
	x := func(v float64) float64 { return labelW + v/scaleMax*plotW }

	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="13">`+"\n", width, height)
	p(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	p(`<text x="%d" y="22" font-size="15" font-weight="bold">Coldplug: seconds to the last module live (median, min–max)</text>`+"\n", 10)
	axisY := top + rowH*len(results)
	for v := 0.0; v <= scaleMax+step/2; v += step {
		p(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", x(v), top-6, x(v), axisY)
		p(`<text x="%.1f" y="%d" text-anchor="middle" fill="#555">%g</text>`+"\n", x(v), axisY+16, v)
	}
	p(`<text x="%.1f" y="%d" text-anchor="middle" fill="#555">seconds</text>`+"\n", x(scaleMax/2), axisY+32)
	for i, r := range results {
		y := top + i*rowH
		mid := y + rowH/2 - 4
		p(`<text x="%d" y="%d" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", labelW-8, mid, html.EscapeString(r.approach.name))
		st := r.stat(coldplug)
		if st.n == 0 {
			p(`<text x="%d" y="%d" dominant-baseline="middle" fill="#888">skipped</text>`+"\n", labelW+4, mid)
			continue
		}
		fill := "#7aa6d6"
		if r.approach.id == "modautoload" {
			fill = "#e08a3c"
		}
		p(`<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", labelW, y+4, x(st.med)-labelW, rowH-16, fill)
		p(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="black"/>`+"\n", x(st.min), mid, x(st.max), mid)
		for _, v := range []float64{st.min, st.max} {
			p(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="black"/>`+"\n", x(v), mid-6, x(v), mid+6)
		}
		p(`<text x="%.1f" y="%d" dominant-baseline="middle">%.2f</text>`+"\n", x(st.max)+6, mid, st.med)
	}
	p("</svg>\n")
	return b.String()
}

// tickStep picks 1, 2 or 5 times a power of ten so that about five ticks
// cover 0..v.
func tickStep(v float64) float64 {
	raw := v / 5
	pow := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5} {
		if m*pow >= raw {
			return m * pow
		}
	}
	return 10 * pow
}
