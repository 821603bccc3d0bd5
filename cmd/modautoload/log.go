package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// logOptions are the logging flags of every subcommand that logs: all but
// the daemon's clients, which print an answer.
type logOptions struct {
	format string // auto, console, json
	level  string
	target string // stderr, kmsg
}

func (o *logOptions) register(s *optSet) {
	o.format, o.level, o.target = "auto", "info", "stderr"
	s.stringVar(&o.format, 0, "log-format", "FORMAT", "auto (console on a terminal, JSON otherwise), console, json")
	s.stringVar(&o.level, 0, "log-level", "LEVEL", "least severe level logged: debug, info (default), warn, error")
	s.stringVar(&o.target, 0, "log-target", "TARGET", "stderr (default), or kmsg: /dev/kmsg, for an initramfs without syslog")
}

// logger builds the process logger from the flags.
func (o *logOptions) logger(stderr io.Writer) (zerolog.Logger, io.Closer, error) {
	level, err := zerolog.ParseLevel(o.level)
	if err != nil || level == zerolog.NoLevel {
		return zerolog.Logger{}, nil, fmt.Errorf("--log-level: unknown level %q", o.level)
	}
	if o.format != "auto" && o.format != "console" && o.format != "json" {
		return zerolog.Logger{}, nil, fmt.Errorf("--log-format: unknown format %q", o.format)
	}
	var w io.Writer
	var closer io.Closer = io.NopCloser(nil)
	switch o.target {
	case "stderr":
		w = stderr
		if o.format == "console" || o.format == "auto" && isTerminal(stderr) {
			w = zerolog.ConsoleWriter{Out: stderr, TimeFormat: time.TimeOnly + ".000"}
		}
	case "kmsg":
		f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return zerolog.Logger{}, nil, fmt.Errorf("--log-target kmsg: %w", err)
		}
		// dmesg is read by people: console format unless JSON is asked for.
		w, closer = newKmsgWriter(f, o.format == "json"), f
	default:
		return zerolog.Logger{}, nil, fmt.Errorf("--log-target: unknown target %q", o.target)
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger(), closer, nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// kmsgRecordMax keeps a record, newline included, below the kernel's
// per-record limit (LOG_LINE_MAX, 1024 minus the prefix) so nothing is
// refused with EINVAL.
const kmsgRecordMax = 975

// kmsgWriter writes each log event as one /dev/kmsg record, with the syslog
// priority of its level so dmesg can filter it.
type kmsgWriter struct {
	mu      sync.Mutex
	out     io.Writer
	json    bool
	buf     bytes.Buffer
	console zerolog.ConsoleWriter
}

func newKmsgWriter(out io.Writer, json bool) *kmsgWriter {
	k := &kmsgWriter{out: out, json: json}
	// The kernel stamps every record; ours would only repeat it.
	k.console = zerolog.ConsoleWriter{Out: &k.buf, NoColor: true, PartsExclude: []string{zerolog.TimestampFieldName}}
	return k
}

func (k *kmsgWriter) Write(p []byte) (int, error) { return k.WriteLevel(zerolog.InfoLevel, p) }

func (k *kmsgWriter) WriteLevel(level zerolog.Level, p []byte) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.buf.Reset()
	fmt.Fprintf(&k.buf, "<%d>modautoload[%d]: ", syslogPriority(level), os.Getpid())
	if k.json {
		k.buf.Write(p)
	} else if _, err := k.console.Write(p); err != nil {
		return 0, err
	}
	rec := bytes.TrimRight(k.buf.Bytes(), "\n")
	if len(rec) > kmsgRecordMax {
		rec = rec[:kmsgRecordMax]
	}
	// The newline finalizes the record: without it the kernel keeps the
	// record open for a continuation and dmesg does not show it yet.
	rec = append(rec, '\n')
	if _, err := k.out.Write(rec); err != nil {
		return 0, err
	}
	return len(p), nil
}

// syslogPriority maps a level to a syslog priority with facility daemon (3),
// as kernel-adjacent daemons log to kmsg.
func syslogPriority(level zerolog.Level) int {
	const facilityDaemon = 3 << 3
	switch {
	case level >= zerolog.FatalLevel:
		return facilityDaemon | 2 // crit
	case level == zerolog.ErrorLevel:
		return facilityDaemon | 3
	case level == zerolog.WarnLevel:
		return facilityDaemon | 4
	case level == zerolog.InfoLevel:
		return facilityDaemon | 6
	default:
		return facilityDaemon | 7
	}
}
