package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/modautoload/modautoload/daemon"
	"github.com/modautoload/modautoload/daemon/daemontest"
	"github.com/modautoload/modautoload/internal/testtool"
	"github.com/modautoload/modautoload/loader"
	"github.com/modautoload/modautoload/loader/loadertest"
)

// statusServer is a fake daemon answering every request with resp.
func statusServer(t *testing.T, resp daemon.Response) string {
	t.Helper()
	answer, err := json.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	lines := []byte(`{"accepted":true,"ok":false}` + "\n" + string(answer) + "\n")
	return daemontest.FakeServer(t, func(c *net.UnixConn, _ <-chan struct{}) { c.Write(lines) })
}

// status --prometheus prints the daemon's status in a form Prometheus's
// parser reads, with the daemon's values.
func TestStatusPrometheus(t *testing.T) {
	st := daemon.Status{
		Version: "v1", Handled: 42, Loads: loader.Stats{Loaded: 7},
		Modules: map[string]loader.ModuleState{"kvm_amd": {State: "failed", Err: "ENODEV", Failures: 3}},
	}
	path := statusServer(t, daemon.Response{OK: true, Status: &st})
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), &cliEnv{stdout: &stdout, stderr: &stderr}, []string{"status", "--prometheus", "--control", path})
	if code != 0 {
		t.Fatalf("exit %d: %s", code, &stderr)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	families, err := p.TextToMetricFamilies(&stdout)
	if err != nil {
		t.Fatalf("output does not parse: %v", err)
	}
	if v := families["modautoload_events_handled_total"].GetMetric()[0].GetCounter().GetValue(); v != 42 {
		t.Errorf("handled = %v, want 42", v)
	}
	if v := families["modautoload_modules_loaded_total"].GetMetric()[0].GetCounter().GetValue(); v != 7 {
		t.Errorf("loaded = %v, want 7", v)
	}
	f := families["modautoload_module_failures_total"].GetMetric()
	if len(f) != 1 || f[0].GetLabel()[0].GetValue() != "kvm_amd" || f[0].GetCounter().GetValue() != 3 {
		t.Errorf("module failures %v, want kvm_amd 3", f)
	}
}

// A daemon's answer without a status (a broken or foreign server) is an
// error, not a crash; --json and --prometheus together are bad usage.
func TestStatusBadAnswersAndUsage(t *testing.T) {
	path := statusServer(t, daemon.Response{OK: true})
	for _, format := range []string{"--prometheus", "--json", ""} {
		var stdout, stderr bytes.Buffer
		args := []string{"status", "--control", path}
		if format != "" {
			args = append(args, format)
		}
		if code := run(context.Background(), &cliEnv{stdout: &stdout, stderr: &stderr}, args); code != 1 || !strings.Contains(stderr.String(), "no status") {
			t.Errorf("%v: exit %d, stderr %q; want 1 and the missing status named", args, code, &stderr)
		}
	}
	var stderr bytes.Buffer
	if code := run(context.Background(), &cliEnv{stdout: &bytes.Buffer{}, stderr: &stderr}, []string{"status", "--json", "--prometheus", "--control", path}); code != 2 {
		t.Errorf("--json --prometheus: exit %d, want 2 (%s)", code, &stderr)
	}
}

// The daemon keeps --prometheus-file from start to exit, and status
// --prometheus asks the running daemon for the same metrics. This runs
// the real daemon on the host's uevent socket, without coldplug and with
// --dry-run, against an empty module tree: it loads nothing.
func TestDaemonPrometheusFile(t *testing.T) {
	testtool.NeedRoot(t, "the daemon's uevent socket and control directory")
	base, dir := t.TempDir(), t.TempDir()
	if err := os.MkdirAll(filepath.Join(base, "lib/modules"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(loadertest.ModuleTree(t, nil, []string{"a"}), filepath.Join(base, "lib/modules/test")); err != nil {
		t.Fatal(err)
	}
	control, prom := filepath.Join(dir, "control"), filepath.Join(dir, "modautoload.prom")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, &cliEnv{stdout: &bytes.Buffer{}, stderr: &stderr}, []string{"daemon", "--dry-run", "--control", control,
			"--prometheus-file", prom, "--prometheus-interval", "10ms", "-d", base, "-S", "test", "-C", t.TempDir(), "--rules", t.TempDir(),
			"--log-format", "json"})
	}()
	parse := func(data []byte) map[string]float64 {
		t.Helper()
		p := expfmt.NewTextParser(model.LegacyValidation)
		families, err := p.TextToMetricFamilies(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("not the text format: %v\n%s", err, data)
		}
		values := map[string]float64{}
		for name, f := range families {
			for _, m := range f.GetMetric() {
				values[name] += m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
		if v := families["modautoload_build_info"].GetMetric(); len(v) != 1 || v[0].GetLabel()[0].GetValue() != versionString() {
			t.Errorf("build info %v, want version %q", v, versionString())
		}
		return values
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, err := os.ReadFile(prom)
		if err == nil && parse(data)["modautoload_coldplug_done"] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no metrics file with coldplug done after 10s (%v)\n%s", err, &stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	var out, errOut bytes.Buffer
	if code := run(ctx, &cliEnv{stdout: &out, stderr: &errOut}, []string{"status", "--prometheus", "--control", control}); code != 0 {
		t.Fatalf("status --prometheus: exit %d: %s", code, &errOut)
	}
	if parse(out.Bytes())["modautoload_coldplug_done"] != 1 {
		t.Errorf("status --prometheus:\n%s", &out)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("daemon exit %d\n%s", code, &stderr)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("daemon did not stop")
	}
	data, err := os.ReadFile(prom)
	if err != nil {
		t.Fatal(err)
	}
	parse(data)
	if strings.Contains(stderr.String(), "cannot write the metrics file") {
		t.Errorf("metrics write failed:\n%s", &stderr)
	}
}
