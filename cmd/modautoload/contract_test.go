package main

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/modautoload/modautoload/daemon"
	"github.com/modautoload/modautoload/internal/testfs"
)

// The command-line contract (DESIGN.md) beside modprobe's, where no
// kernel is needed: the exit statuses of settle, load-static and resolve,
// the option values every command refuses, and kmsg's priorities.

// settle exits 0 only when the daemon says it settled: 1 when it says it
// did not, and 1 at --timeout without a daemon. It tells the daemon how
// long it waits, so the daemon does not wait longer.
func TestSettleExitStatus(t *testing.T) {
	path, asked := fakeDaemon(t, answerOK)
	if code, _, stderr := cli(context.Background(), "settle", "--timeout", "5s", "--control", path); code != 0 {
		t.Errorf("settled: exit %d, want 0\n%s", code, stderr)
	}
	if a := asked(); len(a) != 1 || a[0].TimeoutMS <= 0 || a[0].TimeoutMS > 5000 {
		t.Errorf("settle --timeout 5s asked %+v; want a bound of at most 5000ms", a)
	}
	path, _ = fakeDaemon(t, func(int, daemon.Request) *daemon.Response {
		return &daemon.Response{Error: "not settled after 5s"}
	})
	if code, _, stderr := cli(context.Background(), "settle", "--timeout", "5s", "--control", path); code != 1 || !strings.Contains(stderr, "not settled") {
		t.Errorf("not settled: exit %d, stderr %q; want 1 and the daemon's reason", code, stderr)
	}
	start := time.Now()
	code, _, stderr := cli(context.Background(), "settle", "--timeout", "200ms", "--control", filepath.Join(t.TempDir(), "control"))
	if took := time.Since(start); code != 1 || took > 2*time.Second || !strings.Contains(stderr, "deadline exceeded") {
		t.Errorf("no daemon: exit %d after %s, stderr %q; want 1 at the 200ms timeout", code, took, stderr)
	}
}

// Bad option values are refused with exit 2 and a message naming the
// option, before anything starts. The daemon's are given a control
// socket, module directory and rules of their own, so that were one
// accepted, the daemon started would load nothing and stop at the
// context's end.
func TestOptionsRefuseBadValues(t *testing.T) {
	dir := t.TempDir()
	daemonArgs := append([]string{"daemon", "--dry-run", "--control", filepath.Join(dir, "control"), "--rules", dir}, moduleFlags(t, "")...)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"settle", "--timeout", "0s"}, `option --timeout: "0s": not a positive duration`},
		{[]string{"settle", "-t", "-1s"}, `option -t: "-1s": not a positive duration`},
		{[]string{"load-static", "--jobs", "99999999999999999999"}, "option --jobs: out of range"},
		{[]string{"resolve", "a", "--config"}, "option --config needs a value"},
		{append(daemonArgs, "--timeline-size", "-1"), "--timeline-size must be 0 to 65536"},
		{append(daemonArgs, "--timeline-size", "65537"), "--timeline-size must be 0 to 65536"},
		{append(daemonArgs, "--prometheus-file", dir+"/"), "--prometheus-file must name a file"},
		{append(daemonArgs, "extra"), "unexpected argument"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		code, _, stderr := cli(ctx, tc.args...)
		cancel()
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr, tc.want)
		}
	}
	// An empty level is not "log everything".
	if _, _, err := (&logOptions{format: "auto", level: "", target: "stderr"}).logger(io.Discard); err == nil || !strings.Contains(err.Error(), "unknown level") {
		t.Errorf("--log-level '': %v, want unknown level", err)
	}
}

// Each level has its syslog priority in /dev/kmsg, so that dmesg
// --level and the console's loglevel filter the records.
func TestKmsgPriorities(t *testing.T) {
	for level, want := range map[zerolog.Level]string{
		zerolog.DebugLevel: "<31>", zerolog.InfoLevel: "<30>", zerolog.WarnLevel: "<28>",
		zerolog.ErrorLevel: "<27>", zerolog.FatalLevel: "<26>", zerolog.PanicLevel: "<26>",
	} {
		var rec recorder
		log := zerolog.New(newKmsgWriter(&rec, false))
		log.WithLevel(level).Msg("m")
		if len(rec.writes) != 1 || !strings.HasPrefix(rec.writes[0], want) {
			t.Errorf("%s: records %q, want one starting %s", level, rec.writes, want)
		}
	}
}

// load-static exits 1 when a module fails (here: disabled by an install
// command of /bin/false), 0 when every module is done (an install command
// of /bin/true). No module here reaches the kernel.
func TestLoadStaticFailsWhenAModuleFails(t *testing.T) {
	dir := t.TempDir()
	testfs.WriteFiles(t, dir, map[string]string{
		"lib/modules/v/modules.dep":                 "kernel/modautoload_t_off.ko:\nkernel/modautoload_t_on.ko:\n",
		"lib/modules/v/kernel/modautoload_t_off.ko": "\x7fELF off",
		"lib/modules/v/kernel/modautoload_t_on.ko":  "\x7fELF on",
		"modprobe.d/test.conf":                      "install modautoload_t_off /bin/false\ninstall modautoload_t_on /bin/true\n",
		"rules/":                                    "/",
		"lists/off.conf":                            "modautoload_t_off\n",
		"lists/on.conf":                             "modautoload_t_on\n",
	})
	flags := []string{"load-static", "--log-format", "json", "-d", dir, "-S", "v", "-C", filepath.Join(dir, "modprobe.d"), "--rules", filepath.Join(dir, "rules")}
	for _, tc := range []struct {
		list string
		code int
		want string
	}{
		{"off.conf", 1, "disabled by"},
		{"on.conf", 0, `"live":1`},
	} {
		code, _, stderr := cli(context.Background(), append(flags, filepath.Join(dir, "lists", tc.list))...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("load-static %s: exit %d, want %d and %q\n%s", tc.list, code, tc.code, tc.want, stderr)
		}
	}
}

// resolve exits 1 when an alias matches no module, and still answers it.
func TestResolveExitStatus(t *testing.T) {
	flags := moduleFlags(t, "")
	for _, tc := range []struct {
		alias  string
		code   int
		stdout string
	}{
		{"nosuch", 1, `{"alias":"nosuch","modules":[]}`},
		{"b", 0, `"load":["a","b"]`},
	} {
		code, stdout, stderr := cli(context.Background(), append(append([]string{"resolve", "--json"}, flags...), tc.alias)...)
		if code != tc.code || !strings.Contains(stdout, tc.stdout) {
			t.Errorf("resolve %s: exit %d, stdout %q; want %d and %q\n%s", tc.alias, code, stdout, tc.code, tc.stdout, stderr)
		}
	}
}
