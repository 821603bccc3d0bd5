package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/modautoload/modautoload/daemon"
	"github.com/modautoload/modautoload/loader"
	"github.com/modautoload/modautoload/loader/index"
	"github.com/modautoload/modautoload/loader/modlist"
	"github.com/modautoload/modautoload/loader/modprobed"
	"github.com/modautoload/modautoload/rules"
	"github.com/modautoload/modautoload/uevent"
)

const daemonHelp = `daemon [--coldplug] [--static [--initrd]] [--control PATH] [--rcvbuf BYTES] [--jobs N] [--dry-run]
       [--exit-when-idle D] [--ready-fd N] [--rules PATH]... [--prometheus-file PATH] [--timeline-size N]
       [-d DIR] [-S VERSION] [-C PATH]...

Listens for kernel uevents and loads the modules their MODALIAS (or event
rules) name, each module once, in dependency order, reporting a load done
only when the module is live. --coldplug first handles every device
present. --static loads the static lists at start, beside coldplug (the
lists and their rules are those of load-static; settle waits for them and
status counts them). The control socket serves settle, status and the
modprobe helper. SIGHUP reloads rules, modprobe.d and the module indexes;
SIGTERM stops.

--prometheus-file PATH keeps PATH in the Prometheus text format (what
status --prometheus prints) for node_exporter's textfile collector: written
at start, every --prometheus-interval when the metrics changed, and at exit,
each time to a temporary file in the same directory renamed over PATH. A
write that fails is logged once and tried again; one that takes more than
5s is logged; neither holds back a load.

The daemon keeps a record of its last --timeline-size loads (default 256,
a boot's worth on most machines; about 500 bytes each; 0 keeps none) for
status --timeline and why.`

// metricsStopBound is how long exit waits for the metrics file's last
// write: a stuck file system must not keep the daemon from exiting.
const metricsStopBound = 5 * time.Second

// shutdownBound is how long SIGTERM waits for loads already handed to the
// kernel.
const shutdownBound = 10 * time.Second

// maxTimelineSize bounds --timeline-size: 32 MiB of records.
const maxTimelineSize = 65536

func runDaemon(ctx context.Context, env *cliEnv, args []string) int {
	var (
		s            optSet
		mods         moduleOptions
		logOpts      logOptions
		coldplug     bool
		static       bool
		initrd       bool
		dryRun       bool
		control      = daemon.DefaultControl
		rcvbuf       = uevent.DefaultReadBuffer
		jobs         = runtime.NumCPU() + 1
		readyFD      = -1
		idle         time.Duration
		rulePaths    []string
		interval     = 3 * time.Second
		liveBound    = loader.DefaultLiveTimeout
		cmdBound     = loader.DefaultCommandTimeout
		promFile     string
		promEvery    = 15 * time.Second
		timelineSize = loader.DefaultTimelineSize
	)
	s.boolVar(&coldplug, 0, "coldplug", "handle every device present at start")
	s.boolVar(&static, 0, "static", "load modules-load.d, /etc/modules and modules_load= at start, beside coldplug")
	s.boolVar(&initrd, 0, "initrd", "with --static: read rd.modules_load= too, as in an initramfs")
	s.boolVar(&dryRun, 0, "dry-run", "log what would load; load nothing")
	s.stringVar(&control, 0, "control", "PATH", "control socket (default "+daemon.DefaultControl+")")
	s.intVar(&rcvbuf, 0, "rcvbuf", "BYTES", "uevent socket receive buffer (default 128 MiB)")
	s.intVar(&jobs, 'j', "jobs", "N", "events handled at once (default: CPUs + 1)")
	s.durationVar(&idle, 0, "exit-when-idle", "DURATION", "exit once coldplug is done and nothing happened for DURATION (initramfs)")
	s.intVar(&readyFD, 0, "ready-fd", "N", "write READY=1 to file descriptor N, then close it, once listening")
	s.stringsVar(&rulePaths, 0, "rules", "PATH", "event rules file or directory instead of the standard ones; repeatable")
	s.durationVar(&interval, 0, "index-check", "DURATION", "how often to look for rewritten indexes and modprobe.d (default 3s)")
	s.durationVar(&liveBound, 0, "live-timeout", "DURATION", "how long a load may take to go live before it is reported as still initializing (default "+liveBound.String()+")")
	s.durationVar(&cmdBound, 0, "command-timeout", "DURATION", "how long a modprobe.d install or remove command may run before it is killed (default "+cmdBound.String()+")")
	s.stringVar(&promFile, 0, "prometheus-file", "PATH", "keep PATH up to date with the metrics in the Prometheus text format")
	s.durationVar(&promEvery, 0, "prometheus-interval", "DURATION", "how often --prometheus-file is rewritten when the metrics changed (default 15s)")
	s.intVar(&timelineSize, 0, "timeline-size", "N", "how many loads the timeline keeps (default 256; 0: none)")
	mods.register(&s)
	logOpts.register(&s)
	rest, code := parseArgs(env, "daemon", daemonHelp, &s, args)
	if code >= 0 {
		return code
	}
	log, closeLog, err := logOpts.logger(env.stderr)
	if err != nil {
		fmt.Fprintf(env.stderr, "modautoload daemon: %v\n", err)
		return 2
	}
	defer closeLog.Close()
	if len(rest) > 0 {
		log.Error().Str("argument", rest[0]).Msg("unexpected argument")
		return 2
	}
	// A record and what it holds is about 500 bytes, and `status
	// --timeline` answers with all of them.
	if timelineSize < 0 || timelineSize > maxTimelineSize {
		log.Error().Int("timeline-size", timelineSize).Msgf("bad option: --timeline-size must be 0 to %d", maxTimelineSize)
		return 2
	}
	if promFile != "" && (strings.HasSuffix(promFile, "/") || filepath.Base(promFile) == "." || filepath.Base(promFile) == "..") {
		log.Error().Str("path", promFile).Msg("--prometheus-file must name a file")
		return 2
	}

	if off, err := unix.PrctlRetInt(unix.PR_GET_THP_DISABLE, 0, 0, 0, 0); err != nil || off != 1 {
		// main could not execute the daemon again with huge pages off:
		// at least memory from now on comes in small pages.
		if err := unix.Prctl(unix.PR_SET_THP_DISABLE, 1, 0, 0, 0); err != nil {
			log.Debug().Err(err).Msg("cannot turn transparent huge pages off")
		}
	}

	// Listen before anything else: events from now on are ours; those
	// before are coldplug's.
	startSeq := daemon.ReadSeqnum("/sys")
	src, granted, err := uevent.Listen(uevent.Config{ReadBuffer: rcvbuf})
	if err != nil {
		log.Error().Err(err).Msg("cannot listen for uevents")
		return 1
	}
	live, err := liveResolver(&mods, log, interval)
	if err != nil {
		src.Close()
		log.Error().Err(err).Msg("cannot start")
		return 1
	}
	defer live.Close()
	var staticList []modlist.Entry
	var kernelBlacklist []string
	if static {
		list, kbl, _ := readLists(log, nil, initrd, false)
		staticList, kernelBlacklist = list.Entries, kbl
	}
	var ruleSet atomic.Pointer[rules.EventRules]
	ruleSet.Store(loadRules(rulePaths, log))

	ld := loader.NewLoader(loader.SystemKernel{}, "/sys")
	ld.LiveTimeout, ld.CommandTimeout = liveBound, cmdBound
	// The daemon's reader passes every module uevent and every lost
	// event on to the loader, whose own loads then need not poll sysfs.
	ld.ModuleEvents = true
	ld.TimelineSize = timelineSize
	if timelineSize == 0 {
		ld.TimelineSize = -1 // the Loader's 0 is its default
	}
	ld.Failed = func(module string, err error) {
		// ENODEV and ENXIO are the init saying "no such hardware here":
		// expected on every boot for some aliases (CPU features, ACPI
		// cpufreq). Log them without alarming the console.
		ev := log.Error()
		if errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) {
			ev = log.Info()
		}
		ev.Str("module", module).Err(err).Msg("load failed")
	}
	ln, err := daemon.Listen(control)
	if err != nil {
		src.Close()
		log.Error().Err(err).Msg("cannot create the control socket")
		return 1
	}
	defer os.Remove(control)
	// The modprobe helper obeys the same allow-list when it loads without
	// us (we stopped, or are stuck): it reads our rule paths there.
	if err := daemon.PublishRulePaths(control, rulePaths); err != nil {
		log.Error().Err(err).Msg("cannot record the rule paths for the modprobe helper; it will read the default rule directories")
	}

	d, err := daemon.New(daemon.Config{
		Source: src, Resolver: live, Loader: ld, Sysfs: "/sys",
		Rules:    ruleSet.Load,
		Jobs:     jobs,
		Coldplug: coldplug, DryRun: dryRun, ExitWhenIdle: idle, StartSeqnum: startSeq,
		Static: staticList, StaticKernelBlacklist: kernelBlacklist,
		Ready: func() {
			notifyReady(readyFD, log)
			log.Info().Int("rcvbuf", granted).Str("control", control).Int("jobs", jobs).Msg("ready")
		},
		Version: versionString(),
		Log:     log,
	})
	if err != nil {
		log.Error().Err(err).Msg("cannot start")
		return 1
	}
	metricsDone := make(chan struct{})
	metricsCtx, stopMetrics := context.WithCancel(context.Background())
	defer stopMetrics()
	if promFile != "" {
		m := &daemon.MetricsFile{Path: promFile, Interval: promEvery, Status: d.Status, Log: log}
		go func() { defer close(metricsDone); m.Run(metricsCtx) }()
	} else {
		close(metricsDone)
	}

	var wg sync.WaitGroup
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	wg.Add(2)
	go func() { defer wg.Done(); serveControl(runCtx, d, ln, log) }()
	go func() { defer wg.Done(); reloadOnHUP(runCtx, live, &ruleSet, rulePaths, log) }()

	err = d.Run(runCtx)
	stop()
	wg.Wait()
	bound, cancel := context.WithTimeout(context.Background(), shutdownBound)
	if serr := ld.Shutdown(bound); serr != nil {
		log.Warn().Err(serr).Msg("loads still in the kernel at exit")
	}
	cancel()
	// The metrics file's last version carries the counters at exit.
	stopMetrics()
	select {
	case <-metricsDone:
	case <-time.After(metricsStopBound):
		log.Warn().Str("path", promFile).Dur("waited", metricsStopBound).Msg("the metrics file is still being written (stuck file system); exiting without its last version")
	}
	st := d.Status()
	log.Info().Uint64("events", st.Events.Received).Uint64("rejected", st.Events.Rejected).
		Uint64("overruns", st.Events.Overruns).Uint64("resyncs", st.Resyncs).Uint64("loaded", st.Loads.Loaded).
		Uint64("failed", st.Loads.Failed).Uint64("deduplicated", st.Loads.Deduplicated).Msg("stopped")
	if err != nil {
		log.Error().Err(err).Msg("event loop failed")
		return 1
	}
	return 0
}

// liveResolver opens the module database and configuration, reopened when
// depmod or an administrator changes them.
func liveResolver(mods *moduleOptions, log zerolog.Logger, interval time.Duration) (*loader.CurrentResolver, error) {
	dir, err := mods.moduleDir()
	if err != nil {
		return nil, err
	}
	watch := []string{dir}
	for _, k := range []index.Kind{index.KindDep, index.KindAlias, index.KindSymbols, index.KindBuiltin, index.KindBuiltinAlias} {
		watch = append(watch, filepath.Join(dir, k.TextName()), filepath.Join(dir, k.BinName()))
	}
	if len(mods.config) > 0 {
		watch = append(watch, mods.config...)
	} else {
		watch = append(watch, modprobed.DefaultDirs()...)
	}
	live := &loader.CurrentResolver{
		Open:     func() (*loader.Resolver, error) { return mods.openResolver(log) },
		Watch:    watch,
		Interval: interval,
		Reloaded: func(err error) {
			if err != nil {
				log.Error().Err(err).Msg("reload failed; keeping the previous module database")
				return
			}
			log.Info().Msg("module database and modprobe.d reloaded")
		},
	}
	// Open now, so a broken setup fails at start, not at the first event.
	return live, live.Use(func(*loader.Resolver) error { return nil })
}

func loadRules(paths []string, log zerolog.Logger) *rules.EventRules {
	rs, err := rules.LoadEventRules(rules.EventRulesOptions{Paths: paths})
	if err != nil {
		log.Error().Err(err).Msg("event rules not loaded; using the defaults")
		return nil
	}
	for _, p := range rs.Problems {
		log.Error().Err(p).Msg("event rule skipped")
	}
	if rs.AllowListed() {
		log.Info().Msg("allow-list mode: only listed modules may load")
	}
	return rs
}

// reloadOnHUP reloads everything on SIGHUP; what fails to load keeps its
// previous good state.
func reloadOnHUP(ctx context.Context, live *loader.CurrentResolver, ruleSet *atomic.Pointer[rules.EventRules], paths []string, log zerolog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		log.Info().Msg("SIGHUP: reloading")
		live.Reload()
		if rs := loadRules(paths, log); rs != nil {
			ruleSet.Store(rs)
		}
	}
}

func serveControl(ctx context.Context, d *daemon.Daemon, ln *net.UnixListener, log zerolog.Logger) {
	if err := d.Serve(ctx, ln); err != nil {
		log.Error().Err(err).Msg("control socket failed")
	}
}

// notifyReady tells whoever started us that events will not be missed
// from now on: a pipe (--ready-fd, for init scripts) and systemd's
// notification socket (Type=notify).
func notifyReady(fd int, log zerolog.Logger) {
	if fd >= 0 {
		f := os.NewFile(uintptr(fd), "ready-fd")
		if _, err := f.WriteString("READY=1\n"); err != nil {
			log.Warn().Err(err).Int("fd", fd).Msg("cannot write the readiness notice")
		}
		f.Close()
	}
	if sock := os.Getenv("NOTIFY_SOCKET"); sock != "" {
		if sock[0] == '@' {
			sock = "\x00" + sock[1:] // abstract namespace
		}
		conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
		if err != nil {
			log.Warn().Err(err).Msg("cannot reach NOTIFY_SOCKET")
			return
		}
		conn.Write([]byte("READY=1"))
		conn.Close()
	}
}

// execLean executes the daemon again, once, so that the Go runtime starts
// the way the daemon stays small:
//   - With transparent huge pages off for the process. Its heap is a few
//     hundred KiB, but with huge pages "always" (Debian's default) the
//     runtime's first heap arena and the binary's bss were faulted in as
//     2 MiB pages before any of our code ran, and stayed: 7 MiB anonymous
//     memory resident after a coldplug, 2.5 MiB with the flag set first
//     (measured in the e2e guest). execve keeps the flag.
//   - With GOMAXPROCS at daemonProcs, unless the environment sets it: the
//     runtime sizes its per-processor state as it starts, and lowering
//     GOMAXPROCS from 32 to 2 at once left 0.7 MiB of it resident (e2e
//     guest, after coldplug).
//
// Nothing is open yet but the descriptors the daemon inherited, which
// execve keeps too; the process ID stays the same.
func execLean() {
	if off, err := unix.PrctlRetInt(unix.PR_GET_THP_DISABLE, 0, 0, 0, 0); err != nil || off == 1 {
		nameProcess()
		return
	}
	if err := unix.Prctl(unix.PR_SET_THP_DISABLE, 1, 0, 0, 0); err != nil {
		return
	}
	// On failure (no /proc) the daemon runs on as it is.
	unix.Exec("/proc/self/exe", os.Args, leanEnv(os.Environ(), runtime.GOMAXPROCS(0)))
}

// daemonProcs is how many threads the daemon runs Go code on at once. Its
// work between system calls is light, and a second thread keeps the event
// loop going while another goroutine decompresses a module or walks
// sysfs. Each further one costs memory the runtime keeps per processor:
// after coldplug, 1.1 MiB more anonymous memory on an 8-vCPU guest with
// one per CPU; 1.4 MiB with GOMAXPROCS=8 and 2.0 with 32 on a 2-vCPU one.
// A load blocked in the kernel holds an OS thread of its own whatever
// this says.
const daemonProcs = 2

// procsMarker tells the daemon executed again that GOMAXPROCS in its
// environment is execLean's, not its caller's, so the commands it runs
// (modprobe.d install lines) get the environment it was started with.
const procsMarker = "MODAUTOLOAD_LEAN_GOMAXPROCS"

// leanEnv is the environment execLean executes the daemon with: env, and
// GOMAXPROCS capped at daemonProcs when env does not set it and the
// runtime chose more (procs: the CPUs, or the cgroup's CPU limit).
func leanEnv(env []string, procs int) []string {
	if procs <= daemonProcs {
		return env
	}
	for _, kv := range env {
		if strings.HasPrefix(kv, "GOMAXPROCS=") {
			return env
		}
	}
	return append(env[:len(env):len(env)], "GOMAXPROCS="+strconv.Itoa(daemonProcs), procsMarker+"=1")
}

// limitProcs runs where execLean returned: in the daemon executed again,
// it takes execLean's GOMAXPROCS out of the environment; where the daemon
// could not be executed again, it caps GOMAXPROCS now (the per-processor
// state already made stays), unless the environment sets it.
func limitProcs() {
	if os.Getenv(procsMarker) != "" {
		os.Unsetenv(procsMarker)
		os.Unsetenv("GOMAXPROCS")
		return
	}
	if _, set := os.LookupEnv("GOMAXPROCS"); !set && runtime.GOMAXPROCS(0) > daemonProcs {
		runtime.GOMAXPROCS(daemonProcs)
	}
}

// nameProcess gives the process back the name it was started by: the
// kernel names a process after the file it executes, and the daemon
// executed again through /proc/self/exe is "exe" to ps, pgrep, pidof and
// the scripts that stop it. Through /proc/self/comm, the thread group
// leader's name: PR_SET_NAME would name whichever thread runs this.
func nameProcess() {
	name := filepath.Base(os.Args[0])
	if len(name) > 15 { // the kernel keeps 15 bytes
		name = name[:15]
	}
	os.WriteFile("/proc/self/comm", []byte(name), 0)
}
