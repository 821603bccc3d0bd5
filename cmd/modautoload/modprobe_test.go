package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/modautoload/modautoload/daemon/daemontest"

	"github.com/rs/zerolog"

	"github.com/modautoload/modautoload/daemon"
	"github.com/modautoload/modautoload/loader"
	"github.com/modautoload/modautoload/loader/loadertest"
	"github.com/modautoload/modautoload/loader/modprobed"
)

// helperWaits are the helper's waits for the daemon.
var helperWaits = daemon.Waits{Accept: daemonAcceptBound, Answer: daemonAnswerSlack}

func acknowledge(c *net.UnixConn) { c.Write([]byte(`{"accepted":true,"ok":false}` + "\n")) }

// fakeModules is a resolver for modules a and b (b needs a) and a fake
// kernel to load them into.
func fakeModules(t *testing.T) (*loader.Resolver, *loadertest.Kernel, *loader.Loader) {
	t.Helper()
	db, err := loader.OpenDB(loadertest.ModuleTree(t, map[string][]string{"b": {"a"}}, []string{"a", "b"}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	cfg, err := modprobed.Load(modprobed.LoadOptions{Paths: []string{t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	k := loadertest.NewKernel(t, nil)
	l := loader.NewLoader(k, k.Sysfs)
	l.LiveTimeout = 5 * time.Second
	t.Cleanup(func() { l.Shutdown(context.Background()) })
	return &loader.Resolver{DB: db, Config: cfg}, k, l
}

func live(k *loadertest.Kernel, name string) bool {
	data, err := os.ReadFile(filepath.Join(k.Sysfs, "module", name, "initstate"))
	return err == nil && strings.TrimSpace(string(data)) == "live"
}

// A daemon that accepts connections but never takes the load (stopped
// with SIGSTOP: the kernel still queues connections for it) is passed by
// within the acknowledgement bound, and the modules load directly.
func TestHelperLoadsDirectlyWhenTheDaemonDoesNotAccept(t *testing.T) {
	path := daemontest.FakeServer(t, func(_ *net.UnixConn, done <-chan struct{}) { <-done })
	var logs bytes.Buffer
	log := zerolog.New(&logs)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	names := []string{"b", "a"}
	start := time.Now()
	code, direct := loadViaDaemon(ctx, log, names, "", modprobeFlags{control: path}, helperWaits)
	if took := time.Since(start); took > daemonAcceptBound+time.Second {
		t.Errorf("gave up on the daemon after %s; the bound is %s", took, daemonAcceptBound)
	}
	if code != 0 || !reflect.DeepEqual(direct, names) {
		t.Fatalf("loadViaDaemon = %d, %q; want 0 and every name to load directly\n%s", code, direct, &logs)
	}
	if !strings.Contains(logs.String(), "loading without the daemon") {
		t.Errorf("the fallback is not logged:\n%s", &logs)
	}
	r, k, l := fakeModules(t)
	if code := loadModules(ctx, bufio.NewWriter(io.Discard), log, r, l, nil, direct, "", modprobeFlags{}); code != 0 {
		t.Fatalf("direct load: %d\n%s", code, &logs)
	}
	if !live(k, "a") || !live(k, "b") {
		t.Error("a and b not live after the direct load")
	}
}

func TestHelperLoadsDirectlyWithoutADaemon(t *testing.T) {
	names := []string{"a"}
	code, direct := loadViaDaemon(context.Background(), zerolog.Nop(), names, "",
		modprobeFlags{control: filepath.Join(t.TempDir(), "control")}, helperWaits)
	if code != 0 || !reflect.DeepEqual(direct, names) {
		t.Errorf("loadViaDaemon = %d, %q; want 0 and a to load directly", code, direct)
	}
}

// A daemon that stops after it took the load (SIGTERM closes its
// connections) leaves the load to the helper.
func TestHelperLoadsDirectlyWhenTheDaemonHangsUp(t *testing.T) {
	path := daemontest.FakeServer(t, func(c *net.UnixConn, _ <-chan struct{}) { acknowledge(c) })
	names := []string{"a", "b"}
	code, direct := loadViaDaemon(context.Background(), zerolog.Nop(), names, "", modprobeFlags{control: path}, helperWaits)
	if code != 0 || !reflect.DeepEqual(direct, names) {
		t.Errorf("loadViaDaemon = %d, %q; want 0 and both to load directly", code, direct)
	}
}

// A daemon that took the load and does not finish it in time: the helper
// fails, and does not load the module a second time behind its back.
func TestHelperFailsWhenTheDaemonDoesNotAnswer(t *testing.T) {
	path := daemontest.FakeServer(t, func(c *net.UnixConn, done <-chan struct{}) { acknowledge(c); <-done })
	var logs bytes.Buffer
	w := daemon.Waits{Accept: daemonAcceptBound, Answer: 200 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code, direct := loadViaDaemon(ctx, zerolog.New(&logs), []string{"a"}, "", modprobeFlags{control: path}, w)
	if code != 1 || len(direct) != 0 {
		t.Errorf("loadViaDaemon = %d, %q; want 1 and nothing to load directly", code, direct)
	}
	if !strings.Contains(logs.String(), "did not finish it in time") {
		t.Errorf("the failure is not explained:\n%s", &logs)
	}
}

// Without the daemon the allow-list still holds: the helper reads the
// rule paths the daemon recorded beside its control socket.
func TestDirectLoadObeysTheAllowList(t *testing.T) {
	dir := t.TempDir()
	ruleFile := filepath.Join(dir, "site.rules")
	if err := os.WriteFile(ruleFile, []byte("ALLOW=\"a\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	control := filepath.Join(dir, "control")
	if err := daemon.PublishRulePaths(control, []string{ruleFile}); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	log := zerolog.New(&logs)
	rs := helperRules(log, control)
	r, k, l := fakeModules(t)
	out := bufio.NewWriter(io.Discard)
	ctx := context.Background()
	if code := loadModules(ctx, out, log, r, l, rs.Allowed, []string{"b"}, "", modprobeFlags{}); code != 1 {
		t.Errorf("loading b, not allowed: exit %d, want 1", code)
	}
	if n := len(k.Calls()); n != 0 {
		t.Errorf("the kernel was asked %d times for a module not allowed: %v", n, k.Calls())
	}
	if !strings.Contains(logs.String(), "refused: not in the allow-list") {
		t.Errorf("the refusal is not explained:\n%s", &logs)
	}
	if code := loadModules(ctx, out, log, r, l, rs.Allowed, []string{"a"}, "", modprobeFlags{}); code != 0 || !live(k, "a") {
		t.Errorf("loading a, allowed: exit %d, live %v\n%s", code, live(k, "a"), &logs)
	}
}

// -d, -S and -C name a module directory or modprobe.d the daemon does not
// use: such loads do not go to it.
func TestOwnModuleDirectoryDoesNotGoToTheDaemon(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{nil, true},
		{[]string{"-d", "/mnt"}, false},
		{[]string{"-S", "6.1.0"}, false},
		{[]string{"-C", "/tmp/modprobe.d"}, false},
	} {
		var s optSet
		var mods moduleOptions
		mods.register(&s)
		if _, err := s.parse(tc.args); err != nil {
			t.Fatal(err)
		}
		if got := viaDaemon(&mods); got != tc.want {
			t.Errorf("%q: via the daemon %v, want %v", tc.args, got, tc.want)
		}
	}
	// Inside an install command the daemon runs.
	t.Setenv("MODPROBE_MODULE", "x")
	if viaDaemon(&moduleOptions{}) {
		t.Error("an install command's modprobe went to the daemon running it")
	}
}
