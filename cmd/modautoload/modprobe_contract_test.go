package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/modautoload/modautoload/daemon"
	"github.com/modautoload/modautoload/daemon/daemontest"
	"github.com/modautoload/modautoload/internal/testfs"
	"github.com/modautoload/modautoload/loader"
	"github.com/modautoload/modautoload/loader/loadertest"
	"github.com/modautoload/modautoload/loader/modprobed"
)

// modprobe's side of the command-line contract (DESIGN.md) where no
// kernel is needed: exit statuses like kmod's modprobe, what goes to the
// daemon and what does not.

// cli runs the command line args and returns its exit status and output.
func cli(ctx context.Context, args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(ctx, &cliEnv{stdout: &out, stderr: &errOut}, args)
	return code, out.String(), errOut.String()
}

// moduleFlags writes module directory v (b needs a) under a new base
// directory and modprobe.d with conf, and returns the flags naming them:
// loads with these flags do not go to the daemon.
func moduleFlags(t *testing.T, conf string) []string {
	t.Helper()
	dir := t.TempDir()
	testfs.WriteFiles(t, dir, map[string]string{
		"lib/modules/v/modules.dep": "kernel/a.ko:\nkernel/b.ko: kernel/a.ko\n",
		"lib/modules/v/kernel/a.ko": "\x7fELF a",
		"lib/modules/v/kernel/b.ko": "\x7fELF b",
		"modprobe.d/test.conf":      conf,
	})
	return []string{"-d", dir, "-S", "v", "-C", filepath.Join(dir, "modprobe.d")}
}

// fakeDaemon is a control socket whose daemon acknowledges every request,
// then sends answer's response, or hangs up when answer returns nil. The
// function returned lists the requests it got.
func fakeDaemon(t *testing.T, answer func(n int, req daemon.Request) *daemon.Response) (string, func() []daemon.Request) {
	t.Helper()
	var (
		mu    sync.Mutex
		asked []daemon.Request
	)
	path := daemontest.RequestServer(t, func(c *net.UnixConn, line []byte, _ <-chan struct{}) {
		var req daemon.Request
		if err := json.Unmarshal(line, &req); err != nil {
			return
		}
		mu.Lock()
		n := len(asked)
		asked = append(asked, req)
		mu.Unlock()
		acknowledge(c)
		if resp := answer(n, req); resp != nil {
			b, _ := json.Marshal(resp)
			c.Write(append(b, '\n'))
		}
	})
	return path, func() []daemon.Request {
		mu.Lock()
		defer mu.Unlock()
		return append([]daemon.Request(nil), asked...)
	}
}

func answerOK(int, daemon.Request) *daemon.Response { return &daemon.Response{OK: true} }

// -a hands every name to the daemon; without -a the words after the
// name, "--" or not, are its parameters, as the kernel's
// "modprobe -q -- NAME" and scripts' "modprobe NAME p=v" rely on.
func TestModprobeHandsTheDaemonEveryNameAndTheParameters(t *testing.T) {
	t.Setenv("MODPROBE_MODULE", "")
	for _, tc := range []struct {
		args []string
		want []daemon.Request
	}{
		{[]string{"-a", "a", "b"}, []daemon.Request{{Op: "load", Name: "a"}, {Op: "load", Name: "b"}}},
		{[]string{"-q", "--", "a", "x=1", "y=two words"}, []daemon.Request{{Op: "load", Name: "a", Params: "x=1 y=two words"}}},
		{[]string{"a", "x=1", "-b"}, []daemon.Request{{Op: "load", Name: "a", Params: "x=1", UseBlacklist: true}}},
	} {
		path, asked := fakeDaemon(t, answerOK)
		code, _, stderr := cli(context.Background(), append([]string{"modprobe", "--control", path}, tc.args...)...)
		got := asked()
		for i := range got {
			got[i].Asker = nil
		}
		if code != 0 || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("modprobe %q: exit %d, the daemon was asked %+v; want 0 and %+v\n%s", tc.args, code, got, tc.want, stderr)
		}
	}
}

// modprobe fails when the daemon says the load failed, a module failed
// or was refused by the allow-list; a blacklisted module is no failure,
// as in kmod.
func TestModprobeExitStatusFollowsTheDaemonsAnswer(t *testing.T) {
	for _, tc := range []struct {
		answer daemon.Response
		code   int
		log    string
	}{
		{daemon.Response{Error: "module not found"}, 1, "could not load"},
		{daemon.Response{OK: true, Results: []daemon.LoadOutcome{{Module: "a"}, {Module: "b", Error: "ENODEV"}}}, 1, "could not insert"},
		{daemon.Response{OK: true, Results: []daemon.LoadOutcome{{Module: "b", Refused: true}}}, 1, "not in the daemon's allow-list"},
		{daemon.Response{OK: true, Results: []daemon.LoadOutcome{{Module: "b", Blacklisted: true}}}, 0, "loaded by the daemon"},
	} {
		path, _ := fakeDaemon(t, func(int, daemon.Request) *daemon.Response { return &tc.answer })
		var logs bytes.Buffer
		code, direct := loadViaDaemon(context.Background(), zerolog.New(&logs), []string{"b"}, "", modprobeFlags{control: path}, helperWaits)
		if code != tc.code || len(direct) != 0 || !strings.Contains(logs.String(), tc.log) {
			t.Errorf("answer %+v: exit %d, loading %q directly; want %d, nothing, and %q logged\n%s", tc.answer, code, direct, tc.code, tc.log, &logs)
		}
	}
}

// A daemon that stops after it loaded the first of two names leaves the
// helper the second only: what the daemon took is not loaded twice.
func TestHelperLoadsDirectlyOnlyWhatTheDaemonDidNotTake(t *testing.T) {
	path, asked := fakeDaemon(t, func(n int, _ daemon.Request) *daemon.Response {
		if n == 0 {
			return &daemon.Response{OK: true}
		}
		return nil // hung up: the daemon stopped
	})
	code, direct := loadViaDaemon(context.Background(), zerolog.Nop(), []string{"a", "b"}, "", modprobeFlags{control: path}, helperWaits)
	if code != 0 || !reflect.DeepEqual(direct, []string{"b"}) || len(asked()) != 2 {
		t.Errorf("loadViaDaemon = %d, %q after %d requests; want 0 and only b to load directly", code, direct, len(asked()))
	}
}

// When the daemon stops between two names, modprobe loads the second
// itself, and its exit status is the worse of the daemon's answer for
// the first and its own load of the second.
func TestModprobeExitStatusWhenTheDaemonStopsMidway(t *testing.T) {
	t.Setenv("MODPROBE_MODULE", "")
	db, err := loader.OpenDB(loadertest.ModuleTree(t, nil, []string{"a", "b"}))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	r := &loader.Resolver{DB: db, Config: &modprobed.Config{}}
	for _, tc := range []struct {
		name  string
		first daemon.Response // the daemon's answer for a; it hangs up on b
		b     loadertest.Module
		code  int
	}{
		{"a failed in the daemon, b loaded here", daemon.Response{Error: "module not found"}, loadertest.Module{}, 1},
		{"a loaded by the daemon, b here", daemon.Response{OK: true}, loadertest.Module{}, 0},
		{"a loaded by the daemon, b failed here", daemon.Response{OK: true}, loadertest.Module{Fail: unix.ENODEV}, 1},
	} {
		k := loadertest.NewKernel(t, map[string]loadertest.Module{"b": tc.b})
		l := loader.NewLoader(k, k.Sysfs)
		l.LiveTimeout = 5 * time.Second
		path, asked := fakeDaemon(t, func(n int, _ daemon.Request) *daemon.Response {
			if n == 0 {
				return &tc.first
			}
			return nil
		})
		var out, errOut bytes.Buffer
		code := run(context.Background(), &cliEnv{stdout: &out, stderr: &errOut, resolver: r, loader: l},
			[]string{"modprobe", "--control", path, "-a", "a", "b"})
		l.Shutdown(context.Background())
		if calls := strings.Join(k.Calls(), " "); code != tc.code || calls != "b" || len(asked()) != 2 {
			t.Errorf("%s: exit %d, the kernel was asked for %q after %d requests to the daemon; want %d, b only, 2\n%s",
				tc.name, code, calls, len(asked()), tc.code, &errOut)
		}
	}
}

// -n, -r, -R and --show-depends load nothing: none of them is handed to
// the daemon, which would load. The module database is the running
// kernel's here, where the name is in none.
func TestModprobeDryRunAndRemoveNeverGoToTheDaemon(t *testing.T) {
	t.Setenv("MODPROBE_MODULE", "")
	for _, flag := range []string{"-n", "-r", "-R", "--show-depends"} {
		path, asked := fakeDaemon(t, answerOK)
		code, _, _ := cli(context.Background(), "modprobe", "-q", "--control", path, flag, "modautoload_test_no_such_module")
		if code != 1 || len(asked()) != 0 {
			t.Errorf("modprobe %s: exit %d (want 1: no such module), the daemon was asked %+v", flag, code, asked())
		}
	}
}

// Exit statuses and output of what modprobe answers without loading,
// like kmod's: 1 for a name that matches nothing, printed unless -q; -R
// leaves out what the blacklist keeps out with -b; parameters follow the
// name; every name of -a counts; a name with a path in it is refused, an
// alias with '/' is not; -r -n looks the name up as -r does.
func TestModprobeExitStatusWithoutLoading(t *testing.T) {
	flags := moduleFlags(t, "blacklist a\nalias foo a\nalias devname:net/tun b\n")
	for _, tc := range []struct {
		args           []string
		code           int
		stdout, stderr string // stdout whole; "" stderr: nothing printed
	}{
		{[]string{"-q", "-n", "nosuch"}, 1, "", ""},
		{[]string{"-n", "nosuch"}, 1, "", "module not found"},
		{[]string{"-n", "-a", "a", "nosuch"}, 1, "", "module not found"},
		{[]string{"-n", "-a", "a", "b"}, 0, "", ""},
		{[]string{"-R", "nosuch"}, 1, "", "module not found"},
		{[]string{"-R", "foo"}, 0, "a\n", ""},
		{[]string{"-R", "-b", "foo"}, 0, "", ""},
		{[]string{"-R", "devname:net/tun"}, 0, "b\n", ""},
		{[]string{"-n", "-a", "a", "x/y"}, 1, "", "invalid module name"},
		{[]string{"-n", "kernel/a"}, 1, "", "invalid module name"},
		{[]string{"-r", "nosuch"}, 1, "", "module not found"},
		{[]string{"-r", "-n", "-v", "a"}, 0, "rmmod a\n", ""},
		{[]string{"-r", "-n", "-v", "foo"}, 0, "rmmod a\n", ""},
		{[]string{"-r", "-n", "nosuch"}, 1, "", "module not found"},
	} {
		args := append(append([]string{"modprobe", "--log-format", "json"}, flags...), tc.args...)
		code, stdout, stderr := cli(context.Background(), args...)
		if code != tc.code || stdout != tc.stdout || (tc.stderr == "") != (stderr == "") || !strings.Contains(stderr, tc.stderr) {
			t.Errorf("modprobe %q: exit %d, stdout %q, stderr %q; want %d, %q, and %q", tc.args, code, stdout, stderr, tc.code, tc.stdout, tc.stderr)
		}
	}
	// The words after NAME are its parameters, in order, after "--" too.
	code, stdout, stderr := cli(context.Background(), append(append([]string{"modprobe"}, flags...), "--show-depends", "--", "b", "x=1", "y=2")...)
	lines := strings.Split(stdout, "\n")
	if code != 0 || len(lines) != 3 || !strings.HasSuffix(lines[0], "/kernel/a.ko ") || !strings.HasSuffix(lines[1], "/kernel/b.ko x=1 y=2") {
		t.Errorf("modprobe --show-depends -- b x=1 y=2: exit %d, stdout %q, stderr %q; want a.ko, then b.ko with x=1 y=2", code, stdout, stderr)
	}
}

// Without the daemon: a name that matches nothing and a module whose
// init fails exit 1; a blacklisted module behind an alias is skipped,
// exit 0, as kmod ignores it.
func TestDirectLoadExitStatus(t *testing.T) {
	db, err := loader.OpenDB(loadertest.ModuleTree(t, map[string][]string{"b": {"a"}}, []string{"a", "b", "c"}))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	conf := t.TempDir()
	testfs.WriteFiles(t, conf, map[string]string{"test.conf": "blacklist c\nalias cee c\n"})
	cfg, err := modprobed.Load(modprobed.LoadOptions{Paths: []string{conf}})
	if err != nil {
		t.Fatal(err)
	}
	r := &loader.Resolver{DB: db, Config: cfg}
	k := loadertest.NewKernel(t, map[string]loadertest.Module{"b": {Fail: unix.ENODEV}})
	l := loader.NewLoader(k, k.Sysfs)
	l.LiveTimeout = 5 * time.Second
	defer l.Shutdown(context.Background())
	out := bufio.NewWriter(io.Discard)
	for _, tc := range []struct {
		name string
		code int
		log  string
	}{
		{"nosuch", 1, "module not found"},
		{"b", 1, "could not insert"},
		{"cee", 0, "blacklisted, not loaded"},
	} {
		var logs bytes.Buffer
		log := zerolog.New(&logs)
		if code := loadModules(context.Background(), out, log, r, l, nil, []string{tc.name}, "", modprobeFlags{}); code != tc.code || !strings.Contains(logs.String(), tc.log) {
			t.Errorf("loading %s: exit %d, want %d and %q logged\n%s", tc.name, code, tc.code, tc.log, &logs)
		}
	}
	if n := k.CallsOf("c"); n != 0 {
		t.Errorf("the blacklisted c was handed to the kernel %d times", n)
	}
}

// modprobe -r exits like kmod's: 1 for a module not loaded or in use
// (and nothing removed), 0 once the module and the dependencies nothing
// else uses are gone; -n removes nothing.
func TestRemoveExitStatus(t *testing.T) {
	db, err := loader.OpenDB(loadertest.ModuleTree(t, map[string][]string{"b": {"a"}}, []string{"a", "b", "c"}))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	r := &loader.Resolver{DB: db, Config: &modprobed.Config{}}
	k := loadertest.NewKernel(t, nil)
	for _, m := range []string{"a", "b"} {
		if err := k.Load(m); err != nil {
			t.Fatal(err)
		}
	}
	refcnt := func(m, n string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(k.Sysfs, "module", m, "refcnt"), []byte(n+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	refcnt("a", "1") // used by b
	refcnt("b", "0")
	l := loader.NewLoader(k, k.Sysfs)
	defer l.Shutdown(context.Background())
	k.ResetCalls()
	for _, tc := range []struct {
		name   string
		flags  modprobeFlags
		before func()
		code   int
		log    string
		calls  string
	}{
		{name: "c", code: 1, log: "not loaded"},
		{name: "a", code: 1, log: "in use by 1"},
		{name: "b", flags: modprobeFlags{dryRun: true}, code: 0},
		{name: "b", before: func() { refcnt("a", "0") }, code: 0, calls: "-b -a"},
	} {
		if tc.before != nil {
			tc.before()
		}
		var logs bytes.Buffer
		tc.flags.remove = true
		code := removeModules(bufio.NewWriter(io.Discard), zerolog.New(&logs), r, l, []string{tc.name}, tc.flags)
		calls := strings.Join(k.Calls(), " ")
		k.ResetCalls()
		if code != tc.code || !strings.Contains(logs.String(), tc.log) || calls != tc.calls {
			t.Errorf("removing %s (%+v): exit %d, kernel calls %q; want %d, %q and %q logged\n%s", tc.name, tc.flags, code, calls, tc.code, tc.calls, tc.log, &logs)
		}
	}
}
