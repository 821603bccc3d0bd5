// Command bench compares ways of coldplugging kernel modules on a real
// Debian kernel under qemu, with the device set of VM-TESTING.md:
// systemd-udevd with only its 80-drivers.rules, kmod's modprobe -a run to
// a fixpoint, busybox mdev -d, and modautoload's daemon. Every round of
// every approach boots a fresh guest; the guest's tracefs counts
// finit_module calls and module loads and times them, and /proc gives the
// agent's own CPU time and memory. Then the approaches that keep listening
// get a keyboard hotplugged several times, and the trace shows where each
// hotplug's time goes: the kernel's probing, the agent's reaction to the
// uevent, the kernel's load.
//
//	go run ./e2e/bench [-rounds N] [-out DIR] [-only udevd,kmod,mdev,modautoload,static-...]
//
// It prints a Markdown report and writes it to DIR/bench.md, with a bar
// chart in DIR/bench.svg and each guest's console in DIR/bench-logs. Then
// the static-list benchmark (static.go) loads 40 listed modules with
// kmod's modprobe, systemd-modules-load and modautoload load-static, into
// DIR/static.md; -only static-modautoload,... runs only it. Rounds are
// interleaved (every approach once, then again) so that drift of the host
// spreads over all approaches.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/modautoload/modautoload/e2e"
)

func main() {
	rounds := flag.Int("rounds", 5, "guests booted per approach")
	out := flag.String("out", ".", "directory for bench.md, bench.svg and bench-logs/")
	only := flag.String("only", "", "comma-separated parts to run (udevd, kmod, mdev, modautoload, helper; static-kmod, static-kmod-a, static-systemd, static-modautoload); default all")
	flag.Parse()
	if *rounds < 1 || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := bench(ctx, *rounds, *out, *only)
	stop()
	e2e.RemoveBinaries()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// bench runs the coldplug and hotplug benchmark, then the static-list
// one; -only with approaches of one of them runs that one.
func bench(ctx context.Context, rounds int, out, only string) error {
	var cold, static []string
	if only != "" {
		for _, id := range strings.Split(only, ",") {
			if strings.HasPrefix(id, "static-") {
				static = append(static, id)
			} else {
				cold = append(cold, id)
			}
		}
	}
	if only == "" || len(cold) > 0 {
		if err := benchColdplug(ctx, rounds, out, strings.Join(cold, ",")); err != nil {
			return err
		}
	}
	if only == "" || len(static) > 0 {
		return benchStatic(ctx, rounds, out, static)
	}
	return nil
}

func benchColdplug(ctx context.Context, rounds int, out, only string) error {
	start := time.Now()
	if err := e2e.Prepare(); err != nil {
		return err
	}
	k, err := e2e.EnsureKernel(ctx)
	if err != nil {
		return err
	}
	udev, err := ensureUdev(ctx)
	if err != nil {
		return err
	}
	bin, skip := buildModautoload()
	approaches := []approach{udevdApproach(udev), kmodLoop, mdev, modautoloadApproach(bin, skip)}
	runHelper := true
	if only != "" {
		ids := strings.Split(only, ",")
		runHelper = slices.Contains(ids, "helper")
		ids = slices.DeleteFunc(ids, func(id string) bool { return id == "helper" })
		approaches = slices.DeleteFunc(approaches, func(a approach) bool { return !slices.Contains(ids, a.id) })
		if len(approaches) != len(ids) {
			return fmt.Errorf("-only %s: the parts are udevd, kmod, mdev, modautoload, helper", only)
		}
	}
	results, waitedAll, err := runRounds(ctx, approaches, rounds, out, "", runRound, func(a approach, s *sample) {
		fmt.Fprintf(os.Stderr, "bench: %s: %d modules, last live at %.2f s, %d finit_module calls, agent user CPU %.2f s (guest ran %.0f s)\n",
			a.name, len(s.modules), s.coldplug, s.finit, s.agentUser, s.guest.Seconds())
		if len(s.hotplugs) > 0 {
			var reactions []float64
			for _, h := range s.hotplugs {
				reactions = append(reactions, h.reaction*1000)
			}
			fmt.Fprintf(os.Stderr, "bench: %s: hotplug reaction %s ms\n", a.name, summarize(reactions).format(1))
		}
	})
	if err != nil {
		return err
	}

	var helper *helperResult
	if runHelper && skip == "" {
		fmt.Fprintf(os.Stderr, "bench: the kernel's modprobe helper\n")
		waitedAll += awaitOtherGuests(ctx, 10*time.Minute)
		helper = runHelperBench(ctx, bin)
		if helper.err != "" {
			fmt.Fprintf(os.Stderr, "bench: the helper's part failed: %s\n", helper.err)
		}
	}

	env := describe(ctx, k.Version, udev.version, rounds, time.Since(start), waitedAll)
	md := markdown(env, results) + "\n" + helperSection(helper)
	fmt.Print(md)
	if err := os.WriteFile(filepath.Join(out, "bench.md"), []byte(md), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "bench.svg"), []byte(chart(results)), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: wrote %s and %s in %v\n", filepath.Join(out, "bench.md"),
		filepath.Join(out, "bench.svg"), time.Since(start).Round(time.Second))
	for _, res := range results {
		if len(res.errs) > 0 {
			return errors.New("some rounds failed; see the report's notes")
		}
	}
	if helper != nil && helper.err != "" {
		return errors.New("the helper's part failed; see the report")
	}
	return nil
}

// buildModautoload builds the binary and checks that it has the daemon
// and settle commands; skip says why the approach cannot run otherwise.
func buildModautoload() (bin, skip string) {
	err := e2e.Run(func(t e2e.T) { bin = e2e.BuildBinary(t, "./cmd/modautoload") })
	if err != nil {
		first, _, _ := strings.Cut(err.Error(), "\n")
		return "", "the build failed: " + first
	}
	out, err := exec.Command(bin, "help").Output()
	if err != nil {
		return "", fmt.Sprintf("modautoload help: %v", err)
	}
	var missing []string
	for _, cmd := range []string{"daemon", "settle"} {
		if !hasCommand(out, cmd) {
			missing = append(missing, cmd)
		}
	}
	if len(missing) > 0 {
		return "", "this build of modautoload has no " + strings.Join(missing, " or ") + " command yet"
	}
	return bin, ""
}

// hasCommand finds cmd in the usage's indented command list.
func hasCommand(usage []byte, cmd string) bool {
	sc := bufio.NewScanner(bytes.NewReader(usage))
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) > 0 && f[0] == cmd && strings.HasPrefix(line, " ") {
			return true
		}
	}
	return false
}

// env is the context a report states.
type env struct {
	host, hostKernel, qemu, kernel, udev, kmod, busybox, date string
	systemd                                                   string
	cores, rounds                                             int
	wall, waited                                              time.Duration // waited: for other people's guests
}

func describe(ctx context.Context, kernel, udev string, rounds int, wall, waited time.Duration) env {
	firstLine := func(name string, args ...string) string {
		out, err := exec.CommandContext(ctx, name, args...).Output()
		if err != nil {
			return name + ": unknown"
		}
		line, _, _ := strings.Cut(string(out), "\n")
		return strings.TrimSpace(line)
	}
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for l := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				model = strings.TrimSpace(strings.TrimLeft(v, " \t:"))
				break
			}
		}
	}
	memory := "unknown memory"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for l := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				if kib, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB")); err == nil {
					memory = fmt.Sprintf("%.1f GiB", float64(kib)/(1<<20))
				}
				break
			}
		}
	}
	hostKernel := "unknown"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		hostKernel = strings.TrimSpace(string(b))
	}
	return env{
		host:       fmt.Sprintf("%s, %d cores, %s", model, runtime.NumCPU(), memory),
		hostKernel: hostKernel,
		cores:      runtime.NumCPU(),
		qemu:       firstLine("qemu-system-x86_64", "--version"),
		kernel:     kernel,
		udev:       udev,
		kmod:       firstLine("kmod", "--version"),
		busybox:    strings.TrimSuffix(firstLine("/bin/busybox"), " multi-call binary."),
		systemd:    firstLine(systemdModulesLoad, "--version"),
		date:       time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		rounds:     rounds,
		wall:       wall,
		waited:     waited,
	}
}

// runRounds boots rounds guests per approach, the approaches interleaved
// within each round, each once the host is free of other guests; a failed
// round is noted in its result, not fatal. kind names the rounds in the
// progress lines ("static " or ""); done reports each sample.
func runRounds(ctx context.Context, approaches []approach, rounds int, out, kind string,
	run func(context.Context, approach, string, int) (*sample, error), done func(approach, *sample)) ([]*result, time.Duration, error) {
	logDir := filepath.Join(out, "bench-logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, 0, err
	}
	results := make([]*result, len(approaches))
	for i, a := range approaches {
		results[i] = &result{approach: a}
		if a.skip != "" {
			fmt.Fprintf(os.Stderr, "bench: skipping %s: %s\n", a.name, a.skip)
		}
	}
	var waitedAll time.Duration
	for r := 1; r <= rounds; r++ {
		for _, res := range results {
			a := res.approach
			if a.skip != "" {
				continue
			}
			if err := ctx.Err(); err != nil {
				return nil, 0, err
			}
			waited := awaitOtherGuests(ctx, 10*time.Minute)
			waitedAll += waited
			fmt.Fprintf(os.Stderr, "bench: %sround %d/%d: %s\n", kind, r, rounds, a.name)
			s, err := run(ctx, a, logDir, r)
			if err != nil {
				fmt.Fprintf(os.Stderr, "bench: %s round %d failed: %v\n", a.name, r, err)
				res.errs = append(res.errs, fmt.Sprintf("round %d: %v", r, err))
				continue
			}
			s.waited = waited
			res.samples = append(res.samples, s)
			done(a, s)
		}
	}
	return results, waitedAll, nil
}
