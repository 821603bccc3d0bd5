package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/modautoload/modautoload/daemon"
	"github.com/modautoload/modautoload/daemon/daemontest"
	"github.com/modautoload/modautoload/loader"
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
