package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// staticList is a modules-load.d file of netfilter, filesystem, block and
// crypto modules that share dependencies (nf_conntrack, libcrc32c,
// x_tables, ...), written the ways people write them: a comment, a ';'
// comment, blanks around, CRLF, '_' for a file named with '-', a
// filesystem alias, a name nothing answers to.
const staticList = "# e2e\n; also a comment\nnft_ct\nnft_chain_nat\n  xt_conntrack\t\nxt_MASQUERADE\r\nnf_conntrack_ftp\n" +
	"iptable_nat\nbr_netfilter\n\noverlay\nfuse\nloop\ndm_crypt\nalgif_skcipher\nfs-vfat\nnosuchmodule\n"

// staticListed are the modules the lists above, /etc/modules (dummy) and
// the command line (tun) name.
var staticListed = []string{"nft_ct", "nft_chain_nat", "xt_conntrack", "xt_MASQUERADE", "nf_conntrack_ftp", "iptable_nat",
	"br_netfilter", "overlay", "fuse", "loop", "dm_crypt", "algif_skcipher", "vfat", "dummy", "tun"}

// traceEvent matches "comm-TID [CPU] FLAGS TS: BODY".
var traceEvent = regexp.MustCompile(`^\s*(.*)-(\d+)\s+\[\d+\]\s+\S+\s+(\d+\.\d+):\s+(.*)$`)

// TestLoadStatic: load-static reads modules-load.d, /etc/modules (with a
// parameter) and modules_load= from the real kernel command line, and
// loads 15 entries with their shared dependencies side by side: several
// finit_module calls in the kernel at once, each module handed to the
// kernel once (no duplicate call, no failed one), every module live when
// it exits 0, a name nothing answers to only a warning. Run again it hands
// nothing to the kernel; a module whose parameter the kernel refuses makes
// it exit 1, naming the list's file and line.
func TestLoadStatic(t *testing.T) {
	Require(t)
	res := Boot(t.Context(), t, Scenario{
		Files: append(daemonFiles(t),
			File{Guest: "/etc/modules-load.d/50-e2e.conf", Data: []byte(staticList)},
			File{Guest: "/etc/modules", Data: []byte("# /etc/modules\ndummy numdummies=3 # three\n")},
		),
		KernelArgs: []string{"modules_load=tun"},
		Timeout:    3 * time.Minute,
		Script: traceSetup + `
echo 1 >$T/events/syscalls/sys_exit_finit_module/enable
modautoload load-static --log-format json --log-level debug 2>/tmp/static.log; echo "E2E:RC $?"
for m in $(cut -d' ' -f1 /proc/modules); do echo "E2E:STATE $m $(cat /sys/module/$m/initstate)"; done
echo "E2E:DUMMIES $(ls /sys/class/net | grep -c '^dummy')"
grep -E 'sys_finit_module|module_load:' $T/trace | sed 's/^/E2E:TRACE /'
sed 's/^/E2E:LOG /' /tmp/static.log
echo >$T/trace
modautoload load-static 2>/dev/null; echo "E2E:AGAIN $? $(grep -c 'modautoload-.*sys_finit_module(' $T/trace)"
echo 'brd rd_nr=abc' >/etc/modules
modautoload load-static --log-format json /etc/modules 2>/tmp/bad.log; echo "E2E:BAD_RC $?"
sed 's/^/E2E:BADLOG /' /tmp/bad.log
`,
	})
	log := strings.Join(res.Lines("LOG"), "\n")
	if rc := res.Value("RC"); rc != "0" {
		t.Fatalf("load-static exited %s; log:\n%s", rc, log)
	}
	states := map[string]string{}
	for _, l := range res.Lines("STATE") {
		name, st, _ := strings.Cut(l, " ")
		states[name] = st
	}
	for _, m := range staticListed {
		if states[strings.ReplaceAll(m, "-", "_")] != "live" {
			t.Errorf("%s: %q right after load-static returned, want live", m, states[m])
		}
	}
	for m, st := range states {
		if st != "live" {
			t.Errorf("%s: %q right after load-static returned", m, st)
		}
	}
	if got := res.Value("DUMMIES"); got != "3" {
		t.Errorf("%s dummy interfaces: /etc/modules' numdummies=3 did not reach the kernel", got)
	}

	// The kernel's view: what load-static handed it, when. libcrc32c's
	// soft dependency crc32c is crc32c_intel first, whose init finds no
	// SSE4.2 under TCG (ENODEV): a failed soft dependency is ignored, as
	// with kmod, and is the only failed call allowed.
	loads, noHardware := map[string]int{}, map[string]bool{}
	inKernel, most, calls, others := map[int]string{}, 0, 0, 0
	const enodev = "0xffffffffffffffed"
	for _, l := range res.Lines("TRACE") {
		m := traceEvent.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		if m[1] != "modautoload" {
			others++
			continue
		}
		tid, _ := strconv.Atoi(m[2])
		switch body := m[4]; {
		case strings.HasPrefix(body, "sys_finit_module("):
			calls++
			inKernel[tid] = ""
			most = max(most, len(inKernel))
		case strings.HasPrefix(body, "sys_finit_module -> "):
			if ret := strings.TrimPrefix(body, "sys_finit_module -> "); ret == enodev {
				noHardware[inKernel[tid]] = true
			} else if ret != "0x0" {
				t.Errorf("finit_module of %q returned %s", inKernel[tid], ret)
			}
			delete(inKernel, tid)
		case strings.HasPrefix(body, "module_load: "):
			name := strings.Fields(strings.TrimPrefix(body, "module_load: "))[0]
			loads[name]++
			inKernel[tid] = name
		}
	}
	total := 0
	for m, n := range loads {
		total += n
		if n != 1 {
			t.Errorf("%s handed to the kernel %d times", m, n)
		}
		if states[m] != "live" && !noHardware[m] {
			t.Errorf("%s loaded but %q", m, states[m])
		}
	}
	if calls != total {
		t.Errorf("%d finit_module calls for %d modules: a duplicate call", calls, total)
	}
	if total < 30 {
		t.Errorf("only %d modules loaded; the lists and their dependencies are more", total)
	}
	if most < 2 {
		t.Errorf("at most %d finit_module calls in the kernel at once: the lists did not load side by side", most)
	}
	for _, want := range [][]string{
		{`"level":"warn"`, `"name":"nosuchmodule","list":"/etc/modules-load.d/50-e2e.conf:17"`, `"error":"module not found`},
		{`"name":"tun","list":"kernel command line, word `},
		{`"name":"dummy","list":"/etc/modules:2","params":"numdummies=3"`},
		{`"message":"static lists loaded"`, `"entries":16,"live":15,"skipped":0,"missing":1,"failed":0`},
	} {
		if !logHas(res.Lines("LOG"), want...) {
			t.Errorf("no log line with %s:\n%s", strings.Join(want, " "), log)
		}
	}
	// Run again, only what is not live is asked for again.
	if got, want := res.Value("AGAIN"), "0 "+strconv.Itoa(len(noHardware)); got != want {
		t.Errorf("run again: exit status and finit_module calls %q, want %q (the modules without hardware: %v)", got, want, noHardware)
	}
	bad := strings.Join(res.Lines("BADLOG"), "\n")
	if res.Value("BAD_RC") != "1" || !strings.Contains(bad, `"list":"/etc/modules:1"`) || !strings.Contains(bad, "EINVAL") {
		t.Errorf("a refused parameter: exit %s, log:\n%s", res.Value("BAD_RC"), bad)
	}
	t.Logf("%d modules, at most %d finit_module calls at once, without hardware %v; %d trace events of other programs", total, most, noHardware, others)
}

// modulesLoadCheck is e2e-check.service's program for
// TestDistSystemdModulesLoad.
const modulesLoadCheck = `#!/bin/sh
show() { systemctl show -p "$2" --value "$1"; }
echo "E2E:UNIT $(show systemd-modules-load.service Id) $(show systemd-modules-load.service ActiveState) $(show systemd-modules-load.service Result) $(show systemd-modules-load.service ExecMainStatus)"
echo "E2E:EXEC $(show systemd-modules-load.service ExecStart | grep -o 'path=[^ ;]*')"
for m in loop br_netfilter bridge dummy tun; do echo "E2E:STATE $m $(cat /sys/module/$m/initstate 2>/dev/null || echo absent)"; done
while read -r l; do echo "E2E:LOG $l"; done </run/modules-load.log
echo "E2E:DONE rc=0"
poweroff -f
`

// TestDistSystemdModulesLoad boots the host's systemd with Debian's
// systemd-modules-load.service and its program in place, and
// dist/systemd/modautoload-modules-load.service enabled the way the unit
// says (systemctl enable, run on the host against a copy of the guest's
// /etc): the Alias= link shadows systemd's unit, so sysinit.target's
// systemd-modules-load.service is ours, runs load-static, and loads
// modules-load.d, /etc/modules with its parameter and modules_load=; the
// name nothing answers to is a warning, and the unit succeeds.
func TestDistSystemdModulesLoad(t *testing.T) {
	Require(t)
	vendor := "/lib/systemd/system/systemd-modules-load.service"
	prog, err := HostProgram("/lib/systemd/systemd-modules-load")
	if err != nil {
		unmet(t, "systemd-modules-load: %v (apt-get install systemd)", err)
	}
	etc := t.TempDir()
	unit := distPath(t, "systemd/modautoload-modules-load.service")
	if err := os.MkdirAll(filepath.Join(etc, "etc/systemd/system"), 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(etc, "etc/systemd/system/modautoload-modules-load.service"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemctl", "--root="+etc, "enable", "modautoload-modules-load.service").CombinedOutput()
	if err != nil {
		t.Fatalf("systemctl enable: %v\n%s", err, out)
	}
	// The guest gets the links enable made, made again by its init.
	var links []string
	filepath.Walk(filepath.Join(etc, "etc"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode()&os.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			links = append(links, "mkdir -p "+filepath.Dir(strings.TrimPrefix(p, etc))+"; ln -s "+target+" "+strings.TrimPrefix(p, etc))
		}
		return nil
	})
	sort.Strings(links)
	if len(links) != 2 || !strings.Contains(strings.Join(links, "\n"), "/etc/systemd/system/systemd-modules-load.service") {
		t.Fatalf("systemctl enable made %q; want the alias and the sysinit.target.wants link", links)
	}
	init := "#!/bin/busybox sh\n/bin/busybox --install -s\n" +
		"mkdir -p /lib/systemd/system/sysinit.target.wants\nln -s ../systemd-modules-load.service /lib/systemd/system/sysinit.target.wants/\n" +
		strings.Join(links, "\n") + "\nexec /lib/systemd/systemd \"$@\"\n"
	files := append(systemdFiles(t), prog...)
	files = append(files,
		File{Guest: "/e2e/sd-init", Mode: 0o755, Data: []byte(init)},
		File{Guest: "/usr/sbin/modautoload", Host: BuildBinary(t, "./cmd/modautoload"), Mode: 0o755},
		File{Guest: vendor, Host: vendor, Mode: 0o644},
		File{Guest: "/lib/systemd/system/sysinit.target", Host: "/lib/systemd/system/sysinit.target", Mode: 0o644},
		File{Guest: "/etc/systemd/system/modautoload-modules-load.service", Host: unit, Mode: 0o644},
		File{Guest: "/etc/systemd/system/modautoload-modules-load.service.d/log.conf",
			Data: []byte("[Service]\nStandardError=append:/run/modules-load.log\n")},
		File{Guest: "/etc/modules-load.d/e2e.conf", Data: []byte("# e2e\nloop\nbr_netfilter\nnosuchmodule\n")},
		File{Guest: "/etc/modules", Data: []byte("dummy numdummies=2\n")},
		File{Guest: "/etc/systemd/system/e2e.target", Data: []byte("[Unit]\nDescription=e2e\nWants=sysinit.target e2e-check.service\n")},
		File{Guest: "/etc/systemd/system/e2e-check.service", Data: []byte(`[Unit]
DefaultDependencies=no
After=systemd-modules-load.service
[Service]
Type=oneshot
ExecStart=/e2e/check
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
`)},
		File{Guest: "/e2e/check", Data: []byte(modulesLoadCheck), Mode: 0o755},
	)
	res := Boot(t.Context(), t, Scenario{
		Files:      files,
		KernelArgs: []string{"rdinit=/e2e/sd-init", "systemd.unit=e2e.target", "modules_load=tun"},
		Timeout:    2 * time.Minute,
	})
	log := strings.Join(res.Lines("LOG"), "\n")
	if got, want := res.Value("UNIT"), "modautoload-modules-load.service active success 0"; got != want {
		t.Errorf("systemd-modules-load.service is %q, want %q; load-static's log:\n%s", got, want, log)
	}
	if got := res.Value("EXEC"); got != "path=/usr/sbin/modautoload" {
		t.Errorf("the unit runs %q", got)
	}
	for _, l := range res.Lines("STATE") {
		if !strings.HasSuffix(l, " live") {
			t.Errorf("%s", l)
		}
	}
	for _, want := range []string{`"name":"nosuchmodule"`, `"message":"static lists loaded"`} {
		if !strings.Contains(log, want) {
			t.Errorf("load-static's log lacks %s:\n%s", want, log)
		}
	}
}

// TestDistOpenRCModules sources dist/openrc/modautoload-modules with
// OpenRC's helpers faked, as TestDistOpenRC does: it provides modules,
// start runs load-static, and its exit status reaches eend.
func TestDistOpenRCModules(t *testing.T) {
	script := distPath(t, "openrc/modautoload-modules")
	if _, err := os.Stat("/bin/busybox"); err != nil {
		unmet(t, "/bin/busybox not found (apt-get install busybox-static)")
	}
	for _, sh := range [][]string{{"sh", "-n"}, {"/bin/busybox", "sh", "-n"}} {
		if out, err := exec.Command(sh[0], append(sh[1:], script)...).CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", strings.Join(sh, " "), err, out)
		}
	}
	for _, rc := range []string{"0", "1"} {
		bin := t.TempDir()
		fake := "#!/bin/sh\necho \"modautoload $*\"\nexit " + rc + "\n"
		if err := os.WriteFile(filepath.Join(bin, "modautoload"), []byte(fake), 0o755); err != nil {
			t.Fatal(err)
		}
		harness := `
provide() { echo "provide $*"; }
before() { echo "before $*"; }
keyword() { echo "keyword $*"; }
ebegin() { :; }
eend() { echo "eend $1"; return "$1"; }
MODAUTOLOAD_STATIC_OPTS="--jobs 4"
. "$1"
depend
start
`
		// The script names /sbin/modautoload: the harness reads it with
		// that path pointing at the fake.
		body, err := os.ReadFile(script)
		if err != nil {
			t.Fatal(err)
		}
		copyPath := filepath.Join(bin, "modules")
		if err := os.WriteFile(copyPath, []byte(strings.ReplaceAll(string(body), "/sbin/modautoload", filepath.Join(bin, "modautoload"))), 0o755); err != nil {
			t.Fatal(err)
		}
		out, _ := exec.Command("sh", "-c", harness, "sh", copyPath).CombinedOutput()
		want := strings.Join([]string{
			"provide modules modules-load",
			"before hwclock hwdrivers",
			"keyword -containers -prefix",
			"modautoload load-static --jobs 4",
			"eend " + rc,
		}, "\n")
		if got := strings.TrimSpace(string(out)); got != want {
			t.Errorf("load-static exiting %s: the script printed\n%s\nwant\n%s", rc, got, want)
		}
	}
}

// logHas reports whether one log line holds every one of parts.
func logHas(lines []string, parts ...string) bool {
	for _, l := range lines {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(l, p)
		}
		if all {
			return true
		}
	}
	return false
}
