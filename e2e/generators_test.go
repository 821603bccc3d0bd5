package e2e

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The distributions' initramfs generators (Debian's initramfs-tools and
// dracut) build real images with modautoload's hook on the host, against
// the rig's kernel, and the guest boots each to an ext4 root on a
// virtio-blk disk found by root=LABEL=, beside the same generator's
// default image (udev loads the modules) in the same run.

// debBundle returns a directory holding the Debian packages pkgs (their
// candidate versions) unpacked with dpkg -x and merged into a /usr
// layout, so that it can lie over the host's /usr. It is cached in
// CacheDir under name and a hash of the packages' versions.
func debBundle(t *testing.T, name string, pkgs []string) string {
	t.Helper()
	ctx := t.Context()
	var key strings.Builder
	for _, p := range pkgs {
		out, err := exec.CommandContext(ctx, "apt-cache", "show", "--no-all-versions", p).Output()
		if err != nil {
			unmet(t, "apt-cache show %s: %v (apt-get update?)", p, err)
		}
		v := regexp.MustCompile(`(?m)^Version: (\S+)$`).FindSubmatch(out)
		if v == nil {
			unmet(t, "apt-cache show %s names no version", p)
		}
		fmt.Fprintf(&key, "%s=%s\n", p, v[1])
	}
	cache, err := CacheDir()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(cache, fmt.Sprintf("%s-%x", name, sha256.Sum256([]byte(key.String())))[:len(name)+13])
	if exists(filepath.Join(dir, stampName)) {
		return filepath.Join(dir, "root")
	}
	unlock, err := lockFile(ctx, dir+".lock")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if exists(filepath.Join(dir, stampName)) {
		return filepath.Join(dir, "root")
	}
	if err := fetchBundle(ctx, cache, dir, pkgs); err != nil {
		unmet(t, "%s: %v", name, err)
	}
	return filepath.Join(dir, "root")
}

// fetchBundle downloads and unpacks pkgs into dir/root through a temporary
// directory renamed into place, so that no half-made bundle looks complete.
func fetchBundle(ctx context.Context, cache, dir string, pkgs []string) error {
	if err := removeGlob(dir + ".tmp*"); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(cache, filepath.Base(dir)+".tmp")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp) // no-op after the rename
	progress("downloading %s into %s (once)", strings.Join(pkgs, " "), cache)
	// The sandbox user _apt cannot write into a root-owned temp directory.
	dl := exec.CommandContext(ctx, "apt-get", append([]string{"download", "-o", "APT::Sandbox::User=root"}, pkgs...)...)
	dl.Dir = tmp
	if out, err := dl.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get download: %w\n%s", err, out)
	}
	debs, err := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if err != nil || len(debs) != len(pkgs) {
		return fmt.Errorf("apt-get download left %d .deb files for %d packages", len(debs), len(pkgs))
	}
	root := filepath.Join(tmp, "root")
	for _, deb := range debs {
		if out, err := exec.CommandContext(ctx, "dpkg", "-x", deb, root).CombinedOutput(); err != nil {
			return fmt.Errorf("dpkg -x %s: %w\n%s", filepath.Base(deb), err, out)
		}
	}
	// Bookworm's packages still ship /bin, /sbin and /lib; the host has
	// them as links into /usr, so their files belong under usr/.
	for _, d := range []string{"bin", "sbin", "lib"} {
		src := filepath.Join(root, d)
		if !exists(src) {
			continue
		}
		if err := os.MkdirAll(filepath.Join(root, "usr", d), 0o755); err != nil {
			return err
		}
		if out, err := exec.CommandContext(ctx, "cp", "-a", src+"/.", filepath.Join(root, "usr", d)).CombinedOutput(); err != nil {
			return fmt.Errorf("merging /%s into /usr: %w\n%s", d, err, out)
		}
		if err := os.RemoveAll(src); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, stampName), nil, 0o644); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.Rename(tmp, dir)
}

// stageInstall runs make install PREFIX=/usr into a new directory and
// returns it: the hooks and scripts exactly as a user gets them.
func stageInstall(t *testing.T) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("make"); err != nil {
		unmet(t, "make not found (apt-get install make)")
	}
	stage := t.TempDir()
	cmd := exec.CommandContext(t.Context(), "make", "--no-print-directory", "-C", root, "install",
		"DESTDIR="+stage, "PREFIX=/usr", "BIN="+filepath.Join(t.TempDir(), "modautoload"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	return stage
}

// inNamespace runs a generator on the host in a private mount namespace
// in which the layers lie over the host's /usr and /etc (read-only
// overlays, the first layer on top), the rig's kernel's module tree is
// /usr/lib/modules/VERSION and its /boot is /boot; the host's own
// directories are not changed.
const inNamespace = `set -e
kroot=$1 ver=$2
shift 2
mount -t overlay overlay -o "lowerdir=$E2E_USR:/usr" /usr
mount -t overlay overlay -o "lowerdir=$E2E_ETC:/etc" /etc
mount --bind "$kroot/lib/modules/$ver" "/usr/lib/modules/$ver"
mount --bind "$kroot/boot" /boot
exec "$@"
`

// genJob is one generator run: its command line and the layers (host
// directories holding usr/ and etc/ trees, the first on top).
type genJob struct {
	layers, argv []string
}

// runGenerators runs the jobs at once, each as inNamespace describes with
// TMPDIR in the test's temporary directory, and waits for all of them
// (each bounded by 5 minutes); any failure fails the test.
func runGenerators(t *testing.T, k *Kernel, jobs ...genJob) {
	t.Helper()
	for _, tool := range []string{"unshare", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			unmet(t, "%s not found (apt-get install util-linux mount)", tool)
		}
	}
	if fs, err := os.ReadFile("/proc/filesystems"); err != nil || !strings.Contains(string(fs), "\toverlay\n") {
		if out, err := exec.Command("modprobe", "overlay").CombinedOutput(); err != nil {
			unmet(t, "no overlay filesystem on the host: %v %s", err, out)
		}
	}
	// The module tree needs a mount point under /usr/lib/modules.
	mnt := t.TempDir()
	if err := os.MkdirAll(filepath.Join(mnt, "usr/lib/modules", k.Version), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmds := make([]*exec.Cmd, len(jobs))
	for i, job := range jobs {
		var usr, etc []string
		// The mount point's layer goes on top: it only adds a directory.
		for _, l := range append([]string{mnt}, job.layers...) {
			if strings.ContainsAny(l, ":,") {
				t.Fatalf("overlay layer %q: a path with ':' or ','", l)
			}
			if exists(filepath.Join(l, "usr")) {
				usr = append(usr, filepath.Join(l, "usr"))
			}
			if exists(filepath.Join(l, "etc")) {
				etc = append(etc, filepath.Join(l, "etc"))
			}
		}
		cmds[i] = exec.CommandContext(ctx, "unshare", append([]string{"--mount", "--propagation", "private",
			"sh", "-c", inNamespace, "sh", k.Root, k.Version}, job.argv...)...)
		cmds[i].Env = append(os.Environ(), "E2E_USR="+strings.Join(usr, ":"),
			"E2E_ETC="+strings.Join(etc, ":"), "TMPDIR="+t.TempDir())
	}
	results := make([]string, len(jobs))
	var wg sync.WaitGroup
	for i, cmd := range cmds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			out, err := cmd.CombinedOutput()
			if err != nil {
				results[i] = fmt.Sprintf("FAILED: %v\n%s", err, out)
				return
			}
			results[i] = time.Since(start).Round(time.Millisecond).String()
		}()
	}
	wg.Wait()
	for i, r := range results {
		t.Logf("%s: %s", strings.Join(jobs[i].argv, " "), r)
		if strings.HasPrefix(r, "FAILED") {
			t.Fail()
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// generatorRootInit is the root's /sbin/init: it reports the root mount's
// kernel message, modautoload processes still alive (the bracket keeps
// grep from counting itself), the daemon's log
// and the boot's trace (see traceArgs), then powers off.
const generatorRootInit = `#!/bin/sh
bb=/bin/busybox
echo "E2E:SWITCHED_ROOT pid=$$"
echo "E2E:ROOT_MOUNTED $(dmesg | grep 'EXT4-fs (vda): mounted filesystem' | tail -n 1)"
echo "E2E:MODAUTOLOAD_PROCS $(grep -l 'modautoloa[d]' /proc/[0-9]*/cmdline 2>/dev/null | $bb wc -l)"
dmesg | grep 'modautoload\[' | while read -r l; do echo "E2E:KMSG $l"; done
$bb mount -t tracefs tracefs /sys/kernel/tracing
grep -v '^#' /sys/kernel/tracing/trace | while read -r l; do echo "E2E:TRACE $l"; done
echo "E2E:TRACE_OVERRUN $(cat /sys/kernel/tracing/per_cpu/cpu*/stats | grep '^overrun:' | cut -d' ' -f2 | tr '\n' ' ')"
echo "E2E:DONE rc=0"
poweroff -f
`

// traceArgs enable at boot, before the first process, the events that
// say who loads each module: finit_module and init_module calls, module
// loads, and the forks, execs and exits that tie each task to the
// program it runs.
var traceArgs = []string{
	"trace_event=syscalls:sys_enter_finit_module,syscalls:sys_enter_init_module,module:module_load," +
		"sched:sched_process_fork,sched:sched_process_exec,sched:sched_process_exit",
	"trace_buf_size=8M",
}

// bootGenerated boots image to the root filesystem made by rootImage and
// returns the guest's report.
func bootGenerated(t *testing.T, image string) *Result {
	t.Helper()
	img := rootImage(t, generatorRootInit)
	devices, qemuArgs := virtioDisk(img)
	return Boot(t.Context(), t, Scenario{
		Initrd:     image,
		Devices:    devices,
		QEMUArgs:   qemuArgs,
		KernelArgs: append([]string{"root=LABEL=" + rootLabel}, traceArgs...),
		MemoryMiB:  1024,
		Timeout:    120 * time.Second,
	})
}

// loadEvent is one module load the trace shows: the module (empty for a
// finit_module or init_module call, which the trace does not name), the
// program the calling task runs, and when.
type loadEvent struct {
	module, program string
	call            string // "finit_module", "init_module" or "module_load"
	task            int
	at              float64
}

// bootTrace is what the trace tells about a boot.
type bootTrace struct {
	loads []loadEvent
	// initAt is when PID 1 executed the root's /sbin/init (switch_root
	// done), or 0 if it never did.
	initAt float64
	// aliveAtInit lists the tasks running a program of modautoload's
	// (program: task IDs) when PID 1 executed /sbin/init.
	aliveAtInit map[string][]int
}

var traceLine = regexp.MustCompile(`^\s*(.+)-(\d+)\s+\[\d+\]\s+\S+\s+(\d+\.\d+): (\w+)(?:: |\()(.*)$`)

// parseBootTrace follows the trace in time order: a fork gives the child
// its parent's program, an exec the file it names (through /proc/self/exe
// the same program again: busybox applets and the daemon's re-exec do
// that), so that every load is attributed to the program the calling task
// runs, whatever its comm.
func parseBootTrace(t *testing.T, lines []string, isModautoload func(string) bool) bootTrace {
	t.Helper()
	program := map[int]string{}
	alive := map[int]bool{}
	bt := bootTrace{aliveAtInit: map[string][]int{}}
	field := func(args, key string) string {
		for _, f := range strings.Fields(args) {
			if v, ok := strings.CutPrefix(f, key+"="); ok {
				return v
			}
		}
		return ""
	}
	num := func(s string) int {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("trace: %q is not a task ID", s)
		}
		return n
	}
	for _, l := range lines {
		m := traceLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		pid := num(m[2])
		at, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			t.Fatalf("trace: %q: %v", l, err)
		}
		event, args := m[4], m[5]
		switch event {
		case "sched_process_fork":
			child := num(field(args, "child_pid"))
			program[child] = program[num(field(args, "pid"))]
			alive[child] = true
		case "sched_process_exec":
			p, old := num(field(args, "pid")), num(field(args, "old_pid"))
			if file := field(args, "filename"); file != "/proc/self/exe" {
				program[p] = file
			} else {
				program[p] = program[old]
			}
			delete(alive, old) // a thread that executes takes the leader's ID
			alive[p] = true
			if p == 1 && program[p] == "/sbin/init" && bt.initAt == 0 {
				bt.initAt = at
				for task := range alive {
					if prog := program[task]; isModautoload(prog) {
						bt.aliveAtInit[prog] = append(bt.aliveAtInit[prog], task)
					}
				}
			}
		case "sched_process_exit":
			delete(alive, pid)
		case "sys_finit_module", "sys_init_module":
			bt.loads = append(bt.loads, loadEvent{program: program[pid], call: strings.TrimPrefix(event, "sys_"), task: pid, at: at})
		case "module_load":
			bt.loads = append(bt.loads, loadEvent{module: strings.Fields(args)[0], program: program[pid], call: event, task: pid, at: at})
		}
	}
	return bt
}

// dmesgSeconds returns the timestamp of a kernel log line "[  12.345] ...".
func dmesgSeconds(line string) (float64, bool) {
	open, close := strings.Index(line, "["), strings.Index(line, "]")
	if open < 0 || close < open {
		return 0, false
	}
	s, err := strconv.ParseFloat(strings.TrimSpace(line[open+1:close]), 64)
	return s, err == nil
}

// bootTiming is one image's figures for the README.
type bootTiming struct {
	image            string
	rootMount, init  float64 // seconds from the kernel's start
	qemu             time.Duration
	loads, finitCall int
}

func (b bootTiming) String() string {
	return fmt.Sprintf("%s: root mounted at %.2f s, /sbin/init at %.2f s, %d modules loaded by %d finit_module calls, qemu ran %v",
		b.image, b.rootMount, b.init, b.loads, b.finitCall, b.qemu.Round(100*time.Millisecond))
}

// checkBoot checks what every generated image must show, and returns its
// trace and timing: the root mounted, no load without a program, no trace
// overrun.
func checkBoot(t *testing.T, name string, res *Result) (bootTrace, bootTiming) {
	t.Helper()
	for _, o := range strings.Fields(res.Value("TRACE_OVERRUN")) {
		if o != "0" {
			t.Errorf("%s: the trace buffer overran (%s): the attribution below is incomplete", name, res.Value("TRACE_OVERRUN"))
		}
	}
	bt := parseBootTrace(t, res.Lines("TRACE"), func(p string) bool {
		return strings.HasSuffix(p, "/modautoload") || strings.HasSuffix(p, "/modprobe")
	})
	timing := bootTiming{image: name, init: bt.initAt, qemu: res.Duration}
	mount, ok := dmesgSeconds(res.Value("ROOT_MOUNTED"))
	if !ok {
		t.Errorf("%s: no ext4 mount message for vda: %q", name, res.Value("ROOT_MOUNTED"))
	}
	timing.rootMount = mount
	if bt.initAt == 0 {
		t.Errorf("%s: the trace shows no exec of /sbin/init by PID 1", name)
	}
	for _, l := range bt.loads {
		if l.call == "module_load" {
			timing.loads++
		} else {
			timing.finitCall++
		}
	}
	if timing.loads == 0 {
		t.Errorf("%s: the trace shows no module load", name)
	}
	return bt, timing
}

// loaders sums up who loaded what, for failure messages.
func loaders(bt bootTrace) string {
	var b strings.Builder
	for _, l := range bt.loads {
		fmt.Fprintf(&b, "\n  %10.6f %-13s %-20s by %q", l.at, l.call, l.module, l.program)
	}
	return b.String()
}

// loadedBy returns the program whose task loaded module, or "".
func loadedBy(bt bootTrace, module string) string {
	for _, l := range bt.loads {
		if l.call == "module_load" && l.module == module {
			return l.program
		}
	}
	return ""
}

// checkModautoloadBoot checks a modautoload image's boot: every
// finit_module and init_module call, and so every load, made by the daemon
// (/sbin/modautoload) or the modprobe that is modautoload in the image
// (the boot scripts' and the kernel's requests), none by udev or kmod;
// the root's driver virtio_blk loaded by the daemon; the daemon stopped
// and every modautoload task gone before PID 1 ran the root's /sbin/init.
// With pid1Loads, PID 1's own loads are let through: systemd as the
// initramfs's init loads its fixed list (autofs4; virtio_pci under a
// hypervisor) through libkmod before any service can start.
func checkModautoloadBoot(t *testing.T, name string, res *Result, pid1Loads bool) bootTiming {
	t.Helper()
	bt, timing := checkBoot(t, name, res)
	allowed := []string{"/sbin/modautoload", "/usr/sbin/modautoload", "/sbin/modprobe", "/usr/sbin/modprobe"}
	var byPID1 []string
	for _, l := range bt.loads {
		if pid1Loads && l.task == 1 {
			if l.module != "" {
				byPID1 = append(byPID1, l.module)
			}
			continue
		}
		if !slices.Contains(allowed, l.program) {
			t.Errorf("%s: %s %s at %.6f by %q, not modautoload; all loads:%s", name, l.call, l.module, l.at, l.program, loaders(bt))
			break
		}
	}
	if len(byPID1) > 0 {
		t.Logf("%s: loaded by PID 1 itself: %s", name, strings.Join(byPID1, " "))
	}
	if p := loadedBy(bt, "virtio_blk"); p != "/sbin/modautoload" && p != "/usr/sbin/modautoload" {
		t.Errorf("%s: virtio_blk loaded by %q, want the daemon; all loads:%s", name, p, loaders(bt))
	}
	if len(bt.aliveAtInit) > 0 {
		t.Errorf("%s: modautoload tasks still running when /sbin/init started: %v", name, bt.aliveAtInit)
	}
	if n := res.Value("MODAUTOLOAD_PROCS"); n != "0" {
		t.Errorf("%s: %s modautoload processes in the root system", name, n)
	}
	kmsg := strings.Join(res.Lines("KMSG"), "\n")
	for _, want := range []string{"INF ready", "INF stopped"} {
		if !strings.Contains(kmsg, want) {
			t.Errorf("%s: the daemon's log lacks %q:\n%s", name, want, kmsg)
		}
	}
	return timing
}

// checkDefaultBoot checks the generator's own image: udev (its workers,
// forked from systemd-udevd) loaded virtio_blk, and modautoload is not in
// it. It shows that the trace sees udev's loads where there are some.
func checkDefaultBoot(t *testing.T, name string, res *Result) bootTiming {
	t.Helper()
	bt, timing := checkBoot(t, name, res)
	if p := loadedBy(bt, "virtio_blk"); !strings.HasSuffix(p, "/systemd-udevd") {
		t.Errorf("%s: virtio_blk loaded by %q, want udev's workers; all loads:%s", name, p, loaders(bt))
	}
	for _, l := range bt.loads {
		if strings.HasSuffix(l.program, "/modautoload") {
			t.Errorf("%s: modautoload ran in the default image: %s %s", name, l.call, l.module)
			break
		}
	}
	return timing
}

// cpioListing lists a gzip-compressed cpio archive (the tests' images)
// with cpio -tv.
func cpioListing(t *testing.T, image string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "sh", "-c", `gzip -dc <"$1" | cpio -tv --quiet`, "sh", image)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("listing %s: %v", image, err)
	}
	return string(out)
}

// writeTree writes files (path relative to dir: content) with mode.
func writeTree(t *testing.T, dir string, mode os.FileMode, files map[string]string) {
	t.Helper()
	for p, content := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
}

// initramfsToolsPackages are Debian's generator and what it copies into
// the image that the host lacks; the host provides kmod, busybox-static
// (with its hook), cpio, util-linux's blkid and the libraries.
var initramfsToolsPackages = []string{"initramfs-tools", "initramfs-tools-core", "klibc-utils", "libklibc", "udev", "libsystemd-shared"}

// e2eModulesHook adds the modules the boot needs, without listing them
// in /conf/modules (which would make init modprobe them itself): with the
// default MODULES=most, mkinitramfs spends minutes per image.
const e2eModulesHook = `#!/bin/sh
[ "$1" = prereqs ] && exit 0
. /usr/share/initramfs-tools/hook-functions
manual_add_modules virtio_pci virtio_blk ext4
`

// TestGeneratorInitramfsTools builds three images with Debian's
// mkinitramfs against the rig's kernel: with modautoload's hook enabled
// (MODAUTOLOAD=y) and udev kept with its module loading masked, the same
// without udev (MODAUTOLOAD_UDEV=none: init-bottom moves /dev), and the
// default one; it boots each to the virtio-blk root found by label and
// compares who loaded the modules and when the root was mounted.
func TestGeneratorInitramfsTools(t *testing.T) {
	Require(t)
	k, err := kernelOnce()
	if err != nil {
		t.Fatal(err)
	}
	gen := debBundle(t, "initramfs-tools", initramfsToolsPackages)
	stage := stageInstall(t)
	conf, err := os.ReadFile(filepath.Join(gen, "etc/initramfs-tools/initramfs.conf"))
	if err != nil {
		t.Fatal(err)
	}
	// gzip, always on the host; both images alike.
	conf = regexp.MustCompile(`(?m)^MODULES=.*$`).ReplaceAll(conf, []byte("MODULES=list"))
	conf = regexp.MustCompile(`(?m)^COMPRESS=.*$`).ReplaceAll(conf, []byte("COMPRESS=gzip"))

	// One configuration layer per image: the default one has no
	// conf.d/modautoload, so the hook leaves the image alone.
	job := func(name, modautoloadConf string) (string, genJob) {
		layer := t.TempDir()
		writeTree(t, layer, 0o644, map[string]string{"etc/initramfs-tools/initramfs.conf": string(conf)})
		writeTree(t, layer, 0o755, map[string]string{"etc/initramfs-tools/hooks/e2e-modules": e2eModulesHook})
		if modautoloadConf != "" {
			writeTree(t, layer, 0o644, map[string]string{"etc/initramfs-tools/conf.d/modautoload": modautoloadConf})
		}
		out := filepath.Join(t.TempDir(), "initrd.img-"+name)
		return out, genJob{layers: []string{layer, stage, gen}, argv: []string{"mkinitramfs", "-o", out, k.Version}}
	}
	ours, oursJob := job("modautoload", "MODAUTOLOAD=y\nMODAUTOLOAD_UDEV=keep\n")
	noUdev, noUdevJob := job("modautoload-no-udev", "MODAUTOLOAD=y\nMODAUTOLOAD_UDEV=none\n")
	def, defJob := job("default", "")
	runGenerators(t, k, oursJob, noUdevJob, defJob)

	// The image's modprobe is modautoload: the loads by /sbin/modprobe
	// below are modautoload's.
	list := cpioListing(t, ours)
	for _, want := range []string{"usr/sbin/modprobe -> modautoload", "usr/sbin/modautoload", "scripts/init-top/modautoload",
		"conf/modautoload.conf", "usr/lib/modautoload/rules.d/80-drivers.rules", "usr/lib/systemd/systemd-udevd"} {
		if !strings.Contains(list, want) {
			t.Errorf("the modautoload image lacks %s", want)
		}
	}
	if strings.Contains(cpioListing(t, def), "modautoload") {
		t.Error("the default image holds modautoload files")
	}
	list = cpioListing(t, noUdev)
	for _, gone := range []string{"systemd-udevd", "udevadm", "scripts/init-top/udev"} {
		if strings.Contains(list, gone) {
			t.Errorf("the image without udev holds %s", gone)
		}
	}

	oursTiming := checkModautoloadBoot(t, "initramfs-tools+modautoload", bootGenerated(t, ours), false)
	noUdevTiming := checkModautoloadBoot(t, "initramfs-tools+modautoload, no udev", bootGenerated(t, noUdev), false)
	defTiming := checkDefaultBoot(t, "initramfs-tools default (udev)", bootGenerated(t, def))
	for _, timing := range []bootTiming{oursTiming, noUdevTiming, defTiming} {
		t.Logf("kernel %s, %s", k.Version, timing)
	}
}

// dracutPackages are Debian's dracut and the udev it puts in the image.
var dracutPackages = []string{"dracut", "dracut-core", "udev", "libsystemd-shared"}

// dracutConf keeps the image to what the test boots needs, for both
// images alike: the modules of the virtio-blk ext4 root only (drivers=
// is exclusive), without the dracut modules for hardware and setups the
// guest lacks (LUKS, device mapper, NVDIMM, resume, virtiofs, ...), not
// stripping binaries (ours are stripped) and without a microcode archive
// (none is installed). Otherwise dracut spends minutes per image here.
const dracutConf = `drivers="virtio_pci virtio_blk ext4"
omit_dracutmodules+=" crypt dm nvdimm lunmask resume terminfo virtiofs overlay-root kernel-modules-extra usrmount qemu "
compress="gzip"
do_strip="no"
early_microcode="no"
`

// TestGeneratorDracut builds three images with Debian's dracut against
// the rig's kernel: with --add modautoload, the same with --omit systemd
// (dracut's init script runs the module's hooks), and the default one; it
// boots each to the virtio-blk root found by label and compares who
// loaded the modules and when the root was mounted. The host has systemd,
// so dracut's images are systemd ones unless told otherwise, as on the
// distributions that use it.
func TestGeneratorDracut(t *testing.T) {
	Require(t)
	k, err := kernelOnce()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/lib/systemd/systemd"); err != nil {
		unmet(t, "/lib/systemd/systemd not found (apt-get install systemd)")
	}
	gen := debBundle(t, "dracut", dracutPackages)
	stage := stageInstall(t)
	layer := t.TempDir()
	writeTree(t, layer, 0o644, map[string]string{"etc/dracut.conf.d/e2e.conf": dracutConf})

	job := func(name string, args ...string) (string, genJob) {
		out := filepath.Join(t.TempDir(), "initrd.img-"+name)
		return out, genJob{layers: []string{layer, stage, gen},
			argv: append(append([]string{"dracut", "--quiet", "--kver", k.Version}, args...), "--force", out)}
	}
	ours, oursJob := job("modautoload", "--add", "modautoload")
	// dracut's own init script instead of systemd: the module's hooks.
	shell, shellJob := job("modautoload-no-systemd", "--add", "modautoload", "--omit", "systemd")
	def, defJob := job("default")
	runGenerators(t, k, oursJob, shellJob, defJob)

	list := cpioListing(t, ours)
	for _, want := range []string{"usr/sbin/modprobe -> modautoload", "usr/sbin/modautoload",
		"sysinit.target.wants/modautoload-initrd.service", "initrd.target.wants/modautoload-initrd-settle.service",
		"etc/udev/rules.d/80-drivers.rules", "usr/lib/modautoload/rules.d/80-drivers.rules"} {
		if !strings.Contains(list, want) {
			t.Errorf("the modautoload image lacks %s", want)
		}
	}
	if strings.Contains(cpioListing(t, def), "modautoload") {
		t.Error("the default image holds modautoload files")
	}

	list = cpioListing(t, shell)
	for _, want := range []string{"hooks/pre-udev/00-modautoload-start.sh", "hooks/pre-mount/00-modautoload-settle.sh",
		"hooks/cleanup/99-modautoload-stop.sh", "usr/sbin/modprobe -> modautoload"} {
		if !strings.Contains(list, want) {
			t.Errorf("the modautoload image without systemd lacks %s", want)
		}
	}
	if strings.Contains(list, "modautoload-initrd.service") {
		t.Error("the image without systemd holds modautoload's units")
	}

	oursTiming := checkModautoloadBoot(t, "dracut+modautoload", bootGenerated(t, ours), true)
	shellTiming := checkModautoloadBoot(t, "dracut+modautoload, no systemd", bootGenerated(t, shell), false)
	defTiming := checkDefaultBoot(t, "dracut default (udev)", bootGenerated(t, def))
	for _, timing := range []bootTiming{oursTiming, shellTiming, defTiming} {
		t.Logf("kernel %s, %s", k.Version, timing)
	}
}

// TestGeneratorFilesCheck checks on the host what the boots above do not
// reach on every path: the shell syntax of every hook and script with
// dash and busybox sh (the generators' images run them with busybox or
// klibc's dash-derived sh; module-setup.sh with bash, as dracut does), and
// the dracut module's units with systemd-analyze verify, which must print
// nothing.
func TestGeneratorFilesCheck(t *testing.T) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		unmet(t, "/bin/busybox not found (apt-get install busybox-static)")
	}
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		unmet(t, "systemd-analyze not found (apt-get install systemd)")
	}
	var scripts []string
	for _, pattern := range []string{"initramfs-tools/hooks/*", "initramfs-tools/scripts/*/*", "dracut/90modautoload/modautoload-*.sh"} {
		m, err := filepath.Glob(distPath(t, pattern))
		if err != nil || len(m) == 0 {
			t.Fatalf("dist/%s: no files (%v)", pattern, err)
		}
		scripts = append(scripts, m...)
	}
	check := func(argv ...string) {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", strings.Join(argv, " "), err, out)
		}
	}
	for _, s := range scripts {
		check("sh", "-n", s)
		check("/bin/busybox", "sh", "-n", s)
	}
	check("bash", "-n", distPath(t, "dracut/90modautoload/module-setup.sh"))

	root := t.TempDir()
	units := filepath.Join(root, "etc/systemd/system")
	writeTree(t, root, 0o755, map[string]string{"usr/sbin/modautoload": "#!/bin/sh\n"})
	for _, u := range []string{"modautoload-initrd.service", "modautoload-initrd-settle.service"} {
		data, err := os.ReadFile(distPath(t, "dracut/90modautoload/"+u))
		if err != nil {
			t.Fatal(err)
		}
		writeTree(t, units, 0o644, map[string]string{u: string(data)})
	}
	out, err := exec.Command(sa, "verify", "--root="+root, "modautoload-initrd.service", "modautoload-initrd-settle.service").CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
