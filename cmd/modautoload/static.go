package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/rs/zerolog"

	"github.com/modautoload/modautoload/daemon"
	"github.com/modautoload/modautoload/loader"
	"github.com/modautoload/modautoload/loader/modlist"
)

const loadStaticHelp = `load-static [--jobs N] [--initrd] [--no-etc-modules] [--rules PATH]...
       [--live-timeout D] [--command-timeout D] [-d DIR] [-S VERSION] [-C PATH]... [FILE...]

Loads the modules the static lists name, in place of systemd-modules-load
or the modules service of Debian, Alpine and OpenRC, but side by side: each
module as soon as its dependencies are live, each handed to the kernel once,
at most --jobs modules (twice the CPUs) in the kernel's hands at once.
The lists:
  modules-load.d   *.conf in /etc, /run, /usr/local/lib, /usr/lib and /lib
                   /modules-load.d, read as systemd does: one module or
                   alias per line, '#' and ';' comment lines, a file shadows
                   those of its name in later directories, a link to
                   /dev/null masks
  /etc/modules     a module and its parameters per line (Debian, Alpine);
                   Debian's modules-load.d/modules.conf link reads it so
  modules_load=    on the kernel command line, comma-separated; also
                   rd.modules_load= in an initramfs (/etc/initrd-release,
                   or --initrd)
FILE... reads these files instead (a bare name is looked for in the
modules-load.d directories), as systemd-modules-load does.

A comment line "#modautoload:alone NAME..." in any list loads NAME with
nothing else of the lists in the kernel: after the entries listed before it,
before those after it.

Exit status, as systemd-modules-load's: 0 when every module is live or built
in, blacklisted, refused by module_blacklist=, or without hardware (ENODEV);
a name that matches no module, or a missing symbol (ENOENT), is a warning;
any other failure, and a list line or file that cannot be read, exit 1.`

func runLoadStatic(ctx context.Context, env *cliEnv, args []string) int {
	var (
		s            optSet
		mods         moduleOptions
		logOpts      logOptions
		initrd       bool
		noEtcModules bool
		jobs         = 2 * runtime.NumCPU()
		rulePaths    []string
		liveBound    = loader.DefaultLiveTimeout
		cmdBound     = loader.DefaultCommandTimeout
	)
	s.intVar(&jobs, 'j', "jobs", "N", "modules in the kernel's hands at once (default: twice the CPUs)")
	s.boolVar(&initrd, 0, "initrd", "read rd.modules_load= too, as in an initramfs")
	s.boolVar(&noEtcModules, 0, "no-etc-modules", "do not read /etc/modules (unless modules-load.d links to it)")
	s.stringsVar(&rulePaths, 0, "rules", "PATH", "event rules whose allow-list applies, instead of the standard ones; repeatable")
	s.durationVar(&liveBound, 0, "live-timeout", "DURATION", "how long a module may take to go live (default "+liveBound.String()+")")
	s.durationVar(&cmdBound, 0, "command-timeout", "DURATION", "how long a modprobe.d install command may run (default "+cmdBound.String()+")")
	mods.register(&s)
	logOpts.register(&s)
	files, code := parseArgs(env, "load-static", loadStaticHelp, &s, args)
	if code >= 0 {
		return code
	}
	log, closeLog, err := logOpts.logger(env.stderr)
	if err != nil {
		fmt.Fprintf(env.stderr, "modautoload load-static: %v\n", err)
		return 2
	}
	defer closeLog.Close()
	if jobs < 1 {
		log.Error().Int("jobs", jobs).Msg("bad option: --jobs must be at least 1")
		return 2
	}

	list, kernelBlacklist, status := readLists(log, files, initrd, noEtcModules)
	if len(list.Entries) == 0 {
		log.Info().Strs("files", list.Files).Msg("no module listed")
		return status
	}
	r, err := mods.openResolver(log)
	if err != nil {
		log.Error().Err(err).Msg("cannot start")
		return 1
	}
	defer r.DB.Close()
	l := loader.NewLoader(loader.SystemKernel{}, "/sys")
	l.LiveTimeout, l.CommandTimeout = liveBound, cmdBound
	// Loading is the kernel's CPU work, part of it behind its own locks
	// (ftrace_lock, module_mutex): two modules per CPU keep the CPUs busy
	// (in the bench's 2-CPU guest, 40 modules were live in 1.9 s, 2.2 s
	// with one per CPU), more only contend for the locks. The entries
	// themselves all start at once, so one waiting for a slow dependency
	// holds back no other.
	l.MaxInKernel = jobs
	defer l.Shutdown(context.Background())
	c := modlist.Loading{
		Resolve:         r.Resolve,
		Loader:          l,
		Allowed:         loadRules(rulePaths, log).Allowed,
		KernelBlacklist: kernelBlacklist,
		Done:            func(o modlist.Outcome) { daemon.LogOutcome(log, o) },
	}
	start := time.Now()
	var sum modlist.Summary
	for _, o := range c.Run(ctx, list.Entries) {
		sum.Add(o)
	}
	log.Info().Int("entries", sum.Entries).Int("live", sum.Live).Int("skipped", sum.Skipped).Int("missing", sum.Missing).
		Int("failed", sum.Failed).Dur("took_ms", time.Since(start)).Msg("static lists loaded")
	if sum.Failed > 0 {
		status = 1
	}
	return status
}

// readLists reads the static lists with the kernel command line, logs
// what could not be read and returns the lists, module_blacklist= and the
// exit status so far.
func readLists(log zerolog.Logger, files []string, initrd, noEtcModules bool) (*modlist.List, []string, int) {
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil && !os.IsNotExist(err) {
		log.Warn().Err(err).Msg("cannot read the kernel command line; modules_load= not applied")
	}
	list := modlist.Read(modlist.Options{
		Files: files, Cmdline: string(cmdline), Initrd: initrd || modlist.InInitrd("/"), NoEtcModules: noEtcModules,
	})
	status := 0
	for _, p := range list.Problems {
		log.Error().Err(p).Msg("static list: skipped")
		status = 1
	}
	return list, modlist.KernelBlacklist(string(cmdline)), status
}
