package daemon

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/rs/zerolog"

	"github.com/modautoload/modautoload/loader"
	"github.com/modautoload/modautoload/loader/loadertest"
	"github.com/modautoload/modautoload/uevent"
)

var metricName = regexp.MustCompile(`^modautoload_[a-z0-9_]+$`)

// parseExposition reads data with Prometheus's own text parser (legacy,
// strict metric and label names) and checks what that parser lets pass
// but the format or its conventions forbid: a family's lines apart from
// each other, a family without HELP or TYPE, a counter not named _total,
// a series twice. It returns the families by name.
func parseExposition(t *testing.T, data []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	families, err := p.TextToMetricFamilies(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("not the text exposition format: %v\n%s", err, data)
	}
	seen := map[string]bool{}
	current := ""
	for i, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		var name string
		switch {
		case strings.HasPrefix(line, "# HELP "), strings.HasPrefix(line, "# TYPE "):
			name = strings.Fields(line)[2]
		case strings.HasPrefix(line, "#"), line == "":
			t.Errorf("line %d: %q: only HELP, TYPE and samples are written", i+1, line)
			continue
		default:
			name = line[:strings.IndexAny(line, "{ ")]
		}
		if name != current {
			if seen[name] {
				t.Errorf("line %d: family %s continues after another one", i+1, name)
			}
			seen[name], current = true, name
		}
	}
	for name, f := range families {
		if !metricName.MatchString(name) {
			t.Errorf("metric %s: want modautoload_[a-z0-9_]+", name)
		}
		if f.GetHelp() == "" {
			t.Errorf("metric %s has no HELP", name)
		}
		if !strings.Contains(string(data), "# TYPE "+name+" ") {
			t.Errorf("metric %s has no TYPE", name)
		}
		if counter := f.GetType() == dto.MetricType_COUNTER; counter != strings.HasSuffix(name, "_total") {
			t.Errorf("metric %s is a %s: counters and only counters end in _total", name, f.GetType())
		}
		series := map[string]bool{}
		for _, m := range f.GetMetric() {
			key := labelKey(m)
			if series[key] {
				t.Errorf("metric %s: series %s twice", name, key)
			}
			series[key] = true
		}
	}
	return families
}

func labelKey(m *dto.Metric) string {
	var b strings.Builder
	for _, l := range m.GetLabel() {
		b.WriteString(l.GetName() + "=" + l.GetValue() + ",")
	}
	return b.String()
}

// sampleValue is the value of the series of family name whose labels
// include labels, and whether there is one.
func sampleValue(families map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f := families[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		match := true
		for k, v := range labels {
			found := false
			for _, l := range m.GetLabel() {
				found = found || l.GetName() == k && l.GetValue() == v
			}
			match = match && found
		}
		if !match {
			continue
		}
		if m.Counter != nil {
			return m.Counter.GetValue(), true
		}
		return m.Gauge.GetValue(), true
	}
	return 0, false
}

func sampleStatus() Status {
	long := strings.Repeat("é", 300) // 600 bytes, cut at a character boundary
	return Status{
		Version:      `1.0 "quoted" \ back`,
		Events:       uevent.Stats{Received: 1234, Rejected: 2, Malformed: 3, Defective: 4, Overruns: 5},
		Handled:      1200,
		Skipped:      30,
		Refused:      6,
		Resyncs:      7,
		Dropped:      8,
		LoadErrors:   9,
		Queue:        10,
		QueueBytes:   11000,
		Busy:         2,
		Requests:     1,
		LastSeqnum:   4000,
		KernelSeqnum: 4001,
		ColdplugDone: true,
		Loads:        loader.Stats{Loaded: 70, Failed: 4, Deduplicated: 29, AlreadyLive: 12, Waited: 3, InFlight: 1, InKernel: 1},
		Modules: map[string]loader.ModuleState{
			"virtio_blk": {State: "live"},
			"kvm_amd":    {State: "failed", Err: "finit_module kvm_amd: no such device (ENODEV)", Failures: 2},
			"pcspkr":     {State: "live", Failures: 1},
			"evil":       {State: "failed", Err: "install: \"quoted\"\nsecond line \\ and \xff bad UTF-8", Failures: 1},
			"noisy":      {State: "failed", Err: long, Failures: 3},
			"crc32c":     {State: "builtin"},
			"odd":        {State: "some-new-state"},
		},
		Memory: Memory{RSSKiB: 8000, PeakRSSKiB: 10000, HeapObjects: 300000, Threads: 6},
	}
}

// The exposition parses with Prometheus's parser, every value is the
// status's, and hostile error strings come out escaped and bounded.
func TestWritePrometheus(t *testing.T) {
	st := sampleStatus()
	var buf bytes.Buffer
	if err := WritePrometheus(&buf, st); err != nil {
		t.Fatal(err)
	}
	families := parseExposition(t, buf.Bytes())
	want := []struct {
		name   string
		labels map[string]string
		value  float64
	}{
		{"modautoload_build_info", map[string]string{"version": st.Version}, 1},
		{"modautoload_uevents_received_total", nil, 1234},
		{"modautoload_uevents_rejected_total", nil, 2},
		{"modautoload_uevents_malformed_total", nil, 3},
		{"modautoload_uevents_defective_total", nil, 4},
		{"modautoload_uevent_overruns_total", nil, 5},
		{"modautoload_resyncs_total", nil, 7},
		{"modautoload_events_dropped_total", nil, 8},
		{"modautoload_events_handled_total", nil, 1200},
		{"modautoload_events_nothing_to_load_total", nil, 30},
		{"modautoload_modules_refused_total", nil, 6},
		{"modautoload_event_load_errors_total", nil, 9},
		{"modautoload_modules_loaded_total", nil, 70},
		{"modautoload_module_loads_failed_total", nil, 4},
		{"modautoload_load_requests_deduplicated_total", nil, 29},
		{"modautoload_load_requests_already_live_total", nil, 12},
		{"modautoload_modules_waited_total", nil, 3},
		{"modautoload_loads_in_flight", nil, 1},
		{"modautoload_loads_in_kernel", nil, 1},
		{"modautoload_queue_events", nil, 10},
		{"modautoload_queue_bytes", nil, 11000},
		{"modautoload_events_in_progress", nil, 2},
		{"modautoload_control_requests_in_progress", nil, 1},
		{"modautoload_uevent_last_seqnum", nil, 4000},
		{"modautoload_uevent_kernel_seqnum", nil, 4001},
		{"modautoload_coldplug_done", nil, 1},
		{"modautoload_resident_memory_bytes", nil, 8000 * 1024},
		{"modautoload_resident_memory_peak_bytes", nil, 10000 * 1024},
		{"modautoload_go_heap_objects_bytes", nil, 300000},
		{"modautoload_threads", nil, 6},
		{"modautoload_modules", map[string]string{"state": "live"}, 2},
		{"modautoload_modules", map[string]string{"state": "failed"}, 3},
		{"modautoload_modules", map[string]string{"state": "builtin"}, 1},
		{"modautoload_modules", map[string]string{"state": "loading"}, 0},
		{"modautoload_modules", map[string]string{"state": "some-new-state"}, 1},
		{"modautoload_module_failures_total", map[string]string{"module": "kvm_amd"}, 2},
		{"modautoload_module_failures_total", map[string]string{"module": "pcspkr"}, 1},
		{"modautoload_module_failures_total", map[string]string{"module": "noisy"}, 3},
		{"modautoload_module_failed", map[string]string{"module": "kvm_amd", "error": st.Modules["kvm_amd"].Err}, 1},
		{"modautoload_module_failed", map[string]string{"module": "evil", "error": strings.ToValidUTF8(st.Modules["evil"].Err, "\uFFFD")}, 1},
		{"modautoload_module_failed", map[string]string{"module": "noisy", "error": strings.Repeat("é", maxLabelValue/2)}, 1},
	}
	for _, w := range want {
		got, ok := sampleValue(families, w.name, w.labels)
		if !ok || got != w.value {
			t.Errorf("%s%v = %v (present %v), want %v", w.name, w.labels, got, ok, w.value)
		}
	}
	// Modules that never failed have no failure series; live ones are
	// not reported failed.
	for _, m := range []string{"virtio_blk", "crc32c"} {
		if _, ok := sampleValue(families, "modautoload_module_failures_total", map[string]string{"module": m}); ok {
			t.Errorf("%s never failed but has a failure series", m)
		}
	}
	if _, ok := sampleValue(families, "modautoload_module_failed", map[string]string{"module": "pcspkr"}); ok {
		t.Error("pcspkr loaded after its failure but is reported failed")
	}
}

// A daemon with no modules yet leaves the per-module families out
// instead of writing families without samples.
func TestWritePrometheusEmpty(t *testing.T) {
	var buf bytes.Buffer
	if err := WritePrometheus(&buf, Status{}); err != nil {
		t.Fatal(err)
	}
	families := parseExposition(t, buf.Bytes())
	for _, name := range []string{"modautoload_module_failures_total", "modautoload_module_failed", "modautoload_build_info"} {
		if _, ok := families[name]; ok || strings.Contains(buf.String(), name+" ") {
			t.Errorf("%s written without samples", name)
		}
	}
	if v, ok := sampleValue(families, "modautoload_modules", map[string]string{"state": "live"}); !ok || v != 0 {
		t.Errorf("modautoload_modules{state=live} = %v, %v; want 0", v, ok)
	}
}

// A reader of the file (node_exporter) sees only whole versions, each
// newer than the last; the version at shutdown is the last status; no
// temporary file stays behind.
func TestMetricsFileReplacesAtomically(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "modautoload.prom")
	var n atomic.Uint64
	m := &MetricsFile{
		Path: path, Interval: time.Millisecond, Log: zerolog.New(zerolog.NewTestWriter(t)),
		Status: func() Status {
			st := sampleStatus()
			st.Events.Received = n.Add(1)
			return st
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	// Counted, not timed: a loaded machine running -race gets through
	// only a few reads in a fixed window.
	deadline := time.Now().Add(20 * time.Second)
	reads, last := 0, 0.0
	for (reads < 20 || n.Load() < 20) && time.Now().Before(deadline) {
		data, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		v, ok := sampleValue(parseExposition(t, data), "modautoload_uevents_received_total", nil)
		if !ok || v < last {
			t.Fatalf("read %d: received %v (present %v) after %v", reads, v, ok, last)
		}
		last = v
		reads++
	}
	cancel()
	<-done
	if reads < 20 || n.Load() < 20 {
		t.Fatalf("%d reads of %d versions in 20 s: the test proved nothing", reads, n.Load())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := sampleValue(parseExposition(t, data), "modautoload_uevents_received_total", nil); v != float64(n.Load()) {
		t.Errorf("the file says %v events at shutdown, the last status %d", v, n.Load())
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v (%v), want 0644 for the collector", st.Mode(), err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the metrics file: %v", len(entries), entries)
	}
}

// safeBuffer collects log lines from several goroutines.
type safeBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *safeBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *safeBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// A write that fails (a missing directory here; a full file system alike)
// is logged once, not every interval, leaves nothing behind, and the file
// appears once it can be written.
func TestMetricsFileFailureLoggedOnceAndRecovers(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "textfile")
	path := filepath.Join(dir, "modautoload.prom")
	var logs safeBuffer
	var calls atomic.Int64
	m := &MetricsFile{
		Path: path, Interval: time.Millisecond, Log: zerolog.New(&logs),
		Status: func() Status { st := sampleStatus(); st.Events.Received = uint64(calls.Add(1)); return st },
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	for calls.Load() < 20 {
		time.Sleep(time.Millisecond)
	}
	if n := strings.Count(logs.String(), "cannot write the metrics file"); n != 1 {
		t.Errorf("failure logged %d times over %d tries, want once:\n%s", n, calls.Load(), logs.String())
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "metrics file written again") {
		if time.Now().After(deadline) {
			t.Fatalf("no recovery logged:\n%s", logs.String())
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	parseExposition(t, data)
}

// A rename that fails (the path is a directory) removes the temporary
// file it wrote.
func TestMetricsFileFailedRenameLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "taken")
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(path, []byte("x 1\n")); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("error %v, want one naming %s", err, path)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %v, want only the directory in the way", entries)
	}
}

// A metrics write stuck in the file system (a hung NFS server, say) is
// logged once its bound passes, and holds back nothing: the daemon loads
// a module, settles and answers status meanwhile.
func TestStuckMetricsWriteDoesNotHoldLoads(t *testing.T) {
	r := newRig(t, "", nil)
	var logs safeBuffer
	release := make(chan struct{})
	var writes atomic.Int64
	m := &MetricsFile{
		Path: filepath.Join(t.TempDir(), "m.prom"), Interval: time.Millisecond, Status: r.d.Status,
		Log: zerolog.New(&logs), SlowWrite: 20 * time.Millisecond,
		write: func(string, []byte) error { writes.Add(1); <-release; return nil },
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	defer func() { cancel(); close(release); <-done }()
	for writes.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	r.send("add", "/devices/a0", "dev:a0")
	r.settle()
	if !r.live("a") {
		t.Fatal("a not live while a metrics write was stuck")
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("load and settle took %s beside a stuck metrics write", took)
	}
	if st := r.d.Status(); st.Loads.Loaded != 1 {
		t.Errorf("status: %d loaded, want 1", st.Loads.Loaded)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "still writing the metrics file") {
		if time.Now().After(deadline) {
			t.Fatalf("the stuck write is not logged:\n%s", logs.String())
		}
		time.Sleep(time.Millisecond)
	}
	if n := writes.Load(); n != 1 {
		t.Errorf("%d writes started while one was stuck, want 1", n)
	}
}

// A module's failures reach the exposition through the daemon's status.
func TestStatusFailuresReachTheExposition(t *testing.T) {
	r := newRig(t, "", func(_ *Config, k *loadertest.Kernel) {
		k.SetModule("bad", loadertest.Module{Fail: errors.New("ENODEV")})
	})
	r.send("add", "/devices/bad0", "dev:bad0")
	r.settle()
	var buf bytes.Buffer
	if err := WritePrometheus(&buf, r.d.Status()); err != nil {
		t.Fatal(err)
	}
	families := parseExposition(t, buf.Bytes())
	if v, ok := sampleValue(families, "modautoload_module_failures_total", map[string]string{"module": "bad"}); !ok || v != 1 {
		t.Errorf("failures of bad = %v (present %v), want 1\n%s", v, ok, &buf)
	}
	if _, ok := sampleValue(families, "modautoload_module_failed", map[string]string{"module": "bad"}); !ok {
		t.Errorf("bad is not reported failed\n%s", &buf)
	}
}

// The memory figures come from the page tables: resident is anonymous plus
// mapped files, and this test process's figures match a fresh read of
// smaps_rollup, not the status counters that lag behind its threads.
func TestReadMemoryFromPageTables(t *testing.T) {
	data, err := os.ReadFile("/proc/self/smaps_rollup")
	if err != nil {
		t.Fatalf("smaps_rollup: %v (Linux 4.14 or later has it)", err)
	}
	heap := make([]byte, 8<<20) // 8 MiB touched: well above any drift between the reads
	for i := range heap {
		heap[i] = 1
	}
	m := readMemory()
	var rollupRss int64
	readKiB("/proc/self/smaps_rollup", map[string]*int64{"Rss": &rollupRss})
	runtime.KeepAlive(heap)
	if m.RSSKiB <= 0 || m.AnonKiB < 8<<10 || m.FileKiB != m.RSSKiB-m.AnonKiB || m.Threads < 1 {
		t.Fatalf("memory %+v: want anonymous at least 8 MiB, files = resident - anonymous; smaps_rollup %.200q", m, data)
	}
	if d := m.RSSKiB - rollupRss; d > 1024 || d < -1024 {
		t.Errorf("resident %d KiB, smaps_rollup says %d KiB", m.RSSKiB, rollupRss)
	}
}
