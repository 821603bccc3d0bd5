package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modautoload/modautoload/daemon"
	"github.com/modautoload/modautoload/loader"
)

// testTimeline is a daemon's timeline: virtio_pci's device made virtio1,
// whose event loaded failover for virtio_net.
func testTimeline() *daemon.Timeline {
	const ms = int64(1e6)
	pci := &loader.Asker{Kind: loader.AskedByColdplug, DevPath: "/devices/pci0000:00/0000:00:04.0", Name: "pci:v00001AF4d00001000"}
	virtio1 := &loader.Asker{Kind: loader.AskedByUevent, Action: "add", DevPath: "/devices/pci0000:00/0000:00:04.0/virtio1", Seqnum: 812, Name: "virtio:d00000001v00001AF4"}
	tl := &daemon.Timeline{NowNS: 3000 * ms, Size: 256, Records: []daemon.LoadRecord{
		{ID: 1, Module: "virtio_pci", Asker: pci, RequestedNS: 1000 * ms, StartedNS: 1010 * ms, DoneNS: 1300 * ms, ReturnedNS: 1300 * ms, Op: loader.OpLoad, Result: daemon.ResultLive},
		{ID: 2, Module: "failover", For: "virtio_net", Asker: virtio1, RequestedNS: 1200 * ms, StartedNS: 1210 * ms, DoneNS: 1400 * ms, ReturnedNS: 1400 * ms, Op: loader.OpLoad, Result: daemon.ResultLive},
		{ID: 3, Module: "virtio_net", Asker: virtio1, RequestedNS: 1200 * ms, StartedNS: 1410 * ms, DoneNS: 1600 * ms, ReturnedNS: 1600 * ms, Op: loader.OpLoad, Result: daemon.ResultLive,
			Waits: []loader.Wait{{Module: "failover", ID: 2, End: 1400 * ms}}},
	}}
	tl.Coldplug = daemon.FindBurst(tl.Records, 990*ms, tl.NowNS)
	return tl
}

func TestStatusTimeline(t *testing.T) {
	tl := testTimeline()
	path := statusServer(t, daemon.Response{OK: true, Timeline: tl})
	svg := filepath.Join(t.TempDir(), "boot.svg")
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), &cliEnv{stdout: &stdout, stderr: &stderr}, []string{"status", "--timeline", "--svg", svg, "--control", path}); code != 0 {
		t.Fatalf("exit %d: %s", code, &stderr)
	}
	for _, want := range []string{"3 loads recorded", "critical path", "virtio_pci", "waited for its dependency failover"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("status --timeline does not say %q:\n%s", want, &stdout)
		}
	}
	f, err := os.Open(svg)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	bars := 0
	for dec := xml.NewDecoder(f); ; {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", svg, err)
		}
		if el, ok := tok.(xml.StartElement); ok && el.Name.Local == "g" {
			bars++
		}
	}
	if bars != len(tl.Records) {
		t.Errorf("%d bars for %d loads", bars, len(tl.Records))
	}

	stdout.Reset()
	if code := run(context.Background(), &cliEnv{stdout: &stdout, stderr: &stderr}, []string{"status", "--timeline", "--json", "--control", path}); code != 0 {
		t.Fatalf("exit %d: %s", code, &stderr)
	}
	var back daemon.Timeline
	if err := json.Unmarshal(stdout.Bytes(), &back); err != nil || len(back.Records) != 3 || back.Coldplug == nil || len(back.Coldplug.CriticalPath) != 3 {
		t.Errorf("status --timeline --json: %v\n%s", err, &stdout)
	}

	for _, args := range [][]string{{"--svg", svg}, {"--timeline", "--prometheus"}} {
		if code := run(context.Background(), &cliEnv{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}, append([]string{"status", "--control", path}, args...)); code != 2 {
			t.Errorf("status %v: exit %d, want 2", args, code)
		}
	}
	// A daemon that answers without a timeline is an error.
	empty := statusServer(t, daemon.Response{OK: true})
	stderr.Reset()
	if code := run(context.Background(), &cliEnv{stdout: &bytes.Buffer{}, stderr: &stderr}, []string{"status", "--timeline", "--control", empty}); code != 1 || !strings.Contains(stderr.String(), "no timeline") {
		t.Errorf("exit %d, stderr %q", code, &stderr)
	}
}

func TestWhy(t *testing.T) {
	path := statusServer(t, daemon.Response{OK: true, Timeline: testTimeline()})
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), &cliEnv{stdout: &stdout, stderr: &stderr}, []string{"why", "--control", path, "failover"}); code != 0 {
		t.Fatalf("exit %d: %s", code, &stderr)
	}
	for _, want := range []string{"failover: live (load #2)", "seqnum 812", "failover ← virtio_net", "virtio_pci drives (load #1", "critical path"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("why failover does not say %q:\n%s", want, &stdout)
		}
	}
	stdout.Reset()
	if code := run(context.Background(), &cliEnv{stdout: &stdout, stderr: &stderr}, []string{"why", "--json", "--control", path, "virtio-net"}); code != 0 {
		t.Fatalf("exit %d: %s", code, &stderr)
	}
	var why daemon.Why
	if err := json.Unmarshal(stdout.Bytes(), &why); err != nil || why.Module != "virtio_net" || len(why.Loads) != 1 || why.Loads[0].Waits[0].Module != "failover" {
		t.Errorf("why --json: %v %s", err, &stdout)
	}
	if code := run(context.Background(), &cliEnv{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}, []string{"why", "--control", path, "e1000"}); code != 1 {
		t.Errorf("why of a module never loaded: exit %d, want 1", code)
	}
	if code := run(context.Background(), &cliEnv{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}, []string{"why", "--control", path}); code != 2 {
		t.Errorf("why without a module: exit %d, want 2", code)
	}
}

func TestStatFlags(t *testing.T) {
	for _, tc := range []struct {
		stat  string
		flags uint64
		ok    bool
	}{
		{"2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0", 2129984, true},
		{"77 (kworker/u4:1-events_unbound) I 2 0 0 0 -1 69238880 0 0", 69238880, true},
		{"1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 0 0", 4194560, true},
		{"1234 (sh S 1", 0, false},
		{"1234 (sh) S 1 2 3 4 5 notanumber", 0, false},
	} {
		flags, ok := statFlags([]byte(tc.stat))
		if flags != tc.flags || ok != tc.ok {
			t.Errorf("%q: %d %v, want %d %v", tc.stat, flags, ok, tc.flags, tc.ok)
		}
	}
	if isKernelThread(os.Getpid()) {
		t.Error("the test process is taken for a kernel thread")
	}
	if a := helperAsker(); a.Kind != loader.AskedByCommand || a.PID != os.Getpid() {
		t.Errorf("helper run by the test: %+v, want a command", a)
	}
}
