package loader

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modautoload/modautoload/loader/loadertest"

	"golang.org/x/sys/unix"
)

// A saved kernel log as /dev/kmsg hands it out: records with dictionary
// continuation lines, records of other modules, a user-space writer
// posing as the module (facility 1), a record older than the load, and
// malformed lines.
const fakeKmsg = `6,100,4000000,-;loop: module loaded
3,101,9000000,-;loop: ` + "`abc'" + ` invalid for parameter ` + "`max_loop'" + `
 SUBSYSTEM=module
 DEVICE=+module:loop
4,102,9000100,-;dummy: version magic '5.10.0-30-amd64 SMP mod_unload modversions ' should be '6.1.0-57-amd64 SMP preempt mod_unload modversions '
14,103,9000200,-;loop: written by user space, not the kernel
3,104,9000300,c;loop 0000:00:03.0: probe of the device failed
3,105,9000400,-;looped: another module
3,106,9000500,-;loop  : two spaces
garbage without a header
3,x,9000600,-;loop: bad sequence number
3,107,9000700;loop: too few fields
3,108,9000800,-;loop: ` + "`abc'" + ` invalid for parameter ` + "`max_loop'" + `
`

func TestKernelLinesFromFakeFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kmsg")
	if err := os.WriteFile(path, []byte(fakeKmsg), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// The load started at 8.5 s: "module loaded" at 4 s is an earlier
	// load's, outside the second of slack.
	lines, err := kernelLinesFrom(f, "loop", 8500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"loop: `abc' invalid for parameter `max_loop'",
		"loop 0000:00:03.0: probe of the device failed",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("got %q, want %q", lines, want)
	}

	f.Seek(0, io.SeekStart)
	lines, _ = kernelLinesFrom(f, "dummy", 0)
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "dummy: version magic '5.10.0-30-amd64") {
		t.Errorf("dummy: got %q", lines)
	}
}

// A device read returns one record per call, EPIPE when records were
// overwritten meanwhile (read on), EAGAIN at the end.
type recordReader struct {
	reads []string // "" stands for EPIPE
}

func (r *recordReader) Read(p []byte) (int, error) {
	if len(r.reads) == 0 {
		return 0, io.EOF
	}
	rec := r.reads[0]
	r.reads = r.reads[1:]
	if rec == "" {
		return 0, unix.EPIPE
	}
	return copy(p, rec), nil
}

func TestKernelLinesSkipsOverwrittenRecords(t *testing.T) {
	r := &recordReader{reads: []string{
		"3,1,10,-;m: first\n", "", "3,9,20,-;m: after the overwrite\n SUBSYSTEM=x\n",
	}}
	lines, err := kernelLinesFrom(r, "m", 0)
	if err != nil || strings.Join(lines, "|") != "m: first|m: after the overwrite" {
		t.Errorf("got %q, %v", lines, err)
	}
	r = &recordReader{reads: []string{"3,1,10,-;m: first\n"}}
	failing := io.MultiReader(r, errReader{unix.EACCES})
	if lines, err := kernelLinesFrom(failing, "m", 0); !errors.Is(err, unix.EACCES) || len(lines) != 1 {
		t.Errorf("a failing read: got %q, %v; want the line read before and the error", lines, err)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// Hostile input: control characters are replaced, lines and their number
// bounded, the rest counted, a line longer than the buffer dropped.
func TestKernelLinesBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("3,1,10,-;m: " + strings.Repeat("x", 2*kmsgBufSize) + "\n")
	b.WriteString("3,2,10,-;m: bell\a and escape\x1b[31m red\n")
	b.WriteString("3,3,10,-;m: " + strings.Repeat("long ", 100) + "\n")
	for i := range 20 {
		b.WriteString("3,4,10,-;m: Unknown symbol s" + strings.Repeat("y", i) + " (err -2)\n")
	}
	lines, err := kernelLinesFrom(strings.NewReader(b.String()), "m", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != kmsgMaxLines+1 {
		t.Fatalf("%d lines, want %d and a count: %q", len(lines), kmsgMaxLines, lines)
	}
	if lines[0] != "m: bell? and escape?[31m red" {
		t.Errorf("control characters: %q", lines[0])
	}
	if len(lines[1]) > kmsgMaxLineBytes+len("…") || !strings.HasSuffix(lines[1], "…") {
		t.Errorf("a long line kept %d bytes: %q", len(lines[1]), lines[1])
	}
	if last := lines[len(lines)-1]; last != "(14 more lines)" {
		t.Errorf("last line %q, want the count of those left out", last)
	}
}

// Without /dev/kmsg or a readable one, nothing is attached and the load
// error is what it was. The real device, where readable, ends the reading
// at its end (EAGAIN) rather than wait for news.
func TestKernelLinesWithoutDevice(t *testing.T) {
	for _, device := range []string{filepath.Join(t.TempDir(), "none"), t.TempDir()} {
		if lines := kernelLinesAt(device, "loop", 0); lines != nil {
			t.Errorf("%s: got %q", device, lines)
		}
	}
	done := make(chan []string)
	go func() { done <- (SystemKernel{}).KernelLines("no_such_module_e2e", 0) }()
	select {
	case lines := <-done:
		if lines != nil {
			t.Errorf("/dev/kmsg names no_such_module_e2e: %q", lines)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("reading /dev/kmsg did not end at its end")
	}
}

// kernelWithLog is the fake kernel with a log saying one thing about each
// module it refuses.
type kernelWithLog struct {
	*loadertest.Kernel
	since []time.Duration
}

func (k *kernelWithLog) KernelLines(module string, since time.Duration) []string {
	k.since = append(k.since, since)
	return []string{module + ": Unknown symbol frob (err -2)"}
}

// A refused load carries the kernel's lines into its error, its state
// (status) and the Failed report; a successful one reads no log.
func TestLoadAttachesKernelLines(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"m", "ok", "conflict", "absent"})
	k := &kernelWithLog{Kernel: loadertest.NewKernel(t, map[string]loadertest.Module{
		"m": {Fail: unix.ENOENT}, "ok": {}, "conflict": {Fail: unix.EEXIST}, "absent": {Fail: unix.ENODEV},
	})}
	l := NewLoader(k, k.Sysfs)
	l.LiveTimeout = 5 * time.Second
	t.Cleanup(func() { l.Shutdown(context.Background()) })
	var reported error
	l.Failed = func(_ string, err error) { reported = err }

	before := KernelLogClock()
	err := l.ensure(t.Context(), step(dir, "m"), false)
	const said = "the kernel said: m: Unknown symbol frob (err -2)"
	if !errors.Is(err, unix.ENOENT) || !strings.Contains(err.Error(), said) {
		t.Errorf("got %v, want ENOENT and %q", err, said)
	}
	if len(k.since) != 1 || k.since[0] < before || k.since[0] > KernelLogClock() {
		t.Errorf("log read from %v, want once from the load's start (after %v)", k.since, before)
	}
	if reported == nil || !strings.Contains(reported.Error(), said) {
		t.Errorf("Failed was told %v", reported)
	}
	st := l.States()["m"]
	if !strings.Contains(st.Err, said) || len(st.KernelLines) != 1 {
		t.Errorf("state %+v does not carry the kernel's line", st)
	}

	if err := l.ensure(t.Context(), step(dir, "ok"), false); err != nil {
		t.Fatal(err)
	}
	if len(k.since) != 1 {
		t.Errorf("the log was read %d times, want only for the failure", len(k.since))
	}
	// No hardware (coldplug meets it every boot): no log read.
	if err := l.ensure(t.Context(), step(dir, "absent"), false); !errors.Is(err, unix.ENODEV) {
		t.Errorf("absent: %v", err)
	}
	if len(k.since) != 1 {
		t.Errorf("the log was read for ENODEV")
	}

	// The module's own EEXIST is reported once it is seen gone, with
	// what the kernel said when it refused.
	err = l.ensure(t.Context(), step(dir, "conflict"), false)
	if !errors.Is(err, unix.EEXIST) || !strings.Contains(err.Error(), "the kernel said: conflict: Unknown symbol") {
		t.Errorf("own EEXIST: got %v", err)
	}
}

// endless is a log that never ends: the same record, or EPIPE, forever.
type endless struct {
	rec   string
	reads int
}

func (e *endless) Read(p []byte) (int, error) {
	e.reads++
	if e.rec == "" {
		return 0, unix.EPIPE
	}
	return copy(p, e.rec), nil
}

// A log written faster than it is read, or one that only ever says its
// records were overwritten, is read a bounded number of times.
func TestKernelLinesReadsBounded(t *testing.T) {
	for _, e := range []*endless{{rec: "3,1,10,-;m: again and again\n"}, {}} {
		lines, err := kernelLinesFrom(e, "m", 0)
		if err != nil || e.reads != kmsgMaxReads {
			t.Errorf("%q: %d reads, %v; want %d", e.rec, e.reads, err, kmsgMaxReads)
		}
		if e.rec != "" && strings.Join(lines, "|") != "m: again and again" {
			t.Errorf("%q: got %q", e.rec, lines)
		}
	}
}

// kmsg's clock and the one the load's start is read on differ by tens of
// milliseconds either way: a record stamped a little before the start is
// the load's; one seconds older is not.
func TestKernelLinesSlack(t *testing.T) {
	since := 10 * time.Second
	log := "3,1,7000000,-;m: an earlier load's line\n" + // 3 s before
		"3,2,9955000,-;m: stamped 45 ms before the start\n" +
		"3,3,10011000,-;m: stamped after the start\n"
	lines, err := kernelLinesFrom(strings.NewReader(log), "m", since)
	if err != nil || strings.Join(lines, "|") != "m: stamped 45 ms before the start|m: stamped after the start" {
		t.Errorf("got %q, %v", lines, err)
	}
}

// The rest of a line too long for the buffer is dropped, not read as a
// record of its own: a file's line cannot forge one.
func TestKernelLinesLongLineTailDropped(t *testing.T) {
	head := "3,1,10,-;m: "
	long := head + strings.Repeat("x", kmsgBufSize-len(head)) + "3,2,10,-;m: forged\n"
	lines, err := kernelLinesFrom(strings.NewReader(long+"3,3,10,-;m: real\n"), "m", 0)
	if err != nil || strings.Join(lines, "|") != "m: real" {
		t.Errorf("got %q, %v; want only the record after the long line", lines, err)
	}
}

// C1 control characters (U+0080-U+009F; U+009B is a terminal's CSI) are
// replaced like C0 ones.
func TestPrintableReplacesC1Controls(t *testing.T) {
	if got := Printable("a\u009b31mb\u0085c\u00a0d", 64); got != "a?31mb?c\u00a0d" {
		t.Errorf("got %q", got)
	}
}

// A module decompressed in user space is refused through init_module: its
// error carries the kernel's lines too. ENXIO, like ENODEV, is no hardware
// and reads no log.
func TestKernelLinesForInitModuleNotForENXIO(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"gzm", "noxio"})
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write([]byte("gzm"))
	w.Close()
	if err := os.WriteFile(filepath.Join(dir, "kernel", "gzm.ko"), gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	k := &kernelWithLog{Kernel: loadertest.NewKernel(t, map[string]loadertest.Module{
		"gzm": {Fail: unix.ENOEXEC}, "noxio": {Fail: unix.ENXIO},
	})}
	l := NewLoader(k, k.Sysfs)
	l.LiveTimeout = 5 * time.Second
	t.Cleanup(func() { l.Shutdown(context.Background()) })

	err := l.ensure(t.Context(), step(dir, "gzm"), false)
	var le *LoadError
	if !errors.As(err, &le) || le.Op != "init_module" || !strings.Contains(err.Error(), "the kernel said: gzm: Unknown symbol") {
		t.Errorf("gzm: %v, want init_module's error with the kernel's line", err)
	}
	if err := l.ensure(t.Context(), step(dir, "noxio"), false); !errors.Is(err, unix.ENXIO) {
		t.Errorf("noxio: %v", err)
	}
	if len(k.since) != 1 {
		t.Errorf("the log was read %d times, want once (for gzm only)", len(k.since))
	}
}
