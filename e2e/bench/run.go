package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/modautoload/modautoload/e2e"
)

// sample is what one round of one approach measured.
type sample struct {
	coldplug  float64        // s from the agent's start to the last module going live
	returned  float64        // s from the agent's start to the last successful finit_module return
	done      float64        // s from the agent's start until the approach was done
	base      []string       // modules loaded before the agent started
	modules   []string       // modules loaded once coldplug was done
	finit     int            // finit_module calls during coldplug
	failed    map[string]int // the failed ones, by errno
	loads     int            // module_load events (a module whose init fails has one too)
	calls     []call         // the finit_module calls that loaded a module, timed
	requests  []string       // the kernel's own request_module calls
	rssKiB    int            // agent's peak resident set (KiB), a lower bound: the highest of its exact figures after coldplug and at the end and of its VmHWM; 0 when there is no lasting agent
	rssAfter  int            // agent's resident set (KiB) when coldplug was done; 0 when there is no lasting agent
	rssIdle   int            // the same at the end, 2 s after the last hotplug
	childKiB  []int          // the agent's children (udevd's workers) alive when coldplug was done
	agentUser float64        // s of user time of the agent and its children during coldplug (see measured)
	agentSys  float64        // s of system time of the same
	agentProc int            // processes alive or unreaped that agentUser counts; 0: the harness's shell loop
	userCPU   float64        // s of user time, all guest CPUs, during coldplug
	second    secondPass     // the second coldplug in the same guest (secondColdplug)
	hotplugs  []hotplug      // nil when the approach has no listener
	drops     int            // uevents dropped on listeners' sockets
	rounds    int            // rounds of the kmod loop
	guest     time.Duration  // whole guest run
	hostLoad  float64        // the host's 1-minute load average after the run: other work skews TCG timings
	hostOther float64        // cores' worth of CPU other processes on the host used during the round; <0 if unknown
	waited    time.Duration  // for other guests on the host to finish before this round
}

// secondPass is what the second coldplug in a guest measured: every
// module unloaded, a fresh agent over the same devices, its code already
// translated by QEMU.
type secondPass struct {
	user, sys float64  // s of the agent's CPU time, as agentUser and agentSys
	procs     int      // as agentProc
	done      float64  // s until the approach said it was done (/proc/uptime)
	left      []string // modules still loaded when it started
	modules   []string // modules loaded when it was done
}

// userHZ is the unit of /proc/stat and /proc/PID/stat, in the guest and
// on the host.
const userHZ = 100

// runRound boots a fresh guest for one round of a, hotplugs the keyboard
// if a keeps listening, and writes the guest's console to logDir.
func runRound(ctx context.Context, a approach, logDir string, round int) (*sample, error) {
	var res *e2e.Result
	before := readHostCPU()
	err := e2e.Run(func(t e2e.T) {
		vm := e2e.Start(ctx, t, e2e.Scenario{
			Script:   script(a),
			Files:    a.files,
			Devices:  devices,
			QEMUArgs: qemuArgs,
			Timeout:  4 * time.Minute,
			QMP:      a.hotplug,
		})
		if a.hotplug {
			driveHotplugs(ctx, t, vm)
		}
		res = vm.Wait()
	})
	hostOther := readHostCPU().othersSince(before)
	log := filepath.Join(logDir, fmt.Sprintf("%s-%d.log", a.id, round))
	if err != nil {
		// The rig's message holds the console's tail; keep it whole.
		if werr := os.WriteFile(log, []byte(err.Error()+"\n"), 0o644); werr != nil {
			return nil, fmt.Errorf("%v (and writing it down: %v)", err, werr)
		}
		first, _, _ := strings.Cut(err.Error(), "\n")
		return nil, fmt.Errorf("%s (console in %s)", first, log)
	}
	if err := os.WriteFile(log, []byte(res.Log), 0o644); err != nil {
		return nil, err
	}
	s, err := parseSample(res, a)
	if err != nil {
		return nil, fmt.Errorf("%v (console in %s)", err, log)
	}
	s.hostLoad, s.hostOther = loadAverage(), hostOther
	return s, nil
}

// guestWindow parses a round's trace and its window from the start
// marker to the end one; a trace that lost events is refused.
func guestWindow(res *e2e.Result, end string) (*timeline, window, error) {
	if v := res.Value("TRACE_OVERRUN"); v != "0" {
		return nil, window{}, fmt.Errorf("the guest's trace buffer lost events (overrun %q): the figures would be wrong", v)
	}
	tl, err := parseTrace(res.Lines("TRACE"))
	if err != nil {
		return nil, window{}, err
	}
	w, err := tl.between("start", end)
	return tl, w, err
}

// parseSample turns a guest's report into a sample.
func parseSample(res *e2e.Result, a approach) (*sample, error) {
	if rc := res.Value("SETTLE_RC"); rc != "" && rc != "0" {
		return nil, fmt.Errorf("settle exited %s", rc)
	}
	tl, w, err := guestWindow(res, "quiet")
	if err != nil {
		return nil, err
	}
	s := &sample{
		coldplug: w.lastLive,
		returned: w.lastRet,
		base:     strings.Fields(res.Value("BASE")),
		modules:  strings.Fields(res.Value("MODULES")),
		finit:    w.finit,
		failed:   w.failed,
		loads:    len(w.loads),
		calls:    w.calls,
		requests: w.requests,
		guest:    res.Duration,
	}
	s.done, _ = tl.span("start", "settled")
	var hwm int
	ints := map[string]*int{"RSS_END": &s.rssIdle, "HWM": &hwm, "RSS_COLDPLUG": &s.rssAfter, "DROPS": &s.drops, "ROUNDS": &s.rounds}
	for key, p := range ints {
		if v := res.Value(key); v != "" {
			if *p, err = strconv.Atoi(v); err != nil {
				return nil, fmt.Errorf("E2E:%s %q: %w", key, v, err)
			}
		}
	}
	s.rssKiB = max(s.rssAfter, s.rssIdle, hwm)
	ticks, err := strconv.Atoi(res.Value("USER_TICKS"))
	if err != nil {
		return nil, fmt.Errorf("E2E:USER_TICKS: %w", err)
	}
	s.userCPU = float64(ticks) / userHZ
	if s.agentUser, s.agentSys, s.agentProc, err = parseAgentCPU("AGENT_CPU", res.Value("AGENT_CPU")); err != nil {
		return nil, err
	}
	for _, v := range res.Lines("CHILD_RSS") {
		if kib, err := strconv.Atoi(v); err == nil { // a worker may exit while read
			s.childKiB = append(s.childKiB, kib)
		}
	}
	if len(s.modules) == 0 {
		return nil, errors.New("no module was loaded")
	}
	if a.hotplug {
		if s.hotplugs, err = parseHotplugs(res, tl); err != nil {
			return nil, err
		}
	}
	if s.second, err = parseSecond(res, a); err != nil {
		return nil, err
	}
	return s, nil
}

// parseSecond reads the second coldplug's report (secondColdplug). A
// second pass that cannot be read fails the round, as a first pass does:
// the round's figures come from one guest or none.
func parseSecond(res *e2e.Result, a approach) (secondPass, error) {
	var p secondPass
	if stale := res.Value("SECOND_STALE"); stale != "" {
		return p, fmt.Errorf("E2E:SECOND_STALE %q: the first agent was still running", stale)
	}
	if rc := res.Value("SECOND_SETTLE_RC"); rc != "" && rc != "0" {
		return p, fmt.Errorf("E2E:SECOND_SETTLE_RC %s: the second coldplug's settle failed", rc)
	}
	cpu := res.Value("SECOND_CPU")
	if cpu == "" {
		return p, errors.New("no E2E:SECOND_CPU: the second coldplug did not finish")
	}
	var err error
	if p.user, p.sys, p.procs, err = parseAgentCPU("SECOND_CPU", cpu); err != nil {
		return p, err
	}
	if a.hotplug && p.procs == 0 {
		return p, fmt.Errorf("E2E:SECOND_CPU %q: no process of the agent was read", cpu)
	}
	f := strings.Fields(res.Value("SECOND_DONE"))
	if len(f) != 2 {
		return p, fmt.Errorf("E2E:SECOND_DONE %q: want the uptimes before and after", res.Value("SECOND_DONE"))
	}
	t0, err0 := strconv.ParseFloat(f[0], 64)
	t1, err1 := strconv.ParseFloat(f[1], 64)
	if err0 != nil || err1 != nil || t1 < t0 {
		return p, fmt.Errorf("E2E:SECOND_DONE %q: want the uptimes before and after", res.Value("SECOND_DONE"))
	}
	p.done = t1 - t0
	p.left = strings.Fields(res.Value("SECOND_LEFT"))
	p.modules = strings.Fields(res.Value("SECOND_MODULES"))
	if len(p.modules) == 0 {
		return p, errors.New("E2E:SECOND_MODULES: the second coldplug loaded no module")
	}
	return p, nil
}

// parseAgentCPU reads "USER SYSTEM PROCESSES", the ticks of the agent's
// CPU time and how many processes they add up, from the guest's line key.
func parseAgentCPU(key, v string) (user, system float64, procs int, err error) {
	f := strings.Fields(v)
	if len(f) != 3 {
		return 0, 0, 0, fmt.Errorf("E2E:%s %q: want user ticks, system ticks, processes", key, v)
	}
	var n [3]int
	for i := range f {
		if n[i], err = strconv.Atoi(f[i]); err != nil || n[i] < 0 {
			return 0, 0, 0, fmt.Errorf("E2E:%s %q: field %d is not a count", key, v, i+1)
		}
	}
	return float64(n[0]) / userHZ, float64(n[1]) / userHZ, n[2], nil
}

// hostCPU is a reading of the host's CPU time, in seconds.
type hostCPU struct {
	at   time.Time
	busy float64 // all CPUs, not idle (/proc/stat)
	ours float64 // this process and its reaped children (the guests' qemu)
	ok   bool
}

func readHostCPU() hostCPU {
	r := hostCPU{at: time.Now()}
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return r
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	// cpu user nice system idle iowait irq softirq steal ...
	if len(f) < 9 || f[0] != "cpu" {
		return r
	}
	for i, v := range f[1:9] {
		ticks, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return r
		}
		if i != 3 && i != 4 { // idle, iowait
			r.busy += float64(ticks) / userHZ
		}
	}
	for _, who := range []int{syscall.RUSAGE_SELF, syscall.RUSAGE_CHILDREN} {
		var ru syscall.Rusage
		if err := syscall.Getrusage(who, &ru); err != nil {
			return r
		}
		r.ours += time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	}
	r.ok = true
	return r
}

// othersSince is how many cores' worth of CPU processes other than this
// one and its children used since before: the host load that competes
// with the guest. A round's qemu counts as ours once it is reaped, so call
// it after the guest has exited. -1 if unknown.
func (r hostCPU) othersSince(before hostCPU) float64 {
	wall := r.at.Sub(before.at).Seconds()
	if !r.ok || !before.ok || wall <= 0 {
		return -1
	}
	return max(0, (r.busy-before.busy)-(r.ours-before.ours)) / wall
}

// loadAverage is the host's 1-minute load average, or -1 if unknown.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	v, err := strconv.ParseFloat(firstField(string(b)), 64)
	if err != nil {
		return -1
	}
	return v
}

// awaitOtherGuests waits, up to limit, while another qemu runs on the
// host: two TCG guests on a small machine slow each other down, which
// would skew this round. It returns how long it waited.
func awaitOtherGuests(ctx context.Context, limit time.Duration) time.Duration {
	start := time.Now()
	announced := false
	for time.Since(start) < limit {
		pid := otherQEMU()
		if pid == 0 {
			break
		}
		if !announced {
			fmt.Fprintf(os.Stderr, "bench: waiting for another qemu (pid %d) to exit\n", pid)
			announced = true
		}
		select {
		case <-ctx.Done():
			return time.Since(start)
		case <-time.After(time.Second):
		}
	}
	return time.Since(start)
}

// otherQEMU returns the pid of a running qemu-system process, or 0. Ours
// have all exited when it is called.
func otherQEMU() int {
	comms, _ := filepath.Glob("/proc/[0-9]*/comm")
	for _, c := range comms {
		b, err := os.ReadFile(c)
		if err != nil || !strings.HasPrefix(string(b), "qemu-system") {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(c)))
		return pid
	}
	return 0
}
