package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"
)

// DefaultSlowMetricsWrite is how long writing the metrics file may take
// before it is logged as slow.
const DefaultSlowMetricsWrite = 5 * time.Second

// MetricsFile keeps a file in the Prometheus text format up to date for
// node_exporter's textfile collector. Each version is written whole to a
// temporary file in the same directory and renamed over the last, so a
// reader never sees half of one. Nothing else waits for it: it takes the
// status (a few short locks) and writes without holding anything, so a
// slow or full file system delays only the metrics, never a load.
type MetricsFile struct {
	Path string
	// Interval is how often the status is looked at; the file is
	// rewritten when the metrics changed.
	Interval time.Duration
	Status   func() Status
	Log      zerolog.Logger
	// SlowWrite is how long one write may take before it is logged as
	// slow; 0 means DefaultSlowMetricsWrite.
	SlowWrite time.Duration

	// write replaces the file; tests stand in a slow or failing one.
	write func(path string, data []byte) error
}

// Run writes the metrics at once, then every Interval when they changed,
// and a last time when ctx ends. A write that fails is logged once until
// one succeeds again, and tried again at the next interval.
func (m *MetricsFile) Run(ctx context.Context) {
	tick := time.NewTicker(m.Interval)
	defer tick.Stop()
	var last []byte
	failing := ""
	for {
		last, failing = m.update(last, failing)
		select {
		case <-ctx.Done():
			m.update(last, failing)
			return
		case <-tick.C:
		}
	}
}

// update writes the current metrics unless they equal last, the contents
// written last. failing is the error of the last write that failed, "" if
// it succeeded; update returns the new values of both.
func (m *MetricsFile) update(last []byte, failing string) ([]byte, string) {
	var buf bytes.Buffer
	WritePrometheus(&buf, m.Status())
	if bytes.Equal(buf.Bytes(), last) {
		return last, failing
	}
	slowAfter := m.SlowWrite
	if slowAfter <= 0 {
		slowAfter = DefaultSlowMetricsWrite
	}
	slow := time.AfterFunc(slowAfter, func() {
		m.Log.Warn().Str("path", m.Path).Dur("after", slowAfter).
			Msg("still writing the metrics file (slow or stuck file system); loads go on, the metrics wait")
	})
	write := m.write
	if write == nil {
		write = WriteFileAtomic
	}
	start := time.Now()
	err := write(m.Path, buf.Bytes())
	if !slow.Stop() {
		m.Log.Info().Str("path", m.Path).Dur("took", time.Since(start)).Err(err).Msg("slow metrics write returned")
	}
	switch {
	case err != nil && err.Error() != failing:
		m.Log.Error().Err(err).Msg("cannot write the metrics file; trying again every interval")
		return last, err.Error()
	case err != nil:
		return last, failing
	case failing != "":
		m.Log.Info().Str("path", m.Path).Msg("metrics file written again")
	}
	return buf.Bytes(), ""
}

// WriteFileAtomic replaces path with data through a temporary file in
// the same directory and a rename, so a reader never sees half a file and
// a symlink planted at a predictable temporary name is never followed
// (os.CreateTemp: O_EXCL, a random name). The temporary name starts with a dot
// and does not end in .prom, so the textfile collector never reads it.
// There is no fsync: after a crash the daemon writes the file anew.
func WriteFileAtomic(path string, data []byte) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".*.tmp")
	if err != nil {
		return metricsFileError(path, "create a temporary file", err)
	}
	tmp := f.Name()
	step := "write"
	_, err = f.Write(data)
	if err == nil {
		// Readable by the collector, whatever the daemon's umask.
		step, err = "chmod", f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		step, err = "close", cerr
	}
	if err == nil {
		step, err = "rename", os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return metricsFileError(path, step, err)
	}
	return nil
}

// metricsFileError names the file and the step, not the temporary file's
// random name: the same failure reads the same every time, so it is
// logged once.
func metricsFileError(path, step string, err error) error {
	var pe *os.PathError
	var le *os.LinkError
	switch {
	case errors.As(err, &pe):
		err = pe.Err
	case errors.As(err, &le):
		err = le.Err
	}
	return fmt.Errorf("%s: %s: %w", path, step, err)
}
