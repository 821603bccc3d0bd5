// Command modautoload loads kernel modules for devices as the kernel
// announces them. See README.md for the subcommands.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"sort"
	"syscall"

	"github.com/modautoload/modautoload/loader"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

// command is one subcommand. run gets the arguments after the subcommand
// name and returns the process exit code.
type command struct {
	summary string
	run     func(ctx context.Context, env *cliEnv, args []string) int
}

var commands = map[string]command{
	"monitor":     {"print kernel uevents as they arrive", runMonitor},
	"resolve":     {"print what loading an alias or module would do, without loading", runResolve},
	"modprobe":    {"load or unload modules like kmod's modprobe (also as a link named modprobe)", runModprobe},
	"daemon":      {"load modules for devices as the kernel announces them", runDaemon},
	"load-static": {"load the modules of modules-load.d, /etc/modules and modules_load=, side by side", runLoadStatic},
	"settle":      {"wait until the daemon has handled every uevent and no load is in flight", runSettle},
	"status":      {"print the daemon's counters and module states, or its load timeline", runStatus},
	"why":         {"say why the daemon loaded a module: who asked, what needed it, what it waited for", runWhy},
}

// cliEnv carries the process's streams so subcommands can be tested.
type cliEnv struct {
	stdout, stderr io.Writer
	// describe, if set, is given a command's help text and options when
	// -h is asked, instead of their printout: the manual page is made
	// from what -h prints, so the two cannot drift apart.
	describe func(help string, s *optSet)
	// resolver and loader, if set, are what modprobe resolves and loads
	// with when it does not hand the names to the daemon, in place of the
	// running system's module database and kernel: the fallback after a
	// hand-off can be tested whole.
	resolver *loader.Resolver
	loader   *loader.Loader
}

// overview is what modautoload does, for --help and the manual page.
const overview = `modautoload loads kernel modules for devices as the kernel announces
them. It listens to the kernel's uevents, resolves each MODALIAS to modules
through depmod's indexes and modprobe.d as libkmod does, and loads them with
finit_module in dependency order: each module is handed to the kernel at
most once at a time, and a load is reported done only when the module is
live or built in. The same binary is the kernel's modprobe helper
(/proc/sys/kernel/modprobe) when called through a link named modprobe.`

func main() {
	args := os.Args[1:]
	// Called through a link named modprobe: the kernel's request_module
	// and scripts expect kmod's command line.
	if filepath.Base(os.Args[0]) == "modprobe" {
		args = append([]string{"modprobe"}, args...)
	}
	// SIGINT and SIGTERM cancel ctx; subcommands stop cleanly on it.
	// Not modprobe: like kmod's, a signal ends it at once (the kernel
	// drops its locks; an install command it runs goes on), and the
	// kernel's helper, started at every request_module(), does without
	// the thread that watching for signals takes.
	ctx, stop := context.Background(), context.CancelFunc(func() {})
	if len(args) == 0 || args[0] != "modprobe" {
		ctx, stop = signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	}
	if len(args) > 0 && args[0] == "daemon" {
		execLean()
		limitProcs()
	}
	code := run(ctx, &cliEnv{stdout: os.Stdout, stderr: os.Stderr}, args)
	stop()
	stopProfile()
	os.Exit(code)
}

// stopProfile ends a CPU profile; only a binary built with -tags profile
// starts one (profile.go).
var stopProfile = func() {}

func run(ctx context.Context, env *cliEnv, args []string) int {
	if len(args) == 0 {
		usage(env.stderr)
		return 2
	}
	switch args[0] {
	case "--version", "-V", "version":
		fmt.Fprintf(env.stdout, "modautoload %s\n", versionString())
		return 0
	case "-h", "--help", "help":
		usage(env.stdout)
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(env.stderr, "modautoload: unknown command %q\n", args[0])
		usage(env.stderr)
		return 2
	}
	return cmd.run(ctx, env, args[1:])
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: modautoload COMMAND [FLAGS]\n\n%s\n\ncommands:\n", overview)
	names := make([]string, 0, len(commands))
	for name := range commands {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(w, "  %-12s %s\n", name, commands[name].summary)
	}
	fmt.Fprintf(w, "\nmodautoload --version prints the version; modautoload COMMAND -h describes a command.\n")
}

// versionString is the linked-in version, else the VCS revision Go stamped
// into the binary.
func versionString() string {
	if version != "" {
		return version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, dirty := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return info.Main.Version
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return rev
}

// parseArgs parses a subcommand's options and returns its other
// arguments. A non-negative code means the process should exit with it:
// help was asked (0) or the options are wrong (2).
func parseArgs(env *cliEnv, name, help string, s *optSet, args []string) ([]string, int) {
	rest, err := s.parse(args)
	if errors.Is(err, errHelp) && env.describe != nil {
		env.describe(help, s)
		return nil, 0
	}
	if errors.Is(err, errHelp) {
		fmt.Fprintf(env.stdout, "usage: modautoload %s\n\noptions:\n", help)
		s.usage(env.stdout)
		return nil, 0
	}
	if err != nil {
		fmt.Fprintf(env.stderr, "modautoload %s: %v\n", name, err)
		return nil, 2
	}
	return rest, -1
}
