package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/modautoload/modautoload/uevent"
	"github.com/modautoload/modautoload/uevent/ueventtest"
)

const raid6Add = "add@/module/raid6_pq\x00ACTION=add\x00DEVPATH=/module/raid6_pq\x00SUBSYSTEM=module\x00SEQNUM=2001\x00"

// runFakeMonitor feeds msgs (then an overrun and a forged message) to the
// monitor loop and returns what it printed and logged.
func runFakeMonitor(t *testing.T, jsonOut bool, msgs ...string) (string, string, uevent.Stats) {
	t.Helper()
	src := ueventtest.NewSource()
	for _, m := range msgs {
		src.SendKernel([]byte(m))
	}
	src.Overrun()
	src.Send([]byte("add@/devices/forged\x00MODALIAS=pci:v1\x00"), ueventtest.Sender{Pid: 77, Creds: true})
	l := uevent.NewListener(src)

	var out, logs bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- monitor(ctx, l, &out, jsonOut, zerolog.New(&logs)) }()
	deadline := time.Now().Add(5 * time.Second)
	for l.Stats().Rejected == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("monitor: %v", err)
	}
	return out.String(), logs.String(), l.Stats()
}

func TestMonitorText(t *testing.T) {
	out, logs, stats := runFakeMonitor(t, false, raid6Add)
	lines := strings.Split(out, "\n")
	if !strings.HasPrefix(lines[0], "KERNEL[") || !strings.HasSuffix(lines[0], "] add      /module/raid6_pq (module)") {
		t.Errorf("header line %q", lines[0])
	}
	want := []string{"ACTION=add", "DEVPATH=/module/raid6_pq", "SUBSYSTEM=module", "SEQNUM=2001", "", ""}
	if strings.Join(lines[1:], "|") != strings.Join(want, "|") {
		t.Errorf("properties %q, want %q", lines[1:], want)
	}
	if strings.Contains(out, "forged") {
		t.Error("forged event printed")
	}
	if stats.Rejected != 1 || stats.Overruns != 1 {
		t.Errorf("stats %+v", stats)
	}
	if !strings.Contains(logs, `"reason":"sender is not the kernel"`) || !strings.Contains(logs, "kernel dropped uevents") {
		t.Errorf("drops not logged: %s", logs)
	}
}

func TestMonitorJSONKeepsOrderAndDefects(t *testing.T) {
	out, _, _ := runFakeMonitor(t, true, raid6Add, "add@/devices/x\x00SUBSYSTEM=pci\x00BAD KEY=1\x00Z=\"q\"\x00A=1\x00")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines, got %q", out)
	}
	var first struct {
		Action, DevPath, Subsystem string
		Seqnum                     uint64
		Properties                 map[string]string
	}
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if first.Action != "add" || first.DevPath != "/module/raid6_pq" || first.Subsystem != "module" || first.Seqnum != 2001 {
		t.Errorf("decoded %+v", first)
	}
	if !strings.Contains(lines[1], `"properties":{"SUBSYSTEM":"pci","Z":"\"q\"","A":"1"}`) {
		t.Errorf("properties out of kernel order or badly escaped: %s", lines[1])
	}
	if !strings.Contains(lines[1], `"defects":["offset 29: bad key \"BAD KEY\""]`) {
		t.Errorf("defect not reported: %s", lines[1])
	}
}

func TestKmsgWriterOneRecordPerEvent(t *testing.T) {
	var rec recorder
	log := zerolog.New(newKmsgWriter(&rec, false))
	log.Warn().Str("module", "e1000").Msg("load failed")
	log.Info().Str("long", strings.Repeat("x", 2000)).Msg("big")
	if len(rec.writes) != 2 {
		t.Fatalf("%d writes, want one per event", len(rec.writes))
	}
	if !strings.HasPrefix(rec.writes[0], "<28>modautoload[") || !strings.Contains(rec.writes[0], "load failed") ||
		!strings.Contains(rec.writes[0], "module=e1000") || strings.Count(rec.writes[0], "\n") != 1 ||
		!strings.HasSuffix(rec.writes[0], "\n") {
		t.Errorf("warn record %q", rec.writes[0])
	}
	if !strings.HasPrefix(rec.writes[1], "<30>") || len(rec.writes[1]) > kmsgRecordMax+1 || !strings.HasSuffix(rec.writes[1], "\n") {
		t.Errorf("info record of %d bytes: %.40q", len(rec.writes[1]), rec.writes[1])
	}
}

type recorder struct{ writes []string }

func (r *recorder) Write(p []byte) (int, error) {
	r.writes = append(r.writes, string(p))
	return len(p), nil
}

func TestCLI(t *testing.T) {
	cases := []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"--version"}, 0, "modautoload "},
		{[]string{"help"}, 0, "monitor"},
		{nil, 2, "usage"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"monitor", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"monitor", "--log-level", "loud"}, 2, "unknown level"},
		{[]string{"monitor", "--log-target", "syslog"}, 2, "unknown target"},
		{[]string{"monitor", "-h"}, 0, "udevadm monitor"},
	}
	for _, tc := range cases {
		var out bytes.Buffer
		code := run(context.Background(), &cliEnv{stdout: &out, stderr: &out}, tc.args)
		if code != tc.code || !strings.Contains(out.String(), tc.out) {
			t.Errorf("%v: exit %d, output %q; want %d and %q", tc.args, code, out.String(), tc.code, tc.out)
		}
	}
}

// TestReceiveBufferBeyondCInt: 4 GiB is refused with a reason on every
// architecture: where int is 64 bits it does not fit the socket option
// (it used to become 0 there), where int is 32 bits not even the flag.
func TestReceiveBufferBeyondCInt(t *testing.T) {
	want, wantCode := "does not fit the socket option", 1
	if strconv.IntSize == 32 {
		want, wantCode = "out of range (32 bits)", 2
	}
	// Bounded: were the value taken, monitor would listen until cancelled.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out bytes.Buffer
	code := run(ctx, &cliEnv{stdout: &out, stderr: &out}, []string{"monitor", "--rcvbuf", "4294967296"})
	if code != wantCode || !strings.Contains(out.String(), want) {
		t.Errorf("monitor --rcvbuf 4294967296: exit %d, output %q; want %d and %q", code, out.String(), wantCode, want)
	}
	out.Reset()
	if code := run(context.Background(), &cliEnv{stdout: &out, stderr: &out}, []string{"monitor", "--rcvbuf", "lots"}); code != 2 || !strings.Contains(out.String(), `not a number: "lots"`) {
		t.Errorf("monitor --rcvbuf lots: exit %d, output %q", code, out.String())
	}
}

func TestOptSetParsesLikeGetopt(t *testing.T) {
	var (
		s             optSet
		q, v          bool
		dir, cfgValue string
		cfgs          []string
	)
	s.boolVar(&q, 'q', "quiet", "")
	s.boolVar(&v, 'v', "verbose", "")
	s.stringVar(&dir, 'd', "basedir", "DIR", "")
	s.stringsVar(&cfgs, 'C', "config", "PATH", "")
	s.stringVar(&cfgValue, 0, "only-long", "X", "")
	rest, err := s.parse([]string{"-qv", "-d/root", "name", "--config=a", "-C", "b", "--only-long", "x", "p=1", "--", "-notaflag"})
	if err != nil {
		t.Fatal(err)
	}
	if !q || !v || dir != "/root" || strings.Join(cfgs, ",") != "a,b" || cfgValue != "x" {
		t.Errorf("q %v v %v dir %q cfgs %v long %q", q, v, dir, cfgs, cfgValue)
	}
	if strings.Join(rest, " ") != "name p=1 -notaflag" {
		t.Errorf("rest %q", rest)
	}
	for _, bad := range [][]string{{"-x"}, {"--nope"}, {"-d"}, {"--quiet=1"}} {
		if _, err := s.parse(bad); err == nil {
			t.Errorf("%v parsed", bad)
		}
	}
}

func TestModprobeUsage(t *testing.T) {
	cases := []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"modprobe"}, 1, "no module name"},
		{[]string{"modprobe", "--bogus"}, 1, "unknown option"},
		{[]string{"modprobe", "-V"}, 0, "modautoload "},
		{[]string{"modprobe", "../../etc/shadow"}, 1, "invalid module name"},
		{[]string{"modprobe", "-h"}, 0, "/proc/sys/kernel/modprobe"},
	}
	for _, tc := range cases {
		var out bytes.Buffer
		code := run(context.Background(), &cliEnv{stdout: &out, stderr: &out}, tc.args)
		if code != tc.code || !strings.Contains(out.String(), tc.out) {
			t.Errorf("%v: exit %d, output %q; want %d and %q", tc.args, code, out.String(), tc.code, tc.out)
		}
	}
}
