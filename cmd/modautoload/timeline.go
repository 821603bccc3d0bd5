package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/modautoload/modautoload/daemon"
	"github.com/modautoload/modautoload/loader"
)

// askTimeline asks the daemon for its load timeline.
func askTimeline(ctx context.Context, control string) (*daemon.Timeline, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := daemon.Ask(ctx, control, daemon.Request{Op: "timeline"}, daemon.Waits{})
	switch {
	case err != nil:
		return nil, err
	case !resp.OK:
		return nil, errors.New(resp.Error)
	case resp.Timeline == nil:
		return nil, errors.New("the daemon's answer holds no timeline")
	}
	return resp.Timeline, nil
}

// statusTimeline is status --timeline: the timeline as text or JSON, and
// with --svg its chart written to svgPath.
func statusTimeline(ctx context.Context, env *cliEnv, control string, jsonOut bool, svgPath string) int {
	tl, err := askTimeline(ctx, control)
	if err != nil {
		fmt.Fprintf(env.stderr, "modautoload status: %v\n", err)
		return 1
	}
	if svgPath != "" {
		if err := writeSVGFile(svgPath, tl); err != nil {
			fmt.Fprintf(env.stderr, "modautoload status: %v\n", err)
			return 1
		}
	}
	if jsonOut {
		b, _ := json.Marshal(tl)
		fmt.Fprintf(env.stdout, "%s\n", b)
		return 0
	}
	if err := daemon.WriteTimeline(env.stdout, tl); err != nil {
		fmt.Fprintf(env.stderr, "modautoload status: %v\n", err)
		return 1
	}
	return 0
}

// writeSVGFile writes the chart beside path and renames it there, so a
// viewer never reads half a chart.
func writeSVGFile(path string, tl *daemon.Timeline) error {
	var b bytes.Buffer
	if err := daemon.WriteTimelineSVG(&b, tl); err != nil {
		return err
	}
	return daemon.WriteFileAtomic(path, b.Bytes())
}

const whyHelp = `why [--json] [--control PATH] MODULE

Says why the daemon loaded MODULE, from its load timeline (status
--timeline): who asked (a uevent with its action, device, seqnum and
MODALIAS; a sysfs scan at coldplug or resync; the kernel's
request_module through the modprobe helper; a static list's file and
line; a command line), which modules needed it (the chain up to the one
asked for, and those of other requests that waited for it), the load
whose device its own device appeared below, the dependencies it waited
for and whose loads they were, its times (requested, handed to the
kernel, live or failed, finit_module returned; seconds since boot), and
whether it is on the coldplug's critical path. Each recorded load of the
module is shown, oldest first. Exit status 1 without a daemon or when
no load of MODULE is recorded (loaded before the daemon started, built
in, or older than the timeline's last loads).`

func runWhy(ctx context.Context, env *cliEnv, args []string) int {
	var (
		s       optSet
		jsonOut bool
		control = daemon.DefaultControl
	)
	s.boolVar(&jsonOut, 0, "json", "print the answer as one JSON object")
	s.stringVar(&control, 0, "control", "PATH", "the daemon's control socket (default "+daemon.DefaultControl+")")
	rest, code := parseArgs(env, "why", whyHelp, &s, args)
	if code >= 0 {
		return code
	}
	if len(rest) != 1 {
		fmt.Fprintln(env.stderr, "modautoload why: name one module")
		return 2
	}
	tl, err := askTimeline(ctx, control)
	if err != nil {
		fmt.Fprintf(env.stderr, "modautoload why: %v\n", err)
		return 1
	}
	why := tl.Explain(rest[0])
	if jsonOut {
		b, _ := json.Marshal(why)
		fmt.Fprintf(env.stdout, "%s\n", b)
	} else if err := daemon.WriteWhy(env.stdout, tl, why); err != nil {
		fmt.Fprintf(env.stderr, "modautoload why: %v\n", err)
		return 1
	}
	if len(why.Loads) == 0 {
		return 1
	}
	return 0
}

// pfKthread is PF_KTHREAD in /proc/PID/stat's flags.
const pfKthread = 0x00200000

// helperAsker says who runs this modprobe, for the daemon's timeline: the
// kernel (request_module runs the helper from a kernel thread), or a
// command line.
func helperAsker() *loader.Asker {
	a := &loader.Asker{Kind: loader.AskedByCommand, PID: os.Getpid()}
	if isKernelThread(os.Getppid()) {
		a.Kind = loader.AskedByKernel
	}
	return a
}

// isKernelThread says whether process pid is a kernel thread.
func isKernelThread(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	flags, ok := statFlags(data)
	return ok && flags&pfKthread != 0
}

// statFlags reads the flags of a /proc/PID/stat line: field 9, counted
// after the command name, which may hold spaces and parentheses.
func statFlags(stat []byte) (uint64, bool) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 7 {
		return 0, false
	}
	flags, err := strconv.ParseUint(f[6], 10, 64)
	return flags, err == nil
}
