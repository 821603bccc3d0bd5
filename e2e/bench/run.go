package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
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
	rssKiB    int            // agent's VmHWM; 0 when there is no lasting agent
	childKiB  []int          // the agent's children (udevd's workers) alive when coldplug was done
	userCPU   float64        // s of user time, all guest CPUs, during coldplug
	hotplugMS float64        // device appearance to virtio_input live; <0 when not measured
	drops     int            // uevents dropped on listeners' sockets
	rounds    int            // rounds of the kmod loop
	guest     time.Duration  // whole guest run
	hostLoad  float64        // the host's 1-minute load average after the run: other work skews TCG timings
	waited    time.Duration  // for other guests on the host to finish before this round
}

// userHZ is the unit of /proc/stat.
const userHZ = 100

// runRound boots a fresh guest for one round of a, hotplugs the keyboard
// if a keeps listening, and writes the guest's console to logDir.
func runRound(ctx context.Context, a approach, logDir string, round int) (*sample, error) {
	var res *e2e.Result
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
			vm.Await("HOTPLUG_READY")
			_, err := vm.QMP().Execute(ctx, "device_add", map[string]any{
				"driver": "virtio-keyboard-pci", "id": "kbd0", "bus": "pci.0", "addr": fmt.Sprintf("0x%x", hotplugSlot),
			})
			if err != nil {
				t.Fatalf("%v", err)
			}
		}
		res = vm.Wait()
	})
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
	s.hostLoad = loadAverage()
	return s, nil
}

// parseSample turns a guest's report into a sample.
func parseSample(res *e2e.Result, a approach) (*sample, error) {
	if rc := res.Value("SETTLE_RC"); rc != "" && rc != "0" {
		return nil, fmt.Errorf("settle exited %s", rc)
	}
	tl, err := parseTrace(res.Lines("TRACE"))
	if err != nil {
		return nil, err
	}
	w, err := tl.between("start", "settled")
	if err != nil {
		return nil, err
	}
	s := &sample{
		coldplug:  w.lastLive,
		returned:  w.lastRet,
		base:      strings.Fields(res.Value("BASE")),
		modules:   strings.Fields(res.Value("MODULES")),
		finit:     w.finit,
		failed:    w.failed,
		loads:     len(w.loads),
		calls:     w.calls,
		requests:  w.requests,
		hotplugMS: -1,
		guest:     res.Duration,
	}
	s.done, _ = tl.span("start", "settled")
	ints := map[string]*int{"RSS": &s.rssKiB, "DROPS": &s.drops, "ROUNDS": &s.rounds}
	for key, p := range ints {
		if v := res.Value(key); v != "" {
			if *p, err = strconv.Atoi(v); err != nil {
				return nil, fmt.Errorf("E2E:%s %q: %w", key, v, err)
			}
		}
	}
	ticks, err := strconv.Atoi(res.Value("USER_TICKS"))
	if err != nil {
		return nil, fmt.Errorf("E2E:USER_TICKS: %w", err)
	}
	s.userCPU = float64(ticks) / userHZ
	for _, v := range res.Lines("CHILD_RSS") {
		if kib, err := strconv.Atoi(v); err == nil { // a worker may exit while read
			s.childKiB = append(s.childKiB, kib)
		}
	}
	if len(s.modules) == 0 {
		return nil, errors.New("no module was loaded")
	}
	if a.hotplug {
		hp, err := tl.between("settled", "hp-live")
		if err != nil {
			return nil, err
		}
		if !slices.Contains(hp.loads, "virtio_input") {
			return nil, errors.New("hotplug: virtio_input was not loaded for the hotplugged keyboard")
		}
		d, _ := tl.span("hp-device", "hp-live")
		s.hotplugMS = d * 1000
	}
	return s, nil
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
