package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Scenario is one guest run.
type Scenario struct {
	// Script is the test's logic: a busybox sh script run by /init after
	// /proc, /sys, /dev (devtmpfs), /tmp and /run are mounted, with PATH set
	// to busybox's applets and stdin from /dev/null. It reports with
	// `echo "E2E:KEY value"` lines; its exit status becomes Result.ExitCode.
	Script string
	// Files are added to the guest, e.g. a binary from BuildBinary.
	Files []File
	// Devices are qemu -device values, e.g. "virtio-rng-pci".
	Devices []string
	// QEMUArgs are extra qemu arguments, e.g. "-netdev", "user,id=n0,restrict=on".
	QEMUArgs []string
	// KernelArgs are appended to the kernel command line.
	KernelArgs []string
	MemoryMiB  int           // guest memory; default 2048 (the initramfs alone unpacks to ~400 MB)
	CPUs       int           // vCPUs; default 2
	Timeout    time.Duration // whole run, boot included; default 120 s
	QMP        bool          // start a QMP server; see VM.QMP
	// Arch is the guest's architecture; nil is the x86-64 guest. Files
	// built for it come from BuildBinaryFor.
	Arch *Arch
	// Initrd, when set, is a complete initramfs the guest boots instead
	// of the rig's (an image made by a distribution's generator); Script
	// and Files must then be empty, and the guest itself must print
	// E2E:DONE before it powers off.
	Initrd string
}

// File is a file added to the guest.
type File struct {
	Guest string      // absolute guest path; missing directories are created
	Host  string      // host file to copy; if empty, Data is the content
	Data  []byte      // content when Host is empty
	Mode  fs.FileMode // permissions; zero means the host file's, or 0644 for Data
}

// Marker is one "E2E:<Key> <Value>" line printed by the guest.
type Marker struct {
	Key, Value string
}

// Result is what a finished guest run produced.
type Result struct {
	Log      string        // whole console output, kernel messages included, without \r
	Markers  []Marker      // every E2E line, in order
	ExitCode int           // exit status of Scenario.Script
	Duration time.Duration // from qemu's start to its exit
}

// Lines returns the values of all E2E:<key> lines, in order.
func (r *Result) Lines(key string) []string {
	return values(r.Markers, key)
}

// Value returns the value of the last E2E:<key> line, or "" if there is none.
func (r *Result) Value(key string) string {
	v := r.Lines(key)
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

func values(markers []Marker, key string) []string {
	var v []string
	for _, m := range markers {
		if m.Key == key {
			v = append(v, m.Value)
		}
	}
	return v
}

// T is the part of testing.TB the rig needs, so that a program (the demo)
// can boot guests too.
type T interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Cleanup(func())
	TempDir() string
}

// VM is a running guest.
type VM struct {
	t          T
	timeout    time.Duration
	ctx        context.Context // ends when the timeout expires or the test ends
	cancel     context.CancelFunc
	qmp        *QMP
	initrdTime time.Duration
	start      time.Time

	mu      sync.Mutex
	log     strings.Builder
	markers []Marker
	changed chan struct{} // closed and replaced when a marker arrives or output ends
	lockup  string        // the guest kernel's first soft lockup report, if any

	done     chan struct{} // closed once qemu has exited; the fields below are then final
	stderr   bytes.Buffer
	waitErr  error
	duration time.Duration
}

// Boot runs a scenario to completion and returns its result. The test fails
// (with the tail of the guest's console) if the guest times out or does not
// report E2E:DONE. A guest that did not finish and whose kernel reported
// a soft lockup is booted once more: under TCG on a loaded host a guest's
// CPU can stall for minutes (seen once while the script enabled
// tracepoints, before modautoload ran), which says nothing of the code
// under test. A guest that finished is judged as it is, lockup or not;
// a second failure fails the test. Call it from the test's goroutine.
func Boot(ctx context.Context, t T, sc Scenario) *Result {
	t.Helper()
	vm := Start(ctx, t, sc)
	if vm.lockedUp() != "" && ctx.Err() == nil {
		t.Logf("e2e: the guest did not finish (%s); booting it once more%s", vm.exitReason(), vm.tail())
		vm = Start(ctx, t, sc)
	}
	return vm.Wait()
}

// Start boots a scenario and returns while the guest runs, for tests that
// interact with it (Await, QMP) before calling Wait. The guest is killed
// when the test ends.
func Start(ctx context.Context, t T, sc Scenario) *VM {
	t.Helper()
	k, base, qemu, console, machine := guestFor(t, sc.Arch)
	if sc.MemoryMiB == 0 {
		sc.MemoryMiB = 2048
	}
	if sc.CPUs == 0 {
		sc.CPUs = 2
	}
	if sc.Timeout == 0 {
		sc.Timeout = 120 * time.Second
	}

	dir := t.TempDir()
	t0 := time.Now()
	initrd := filepath.Join(dir, "initrd.cpio")
	switch {
	case sc.Initrd == "":
		if err := writeInitrd(initrd, base, sc); err != nil {
			t.Fatalf("e2e: initrd: %v", err)
		}
	case sc.Script != "" || len(sc.Files) > 0:
		t.Fatalf("e2e: a Scenario with Initrd takes no Script or Files")
	default:
		initrd = sc.Initrd
	}
	vm := &VM{t: t, timeout: sc.Timeout, initrdTime: time.Since(t0), changed: make(chan struct{}), done: make(chan struct{})}

	args := append(machine,
		"-accel", "tcg", // KVM guests hang at "Booting from ROM" on these machines
		"-m", strconv.Itoa(sc.MemoryMiB),
		"-smp", strconv.Itoa(sc.CPUs),
		"-nographic", "-nodefaults", "-serial", "stdio", "-no-reboot",
		"-kernel", k.Vmlinuz,
		"-initrd", initrd,
		// panic=-1 reboots at once on a panic (e.g. /init dying), which
		// -no-reboot turns into qemu exiting instead of hanging.
		"-append", strings.Join(append([]string{"console=" + console, "quiet", "loglevel=3", "panic=-1"}, sc.KernelArgs...), " "),
	)
	var sock string
	if sc.QMP {
		// Unix socket paths are limited to 108 bytes; t.TempDir can be longer.
		sockDir, err := os.MkdirTemp("", "e2e-qmp-")
		if err != nil {
			t.Fatalf("e2e: %v", err)
		}
		t.Cleanup(func() { os.RemoveAll(sockDir) })
		sock = filepath.Join(sockDir, "qmp.sock")
		args = append(args, "-qmp", "unix:"+sock+",server=on,wait=off")
	}
	for _, d := range sc.Devices {
		args = append(args, "-device", d)
	}
	args = append(args, sc.QEMUArgs...)

	vm.ctx, vm.cancel = context.WithTimeout(ctx, sc.Timeout)
	cmd := exec.CommandContext(vm.ctx, qemu, args...)
	cmd.Stderr = &vm.stderr
	// Take qemu down with the test process even when it dies without
	// running cleanups (go test -timeout, a kill), so no guest lingers.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("e2e: %v", err)
	}
	vm.start = time.Now()
	if err := cmd.Start(); err != nil {
		vm.cancel()
		t.Fatalf("e2e: starting qemu: %v", err)
	}
	go vm.run(cmd, stdout)
	t.Cleanup(func() {
		vm.cancel()
		<-vm.done
		if vm.qmp != nil {
			vm.qmp.Close()
		}
	})
	if sc.QMP {
		if vm.qmp, err = dialQMP(vm.ctx, sock, vm.done); err != nil {
			vm.cancel()
			<-vm.done // so that the failure shows qemu's stderr
			t.Fatalf("e2e: %v%s", err, vm.tail())
		}
	}
	return vm
}

// guestFor returns what booting a guest of arch needs (nil: x86-64),
// preparing it first: the kernel, the base archive, the qemu binary, the
// console device and the arguments choosing the board.
func guestFor(t T, arch *Arch) (k *Kernel, base, qemu, console string, machine []string) {
	t.Helper()
	var err error
	if arch != nil {
		if tb, ok := t.(testing.TB); ok {
			RequireArch(tb, arch)
		}
		if k, base, err = arch.prepare(); err != nil {
			t.Fatalf("e2e: %s guest: %v", arch.Name, err)
		}
		return k, base, arch.qemu, arch.console, slices.Clone(arch.machine)
	}
	if tb, ok := t.(testing.TB); ok {
		Require(tb)
	}
	if k, err = kernelOnce(); err != nil {
		t.Fatalf("e2e: %v", err)
	}
	if base, err = baseOnce(); err != nil {
		t.Fatalf("e2e: %v", err)
	}
	return k, base, "qemu-system-x86_64", "ttyS0", nil
}

// run collects the console until qemu exits.
func (vm *VM) run(cmd *exec.Cmd, stdout io.Reader) {
	r := bufio.NewReader(stdout)
	for {
		line, err := r.ReadString('\n')
		if line != "" {
			vm.addLine(line)
		}
		if err != nil {
			break
		}
	}
	vm.waitErr = cmd.Wait()
	vm.duration = time.Since(vm.start)
	vm.mu.Lock()
	close(vm.changed)
	vm.changed = nil
	vm.mu.Unlock()
	close(vm.done)
}

func (vm *VM) addLine(line string) {
	line = strings.ReplaceAll(line, "\r", "")
	vm.mu.Lock()
	defer vm.mu.Unlock()
	vm.log.WriteString(line)
	if vm.lockup == "" && isSoftLockup(line) {
		vm.lockup = strings.TrimSpace(line)
	}
	if m, ok := parseMarker(line); ok {
		vm.markers = append(vm.markers, m)
		close(vm.changed)
		vm.changed = make(chan struct{})
	}
}

// parseMarker finds an E2E line. The marker need not start the line:
// kernel output can be written to the console in front of it.
func parseMarker(line string) (Marker, bool) {
	i := strings.Index(line, "E2E:")
	if i < 0 {
		return Marker{}, false
	}
	key, value, _ := strings.Cut(strings.TrimRight(line[i+4:], "\r\n"), " ")
	if key == "" || strings.IndexFunc(key, notKeyRune) >= 0 {
		return Marker{}, false
	}
	return Marker{Key: key, Value: strings.TrimSpace(value)}, true
}

// isSoftLockup recognises the watchdog's report of a CPU stuck in the
// kernel ("watchdog: BUG: soft lockup - CPU#0 stuck for 48s! [sh:94]").
func isSoftLockup(line string) bool {
	return strings.Contains(line, "BUG: soft lockup - CPU#")
}

// lockedUp waits for the guest to end and, if it did not print E2E:DONE,
// returns its kernel's soft lockup report; "" otherwise.
func (vm *VM) lockedUp() string {
	<-vm.done
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if len(values(vm.markers, "DONE")) > 0 {
		return ""
	}
	return vm.lockup
}

func notKeyRune(r rune) bool {
	return !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.')
}

// Await blocks until the guest prints an E2E:<key> line and returns its
// value; a key already printed returns at once. The test fails if the guest
// ends first. Call it from the test's goroutine.
func (vm *VM) Await(key string) string {
	vm.t.Helper()
	for {
		vm.mu.Lock()
		v := values(vm.markers, key)
		changed := vm.changed
		vm.mu.Unlock()
		if len(v) > 0 {
			return v[0]
		}
		if changed == nil {
			<-vm.done
			vm.t.Fatalf("e2e: guest ended without printing E2E:%s (%s)%s", key, vm.exitReason(), vm.tail())
		}
		<-changed
	}
}

// QMP returns the client of a guest started with Scenario.QMP set.
func (vm *VM) QMP() *QMP {
	vm.t.Helper()
	if vm.qmp == nil {
		vm.t.Fatal("e2e: VM.QMP needs Scenario.QMP")
	}
	return vm.qmp
}

// Wait waits for the guest to power off and returns its result. The test
// fails if the guest timed out or did not report E2E:DONE.
func (vm *VM) Wait() *Result {
	vm.t.Helper()
	<-vm.done
	vm.mu.Lock()
	res := &Result{Log: vm.log.String(), Markers: vm.markers, Duration: vm.duration}
	vm.mu.Unlock()
	done := values(res.Markers, "DONE")
	if len(done) == 0 {
		vm.t.Fatalf("e2e: guest did not finish (%s)%s", vm.exitReason(), vm.tail())
	}
	rc, ok := strings.CutPrefix(done[0], "rc=")
	code, err := strconv.Atoi(rc)
	if !ok || err != nil {
		vm.t.Fatalf("e2e: malformed E2E:DONE %q", done[0])
	}
	res.ExitCode = code
	vm.t.Logf("e2e: initrd written in %v, guest ran %v", vm.initrdTime.Round(time.Millisecond), res.Duration.Round(time.Millisecond))
	return res
}

// exitReason says why qemu ended, and names the guest kernel's first soft
// lockup report if it made one; only valid after done.
func (vm *VM) exitReason() string {
	why := "qemu exited"
	switch {
	case errors.Is(vm.ctx.Err(), context.DeadlineExceeded):
		why = fmt.Sprintf("timed out after %v", vm.timeout)
	case vm.waitErr != nil:
		why = "qemu: " + vm.waitErr.Error()
	}
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.lockup != "" {
		why += "; the guest's kernel reported " + strconv.Quote(vm.lockup)
	}
	return why
}

// tailLines is how much of the console a failure shows.
const tailLines = 200

// tail formats the end of the console, and qemu's stderr once it has
// exited, for a failure message.
func (vm *VM) tail() string {
	vm.mu.Lock()
	log := strings.TrimRight(vm.log.String(), "\n")
	vm.mu.Unlock()
	s := "\n--- no console output ---"
	if log != "" {
		lines := strings.Split(log, "\n")
		lines = lines[max(0, len(lines)-tailLines):]
		s = fmt.Sprintf("\n--- last %d console lines ---\n%s", len(lines), strings.Join(lines, "\n"))
	}
	select {
	case <-vm.done:
		if vm.stderr.Len() > 0 {
			s += "\n--- qemu stderr ---\n" + vm.stderr.String()
		}
	default:
	}
	return s
}

// initScript is the guest's /init. The scenario runs in its own shell so
// that an exit, a failure or even a syntax error in it still reaches the
// DONE marker and the power-off.
const initScript = `#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox mount -t tmpfs tmpfs /tmp
/bin/busybox mount -t tmpfs tmpfs /run
/bin/busybox --install -s
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
echo E2E:BOOTED
sh /e2e/scenario.sh </dev/null
echo "E2E:DONE rc=$?"
poweroff -f
`

// writeInitrd writes the guest's initramfs to path: a copy of the base
// archive followed by a small archive with /init, the scenario and its
// files. The kernel unpacks both in turn; later entries override earlier
// ones.
func writeInitrd(path, base string, sc Scenario) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	src, err := os.Open(base)
	if err != nil {
		return err
	}
	defer src.Close()
	// File-to-file io.Copy uses copy_file_range, so the ~400 MB stay in
	// the kernel. The base archive's length is a multiple of 4 (cpioWriter
	// pads everything), so the next archive starts where the kernel looks.
	if _, err := io.Copy(f, src); err != nil {
		return err
	}
	c := newCPIOWriter(f)
	for _, file := range sc.Files {
		if err := addFile(c, file); err != nil {
			return err
		}
	}
	if err := c.File("/e2e/scenario.sh", 0o755, []byte(sc.Script)); err != nil {
		return err
	}
	if err := c.File("/init", 0o755, []byte(initScript)); err != nil {
		return err
	}
	if err := c.Close(); err != nil {
		return err
	}
	return f.Close()
}

func addFile(c *cpioWriter, file File) error {
	if !filepath.IsAbs(file.Guest) {
		return fmt.Errorf("guest path %q is not absolute", file.Guest)
	}
	if file.Host != "" {
		if file.Data != nil {
			return fmt.Errorf("%s: both Host and Data set", file.Guest)
		}
		return c.CopyFile(file.Guest, file.Mode, file.Host)
	}
	mode := file.Mode
	if mode == 0 {
		mode = 0o644
	}
	return c.File(file.Guest, mode, file.Data)
}
