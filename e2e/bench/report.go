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
	p("# Coldplug and hotplug benchmark\n\n")
	p("%s; host %s, Linux %s; guest Linux %s (Debian) under %s, TCG, 2 vCPUs, 2048 MiB; %d rounds per approach, each in a freshly booted guest; harness wall time %v",
		e.date, e.host, e.hostKernel, e.kernel, e.qemu, e.rounds, e.wall.Round(time.Second))
	if e.waited >= time.Second {
		p(", of which %v waiting for other qemu guests on the host to finish", e.waited.Round(time.Second))
	}
	p(".\n\n")
	p("%s\n\n", hostLoad(results, e.cores))
	p("Devices (VM-TESTING.md): %s.\n\n", strings.Join(devices, " "))
	ref := anchor(results)

	p("## Coldplug\n\n")
	var rows [][]string
	for _, r := range results {
		rows = append(rows, coldplugRow(r, ref))
	}
	p("%s", table([]string{"approach", "modules live", "finit_module calls", "failed calls", "coldplug s, median (min–max)",
		"vs udevd", "last load returned s", "done s", "agent RSS after coldplug", "agent RSS idle", "agent peak RSS",
		"agent user CPU s", "agent system CPU s", "user CPU vs udevd"}, rows))
	p("\n![coldplug seconds per approach](bench.svg)\n\n")
	p("How each figure is taken, in the guest:\n\n")
	p("- *coldplug s*: from a trace marker written just before the agent starts to the last module going live (tracefs, clock `mono`; live is a kprobe on the `async_synchronize_full()` that 6.1's `do_init_module()` calls right after marking the module live), whoever loaded it and whenever: after the approach said it was done, the harness waits until `/proc/modules` stays unchanged for 1 s (the HDA controller's work item asks the kernel for its codec's driver, which can go live after a fast agent's settle). The module sets and the `finit_module` calls are counted over the same window.\n")
	p("- *last load returned s*: to the last `finit_module` that returned 0. That call first waits for all async work in the system (e.g. another controller's SCSI scan), so it can return seconds after the module went live; a loader that waits for the return is held up by other drivers' probing.\n")
	p("- *done s*: from the same marker until the approach said it was done (`udevadm settle`, `modautoload settle`, the loop's last round). mdev has no such notion: the harness waits for its socket queue to be empty and `/proc/modules` to stay unchanged for 2 s.\n")
	p("- *finit_module calls* and *failed calls*: `sys_enter_finit_module` / `sys_exit_finit_module` events during coldplug, by every process (agent, workers, modprobe children, the kernel's request_module helper). Failures by errno are medians over the rounds: EEXIST and EBUSY are duplicate loads (another caller loaded the module, or its load was still in flight), ENODEV an init that found no hardware.\n")
	p("- *agent RSS after coldplug*: the resident set of the lasting agent process when coldplug was done (`Rss` of `/proc/PID/smaps_rollup`, a walk of its page tables: Linux 6.1's `VmRSS` and `VmHWM` lag behind a threaded process, each thread keeping up to 64 page faults' counts to itself, and said 3.4 MiB for the daemon where its page tables held 7.5); *agent RSS idle*: the same at the end of the guest's run, 2 s after the last hotplug; *agent peak RSS*: a lower bound, the highest of those two and the kernel's high-water mark `VmHWM` then (which lags as said). Sampling the exact figure every 100 ms would catch more of the peak, but slowed the daemon's coldplug from 2.57 to 3.02 s (2 rounds each; it measured peaks of 7.7–8.0 MiB). The agent is the udevd manager (its workers are forked and killed again; see notes), the mdev daemon (not the shell and modprobe it forks per event), the modautoload daemon.\n")
	p("- *agent user / system CPU s*: utime and stime (`/proc/PID/stat` fields 14 and 15) of the agent and all its descendants when coldplug was done, each with the times of the children it reaped (fields 16 and 17). The agent is stopped (SIGSTOP) while its process tree is read, so it reaps no child meanwhile: a worker that exited counts once, in its parent's reaped time or as a zombie. udevd: the manager and its workers (not the `udevadm trigger` and `settle` the harness runs, nor the `--daemon` parent before its fork); mdev: the daemon with the shells and modprobe it runs per event; modautoload: the daemon, all its threads; kmod: the harness's shell running the loop, with its find, xargs and modprobe (its own and its reaped children's times, before and after). System time is mostly the kernel's load work done on the agent's behalf, much the same for every approach: compare user time.\n")
	p("- The kernel's request_module helper is kmod's modprobe in every guest; loaders are kmod %s except modautoload's own; udev is Debian's %s; busybox is %s.\n\n",
		strings.TrimPrefix(e.kmod, "kmod version "), e.udev, e.busybox)

	p("## The agent's CPU time again, in a second coldplug\n\n")
	rows = nil
	for _, r := range results {
		rows = append(rows, secondRow(r, ref))
	}
	p("%s", table([]string{"approach", "agent user CPU s, first coldplug", "vs udevd",
		"agent user CPU s, second coldplug", "vs udevd", "agent system CPU s, second coldplug", "second coldplug done s"}, rows))
	p("\nAfter its hotplugs, each guest unloads every module (`rmmod` of each loaded module, in passes until none is left) and runs the approach again: a fresh agent over the same devices, tracing and every probe off, CPU time taken as in the first coldplug. Under TCG a program's first pass through its code costs extra user time: QEMU translates each block of guest code the first time it runs at that virtual address in that physical page, while the guest's clock runs on. Address randomization is off in every guest (`kernel.randomize_va_space=0`, from the start), so the second agent's code and libraries are where the first one's were and run translated already, as on a real CPU, which translates nothing: the difference between the passes is what translation cost each approach. System time is the kernel's loading again. The guest's clock source is the HPET (TCG's TSC is not trusted), so every clock read is a system call, for every approach.\n\n")

	p("## Hotplug\n\n")
	rows = nil
	for _, r := range results {
		if r.approach.hotplug {
			rows = append(rows, hotplugRow(r, ref))
		}
	}
	p("%s", table([]string{"approach", "hotplugs", "total ms: PCI uevent → driver live", "vs udevd",
		"kernel ms: PCI uevent → device uevent", "agent reaction ms: device uevent → finit_module", "vs udevd",
		"kernel ms: finit_module → driver live"}, rows))
	p("\nMedians (min–max) over every hotplug of every round. After coldplug, the host adds a `%s` with QMP `device_add`, %d times per guest; before each, the guest unloads `%s` (`rmmod`) and the previous keyboard is deleted (`device_del`), so each hotplug is a device whose driver is not loaded, and the driver's init binds only it. kmod's loop has no listener and is not in this table. Times come from the guest's trace:\n\n",
		hotplugDevice, hotplugs, hotplugDriver)
	p("- a uevent is emitted when the kernel broadcasts it to listeners (a kprobe on `netlink_broadcast()`, after one on `dev_uevent()` in the same task gives its ACTION and DEVPATH; 6.1's `kobject_uevent_env()` cannot be probed, `lib/` is built without ftrace);\n")
	p("- *PCI uevent → device uevent*: from the new PCI function's `add` uevent to that of the virtio device `virtio_pci` creates on it while probing, the device `%s` is for: the kernel's own work, although an agent busy on the other CPU can slow it;\n", hotplugDriver)
	p("- *agent reaction*: from the virtio device's `add` uevent to the entry of the first `finit_module` call after it that loads `%s` (matched by the `module_load` event the call causes): receiving the event, matching rules, resolving the alias, opening the file, and for udevd a worker, for mdev a shell and modprobe;\n", hotplugDriver)
	p("- *finit_module → driver live*: the kernel's load work, from the call's entry to the module going live (copy, signature check, relocation, init probing the device);\n")
	p("- *total*: the sum, from the PCI function's uevent to the driver live.\n\n")

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

// table formats a Markdown table whose first column is left-aligned.
func table(columns []string, rows [][]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| %s |\n|---%s|\n", strings.Join(columns, " | "), strings.Repeat("|--:", len(columns)-1))
	for _, row := range rows {
		row = append(row, make([]string, max(0, len(columns)-len(row)))...)
		fmt.Fprintf(&b, "| %s |\n", strings.Join(row, " | "))
	}
	return b.String()
}

// skipped is the row of an approach with no sample.
func skipped(r *result) []string {
	why := r.approach.skip
	if why == "" {
		why = "every round failed (see notes)"
	}
	return []string{r.approach.name, "skipped: " + why}
}

// label is the approach's name, with the rounds that worked if some failed.
func label(r *result) string {
	if len(r.errs) > 0 {
		return fmt.Sprintf("%s (%d of %d rounds)", r.approach.name, len(r.samples), len(r.samples)+len(r.errs))
	}
	return r.approach.name
}

// ratio is the median of st over that of ref, e.g. "0.50×".
func ratio(st, ref stat) string {
	if st.n == 0 || ref.n == 0 || ref.med == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", st.med/ref.med)
}

func coldplugRow(r, ref *result) []string {
	if len(r.samples) == 0 {
		return skipped(r)
	}
	a := r.approach
	coldplug := func(s *sample) float64 { return s.coldplug }
	user := func(s *sample) float64 { return s.agentUser }
	var refColdplug, refUser stat
	if ref != nil {
		refColdplug, refUser = ref.stat(coldplug), ref.stat(user)
	}
	done := "n/a (no settle)"
	if a.settles {
		done = r.stat(func(s *sample) float64 { return s.done }).format(2)
	}
	rssAfter, rssIdle, rssPeak := "n/a (a process per call)", "n/a (a process per call)", "n/a (a process per call)"
	if a.id != "kmod" {
		rssAfter = r.stat(func(s *sample) float64 { return float64(s.rssAfter) / 1024 }).format(1) + " MiB"
		rssIdle = r.stat(func(s *sample) float64 { return float64(s.rssIdle) / 1024 }).format(1) + " MiB"
		rssPeak = r.stat(func(s *sample) float64 { return float64(s.rssKiB) / 1024 }).format(1) + " MiB"
	}
	return []string{label(r),
		r.stat(func(s *sample) float64 { return float64(len(s.modules)) }).format(0),
		r.stat(func(s *sample) float64 { return float64(s.finit) }).format(0),
		failedCalls(r),
		r.stat(coldplug).format(2), ratio(r.stat(coldplug), refColdplug),
		r.stat(func(s *sample) float64 { return s.returned }).format(2),
		done, rssAfter, rssIdle, rssPeak,
		r.stat(user).format(2),
		r.stat(func(s *sample) float64 { return s.agentSys }).format(2),
		ratio(r.stat(user), refUser),
	}
}

// secondRow compares the agent's user time in the first and the second
// coldplug of each guest (secondColdplug).
func secondRow(r, ref *result) []string {
	if len(r.samples) == 0 {
		return skipped(r)
	}
	first := func(s *sample) float64 { return s.agentUser }
	second := func(s *sample) float64 { return s.second.user }
	var refFirst, refSecond stat
	if ref != nil {
		refFirst, refSecond = ref.stat(first), ref.stat(second)
	}
	done := "n/a (no settle)"
	if r.approach.settles {
		done = r.stat(func(s *sample) float64 { return s.second.done }).format(2)
	}
	return []string{label(r),
		r.stat(first).format(2), ratio(r.stat(first), refFirst),
		r.stat(second).format(2), ratio(r.stat(second), refSecond),
		r.stat(func(s *sample) float64 { return s.second.sys }).format(2),
		done,
	}
}

// hotplugStat summarises f, in ms, over every hotplug of every round.
func (r *result) hotplugStat(f func(hotplug) float64) stat {
	var xs []float64
	for _, s := range r.samples {
		for _, h := range s.hotplugs {
			xs = append(xs, f(h)*1000)
		}
	}
	return summarize(xs)
}

func hotplugRow(r, ref *result) []string {
	if len(r.samples) == 0 {
		return skipped(r)
	}
	total := func(h hotplug) float64 { return h.total() }
	reaction := func(h hotplug) float64 { return h.reaction }
	var refTotal, refReaction stat
	if ref != nil {
		refTotal, refReaction = ref.hotplugStat(total), ref.hotplugStat(reaction)
	}
	return []string{label(r),
		fmt.Sprint(r.hotplugStat(total).n),
		r.hotplugStat(total).format(0), ratio(r.hotplugStat(total), refTotal),
		r.hotplugStat(func(h hotplug) float64 { return h.probe }).format(0),
		r.hotplugStat(reaction).format(1), ratio(r.hotplugStat(reaction), refReaction),
		r.hotplugStat(func(h hotplug) float64 { return h.load }).format(0),
	}
}

// hostLoad says how busy the host was with other work while guests ran:
// TCG timings stretch when the guest's threads do not get a core.
func hostLoad(results []*result, cores int) string {
	var others, loads []float64
	for _, r := range results {
		for _, s := range r.samples {
			if s.hostOther >= 0 {
				others = append(others, s.hostOther)
			}
			if s.hostLoad >= 0 {
				loads = append(loads, s.hostLoad)
			}
		}
	}
	if len(others) == 0 {
		return "Host load: not measured."
	}
	o, l := summarize(others), summarize(loads)
	line := fmt.Sprintf("Host load: while each guest ran, processes other than this harness and its qemu used %.2f cores of %d (median over rounds; %.2f–%.2f; `/proc/stat` less the harness's own `getrusage`); the 1-minute load average after a round was %.1f (%.1f–%.1f), of which a guest accounts for about 2. Per round in the notes.",
		o.med, cores, o.min, o.max, l.med, l.min, l.max)
	contended := 0
	for _, v := range others {
		if v > contendedCores {
			contended++
		}
	}
	if contended > 0 {
		line += fmt.Sprintf(" **%d of %d rounds ran while other processes used more than %g of a core**: their guest had less than its 2 vCPUs' worth of the host, and their times are longer.",
			contended, len(others), contendedCores)
	}
	return line
}

// contendedCores is how much CPU other processes may use while a guest
// runs before the round is flagged: a TCG guest of 2 vCPUs on a 2-core
// host then shares its cores.
const contendedCores = 0.5

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
		loads = append(loads, fmt.Sprintf("others used %.2f cores, load average %.1f after", s.hostOther, s.hostLoad))
		waited += s.waited
	}
	n := len(r.samples)
	out = append(out, "host, per round: "+strings.Join(loads, ", "))
	out = append(out, fmt.Sprintf("user CPU of the whole guest during coldplug (`/proc/stat`, every process, the harness's too): %s s", r.stat(func(s *sample) float64 { return s.userCPU }).format(2)))
	if r.approach.hotplug {
		out = append(out, "hotplugs in order, agent reaction / total ms, per round: "+hotplugSeries(r.samples))
	}
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
	var left, secondDiff []string
	for i, s := range r.samples {
		if len(s.second.left) > 0 {
			left = append(left, fmt.Sprintf("round %d: %s", i+1, strings.Join(s.second.left, " ")))
		}
		var d []string
		if extra := minus(s.second.modules, s.modules); len(extra) > 0 {
			d = append(d, "also "+strings.Join(extra, " "))
		}
		if missing := minus(s.modules, s.second.modules); len(missing) > 0 {
			d = append(d, "not "+strings.Join(missing, " "))
		}
		if len(d) > 0 {
			secondDiff = append(secondDiff, fmt.Sprintf("round %d: %s", i+1, strings.Join(d, ", ")))
		}
	}
	if len(left) > 0 {
		out = append(out, "modules that would not unload before the second coldplug: "+strings.Join(left, "; "))
	}
	if len(secondDiff) > 0 {
		out = append(out, "the second coldplug's module set differed from the first's: "+strings.Join(secondDiff, "; "))
	}
	if procs := r.stat(func(s *sample) float64 { return float64(s.agentProc) }); procs.max > 1 {
		out = append(out, fmt.Sprintf("its CPU time sums %s processes (alive or not yet reaped when coldplug was done) and the children each had reaped", procs.format(0)))
	}
	return out
}

// hotplugSeries lists each round's hotplugs in order, so that a first
// hotplug unlike the others (cold caches) shows.
func hotplugSeries(samples []*sample) string {
	var rounds []string
	for _, s := range samples {
		var hs []string
		for _, h := range s.hotplugs {
			hs = append(hs, fmt.Sprintf("%.1f/%.0f", h.reaction*1000, h.total()*1000))
		}
		rounds = append(rounds, strings.Join(hs, " "))
	}
	return strings.Join(rounds, "; ")
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

// chart draws two panels: coldplug seconds per approach as horizontal
// bars (median) with min–max whiskers, and for the approaches that listen,
// where a hotplug's time goes, as stacked medians.
func chart(results []*result) string {
	const (
		width, labelW, rowH, top = 760, 200, 36, 44
		gap                      = 56 // between the panels: axis labels, the next title
	)
	var listening []*result
	for _, r := range results {
		if r.approach.hotplug {
			listening = append(listening, r)
		}
	}
	top2 := top + rowH*len(results) + gap + 30 // the hotplug panel's first row, below its title and legend
	height := top + rowH*len(results) + 40
	if len(listening) > 0 {
		height = top2 + rowH*len(listening) + 40
	}

	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	// axis draws ticks and the unit under rows from y0 to y1, leaving
	// right free for the bars' labels, and returns the x of a value.
	axis := func(y0, y1 int, maxV float64, unit string, right int) func(float64) float64 {
		plotW := float64(width - labelW - right)
		step := tickStep(max(maxV, 1e-9))
		scaleMax := math.Ceil(maxV/step) * step
		x := func(v float64) float64 { return labelW + v/scaleMax*plotW }
		for v := 0.0; v <= scaleMax+step/2; v += step {
			p(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", x(v), y0-6, x(v), y1)
			p(`<text x="%.1f" y="%d" text-anchor="middle" fill="#555">%g</text>`+"\n", x(v), y1+16, v)
		}
		p(`<text x="%.1f" y="%d" text-anchor="middle" fill="#555">%s</text>`+"\n", x(scaleMax/2), y1+32, unit)
		return x
	}
	rowLabel := func(r *result, mid int) {
		p(`<text x="%d" y="%d" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", labelW-8, mid, html.EscapeString(r.approach.name))
	}
	skippedRow := func(mid int) {
		p(`<text x="%d" y="%d" dominant-baseline="middle" fill="#888">skipped</text>`+"\n", labelW+4, mid)
	}
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="13">`+"\n", width, height)
	p(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")

	p(`<text x="%d" y="22" font-size="15" font-weight="bold">Coldplug: seconds to the last module live (median, min–max)</text>`+"\n", 10)
	coldplug := func(s *sample) float64 { return s.coldplug }
	maxCold := 1.0
	for _, r := range results {
		maxCold = max(maxCold, r.stat(coldplug).max)
	}
	x := axis(top, top+rowH*len(results), maxCold, "seconds", 70)
	for i, r := range results {
		y := top + i*rowH
		mid := y + rowH/2 - 4
		rowLabel(r, mid)
		st := r.stat(coldplug)
		if st.n == 0 {
			skippedRow(mid)
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
	if len(listening) == 0 {
		p("</svg>\n")
		return b.String()
	}

	titleY := top + rowH*len(results) + gap
	p(`<text x="%d" y="%d" font-size="15" font-weight="bold">Hotplug: ms from the PCI function's uevent to the driver live (medians)</text>`+"\n", 10, titleY)
	parts := []struct {
		name, fill string
		f          func(hotplug) float64
	}{
		{"kernel: PCI uevent → device uevent", "#c8c8c8", func(h hotplug) float64 { return h.probe }},
		{"agent: uevent → finit_module", "#e08a3c", func(h hotplug) float64 { return h.reaction }},
		{"kernel: finit_module → live", "#7aa6d6", func(h hotplug) float64 { return h.load }},
	}
	legendX := 10
	for _, part := range parts {
		p(`<rect x="%d" y="%d" width="12" height="12" fill="%s"/>`+"\n", legendX, titleY+10, part.fill)
		p(`<text x="%d" y="%d" font-size="12">%s</text>`+"\n", legendX+16, titleY+20, html.EscapeString(part.name))
		legendX += 250
	}
	maxHot := 1.0
	for _, r := range listening {
		sum := 0.0
		for _, part := range parts {
			sum += r.hotplugStat(part.f).med
		}
		maxHot = max(maxHot, sum)
	}
	x = axis(top2, top2+rowH*len(listening), maxHot, "milliseconds", 130)
	for i, r := range listening {
		y := top2 + i*rowH
		mid := y + rowH/2 - 4
		rowLabel(r, mid)
		if r.hotplugStat(parts[0].f).n == 0 {
			skippedRow(mid)
			continue
		}
		at := 0.0
		for _, part := range parts {
			med := r.hotplugStat(part.f).med
			p(`<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", x(at), y+4, x(at+med)-x(at), rowH-16, part.fill)
			at += med
		}
		p(`<text x="%.1f" y="%d" dominant-baseline="middle">%.1f ms reaction</text>`+"\n", x(at)+6, mid, r.hotplugStat(parts[1].f).med)
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
