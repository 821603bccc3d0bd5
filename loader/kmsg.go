package loader

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// KernelLog is implemented by a Kernel that can say what the kernel logged
// about a module: after a refused load, the loader attaches those lines to
// its LoadError ("Unknown symbol", "version magic ... should be ...").
type KernelLog interface {
	// KernelLines returns the kernel's lines naming module logged at or
	// after since, on the clock of KernelLogClock; nil when there are none
	// or the log cannot be read.
	KernelLines(module string, since time.Duration) []string
}

// Bounds on what a failed load reads of the kernel log and keeps of it.
// The kernel writes one record per line of printk; a module missing
// hundreds of symbols writes hundreds of lines, of which the first say
// enough.
const (
	kmsgMaxReads     = 1 << 14 // reads per failure (a record each); the ring holds a few thousand
	kmsgMaxLines     = 8       // lines kept
	kmsgMaxLineBytes = 240     // of each line
	kmsgBufSize      = 8 << 10 // one read; the kernel refuses (EINVAL) a buffer smaller than a record
)

// kmsg's timestamps are the kernel's local_clock (sched_clock): a raw
// hardware counter, not slewed by NTP, stopped in suspend. The user-space
// clock of that kind is CLOCK_MONOTONIC_RAW; CLOCK_MONOTONIC is slewed
// (it drifts from kmsg by NTP's correction, ~1 s a day at 10 ppm) and
// CLOCK_BOOTTIME counts suspend too. kmsgSlack widens the window back in
// time for what still differs: in the rig (TCG, hpet clocksource) a
// record was stamped 45 ms before, to 11 ms after, a CLOCK_MONOTONIC_RAW
// reading taken before it was written.
const kmsgSlack = time.Second

// KernelLogClock reads CLOCK_MONOTONIC_RAW, the clock kmsg's timestamps
// are compared with (a vDSO call, no system call).
func KernelLogClock() time.Duration {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC_RAW, &ts) != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// KernelLines reads /dev/kmsg for the lines naming module since the given
// time. It opens the device only now, after a failure, so a load that
// succeeds costs nothing; without a readable /dev/kmsg (a container, an
// unprivileged test, dmesg_restrict) the answer is nil.
func (SystemKernel) KernelLines(module string, since time.Duration) []string {
	return kernelLinesAt("/dev/kmsg", module, since)
}

func kernelLinesAt(device, module string, since time.Duration) []string {
	fd, err := unix.Open(device, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	lines, _ := kernelLinesFrom(kmsgDevice(fd), module, since)
	return lines
}

// kmsgDevice reads the raw file descriptor: through os.File a nonblocking
// descriptor would be waited on in the poller rather than end at EAGAIN.
type kmsgDevice int

func (d kmsgDevice) Read(p []byte) (int, error) {
	for {
		n, err := unix.Read(int(d), p)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			return 0, io.EOF // nothing newer: the end of the log
		case err != nil:
			return 0, err
		case n == 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// kmsgRecord is one record of the kernel log.
type kmsgRecord struct {
	facility int           // 0 for the kernel's own; writers to /dev/kmsg cannot claim it
	time     time.Duration // the kernel's local clock
	text     string        // the first line, as the kernel escaped it
}

// kernelLinesFrom reads kmsg records from r and returns the kernel's own
// (facility 0) lines naming module, logged at or after since, sanitized
// and bounded, with a last line counting those left out. EPIPE (records
// overwritten while we read) skips on; other read errors end the reading
// with what was found.
func kernelLinesFrom(r io.Reader, module string, since time.Duration) ([]string, error) {
	var lines []string
	seen := map[string]bool{} // a retried load logs the same lines again
	more := 0
	err := scanKmsg(r, func(rec kmsgRecord) {
		if rec.facility != 0 || rec.time < since-kmsgSlack || !namesModule(rec.text, module) {
			return
		}
		line := Printable(rec.text, kmsgMaxLineBytes)
		switch {
		case seen[line]:
		case len(lines) < kmsgMaxLines:
			seen[line] = true
			lines = append(lines, line)
		default:
			more++
		}
	})
	if more > 0 {
		lines = append(lines, "("+strconv.Itoa(more)+" more lines)")
	}
	return lines, err
}

// scanKmsg calls visit for each well-formed record read from r, in at
// most kmsgMaxReads reads. A read of /dev/kmsg returns one whole record; a
// file (tests, a saved log) may return any part of its text, so records
// are split at line ends, continuation lines (a leading space: the
// record's dictionary) skipped, and a line longer than the buffer dropped.
func scanKmsg(r io.Reader, visit func(kmsgRecord)) error {
	buf := make([]byte, kmsgBufSize)
	held := 0         // bytes of an unfinished line at the start of buf
	dropping := false // inside a line too long for buf
	for range kmsgMaxReads {
		n, err := r.Read(buf[held:])
		if errors.Is(err, unix.EPIPE) {
			continue // the reader's position moved to the oldest record kept
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		data := buf[:held+n]
		for {
			line, rest, ok := bytes.Cut(data, []byte{'\n'})
			if !ok {
				break
			}
			data = rest
			if dropping {
				dropping = false
				continue
			}
			if rec, ok := parseKmsgLine(line); ok {
				visit(rec)
			}
		}
		held = copy(buf, data)
		if held == len(buf) {
			held, dropping = 0, true
		}
	}
	return nil
}

// parseKmsgLine parses a record's first line,
// "PRIO,SEQ,TIME_USEC,FLAGS[,...];MESSAGE"; false for a continuation line
// or anything malformed.
func parseKmsgLine(line []byte) (kmsgRecord, bool) {
	head, text, ok := bytes.Cut(line, []byte{';'})
	if !ok || len(head) == 0 || head[0] == ' ' {
		return kmsgRecord{}, false
	}
	fields := bytes.SplitN(head, []byte{','}, 4)
	if len(fields) != 4 {
		return kmsgRecord{}, false
	}
	prio, err1 := strconv.ParseUint(string(fields[0]), 10, 16)
	_, err2 := strconv.ParseUint(string(fields[1]), 10, 64) // the sequence number: checked, not needed
	usec, err3 := strconv.ParseUint(string(fields[2]), 10, 63)
	if err1 != nil || err2 != nil || err3 != nil || usec > uint64(1<<63-1)/uint64(time.Microsecond) {
		return kmsgRecord{}, false
	}
	return kmsgRecord{facility: int(prio >> 3), time: time.Duration(usec) * time.Microsecond, text: string(text)}, true
}

// namesModule reports whether a kernel line is about module: the
// kernel's module loader and pr_fmt(KBUILD_MODNAME) start with "NAME: ",
// a driver's dev_printk with "NAME DEVICE: ".
func namesModule(text, module string) bool {
	rest, ok := strings.CutPrefix(text, module)
	if !ok {
		return false
	}
	if strings.HasPrefix(rest, ": ") {
		return true
	}
	dev, ok := strings.CutPrefix(rest, " ")
	if !ok {
		return false
	}
	colon := strings.Index(dev, ": ")
	return colon > 0 && !strings.ContainsRune(dev[:colon], ' ')
}

// Printable makes text from outside (a kernel line, a module name a
// request_module caller chose) safe to print on a terminal or log:
// control characters and invalid UTF-8 replaced (the kernel escapes them,
// a fake log need not), at most max bytes, cut on a character.
func Printable(s string, max int) string {
	var b strings.Builder
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			r = '?'
		}
		if b.Len()+utf8.RuneLen(r) > max {
			b.WriteString("…")
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// kernelSaid attaches the kernel's lines about the module to a load the
// kernel refused, when the Kernel can read its log. Not for "no such
// hardware" (ENODEV, ENXIO): coldplug meets a few of those on every boot
// (drivers probing for what is absent), they are logged at debug, and a
// read of a full log costs 8 ms under emulation.
func (l *Loader) kernelSaid(err error, module string, since time.Duration) error {
	klog, ok := l.Kernel.(KernelLog)
	var le *LoadError
	if !ok || !errors.As(err, &le) || (le.Op != "finit_module" && le.Op != "init_module") ||
		errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) {
		return err
	}
	le.KernelLines = klog.KernelLines(module, since)
	return err
}
