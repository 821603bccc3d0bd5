package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/modautoload/modautoload/e2e"
)

// The static-list benchmark: 40 modules no device asks for, of the kinds
// machines list in modules-load.d (filesystems, netfilter, crypto,
// block), from Debian's 6.1 tree, loaded by each tool from a freshly
// booted guest: time from the tool's start to the last module live.

// staticModules is the list. Each loads in the guest without hardware;
// together they pull in 26 dependencies (nf_conntrack, libcrc32c,
// x_tables, bridge, dm-mod, md-mod, ...), several shared.
var staticModules = []string{
	// filesystems
	"ext4", "xfs", "btrfs", "vfat", "exfat", "isofs", "udf", "squashfs", "overlay", "fuse",
	// netfilter
	"nf_tables", "nft_ct", "nft_chain_nat", "nft_compat", "nf_conntrack_ftp", "iptable_filter", "iptable_nat",
	"xt_conntrack", "xt_MASQUERADE", "br_netfilter",
	// crypto
	"cryptd", "xts", "ccm", "gcm", "chacha20poly1305", "sha3_generic", "blake2b_generic", "twofish_generic",
	"serpent_generic", "algif_skcipher",
	// block
	"loop", "nbd", "zram", "dm_crypt", "dm_snapshot", "dm_mirror", "raid0", "raid1", "brd", "bcache",
}

// systemdModulesLoad is Debian's program, which its unit runs.
const systemdModulesLoad = "/lib/systemd/systemd-modules-load"

// staticApproaches are the tools compared. Each run starts at time zero
// and returns when the tool has exited.
func staticApproaches(modautoload, skip string) []approach {
	list := strings.Join(staticModules, " ")
	sd := approach{
		id:   "static-systemd",
		name: "systemd-modules-load",
		// As the unit runs it: no arguments, the lists from
		// modules-load.d; logs to the console.
		run: `SYSTEMD_LOG_TARGET=console ` + systemdModulesLoad + ` 2>/tmp/agent.log; RC=$?`,
	}
	if files, err := e2e.HostProgram(systemdModulesLoad); err != nil {
		sd.skip = err.Error()
	} else {
		sd.files = files
	}
	ours := approach{
		id:   "static-modautoload",
		name: "modautoload load-static",
		run:  `modautoload load-static 2>/tmp/agent.log; RC=$?`,
		skip: skip,
	}
	if modautoload != "" {
		ours.files = []e2e.File{{Guest: "/bin/modautoload", Host: modautoload, Mode: 0o755}}
	}
	return []approach{
		{
			id:   "static-kmod",
			name: "kmod modprobe, one by one",
			// What a modules service does with /etc/modules.
			run: `RC=0; for m in ` + list + `; do ` + modprobe + ` $m || RC=1; done`,
		},
		{
			id:   "static-kmod-a",
			name: "kmod modprobe -a",
			run:  modprobe + ` -a ` + list + `; RC=$?`,
		},
		sd,
		ours,
	}
}

// staticScript is the guest's scenario for one round: the list written
// as modules-load.d, the tool timed between two trace markers, then what
// is live.
func staticScript(a approach) string {
	return prologue + `
mkdir -p /etc/modules-load.d
printf '%s\n' ` + strings.Join(staticModules, " ") + ` >/etc/modules-load.d/bench.conf
mark start
` + a.run + `
mark settled
echo "E2E:RC $RC"
for m in ` + strings.Join(staticModules, " ") + `; do live $m || echo "E2E:NOT_LIVE $m"; done
echo "E2E:MODULES $(modules)"
echo "E2E:TRACE_OVERRUN $(cat $T/per_cpu/cpu*/stats | awk '/^overrun:/{n+=$2} END{print n+0}')"
tail -n 20 /tmp/agent.log 2>/dev/null | sed 's/^/E2E:AGENT_LOG /'
grep -v '^#' $T/trace | sed 's/^/E2E:TRACE /'
`
}

// parseStaticSample reads a static round: every listed module must be
// live, and the tool must have exited 0.
func parseStaticSample(res *e2e.Result) (*sample, error) {
	if nl := res.Lines("NOT_LIVE"); len(nl) > 0 {
		return nil, fmt.Errorf("not live after the tool exited: %s (its log: %s)", strings.Join(nl, " "), strings.Join(res.Lines("AGENT_LOG"), " | "))
	}
	if rc := res.Value("RC"); rc != "0" {
		return nil, fmt.Errorf("the tool exited %q (its log: %s)", rc, strings.Join(res.Lines("AGENT_LOG"), " | "))
	}
	tl, w, err := guestWindow(res, "settled")
	if err != nil {
		return nil, err
	}
	s := &sample{
		coldplug: w.lastLive, returned: w.lastRet, modules: strings.Fields(res.Value("MODULES")),
		finit: w.finit, failed: w.failed, loads: len(w.loads), calls: w.calls, requests: w.requests, guest: res.Duration,
	}
	s.done, _ = tl.span("start", "settled")
	if len(s.modules) < len(staticModules) {
		return nil, errors.New("fewer modules loaded than listed")
	}
	return s, nil
}

// benchStatic runs the static-list benchmark and writes DIR/static.md.
// only, if not empty, names the approaches to run.
func benchStatic(ctx context.Context, rounds int, out string, only []string) error {
	start := time.Now()
	k, err := e2e.EnsureKernel(ctx)
	if err != nil {
		return err
	}
	approaches := staticApproaches(buildModautoload())
	if len(only) > 0 {
		approaches = slices.DeleteFunc(approaches, func(a approach) bool { return !slices.Contains(only, a.id) })
		if len(approaches) != len(only) {
			return fmt.Errorf("-only %s: the static approaches are static-kmod, static-kmod-a, static-systemd, static-modautoload", strings.Join(only, ","))
		}
	}
	results, waitedAll, err := runRounds(ctx, approaches, rounds, out, "static ", runStaticRound, func(a approach, s *sample) {
		fmt.Fprintf(os.Stderr, "bench: %s: all live at %.2f s, exited at %.2f s, %d finit_module calls\n",
			a.name, s.coldplug, s.done, s.finit)
	})
	if err != nil {
		return err
	}
	env := describe(ctx, k.Version, "", rounds, time.Since(start), waitedAll)
	md := staticMarkdown(env, results)
	fmt.Print(md)
	if err := os.WriteFile(filepath.Join(out, "static.md"), []byte(md), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: wrote %s in %v\n", filepath.Join(out, "static.md"), time.Since(start).Round(time.Second))
	for _, res := range results {
		if len(res.errs) > 0 {
			return errors.New("some static rounds failed; see the report's notes")
		}
	}
	return nil
}

// runStaticRound boots a fresh guest for one round of a.
func runStaticRound(ctx context.Context, a approach, logDir string, round int) (*sample, error) {
	var res *e2e.Result
	before := readHostCPU()
	err := e2e.Run(func(t e2e.T) {
		res = e2e.Boot(ctx, t, e2e.Scenario{Script: staticScript(a), Files: a.files, Timeout: 4 * time.Minute})
	})
	hostOther := readHostCPU().othersSince(before)
	log := filepath.Join(logDir, fmt.Sprintf("%s-%d.log", a.id, round))
	if err != nil {
		if werr := os.WriteFile(log, []byte(err.Error()+"\n"), 0o644); werr != nil {
			return nil, fmt.Errorf("%v (and writing it down: %v)", err, werr)
		}
		first, _, _ := strings.Cut(err.Error(), "\n")
		return nil, fmt.Errorf("%s (console in %s)", first, log)
	}
	if err := os.WriteFile(log, []byte(res.Log), 0o644); err != nil {
		return nil, err
	}
	s, err := parseStaticSample(res)
	if err != nil {
		return nil, fmt.Errorf("%v (console in %s)", err, log)
	}
	s.hostLoad, s.hostOther = loadAverage(), hostOther
	return s, nil
}

// staticAnchor is the result the others are compared with:
// systemd-modules-load's.
func staticAnchor(results []*result) *result {
	for _, r := range results {
		if r.approach.id == "static-systemd" && len(r.samples) > 0 {
			return r
		}
	}
	return nil
}

func staticMarkdown(e env, results []*result) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("# Static module lists benchmark\n\n")
	p("%s; host %s, Linux %s; guest Linux %s (Debian) under %s, TCG, 2 vCPUs, 2048 MiB; %d rounds per approach, each in a freshly booted guest; harness wall time %v",
		e.date, e.host, e.hostKernel, e.kernel, e.qemu, e.rounds, e.wall.Round(time.Second))
	if e.waited >= time.Second {
		p(", of which %v waiting for other qemu guests on the host to finish", e.waited.Round(time.Second))
	}
	p(".\n\n%s\n\n", hostLoad(results, e.cores))
	p("The list (%d modules, as `/etc/modules-load.d/bench.conf`): %s.\n\n", len(staticModules), strings.Join(staticModules, " "))
	ref := staticAnchor(results)
	all := func(s *sample) float64 { return s.coldplug }
	var refAll stat
	if ref != nil {
		refAll = ref.stat(all)
	}
	var rows [][]string
	for _, r := range results {
		if len(r.samples) == 0 {
			rows = append(rows, skipped(r))
			continue
		}
		rows = append(rows, []string{label(r),
			r.stat(func(s *sample) float64 { return float64(len(s.modules)) }).format(0),
			r.stat(func(s *sample) float64 { return float64(s.finit) }).format(0),
			failedCalls(r),
			r.stat(all).format(2), ratio(r.stat(all), refAll),
			r.stat(func(s *sample) float64 { return s.done }).format(2),
		})
	}
	p("%s", table([]string{"approach", "modules live", "finit_module calls", "failed calls", "all live s, median (min–max)",
		"vs systemd-modules-load", "tool exited s"}, rows))
	p("\nHow each figure is taken, in the guest:\n\n")
	p("- *all live s*: from a trace marker written just before the tool starts to the last module going live (the same kprobe as the coldplug benchmark's).\n")
	p("- *tool exited s*: from the same marker until the tool exited; kmod's `modprobe` and systemd-modules-load return when the last `finit_module` returns, which on 6.1 first waits for all asynchronous work in the system.\n")
	p("- *finit_module calls*: by every process, the kernel's request_module helper (kmod's modprobe in every guest) included: libcrc32c's soft dependency crc32c is crc32c_intel first, whose init finds no SSE4.2 under TCG (ENODEV).\n")
	p("- systemd-modules-load is Debian's (%s), run as its unit runs it, with no arguments, from the harness's shell so that its clock starts at its exec; it loads one module after another (parallel loading came in systemd 258). kmod is %s.\n",
		e.systemd, strings.TrimPrefix(e.kmod, "kmod version "))
	p("- A round counts only if the tool exited 0 and every listed module was live right after.\n\n")
	p("## Notes\n\n")
	for _, r := range results {
		for _, err := range r.errs {
			p("- %s: %s\n", r.approach.name, err)
		}
		var per []string
		for _, s := range r.samples {
			per = append(per, fmt.Sprintf("others used %.2f cores, load average %.1f after", s.hostOther, s.hostLoad))
		}
		if len(per) > 0 {
			p("- %s: host, per round: %s\n", r.approach.name, strings.Join(per, ", "))
		}
	}
	return b.String()
}
