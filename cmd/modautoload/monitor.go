package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/modautoload/modautoload/daemon"
	"github.com/modautoload/modautoload/uevent"
)

const monitorHelp = `monitor [--json] [--rcvbuf BYTES]

Prints kernel uevents as they arrive, like udevadm monitor --kernel --property.
Messages not sent by the kernel are dropped, logged and counted. SIGINT or
SIGTERM ends it after logging the totals.`

func runMonitor(ctx context.Context, env *cliEnv, args []string) int {
	var (
		s       optSet
		logOpts logOptions
		jsonOut bool
		rcvbuf  = uevent.DefaultReadBuffer
	)
	s.boolVar(&jsonOut, 0, "json", "one JSON object per event instead of udevadm's text format")
	s.intVar(&rcvbuf, 0, "rcvbuf", "BYTES", "socket receive buffer (default 128 MiB)")
	logOpts.register(&s)
	rest, code := parseArgs(env, "monitor", monitorHelp, &s, args)
	if code >= 0 {
		return code
	}
	if len(rest) > 0 {
		fmt.Fprintf(env.stderr, "modautoload monitor: unexpected argument %q\n", rest[0])
		return 2
	}
	log, closeLog, err := logOpts.logger(env.stderr)
	if err != nil {
		fmt.Fprintf(env.stderr, "modautoload monitor: %v\n", err)
		return 2
	}
	defer closeLog.Close()

	l, granted, err := uevent.Listen(uevent.Config{ReadBuffer: rcvbuf})
	if err != nil {
		log.Error().Err(err).Msg("cannot listen for uevents")
		return 1
	}
	defer l.Close()
	log.Info().Int("rcvbuf", granted).Msg("listening for kernel uevents")
	err = monitor(ctx, l, env.stdout, jsonOut, log)
	logStats(log, l.Stats())
	if err != nil {
		log.Error().Err(err).Msg("monitor stopped")
		return 1
	}
	return 0
}

// monitor prints events until ctx ends. Dropped messages and overruns are
// logged and the stream goes on.
func monitor(ctx context.Context, l *uevent.Listener, out io.Writer, jsonOut bool, log zerolog.Logger) error {
	w := bufio.NewWriter(out)
	for {
		ev, ok, err := daemon.NextEvent(ctx, l, log, nil)
		if !ok {
			return err
		}
		if jsonOut {
			writeEventJSON(w, &ev, monotonicNow())
		} else {
			writeEventText(w, &ev, monotonicNow())
		}
		// Flush per event: monitor output is read live, often through a pipe.
		if err := w.Flush(); err != nil {
			return err
		}
	}
}

func logStats(log zerolog.Logger, s uevent.Stats) {
	log.Info().Uint64("received", s.Received).Uint64("rejected", s.Rejected).Uint64("malformed", s.Malformed).
		Uint64("defective", s.Defective).Uint64("overruns", s.Overruns).Msg("uevent totals")
}

// monotonicNow is the clock udevadm monitor stamps kernel events with.
func monotonicNow() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// writeEventText prints an event as `udevadm monitor --kernel --property`
// does: a header line, the properties, a blank line.
func writeEventText(w *bufio.Writer, ev *uevent.Event, at time.Duration) {
	fmt.Fprintf(w, "KERNEL[%d.%06d] %-8s %s (%s)\n", at/time.Second, (at%time.Second)/time.Microsecond,
		ev.Action, ev.DevPath, ev.Subsystem)
	for _, p := range ev.Props {
		fmt.Fprintf(w, "%s=%s\n", p.Key, p.Value)
	}
	w.WriteByte('\n')
}

// writeEventJSON prints one object per line. Properties keep the kernel's
// order, which a map would lose, so the object is written by hand.
func writeEventJSON(w *bufio.Writer, ev *uevent.Event, at time.Duration) {
	fmt.Fprintf(w, `{"monotonic_usec":%d,"action":%s,"devpath":%s,"subsystem":%s,"seqnum":%d`,
		at/time.Microsecond, jsonString(ev.Action), jsonString(ev.DevPath), jsonString(ev.Subsystem), ev.Seqnum)
	w.WriteString(`,"properties":{`)
	for i, p := range ev.Props {
		if i > 0 {
			w.WriteByte(',')
		}
		w.WriteString(jsonString(p.Key) + ":" + jsonString(p.Value))
	}
	w.WriteByte('}')
	if len(ev.Defects) > 0 {
		w.WriteString(`,"defects":[`)
		for i, d := range ev.Defects {
			if i > 0 {
				w.WriteByte(',')
			}
			w.WriteString(jsonString(d.String()))
		}
		w.WriteByte(']')
	}
	w.WriteString("}\n")
}

func jsonString(s string) string {
	b, _ := json.Marshal(s) // a string always marshals
	return string(b)
}
