package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/modautoload/modautoload/loader"
	"github.com/modautoload/modautoload/loader/loadertest"
	"github.com/modautoload/modautoload/loader/modprobed"
	"github.com/modautoload/modautoload/rules"
	"github.com/modautoload/modautoload/uevent"
	"github.com/modautoload/modautoload/uevent/ueventtest"
)

// rig is a daemon on a fake socket, fake kernel and fake sysfs, with
// modules a (alias "dev:a*"), b ("dev:b*", depends on a) and slow
// ("dev:slow*", 300 ms init).
type rig struct {
	t      *testing.T
	src    *ueventtest.Source
	kernel *loadertest.Kernel
	d      *Daemon
	ld     *loader.Loader
	done   chan error
	cancel context.CancelFunc
	seq    uint64
	mu     sync.Mutex
}

func newRig(t *testing.T, rulesText string, mutate func(*Config, *loadertest.Kernel)) *rig {
	t.Helper()
	dir := loadertest.ModuleTree(t, map[string][]string{"b": {"a"}}, []string{"a", "b", "slow", "outer", "inner", "bad"})
	alias := "alias dev:a* a\nalias dev:b* b\nalias dev:slow* slow\nalias dev:outer* outer\nalias dev:bad* bad\n"
	if err := os.WriteFile(filepath.Join(dir, "modules.alias"), []byte(alias), 0o644); err != nil {
		t.Fatal(err)
	}
	k := loadertest.NewKernel(t, map[string]loadertest.Module{"slow": {Init: 300 * time.Millisecond}})
	os.WriteFile(filepath.Join(k.Sysfs, "kernel", "uevent_seqnum"), []byte("0\n"), 0o644)
	live := &loader.CurrentResolver{
		Open: func() (*loader.Resolver, error) {
			db, err := loader.OpenDB(dir)
			if err != nil {
				return nil, err
			}
			cfg, err := modprobed.Load(modprobed.LoadOptions{Paths: []string{t.TempDir()}})
			return &loader.Resolver{DB: db, Config: cfg}, err
		},
		Interval: time.Hour,
	}
	t.Cleanup(func() { live.Close() })
	var rs *rules.EventRules
	if rulesText != "" {
		f := filepath.Join(t.TempDir(), "test.rules")
		os.WriteFile(f, []byte(rulesText), 0o644)
		var err error
		if rs, err = rules.LoadEventRules(rules.EventRulesOptions{Paths: []string{f}}); err != nil {
			t.Fatal(err)
		}
		if len(rs.Problems) > 0 {
			t.Fatalf("rule problems: %v", rs.Problems)
		}
	}
	ld := loader.NewLoader(k, k.Sysfs)
	ld.LiveTimeout = 5 * time.Second
	src := ueventtest.NewSource()
	cfg := Config{
		Source: uevent.NewListener(src), Resolver: live, Loader: ld, Sysfs: k.Sysfs, Jobs: 4,
		Rules: func() *rules.EventRules { return rs }, Log: zerolog.New(zerolog.NewTestWriter(t)),
	}
	if mutate != nil {
		mutate(&cfg, k)
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &rig{t: t, src: src, kernel: k, d: d, ld: cfg.Loader, done: make(chan error, 1), cancel: cancel}
	go func() { r.done <- d.Run(ctx) }()
	t.Cleanup(func() { r.stop() })
	return r
}

func (r *rig) stop() error {
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err
		r.ld.Shutdown(context.Background())
		return err
	case <-time.After(5 * time.Second):
		r.t.Fatal("daemon did not stop")
		return nil
	}
}

// send queues a kernel event and moves the fake kernel's seqnum with it.
func (r *rig) send(action, devpath, modalias string) {
	r.sendEvent(action, devpath, "test", modalias)
}

// sendEvent is send for any subsystem. Senders on several goroutines (a
// test and the kernel announcing modules) take turns, so the seqnum file
// never goes back, as the kernel's does not.
func (r *rig) sendEvent(action, devpath, subsystem, modalias string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	seq := r.seq
	msg := fmt.Sprintf("%s@%s\x00ACTION=%s\x00DEVPATH=%s\x00SUBSYSTEM=%s\x00SEQNUM=%d\x00", action, devpath, action, devpath, subsystem, seq)
	if modalias != "" {
		msg += "MODALIAS=" + modalias + "\x00"
	}
	os.WriteFile(filepath.Join(r.kernel.Sysfs, "kernel", "uevent_seqnum"), []byte(fmt.Sprintf("%d\n", seq)), 0o644)
	r.src.SendKernel([]byte(msg))
}

func (r *rig) settle() {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.d.Settle(ctx); err != nil {
		r.t.Fatalf("settle: %v (status %+v)", err, r.d.Status())
	}
}

func (r *rig) live(name string) bool {
	data, err := os.ReadFile(filepath.Join(r.kernel.Sysfs, "module", name, "initstate"))
	return err == nil && strings.TrimSpace(string(data)) == "live"
}

// device writes a device into the fake sysfs, for coldplug and resync.
func (r *rig) device(path, modalias string) { device(r.kernel, path, modalias) }

func device(k *loadertest.Kernel, path, modalias string) {
	dir := filepath.Join(k.Sysfs, "devices", path)
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "uevent"), []byte("MODALIAS="+modalias+"\n"), 0o644)
}

func TestHotplugLoadsWithDependencies(t *testing.T) {
	r := newRig(t, "", nil)
	r.send("add", "/devices/pci0/dev1", "dev:b1")
	r.settle()
	if !r.live("b") || !r.live("a") {
		t.Fatal("b and its dependency a not live after settle")
	}
	if got := strings.Join(r.kernel.Calls(), " "); got != "a b" {
		t.Errorf("kernel saw %s, want a then b", got)
	}
	// Remove and change events load nothing by default (udev's rule).
	r.send("remove", "/devices/pci0/dev1", "dev:slow1")
	r.send("change", "/devices/pci0/dev2", "dev:slow1")
	r.settle()
	if r.kernel.CallsOf("slow") != 0 {
		t.Error("a remove or change event loaded a module")
	}
}

// Eight CPUs announce themselves with the same MODALIAS: one load.
func TestBurstLoadsOnce(t *testing.T) {
	r := newRig(t, "", nil)
	for i := 0; i < 8; i++ {
		r.send("add", fmt.Sprintf("/devices/system/cpu/cpu%d", i), "dev:slow-cpu")
	}
	r.settle()
	if n := r.kernel.CallsOf("slow"); n != 1 {
		t.Errorf("slow handed to the kernel %d times, want 1", n)
	}
	if st := r.d.Status(); st.Loads.Loaded != 1 || st.Loads.Deduplicated+st.Loads.AlreadyLive != 7 {
		t.Errorf("loads %+v", st.Loads)
	}
}

func TestSettleWaitsForSlowLoad(t *testing.T) {
	r := newRig(t, "", nil)
	r.send("add", "/devices/x", "dev:slow1")
	start := time.Now()
	r.settle()
	if !r.live("slow") {
		t.Fatal("settle returned before the module was live")
	}
	if time.Since(start) < 250*time.Millisecond {
		t.Error("settle returned before the slow init could have finished")
	}
}

func TestColdplugAndCascade(t *testing.T) {
	r := newRig(t, "", func(c *Config, k *loadertest.Kernel) {
		c.Coldplug = true
		// Devices present before the daemon started.
		device(k, "pci0/dev1", "dev:a1")
		device(k, "pci0/dev2", "dev:b2")
	})
	r.settle()
	if !r.live("a") || !r.live("b") {
		t.Fatalf("coldplug did not load a and b; status %+v", r.d.Status())
	}
	// A loaded driver creates a new device: its event is handled too.
	r.send("add", "/devices/pci0/dev1/child", "dev:slow-child")
	r.settle()
	if !r.live("slow") {
		t.Error("cascaded device's driver not loaded")
	}
}

// Lost events (ENOBUFS) are made good by rescanning sysfs.
func TestOverrunResyncs(t *testing.T) {
	r := newRig(t, "", nil)
	// Five events were lost: the kernel's seqnum moved, the socket
	// reports ENOBUFS, one of them was this device's add.
	r.device("pci0/lost", "dev:b-lost")
	os.WriteFile(filepath.Join(r.kernel.Sysfs, "kernel", "uevent_seqnum"), []byte("5\n"), 0o644)
	r.src.Overrun()
	r.settle()
	st := r.d.Status()
	if st.Events.Overruns != 1 || st.Resyncs != 1 {
		t.Errorf("overruns %d, resyncs %d; want 1 and 1", st.Events.Overruns, st.Resyncs)
	}
	if !r.live("b") {
		t.Error("the device whose event was lost was not handled after the resync")
	}
}

func TestQueueOverflowResyncs(t *testing.T) {
	bound := 2 * rigEventBytes(t, "add", "/devices/slow10", "dev:slow")
	r := newRig(t, "", func(c *Config, _ *loadertest.Kernel) { c.MaxQueueBytes = bound; c.Jobs = 1 })
	r.device("pci0/x", "dev:a-x")
	for i := 0; i < 20; i++ {
		r.send("add", fmt.Sprintf("/devices/slow%d", i), "dev:slow")
	}
	r.settle()
	st := r.d.Status()
	if st.Dropped == 0 || st.Resyncs == 0 {
		t.Errorf("dropped %d, resyncs %d: the overflow was not made good", st.Dropped, st.Resyncs)
	}
	if !r.live("a") || !r.live("slow") {
		t.Error("modules missing after overflow and resync")
	}
}

func TestForgedEventLoadsNothing(t *testing.T) {
	r := newRig(t, "", nil)
	r.src.Send([]byte("add@/devices/evil\x00ACTION=add\x00MODALIAS=dev:a1\x00SEQNUM=1\x00"), ueventtest.Sender{Pid: 1234, Creds: true})
	r.send("add", "/devices/marker", "")
	r.settle()
	if r.kernel.CallsOf("a") != 0 {
		t.Error("a forged event loaded a module")
	}
	if st := r.d.Status(); st.Events.Rejected != 1 {
		t.Errorf("rejected %d, want 1", st.Events.Rejected)
	}
}

func TestRulesSkipAndAllowList(t *testing.T) {
	r := newRig(t, `SUBSYSTEM=="test", DEVPATH=="/devices/skipme", SKIP
ALLOW="a b"
`, nil)
	r.send("add", "/devices/skipme", "dev:a1")
	r.settle()
	if r.kernel.CallsOf("a") != 0 {
		t.Error("a skip rule did not hold")
	}
	r.send("add", "/devices/other", "dev:slow1")
	r.send("add", "/devices/third", "dev:b1")
	r.settle()
	if r.kernel.CallsOf("slow") != 0 {
		t.Error("allow-list mode loaded a module not listed")
	}
	if !r.live("b") {
		t.Error("an allowed module was not loaded")
	}
	if st := r.d.Status(); st.Refused != 1 {
		t.Errorf("refused %d, want 1", st.Refused)
	}
}

func TestDryRunLoadsNothing(t *testing.T) {
	r := newRig(t, "", func(c *Config, _ *loadertest.Kernel) { c.DryRun = true })
	r.send("add", "/devices/x", "dev:b1")
	r.settle()
	if len(r.kernel.Calls()) != 0 {
		t.Errorf("dry run loaded %v", r.kernel.Calls())
	}
}

func TestExitWhenIdle(t *testing.T) {
	r := newRig(t, "", func(c *Config, _ *loadertest.Kernel) { c.ExitWhenIdle = 100 * time.Millisecond })
	select {
	case err := <-r.done:
		r.done <- err
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("did not exit when idle")
	}
}

func TestExitWhenIdleUnderTenNanoseconds(t *testing.T) {
	r := newRig(t, "", func(c *Config, _ *loadertest.Kernel) { c.ExitWhenIdle = time.Nanosecond })
	select {
	case err := <-r.done:
		r.done <- err
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("did not exit when idle")
	}
}

// serveControl serves the rig's daemon on a control socket until the
// test ends; ctx ends with it.
func (r *rig) serveControl() (path string, ctx context.Context) {
	r.t.Helper()
	path = filepath.Join(r.t.TempDir(), "control")
	ln, err := Listen(path)
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- r.d.Serve(ctx, ln) }()
	r.t.Cleanup(func() { cancel(); <-served })
	return path, ctx
}

func TestControlSocket(t *testing.T) {
	r := newRig(t, "", nil)
	path, ctx := r.serveControl()
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("control socket mode %v, %v; want 0600", fi.Mode(), err)
	}
	if _, err := Listen(path); err == nil {
		t.Error("a second daemon took over a live control socket")
	}

	resp, err := Ask(ctx, path, Request{Op: "load", Name: "dev:b9"}, Waits{})
	if err != nil || !resp.OK || len(resp.Results) != 1 || resp.Results[0].Module != "b" {
		t.Fatalf("load: %+v, %v", resp, err)
	}
	if !r.live("b") {
		t.Error("load request answered before b was live")
	}
	if resp, _ := Ask(ctx, path, Request{Op: "load", Name: "dev:nothing"}, Waits{}); resp.OK || !strings.Contains(resp.Error, "not found") {
		t.Errorf("unknown alias: %+v", resp)
	}
	if resp, err := Ask(ctx, path, Request{Op: "settle", TimeoutMS: 2000}, Waits{}); err != nil || !resp.OK {
		t.Errorf("settle: %+v, %v", resp, err)
	}
	resp, err = Ask(ctx, path, Request{Op: "status"}, Waits{})
	if err != nil || resp.Status == nil || resp.Status.Modules["b"].State != "live" {
		t.Errorf("status: %+v, %v", resp, err)
	}
	if resp, _ := Ask(ctx, path, Request{Op: "reboot"}, Waits{}); resp.OK {
		t.Error("an unknown op succeeded")
	}
	if _, err := Ask(ctx, filepath.Join(t.TempDir(), "none"), Request{Op: "status"}, Waits{}); !errors.Is(err, ErrNoDaemon) {
		t.Errorf("no daemon: %v", err)
	}
}
