package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/modautoload/modautoload/daemon"
	"github.com/modautoload/modautoload/loader"
	"github.com/modautoload/modautoload/rules"
)

const modprobeHelp = `modprobe [-q] [-n] [-v] [-b] [-a] [-r] [-i] [-R] [--show-depends] [-d DIR] [-S VERSION] [-C PATH] [--] NAME [PARAM=VALUE...]

Loads (or with -r unloads) a module and its dependencies, like kmod's
modprobe, with the same exit status: 0 on success, 1 on any failure. The
kernel runs it as "modprobe -q -- NAME" when /proc/sys/kernel/modprobe
names it (or a link to it called modprobe). It returns success only when
every module is built in or live, and hands each module to the kernel at
most once at a time, however many modprobe processes ask at once.

With a daemon on the control socket, loads go through it (not with -d, -S
or -C, which it would not follow). A daemon that does not take the load
within 2s (stopped, stuck) is passed by: modprobe loads by itself. Either
way the event rules' allow-list holds: without the daemon, modprobe reads
the rule paths the daemon recorded beside its control socket (its --rules),
else the default rule directories.`

type modprobeFlags struct {
	all, useBlacklist, dryRun, verbose, quiet, remove bool
	ignoreInstall, resolveAlias, showDepends, syslog  bool
	version                                           bool
	control                                           string
}

func runModprobe(ctx context.Context, env *cliEnv, args []string) int {
	var (
		s       optSet
		f       modprobeFlags
		mods    moduleOptions
		logOpts logOptions
	)
	s.boolVar(&f.all, 'a', "all", "every NAME is a module to load; no parameters")
	s.boolVar(&f.useBlacklist, 'b', "use-blacklist", "apply the blacklist to NAME itself, not only to aliases")
	s.boolVar(&f.dryRun, 'n', "dry-run", "do everything but load or unload")
	s.boolVar(&f.verbose, 'v', "verbose", "print each action (insmod, install, rmmod) before doing it")
	s.boolVar(&f.quiet, 'q', "quiet", "print no error messages")
	s.boolVar(&f.remove, 'r', "remove", "unload NAME, then its dependencies that nothing uses")
	s.boolVar(&f.ignoreInstall, 'i', "ignore-install", "load modules even if modprobe.d has an install command for them")
	s.boolVar(&f.ignoreInstall, 0, "ignore-remove", "the same as --ignore-install, for -r")
	s.boolVar(&f.resolveAlias, 'R', "resolve-alias", "print the names NAME resolves to, one per line")
	s.boolVar(&f.showDepends, 'D', "show-depends", "print what loading NAME takes, as insmod/install/builtin lines")
	s.boolVar(&f.syslog, 's', "syslog", "log to /dev/kmsg (there is no syslog in an initramfs)")
	s.boolVar(&f.version, 'V', "version", "print the version")
	f.control = daemon.DefaultControl
	s.stringVar(&f.control, 0, "control", "PATH", "hand loads to the daemon listening here, if one is (default "+daemon.DefaultControl+")")
	mods.register(&s)
	logOpts.register(&s)
	rest, code := parseArgs(env, "modprobe", modprobeHelp, &s, args)
	if code == 2 {
		return 1 // kmod's modprobe exits 1 on bad usage too
	}
	if code >= 0 {
		return code
	}
	if f.version {
		fmt.Fprintf(env.stdout, "modautoload %s\n", versionString())
		return 0
	}
	switch {
	case f.quiet:
		logOpts.level = "fatal"
	case f.verbose && logOpts.level == "info":
		logOpts.level = "debug"
	}
	if f.syslog {
		logOpts.target = "kmsg"
	}
	log, closeLog, err := logOpts.logger(env.stderr)
	if err != nil {
		fmt.Fprintf(env.stderr, "modprobe: %v\n", err)
		return 1
	}
	defer closeLog.Close()

	if len(rest) == 0 {
		log.Error().Msg("no module name given")
		return 1
	}
	names, params := rest, ""
	if !f.all && !f.remove {
		names, params = rest[:1], strings.Join(rest[1:], " ")
	}
	for _, n := range names {
		// A module name never has ':'; an alias (devname:net/tun) may
		// have '/'. A bare name with '/' or ".." is an attempt at a path.
		if !strings.Contains(n, ":") && (strings.Contains(n, "/") || strings.Contains(n, "..")) {
			log.Error().Str("name", n).Msg("invalid module name: module names contain no '/' or '..'")
			return 1
		}
	}

	out := bufio.NewWriter(env.stdout)
	defer out.Flush()
	// A hand-off to the daemon needs no module database: open it only for
	// what is done here, so the kernel's helper answers at once.
	load := !(f.resolveAlias || f.showDepends || f.dryRun || f.remove)
	code, direct := 0, names
	if load && viaDaemon(&mods) {
		code, direct = loadViaDaemon(ctx, log, names, params, f, daemon.Waits{Accept: daemonAcceptBound, Answer: daemonAnswerSlack})
		if len(direct) == 0 {
			return code
		}
	}
	r := env.resolver
	if r == nil {
		var err error
		if r, err = mods.openResolver(log); err != nil {
			log.Error().Err(err).Msg("cannot start")
			return 1
		}
		defer r.DB.Close()
	}
	if !load && !f.remove {
		return showModules(out, log, r, names, params, f)
	}
	l := env.loader
	if l == nil {
		l = loader.NewLoader(loader.SystemKernel{}, "/sys")
		defer l.Shutdown(context.Background())
	}
	if f.remove {
		return removeModules(out, log, r, l, names, f)
	}
	rs := helperRules(log, f.control)
	return max(code, loadModules(ctx, out, log, r, l, rs.Allowed, direct, params, f))
}

// viaDaemon says whether loads go to the daemon, if one runs. With one,
// kernel requests and command-line loads share its per-module
// serialization, burst memory and allow-list. Not from inside an install
// command the daemon runs (kmod sets MODPROBE_MODULE for those): that
// request would wait on itself. Nor with -d, -S or -C: the daemon loads
// from its own module directory with its own modprobe.d, not the ones
// asked for.
func viaDaemon(mods *moduleOptions) bool {
	return os.Getenv("MODPROBE_MODULE") == "" && mods.basedir == "" && mods.kver == "" && len(mods.config) == 0
}

// The helper's waits for the daemon. The daemon acknowledges a request
// as soon as it has read it, so daemonAcceptBound only covers its
// scheduling: past it the daemon is stopped or stuck, and the helper
// loads by itself rather than keep the kernel's request_module() waiting.
// The daemon's acknowledgement says how long its own bounds let the
// answer take (its wait for a module to go live, after an install
// command); daemonAnswerSlack is added to that: past it the helper fails
// rather than load what the daemon is loading.
const (
	daemonAcceptBound = 2 * time.Second
	daemonAnswerSlack = 30 * time.Second
)

// loadViaDaemon hands each load to the daemon. It returns the names the
// daemon did not take, to be loaded directly: all of them without a
// daemon; from the first it did not accept (it is stopped or stuck) or
// dropped unanswered (it stopped), the rest. A direct load is safe even
// then: loads of the same module serialise on its file's lock, and a load
// in progress is waited for through sysfs.
func loadViaDaemon(ctx context.Context, log zerolog.Logger, names []string, params string, f modprobeFlags, w daemon.Waits) (code int, direct []string) {
	for i, name := range names {
		resp, err := daemon.Ask(ctx, f.control, daemon.Request{
			Op: "load", Name: name, Params: params, UseBlacklist: f.useBlacklist, IgnoreInstall: f.ignoreInstall,
			Asker: helperAsker(),
		}, w)
		switch {
		case errors.Is(err, daemon.ErrNoDaemon):
			return code, names[i:]
		case errors.Is(err, daemon.ErrNotAccepted), errors.Is(err, daemon.ErrHungUp):
			log.Warn().Str("name", name).Err(err).Msg("loading without the daemon")
			return code, names[i:]
		case errors.Is(err, daemon.ErrNoAnswer):
			log.Error().Str("name", name).Dur("waited", w.Answer).Msg("the daemon took the load but did not finish it in time; not loading it a second time")
			code = 1
			continue
		case err != nil:
			log.Error().Str("name", name).Err(err).Msg("the daemon did not answer")
			code = 1
			continue
		}
		if resp.Error != "" {
			log.Error().Str("name", name).Str("error", resp.Error).Msg("could not load")
			code = 1
		}
		for _, o := range resp.Results {
			switch {
			case o.Error != "":
				log.Error().Str("module", o.Module).Str("name", name).Str("error", o.Error).Msg("could not insert")
				code = 1
			case o.Refused:
				log.Error().Str("module", o.Module).Str("name", name).Msg("refused: not in the daemon's allow-list")
				code = 1
			}
		}
		log.Debug().Str("name", name).Msg("loaded by the daemon")
	}
	return code, nil
}

// helperRules reads the event rules whose allow-list a load without the
// daemon obeys: those the daemon at control recorded it was started with
// (--rules), else the default directories, read as the daemon reads them:
// a line that may have been an ALLOW and could not be read turns
// allow-list mode on (see rules.EventRules), so problems never widen it.
func helperRules(log zerolog.Logger, control string) *rules.EventRules {
	paths, err := daemon.PublishedRulePaths(control)
	if err != nil {
		log.Warn().Err(err).Msg("the daemon's rule paths are unreadable; using the default rule directories")
	}
	return loadRules(paths, log)
}

// showModules answers -R, --show-depends and -n without touching the
// kernel.
func showModules(out *bufio.Writer, log zerolog.Logger, r *loader.Resolver, names []string, params string, f modprobeFlags) int {
	status := 0
	for _, name := range names {
		if f.resolveAlias {
			mods, err := r.Lookup(name)
			if err != nil || len(mods) == 0 {
				notFound(log, r, name, err)
				status = 1
				continue
			}
			for _, m := range mods {
				if !(f.useBlacklist && r.Blacklisted(m)) {
					fmt.Fprintln(out, m.Name)
				}
			}
			continue
		}
		plans, err := r.Resolve(name, loader.ResolveOptions{UseBlacklist: f.useBlacklist, Params: params, IgnoreInstall: f.ignoreInstall})
		if err != nil {
			notFound(log, r, name, err)
			status = 1
			continue
		}
		for _, p := range plans {
			if p.Err != nil {
				log.Error().Err(p.Err).Str("module", p.Name).Msg("cannot plan")
				status = 1
				continue
			}
			if f.showDepends || f.verbose {
				loader.WriteShowDepends(out, p.Steps)
			}
		}
	}
	return status
}

// loadModules loads names with l, refusing the modules allowed does not
// allow: the event rules' allow-list holds without the daemon too.
func loadModules(ctx context.Context, out *bufio.Writer, log zerolog.Logger, r *loader.Resolver, l *loader.Loader, allowed func(string) bool, names []string, params string, f modprobeFlags) int {
	ropts := loader.ResolveOptions{UseBlacklist: f.useBlacklist, Params: params, IgnoreInstall: f.ignoreInstall, Allowed: allowed}
	var opts loader.LoadOptions
	if f.verbose {
		opts.Before = func(s loader.Step) {
			loader.WriteShowDepends(out, []loader.Step{s})
			out.Flush()
		}
	}
	status := 0
	for _, name := range names {
		plans, err := r.Resolve(name, ropts)
		if err != nil {
			notFound(log, r, name, err)
			status = 1
			continue
		}
		for _, res := range l.Load(ctx, plans, opts) {
			switch {
			case res.Blacklisted:
				log.Debug().Str("module", res.Module).Str("name", name).Msg("blacklisted, not loaded")
			case res.Refused:
				log.Error().Str("module", res.Module).Str("name", name).Msg("refused: not in the allow-list")
				status = 1
			case res.Err != nil:
				log.Error().Str("module", res.Module).Str("name", name).Err(res.Err).Msg("could not insert")
				status = 1
			}
		}
	}
	return status
}

// removeModules removes names with l (-r), or with -n says what it would.
func removeModules(out *bufio.Writer, log zerolog.Logger, r *loader.Resolver, l *loader.Loader, names []string, f modprobeFlags) int {
	status := 0
	for _, name := range names {
		if f.dryRun {
			// Looked up as without -n: kmod fails on a name that
			// matches nothing, and removes modules, not aliases.
			mods, err := r.Lookup(name)
			if err != nil || len(mods) == 0 {
				notFound(log, r, name, err)
				status = 1
				continue
			}
			if f.verbose {
				for _, m := range mods {
					fmt.Fprintf(out, "rmmod %s\n", m.Name)
				}
			}
			continue
		}
		if err := l.Remove(r, name); err != nil {
			if errors.Is(err, loader.ErrNotFound) {
				notFound(log, r, name, err)
			} else {
				log.Error().Str("name", name).Err(err).Msg("could not remove")
			}
			status = 1
		}
	}
	return status
}

func notFound(log zerolog.Logger, r *loader.Resolver, name string, err error) {
	ev := log.Error().Str("name", name).Str("dir", r.DB.Dir)
	if err != nil && !errors.Is(err, loader.ErrNotFound) {
		ev.Err(err).Msg("cannot look up module")
		return
	}
	ev.Msg("module not found")
}
