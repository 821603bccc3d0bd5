package e2e

import (
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// helperSetup installs modautoload as the kernel's modprobe helper: the
// kernel runs /proc/sys/kernel/modprobe with argv[0] set to that path, so
// the link must be named modprobe.
const helperSetup = `
mkdir -p /usr/lib/modautoload
ln -s /bin/modautoload /usr/lib/modautoload/modprobe
echo /usr/lib/modautoload/modprobe >/proc/sys/kernel/modprobe
`

// traceSetup counts what reaches the kernel: finit_module system calls,
// module loads and the kernel's own module requests.
const traceSetup = `
mount -t tracefs tracefs /sys/kernel/tracing
T=/sys/kernel/tracing
echo 1 >$T/events/syscalls/sys_enter_finit_module/enable
echo 1 >$T/events/module/module_load/enable
echo 1 >$T/events/module/module_request/enable
# count PATTERN: how many trace lines match so far
count() { grep -c "$1" $T/trace; }
`

// TestSlowInitRace is the seed's race made sharp: raid6_pq benchmarks its
// algorithms during init, so /sys/module/raid6_pq exists long before it is
// live. While busybox insmod is in that window, four modautoload modprobe
// processes ask for it; each may return 0 only when initstate is live.
func TestSlowInitRace(t *testing.T) {
	Require(t)
	bin := BuildBinary(t, "./cmd/modautoload")
	res := Boot(t.Context(), t, Scenario{
		Files:  []File{{Guest: "/bin/modautoload", Host: bin, Mode: 0o755}},
		Script: slowInitRace,
	})
	checkSlowInitRace(t, res)
}

// slowInitRace is TestSlowInitRace's guest side; no daemon may run.
const slowInitRace = `
KO=$(find /lib/modules -name raid6_pq.ko)
for round in $(seq 10); do
	insmod "$KO" &
	while [ ! -d /sys/module/raid6_pq ]; do :; done
	st=$(cat /sys/module/raid6_pq/initstate 2>/dev/null || echo none)
	echo "E2E:START $round $st"
	for i in 1 2 3 4; do
		( modautoload modprobe -q raid6_pq; rc=$?
		  echo "E2E:LOADER $round $i rc=$rc state=$(cat /sys/module/raid6_pq/initstate 2>/dev/null || echo none)" ) &
	done
	wait
	rmmod raid6_pq || echo "E2E:RMMOD_FAILED $round"
done
`

// checkSlowInitRace checks what slowInitRace reported: every loader
// returned 0 with the module live, and the race was really run.
func checkSlowInitRace(t *testing.T, res *Result) {
	t.Helper()
	loaders := res.Lines("LOADER")
	if len(loaders) != 40 {
		t.Fatalf("%d loaders reported, want 40", len(loaders))
	}
	for _, l := range loaders {
		if !strings.HasSuffix(l, "rc=0 state=live") {
			t.Errorf("loader %s: want exit 0 with initstate live", l)
		}
	}
	// The test proves something only if the loaders really started inside
	// the window: the directory there, the module not yet live.
	inWindow := 0
	for _, s := range res.Lines("START") {
		if !strings.HasSuffix(s, " live") {
			inWindow++
		}
	}
	if inWindow < 5 {
		t.Errorf("only %d of 10 rounds started before raid6_pq was live; the race was not exercised", inWindow)
	}
	if f := res.Lines("RMMOD_FAILED"); len(f) > 0 {
		t.Errorf("rmmod failed in rounds %v", f)
	}
	t.Logf("%d of 10 rounds started with raid6_pq not yet live", inWindow)
}

// TestKernelHelperXfrm is the seed's trigger: 40 threads open NETLINK_XFRM
// sockets at once and the kernel runs 40 helpers (modautoload, as
// /proc/sys/kernel/modprobe) for net-pf-16-proto-6. Every socket() must
// succeed, over many rounds.
func TestKernelHelperXfrm(t *testing.T) {
	Require(t)
	bin := BuildBinary(t, "./cmd/modautoload")
	storm := BuildBinary(t, "./e2e/guest/xfrmstorm")
	res := Boot(t.Context(), t, Scenario{
		Files: []File{
			{Guest: "/bin/modautoload", Host: bin, Mode: 0o755},
			{Guest: "/bin/xfrmstorm", Host: storm, Mode: 0o755},
		},
		Timeout: 4 * time.Minute,
		Script: helperSetup + traceSetup + `
for round in $(seq 15); do
	xfrmstorm --threads 40
	grep -q '^xfrm_user ' /proc/modules && echo "E2E:LOADED $round" 
	rmmod xfrm_user xfrm_algo
done
echo "E2E:REQUESTS $(count ' module_request: ')"
echo "E2E:FINIT $(count 'sys_finit_module(')"
echo "E2E:LOADS $(count ' module_load: ')"
`,
	})
	results := res.Lines("SOCKETS")
	if len(results) != 15 {
		t.Fatalf("%d rounds reported, want 15", len(results))
	}
	for i, r := range results {
		if r != "ok=40 failed=0" {
			t.Errorf("round %d: %s %v", i+1, r, res.Lines("SOCKET_ERR"))
		}
	}
	if n := len(res.Lines("LOADED")); n != 15 {
		t.Errorf("xfrm_user loaded in %d of 15 rounds", n)
	}
	// The point is many helpers at once, not one per round.
	requests, _ := strconv.Atoi(res.Value("REQUESTS"))
	if requests < 15*10 {
		t.Errorf("the kernel made %d module requests in 15 rounds: the helpers did not run in parallel", requests)
	}
	if loads, _ := strconv.Atoi(res.Value("LOADS")); loads != 30 {
		t.Errorf("%d module loads, want 30 (xfrm_algo and xfrm_user, 15 rounds)", loads)
	}
	// 40 helper processes per round, yet each module is handed to the
	// kernel once: they take turns on the module file's lock.
	if finit, _ := strconv.Atoi(res.Value("FINIT")); finit != 30 {
		t.Errorf("%d finit_module calls for 30 loads: some module was handed to the kernel twice", finit)
	}
	t.Logf("kernel requests %s, finit_module calls %s, module loads %s (2 modules x 15 rounds)",
		res.Value("REQUESTS"), res.Value("FINIT"), res.Value("LOADS"))
}

// TestLoaderFailuresAndPolicy: an init failure is an exit 1 naming the
// errno, once; a blacklisted alias is not loaded; "install NAME /bin/true"
// prevents the load; a name that is a path is refused.
func TestLoaderFailuresAndPolicy(t *testing.T) {
	Require(t)
	bin := BuildBinary(t, "./cmd/modautoload")
	res := Boot(t.Context(), t, Scenario{
		Files: []File{
			{Guest: "/bin/modautoload", Host: bin, Mode: 0o755},
			{Guest: "/etc/modprobe.d/test.conf", Data: []byte("blacklist virtio_rng\ninstall raid6_pq /bin/true\n")},
		},
		Devices: []string{"virtio-rng-pci"},
		Script: `
modautoload modprobe acpi_cpufreq 2>/tmp/err; echo "E2E:ENODEV_RC $?"
while read -r l; do echo "E2E:ENODEV_LOG $l"; done </tmp/err

# virtio_pci first, so the virtio-rng device appears on the virtio bus.
modautoload modprobe -b "$(cat /sys/bus/pci/devices/*/modalias | grep v00001AF4d00001005)"; echo "E2E:VIRTIO_PCI_RC $?"
for i in $(seq 50); do ls /sys/bus/virtio/devices/ | grep -q . && break; sleep 0.1; done
alias=$(cat /sys/bus/virtio/devices/*/modalias)
echo "E2E:RNG_ALIAS $alias"
modautoload modprobe -b "$alias"; echo "E2E:BLACKLIST_RC $?"
[ -d /sys/module/virtio_rng ] && echo "E2E:BLACKLIST_LOADED yes" || echo "E2E:BLACKLIST_LOADED no"

modautoload modprobe raid6_pq; echo "E2E:INSTALL_RC $?"
[ -d /sys/module/raid6_pq ] && echo "E2E:INSTALL_LOADED yes" || echo "E2E:INSTALL_LOADED no"

modautoload modprobe ../../tmp/evil; echo "E2E:PATH_RC $?"
modautoload modprobe raid6_pq/../x; echo "E2E:PATH2_RC $?"
modautoload modprobe no_such_module_at_all 2>/dev/null; echo "E2E:NOTFOUND_RC $?"
`,
	})
	want := map[string]string{
		"ENODEV_RC": "1", "VIRTIO_PCI_RC": "0", "BLACKLIST_RC": "0", "BLACKLIST_LOADED": "no",
		"INSTALL_RC": "0", "INSTALL_LOADED": "no", "PATH_RC": "1", "PATH2_RC": "1", "NOTFOUND_RC": "1",
	}
	for k, v := range want {
		if got := res.Value(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if !strings.HasPrefix(res.Value("RNG_ALIAS"), "virtio:d00000004v") {
		t.Errorf("virtio-rng modalias %q", res.Value("RNG_ALIAS"))
	}
	logs := res.Lines("ENODEV_LOG")
	if len(logs) != 1 || !strings.Contains(logs[0], "ENODEV") || !strings.Contains(logs[0], "acpi_cpufreq") {
		t.Errorf("init failure reported as %q, want one line naming the module and ENODEV", logs)
	}
}

// TestModuleSetParity: for every modalias present in the guest, modautoload
// modprobe -a -b loads the same modules as kmod's modprobe -a -b, each in a
// fresh guest with the same devices.
func TestModuleSetParity(t *testing.T) {
	Require(t)
	bin := BuildBinary(t, "./cmd/modautoload")
	loadAll := func(modprobe string) []string {
		res := Boot(t.Context(), t, Scenario{
			Files:    []File{{Guest: "/bin/modautoload", Host: bin, Mode: 0o755}},
			Devices:  DeviceSet,
			QEMUArgs: DeviceSetQEMUArgs,
			Timeout:  4 * time.Minute,
			Script: `
find /sys/devices -name modalias -exec cat {} + | sort -u >/tmp/aliases
echo "E2E:ALIASES $(wc -l </tmp/aliases)"
xargs ` + modprobe + ` -a -b </tmp/aliases 2>/dev/null
cut -d' ' -f1 /proc/modules | sort | while read -r m; do echo "E2E:MODULE $m"; done
`,
		})
		return res.Lines("MODULE")
	}
	ours := loadAll("modautoload modprobe")
	kmods := loadAll(KmodRefDir + "/modprobe")
	if len(kmods) < 20 {
		t.Fatalf("kmod loaded only %d modules; the device set is not exercised", len(kmods))
	}
	if strings.Join(ours, " ") != strings.Join(kmods, " ") {
		t.Errorf("module sets differ:\nonly modautoload: %v\nonly kmod: %v", minus(ours, kmods), minus(kmods, ours))
	}
	t.Logf("%d modules loaded by both", len(ours))
}

func minus(a, b []string) []string {
	in := map[string]bool{}
	for _, x := range b {
		in[x] = true
	}
	var out []string
	for _, x := range a {
		if !in[x] {
			out = append(out, x)
		}
	}
	sort.Strings(out)
	return out
}
