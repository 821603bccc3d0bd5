package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modautoload/modautoload/rules"
	"github.com/modautoload/modautoload/uevent"
)

// The integration kit in dist/: the initramfs /init, the busybox inittab,
// the systemd units, the OpenRC script and the udev/event rules.

// distPath is the host path of a file under dist/.
func distPath(t *testing.T, rel string) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "dist", rel)
}

// rootLabel labels the filesystem the initramfs tests boot into.
const rootLabel = "modautoload-root"

// rootImage makes an ext4 image labelled rootLabel holding a static busybox
// with a few applet links, /etc/os-release and /sbin/init = initScript,
// and returns its path.
func rootImage(t *testing.T, initScript string) string {
	t.Helper()
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		unmet(t, "mkfs.ext4 not found (apt-get install e2fsprogs)")
	}
	tree := t.TempDir()
	for _, d := range []string{"bin", "sbin", "etc", "dev", "proc", "sys", "run", "tmp"} {
		if err := os.Mkdir(filepath.Join(tree, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// systemd's switch-root (dracut's images) wants an os-release.
	if err := os.WriteFile(filepath.Join(tree, "etc/os-release"), []byte("ID=modautoload-e2e\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "bin/busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	// The root is mounted read-only, so the links are made here.
	for _, applet := range []string{"sh", "cat", "grep", "ls", "dmesg", "poweroff", "tail", "cut"} {
		if err := os.Symlink("busybox", filepath.Join(tree, "bin", applet)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(tree, "sbin/init"), []byte(initScript), 0o755); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "root.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 16<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", "-F", "-L", rootLabel, "-d", tree, img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	return img
}

// virtioDisk attaches img as a virtio-blk disk.
func virtioDisk(img string) (devices, qemuArgs []string) {
	return []string{"virtio-blk-pci,drive=d0"}, []string{"-drive", "file=" + img + ",if=none,id=d0,format=raw"}
}

// newRootInit is the switched-to root's /sbin/init: it reports what it
// finds, then powers off (the rig's /init, which would, is gone).
const newRootInit = `#!/bin/sh
echo "E2E:SWITCHED_ROOT pid=$$"
for m in / /dev /proc /sys /run; do
	grep "^[^ ]* $m " /proc/mounts | while read -r l; do echo "E2E:MOUNT $l"; done
done
echo "E2E:VIRTIO_BLK $(cat /sys/module/virtio_blk/initstate)"
echo "E2E:EXT4 $(cat /sys/module/ext4/initstate)"
echo "E2E:MODPROBE_AFTER $(cat /proc/sys/kernel/modprobe)"
echo "E2E:DAEMONS $(cat /proc/[0-9]*/comm 2>/dev/null | grep -c '^modautoload')"
echo "E2E:RUN $(ls -A /run) /$(ls -A /run/modautoload)"
dmesg | grep 'modautoload\[' | while read -r l; do echo "E2E:KMSG $l"; done
echo "E2E:DONE rc=0"
poweroff -f
`

// premountHook runs in the initramfs after settle, before the root is
// looked for: the helper path, a storm of kernel module requests through
// it, and the daemon's view of them.
const premountHook = `#!/bin/sh
echo "E2E:PRE_MODPROBE $(cat /proc/sys/kernel/modprobe) $(readlink /lib/modautoload/modprobe)"
echo "E2E:PRE_VIRTIO_BLK $(cat /sys/module/virtio_blk/initstate 2>&1)"
echo "E2E:PRE_EXT4 $(cat /sys/module/ext4/initstate 2>/dev/null || echo absent)"
xfrmstorm --threads 8
echo "E2E:PRE_XFRM $(cat /sys/module/xfrm_user/initstate 2>&1)"
echo "E2E:STATUS $(modautoload status --json)"
`

// bottomHook runs with the root mounted and the daemon stopped.
const bottomHook = `#!/bin/sh
echo "E2E:BOTTOM_DAEMONS $(cat /proc/[0-9]*/comm 2>/dev/null | grep -c '^modautoload')"
echo "E2E:BOTTOM_ROOT $ROOTDEV $(grep "^[^ ]* $NEWROOT " /proc/mounts)"
`

// initLines returns the console lines dist/initramfs/init printed, without
// its "modautoload-init: " prefix.
func initLines(log string) []string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if _, msg, ok := strings.Cut(l, "modautoload-init: "); ok {
			out = append(out, msg)
		}
	}
	return out
}

// inOrder checks that each want prefix starts some line, in this order.
func inOrder(t *testing.T, lines, want []string) {
	t.Helper()
	i := 0
	for _, l := range lines {
		if i < len(want) && strings.HasPrefix(l, want[i]) {
			i++
		}
	}
	if i < len(want) {
		t.Errorf("init never printed %q (after %q); it printed:\n%s", want[i], want[:i], strings.Join(lines, "\n"))
	}
}

// TestDistInitramfs boots the kernel with dist/initramfs/init as the
// initramfs's init (rdinit=) and root=LABEL= naming an ext4 filesystem on a
// virtio-blk disk, which neither driver is loaded for: the daemon
// coldplugs virtio_blk, settle returns, a storm of kernel module requests
// goes through the modprobe helper the init installed, findfs finds the
// label, the mount's own request loads ext4, the daemon exits 0 on
// SIGTERM, and switch_root runs the disk's /sbin/init as PID 1 with /dev,
// /proc, /sys and /run moved along.
func TestDistInitramfs(t *testing.T) {
	Require(t)
	img := rootImage(t, newRootInit)
	devices, qemuArgs := virtioDisk(img)
	res := Boot(t.Context(), t, Scenario{
		Files: []File{
			{Guest: "/e2e/dist/init", Host: distPath(t, "initramfs/init"), Mode: 0o755},
			{Guest: "/sbin/modautoload", Host: BuildBinary(t, "./cmd/modautoload"), Mode: 0o755},
			{Guest: "/bin/xfrmstorm", Host: BuildBinary(t, "./e2e/guest/xfrmstorm"), Mode: 0o755},
			{Guest: "/lib/modautoload/init-premount/50-e2e", Data: []byte(premountHook), Mode: 0o755},
			{Guest: "/lib/modautoload/init-bottom/50-e2e", Data: []byte(bottomHook), Mode: 0o755},
		},
		Devices: devices, QEMUArgs: qemuArgs,
		// The rig's /init is not run at all: the kernel runs ours.
		KernelArgs: []string{"rdinit=/e2e/dist/init", "root=LABEL=" + rootLabel, "modautoload.failure=poweroff"},
		Timeout:    90 * time.Second,
	})
	lines := initLines(res.Log)
	inOrder(t, lines, []string{
		"kernel modprobe helper: /lib/modautoload/modprobe",
		"daemon ", // "daemon PID ready"
		"settled",
		"premount hook ",
		"root LABEL=" + rootLabel + " is /dev/vda (ext4)",
		"daemon stopped, exit status 0",
		"bottom hook ",
		"switching to /dev/vda (ext4 ro,",
	})

	// Before switch_root, in the initramfs.
	if got := res.Value("PRE_MODPROBE"); got != "/lib/modautoload/modprobe /sbin/modautoload" {
		t.Errorf("/proc/sys/kernel/modprobe and its link: %q", got)
	}
	if got := res.Value("PRE_VIRTIO_BLK"); got != "live" {
		t.Errorf("virtio_blk after settle: %q, want live", got)
	}
	if got := res.Value("PRE_EXT4"); got != "absent" {
		t.Errorf("ext4 before the root mount: %q; the test wants the mount's own request to load it", got)
	}
	if got := res.Value("SOCKETS"); got != "ok=8 failed=0" {
		t.Errorf("NETLINK_XFRM sockets through the helper: %q; errors %q", got, res.Lines("SOCKET_ERR"))
	}
	if got := res.Value("PRE_XFRM"); got != "live" {
		t.Errorf("xfrm_user: %q, want live", got)
	}
	st := daemonStatus(t, res)
	if m := st.Modules["xfrm_user"]; m.State != "live" {
		t.Errorf("the daemon's state of xfrm_user %+v: the helper did not hand the request to it", m)
	}
	if got := res.Value("BOTTOM_DAEMONS"); got != "0" {
		t.Errorf("modautoload processes after the daemon stopped: %q", got)
	}
	if got := res.Value("BOTTOM_ROOT"); !strings.HasPrefix(got, "/dev/vda /dev/vda /newroot ext4 ro,") {
		t.Errorf("root at the bottom hook: %q", got)
	}

	// After switch_root, on the disk.
	if got := res.Value("SWITCHED_ROOT"); got != "pid=1" {
		t.Fatalf("the disk's /sbin/init: %q, want pid=1", got)
	}
	mounts := strings.Join(res.Lines("MOUNT"), "\n")
	for _, want := range []string{"/dev/vda / ext4 ro,", "devtmpfs /dev devtmpfs", "proc /proc proc", "sysfs /sys sysfs", "tmpfs /run tmpfs"} {
		if !strings.Contains(mounts, want) {
			t.Errorf("no mount %q after switch_root:\n%s", want, mounts)
		}
	}
	for key, want := range map[string]string{
		"VIRTIO_BLK": "live", "EXT4": "live", "DAEMONS": "0",
		// Restored for the real system: the kernel's default.
		"MODPROBE_AFTER": "/sbin/modprobe",
		// The control socket and the readiness pipe are gone.
		"RUN": "modautoload /",
	} {
		if got := res.Value(key); got != want {
			t.Errorf("%s after switch_root: %q, want %q", key, got, want)
		}
	}
	kmsg := strings.Join(res.Lines("KMSG"), "\n")
	for _, want := range []string{"ready", "stopped"} {
		if !strings.Contains(kmsg, want) {
			t.Errorf("no daemon record %q in the kernel log:\n%s", want, kmsg)
		}
	}
	t.Logf("init: %s", strings.Join(lines, " | "))
}

// TestDistInitramfsNoRoot: a root that never appears ends, with
// modautoload.failure=panic, in a clear message and the init exiting 1
// (as PID 1, a kernel panic; panic=N reboots) after the bound, with the
// daemon stopped. The init runs under the rig's /init here, so the exit
// is seen.
func TestDistInitramfsNoRoot(t *testing.T) {
	Require(t)
	const uuid = "0b5e55ed-0000-4000-8000-000000000000"
	res := Boot(t.Context(), t, Scenario{
		Files: []File{
			{Guest: "/e2e/dist/init", Host: distPath(t, "initramfs/init"), Mode: 0o755},
			{Guest: "/sbin/modautoload", Host: BuildBinary(t, "./cmd/modautoload"), Mode: 0o755},
		},
		KernelArgs: []string{"root=UUID=" + uuid, "modautoload.rootwait=2", "modautoload.failure=panic"},
		Timeout:    60 * time.Second,
		Script: `
t0=$(cut -d' ' -f1 /proc/uptime)
sh /e2e/dist/init
echo "E2E:INIT_RC $? $t0 $(cut -d' ' -f1 /proc/uptime)"
echo "E2E:LEFT $(cat /proc/[0-9]*/comm 2>/dev/null | grep -c '^modautoload')"
`,
	})
	lines := initLines(res.Log)
	inOrder(t, lines, []string{
		"settled",
		"waiting up to 2 s for root UUID=" + uuid,
		"FAILED: root UUID=" + uuid + " not found after 2 s",
		"the daemon's last log lines:",
		"daemon stopped, exit status 0",
	})
	f := strings.Fields(res.Value("INIT_RC"))
	if len(f) != 3 || f[0] != "1" {
		t.Fatalf("init exit: %q, want 1", res.Value("INIT_RC"))
	}
	if got := res.Value("LEFT"); got != "0" {
		t.Errorf("modautoload processes left: %q", got)
	}
}

// inittabCheck runs from the test's ::once: line, after sysinit: it finds
// the respawned daemon, has the host hotplug a device it must load a
// driver for, kills the daemon and sees init start it again.
const inittabCheck = `#!/bin/sh
for i in $(seq 100); do modautoload status >/dev/null 2>&1 && break; sleep 0.1; done
pid=$(pidof modautoload)
echo "E2E:RESPAWNED $pid"
modautoload settle --timeout 30s; echo "E2E:SETTLE_RC $?"
echo E2E:READY
state=absent
for i in $(seq 300); do
	state=$(cat /sys/module/virtio_input/initstate 2>/dev/null) && [ "$state" = live ] && break
	sleep 0.1
done
echo "E2E:HOTPLUG virtio_input=$state"
kill -9 "$pid"
again=
for i in $(seq 100); do
	again=$(pidof modautoload) && [ "$again" != "$pid" ] && modautoload status >/dev/null 2>&1 && break
	sleep 0.1
done
echo "E2E:AGAIN $again"
dmesg | grep 'modautoload\[' | while read -r l; do echo "E2E:KMSG $l"; done
echo "E2E:DONE rc=0"
poweroff -f
`

// TestDistInittab boots busybox init as PID 1 reading dist/busybox/inittab
// (with a line first that makes busybox's applet links, and the test's
// checks as a ::once: line last): coldplug in sysinit has loaded the
// virtio-rng driver and, with --static, the modules-load.d list's loop, and
// exited by the time rcS runs, the respawned daemon
// loads the driver of a device hotplugged over QMP, and comes back after
// kill -9.
func TestDistInittab(t *testing.T) {
	Require(t)
	tab, err := os.ReadFile(distPath(t, "busybox/inittab"))
	if err != nil {
		t.Fatal(err)
	}
	inittab := "::sysinit:/bin/busybox --install -s\n" + string(tab) + "::once:/e2e/check\n"
	vm := Start(t.Context(), t, Scenario{
		Files: []File{
			{Guest: "/sbin/init", Host: "/bin/busybox", Mode: 0o755},
			{Guest: "/etc/inittab", Data: []byte(inittab)},
			{Guest: "/sbin/modautoload", Host: BuildBinary(t, "./cmd/modautoload"), Mode: 0o755},
			{Guest: "/etc/init.d/rcS", Mode: 0o755, Data: []byte(`#!/bin/sh
echo "E2E:RCS virtio_rng=$(cat /sys/module/virtio_rng/initstate 2>/dev/null || echo absent) daemons=$(cat /proc/[0-9]*/comm 2>/dev/null | grep -c '^modautoload')"
echo "E2E:RCS_STATIC loop=$(cat /sys/module/loop/initstate 2>/dev/null || echo absent)"
`)},
			// The sysinit daemon's --static: the modules service's list.
			{Guest: "/etc/modules-load.d/e2e.conf", Data: []byte("loop\n")},
			{Guest: "/e2e/check", Data: []byte(inittabCheck), Mode: 0o755},
		},
		Devices:    []string{"virtio-rng-pci"},
		KernelArgs: []string{"rdinit=/sbin/init"},
		QMP:        true,
		Timeout:    90 * time.Second,
	})
	vm.Await("READY")
	if _, err := vm.QMP().Execute(t.Context(), "device_add", map[string]any{"driver": "virtio-keyboard-pci", "id": "kbd1"}); err != nil {
		t.Fatalf("device_add: %v", err)
	}
	res := vm.Wait()
	if got := res.Value("RCS"); got != "virtio_rng=live daemons=0" {
		t.Errorf("at rcS: %q, want the coldplug daemon done (virtio_rng live) and gone", got)
	}
	if got := res.Value("RCS_STATIC"); got != "loop=live" {
		t.Errorf("at rcS: %q, want the static list's loop live", got)
	}
	if res.Value("RESPAWNED") == "" || res.Value("SETTLE_RC") != "0" {
		t.Errorf("respawned daemon %q, settle %q", res.Value("RESPAWNED"), res.Value("SETTLE_RC"))
	}
	if got := res.Value("HOTPLUG"); got != "virtio_input=live" {
		t.Errorf("hotplugged keyboard: %q", got)
	}
	if again := res.Value("AGAIN"); again == "" || again == res.Value("RESPAWNED") {
		t.Errorf("after kill -9 of %q: daemon %q, want a new one", res.Value("RESPAWNED"), again)
	}
	kmsg := strings.Join(res.Lines("KMSG"), "\n")
	if !strings.Contains(kmsg, "idle after coldplug, exiting") {
		t.Errorf("the sysinit daemon did not exit idle:\n%s", kmsg)
	}
}

// systemdFiles copies the host's systemd (PID 1) and systemctl into the
// guest with the libraries they need, at the same paths.
func systemdFiles(t *testing.T) []File {
	t.Helper()
	var files []File
	seen := map[string]bool{}
	bins := []string{"/lib/systemd/systemd", "/bin/systemctl"}
	// systemd 255 and later start services through systemd-executor.
	if _, err := os.Stat("/lib/systemd/systemd-executor"); err == nil {
		bins = append(bins, "/lib/systemd/systemd-executor")
	}
	for _, bin := range bins {
		if _, err := os.Stat(bin); err != nil {
			unmet(t, "%s not found (apt-get install systemd)", bin)
		}
		libs, err := sharedLibs(bin)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range append([]string{bin}, libs...) {
			if !seen[f] {
				seen[f] = true
				files = append(files, File{Guest: f, Host: f})
			}
		}
	}
	return files
}

// systemdCheck is e2e-check.service's program: it looks at the daemon
// running under dist/systemd/modautoload.service's sandbox, reloads it,
// stops it and powers off.
const systemdCheck = `#!/bin/sh
show() { systemctl show -p "$2" --value "$1"; }
pid=$(show modautoload.service MainPID)
echo "E2E:SERVICE $(show modautoload.service ActiveState) $(show modautoload.service SubState)"
echo "E2E:SETTLE_UNIT $(show modautoload-settle.service ActiveState) $(show modautoload-settle.service Result)"
echo "E2E:SANDBOX $(grep -E '^(CapBnd|CapEff|NoNewPrivs|Seccomp):' /proc/$pid/status | tr -s ' \t' ' ' | tr '\n' ' ')"
echo "E2E:MOUNTNS $([ "$(readlink /proc/$pid/ns/mnt)" != "$(readlink /proc/1/ns/mnt)" ] && echo private || echo shared)"
echo "E2E:VIRTIO_RNG $(cat /sys/module/virtio_rng/initstate 2>/dev/null || echo absent)"
echo "E2E:STATUS $(modautoload status --json)"
systemctl reload modautoload.service; echo "E2E:RELOAD_RC $?"
for i in $(seq 50); do grep -q 'SIGHUP' /run/modautoload.log && break; sleep 0.1; done
echo "E2E:AFTER_RELOAD $(show modautoload.service ActiveState) $([ "$(show modautoload.service MainPID)" = "$pid" ] && echo same || echo other)"
systemctl stop modautoload.service; echo "E2E:STOP_RC $?"
echo "E2E:STOPPED $(show modautoload.service Result) $(show modautoload.service ExecMainStatus)"
while read -r l; do echo "E2E:LOG $l"; done </run/modautoload.log
echo "E2E:DONE rc=0"
poweroff -f
`

// TestDistSystemd boots the host's systemd as PID 1 with
// dist/systemd/modautoload.service and modautoload-settle.service as they
// are (a drop-in only sends the daemon's stderr to a file, there being no
// journald): the notify unit starts, the daemon coldplugs the virtio-rng
// driver inside its sandbox (two capabilities, seccomp, no new
// privileges, its own mount namespace), with the forced 128 MiB buffer,
// the settle unit succeeds, reload is a SIGHUP to the same process and
// stop ends it with status 0.
func TestDistSystemd(t *testing.T) {
	Require(t)
	files := append(systemdFiles(t),
		File{Guest: "/e2e/sd-init", Mode: 0o755, Data: []byte("#!/bin/busybox sh\n/bin/busybox --install -s\nexec /lib/systemd/systemd \"$@\"\n")},
		File{Guest: "/usr/sbin/modautoload", Host: BuildBinary(t, "./cmd/modautoload"), Mode: 0o755},
		File{Guest: "/etc/systemd/system/modautoload.service", Host: distPath(t, "systemd/modautoload.service"), Mode: 0o644},
		File{Guest: "/etc/systemd/system/modautoload-settle.service", Host: distPath(t, "systemd/modautoload-settle.service"), Mode: 0o644},
		File{Guest: "/etc/systemd/system/modautoload.service.d/log.conf", Data: []byte("[Service]\nStandardError=append:/run/modautoload.log\n")},
		File{Guest: "/etc/systemd/system/e2e.target", Data: []byte(`[Unit]
Description=e2e
Wants=modautoload.service modautoload-settle.service e2e-check.service
`)},
		File{Guest: "/etc/systemd/system/e2e-check.service", Data: []byte(`[Unit]
DefaultDependencies=no
After=modautoload-settle.service
[Service]
Type=oneshot
ExecStart=/e2e/check
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
`)},
		File{Guest: "/e2e/check", Data: []byte(systemdCheck), Mode: 0o755},
	)
	res := Boot(t.Context(), t, Scenario{
		Files:      files,
		Devices:    []string{"virtio-rng-pci"},
		KernelArgs: []string{"rdinit=/e2e/sd-init", "systemd.unit=e2e.target"},
		Timeout:    90 * time.Second,
	})
	for key, want := range map[string]string{
		"SERVICE": "active running", "SETTLE_UNIT": "active success", "MOUNTNS": "private",
		"VIRTIO_RNG": "live", "RELOAD_RC": "0", "AFTER_RELOAD": "active same",
		"STOP_RC": "0", "STOPPED": "success 0",
	} {
		if got := res.Value(key); got != want {
			t.Errorf("%s: %q, want %q", key, got, want)
		}
	}
	// CAP_NET_ADMIN (12) and CAP_SYS_MODULE (16), nothing else.
	sb := res.Value("SANDBOX")
	for _, want := range []string{"CapBnd: 0000000000011000", "CapEff: 0000000000011000", "NoNewPrivs: 1", "Seccomp: 2"} {
		if !strings.Contains(sb, want) {
			t.Errorf("daemon's sandbox %q lacks %q", sb, want)
		}
	}
	if st := daemonStatus(t, res); st.Loads.Loaded == 0 || st.Modules["virtio_rng"].State != "live" {
		t.Errorf("the daemon under the unit loaded %d modules, virtio_rng %+v", st.Loads.Loaded, st.Modules["virtio_rng"])
	}
	log := strings.Join(res.Lines("LOG"), "\n")
	for _, want := range []string{`"rcvbuf":134217728`, `"message":"SIGHUP: reloading"`, `"message":"stopped"`} {
		if !strings.Contains(log, want) {
			t.Errorf("daemon log lacks %s:\n%s", want, log)
		}
	}
}

// TestDistSystemdVerify runs systemd-analyze on the units in a scratch root
// (it checks that ExecStart= and ExecReload= programs exist there): verify
// must print nothing (an unknown directive is only a warning), and the
// sandbox's exposure score must stay at most 3.0 (2.2 when written).
func TestDistSystemdVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		unmet(t, "systemd-analyze not found (apt-get install systemd)")
	}
	root := t.TempDir()
	for _, f := range []string{"usr/sbin/modautoload", "bin/kill"} {
		p := filepath.Join(root, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	units := filepath.Join(root, "etc/systemd/system")
	if err := os.MkdirAll(units, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"modautoload.service", "modautoload-settle.service", "modautoload-modules-load.service"} {
		data, err := os.ReadFile(distPath(t, "systemd/"+u))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(units, u), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command(sa, "verify", "--root="+root, "modautoload.service", "modautoload-settle.service", "modautoload-modules-load.service").CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err = exec.Command(sa, "security", "--offline=yes", "--root="+root, "--threshold=30", "modautoload.service").CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze security: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	t.Logf("%s", lines[len(lines)-1])
}

// TestDistOpenRC checks the OpenRC script's syntax with sh -n (dash here,
// busybox sh as well), then sources it in sh with OpenRC's helpers faked
// and runs depend, start_post and reload, checking what they ask for.
// OpenRC itself does not run in the rig.
func TestDistOpenRC(t *testing.T) {
	script := distPath(t, "openrc/modautoload")
	if _, err := os.Stat("/bin/busybox"); err != nil {
		unmet(t, "/bin/busybox not found (apt-get install busybox-static)")
	}
	for _, sh := range [][]string{{"sh", "-n"}, {"/bin/busybox", "sh", "-n"}} {
		if out, err := exec.Command(sh[0], append(sh[1:], script)...).CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", strings.Join(sh, " "), err, out)
		}
	}
	bin := t.TempDir()
	// Fakes that log their arguments: supervise-daemon and the daemon's binary.
	for _, name := range []string{"supervise-daemon", "modautoload"} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\necho \""+name+" $*\"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	harness := `
need() { echo "need $*"; }
before() { echo "before $*"; }
keyword() { echo "keyword $*"; }
ebegin() { :; }
eend() { echo "eend $1"; return "$1"; }
ewend() { echo "ewend $1"; return "$1"; }
RC_SVCNAME=modautoload
MODAUTOLOAD_OPTS="--rules /etc/x.rules"
. "$1"
command=modautoload
depend
start_post
reload
echo "command_args=$command_args supervisor=$supervisor retry=$retry extra=$extra_started_commands"
`
	cmd := exec.Command("sh", "-c", harness, "sh", script)
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("harness: %v\n%s", err, out)
	}
	got := strings.TrimSpace(string(out))
	want := strings.Join([]string{
		"need sysfs dev-mount",
		"before checkfs fsck",
		"keyword -containers -prefix",
		"modautoload settle --timeout 60s",
		"ewend 0",
		"supervise-daemon modautoload --signal HUP",
		"eend 0",
		"command_args=daemon --coldplug --log-target kmsg --rules /etc/x.rules supervisor=supervise-daemon retry=TERM/15/KILL/5 extra=reload",
	}, "\n")
	if got != want {
		t.Errorf("OpenRC script under the harness printed\n%s\nwant\n%s", got, want)
	}
}

// TestDistRules: dist/udev/80-drivers.rules holds no rule (installed in
// /etc/udev/rules.d it masks udev's file of that name, the one with
// RUN{builtin}+="kmod load" in Debian's udev 252), and
// dist/rules.d/80-drivers.rules, udev's special cases as event rules, parses
// cleanly and loads what udev's rules load, ppdev after parport_pc's module
// event included.
func TestDistRules(t *testing.T) {
	mask, err := os.ReadFile(distPath(t, "udev/80-drivers.rules"))
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range strings.Split(string(mask), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			t.Errorf("udev/80-drivers.rules:%d is not a comment: %q", i+1, l)
		}
	}

	rs, err := rules.LoadEventRules(rules.EventRulesOptions{Paths: []string{distPath(t, "rules.d/80-drivers.rules")}})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range rs.Problems {
		t.Errorf("rules.d/80-drivers.rules: %v", p)
	}
	if rs.AllowListed() {
		t.Error("rules.d/80-drivers.rules turns allow-list mode on")
	}
	ev := func(action, subsystem, devpath, modalias string, env ...string) *uevent.Event {
		e := &uevent.Event{Action: action, Subsystem: subsystem, DevPath: devpath, Modalias: modalias}
		for i := 0; i+1 < len(env); i += 2 {
			e.Props = append(e.Props, uevent.Property{Key: env[i], Value: env[i+1]})
		}
		return e
	}
	for _, c := range []struct {
		ev       *uevent.Event
		modules  string
		modalias bool
	}{
		{ev("add", "memstick", "/devices/pci0000:00/0000:00:1e.0/memstick0/memstick0:0", ""), "ms_block mspro_block", false},
		{ev("add", "tifm", "/devices/pci0000:00/0000:00:1e.0/tifm_7xx10/tifm0:0", "tifm:t01", "TIFM_CARD_TYPE", "SD"), "tifm_sd", true},
		{ev("add", "tifm", "/devices/pci0000:00/0000:00:1e.0/tifm_7xx10/tifm0:1", "tifm:t02", "TIFM_CARD_TYPE", "MS"), "tifm_ms", true},
		{ev("add", "scsi", "/devices/pci0000:00/0000:00:1f.2/host0/target0:0:0/0:0:0:0", "scsi:t-0x01", "DEVTYPE", "scsi_device"), "sg", true},
		{ev("add", "scsi", "/devices/pci0000:00/0000:00:1f.2/host0/target0:0:0", "", "DEVTYPE", "scsi_target"), "", false},
		{ev("remove", "memstick", "/devices/pci0000:00/0000:00:1e.0/memstick0/memstick0:0", ""), "", false},
		{ev("add", "pci", "/devices/pci0000:00/0000:00:03.0", "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00"), "", true},
		{ev("add", "module", "/module/parport_pc", ""), "ppdev", false},
		{ev("remove", "module", "/module/parport_pc", ""), "", false},
		{ev("add", "module", "/module/parport", ""), "", false},
	} {
		d := rs.Decide(c.ev)
		if got := strings.Join(d.Modules, " "); got != c.modules || d.LoadModalias != c.modalias {
			t.Errorf("%s %s: LOAD %q modalias %v, want %q %v", c.ev.Action, c.ev.DevPath, got, d.LoadModalias, c.modules, c.modalias)
		}
	}
}
