// Command demo boots the cached Debian kernel under qemu and shows
// modautoload at work in the guest, on a machine that cannot load modules
// itself. `make demo` runs it.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/modautoload/modautoload/daemon"
	"github.com/modautoload/modautoload/e2e"
)

// script runs in the guest: the daemon coldplugs the device set, a
// device is hotplugged, a root process forges a uevent; tracefs times
// every module load.
const script = `
mount -t tracefs tracefs /sys/kernel/tracing
T=/sys/kernel/tracing
echo 1 >$T/events/module/module_load/enable
echo 1 >$T/events/syscalls/sys_enter_finit_module/enable
echo "E2E:DEVICES $(find /sys/devices -name uevent | wc -l)"
echo "E2E:MODALIASES $(find /sys/devices -name modalias | wc -l)"
echo "E2E:T0 $(cut -d' ' -f1 /proc/uptime)"
modautoload daemon --coldplug --log-format json 2>/tmp/daemon.log &
modautoload settle --timeout 120s
echo "E2E:SETTLED $? $(cut -d' ' -f1 /proc/uptime)"
echo "E2E:READY"
for i in $(seq 1000); do grep -qs 0x1052 /sys/bus/pci/devices/*/device && break; sleep 0.01; done
echo "E2E:HOTPLUG_SEEN $(cut -d' ' -f1 /proc/uptime)"
for i in $(seq 600); do [ "$(cat /sys/module/virtio_input/initstate 2>/dev/null)" = live ] && break; sleep 0.01; done
echo "E2E:HOTPLUG_LIVE $(cut -d' ' -f1 /proc/uptime) $(cat /sys/module/virtio_input/initstate 2>/dev/null)"
modautoload settle --timeout 60s
forge --modalias pci:v00008086d0000100Fsv00001AF4sd00001100bc02sc00i00 >/dev/null
modautoload settle --timeout 60s
grep -v '^#' $T/trace | grep ' module_load: ' | while read -r l; do echo "E2E:LOAD $l"; done
echo "E2E:FINIT $(grep -c 'sys_finit_module(' $T/trace)"
modautoload status | while IFS= read -r l; do echo "E2E:STATUS $l"; done
modautoload status --timeline | sed -n '/^coldplug/,$p' | while IFS= read -r l; do echo "E2E:CRITICAL $l"; done
echo "E2E:TIMELINE $(modautoload status --timeline --json)"
grep '"uevent dropped"' /tmp/daemon.log | while read -r l; do echo "E2E:REFUSED $l"; done
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	// -module-dir prints the cached kernel's module directory, fetching it
	// if needed: make index-real runs the index tests on it.
	if len(os.Args) == 2 && os.Args[1] == "-module-dir" {
		k, err := e2e.EnsureKernel(ctx)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(k.ModulesDir())
		return
	}
	err := e2e.Run(func(t e2e.T) { demo(ctx, t) })
	e2e.RemoveBinaries()
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo failed: %v\n", err)
		os.Exit(1)
	}
}

func demo(ctx context.Context, t e2e.T) {
	fmt.Println("modautoload demo: preparing the Debian kernel and initramfs (cached after the first run)")
	if err := e2e.Prepare(); err != nil {
		t.Fatalf("%v", err)
	}
	k, err := e2e.EnsureKernel(ctx)
	if err != nil {
		t.Fatalf("%v", err)
	}
	fmt.Println("building the static modautoload binary")
	bin := e2e.BuildBinary(t, "./cmd/modautoload")
	forge := e2e.BuildBinary(t, "./e2e/guest/forge")

	fmt.Printf("booting Linux %s under qemu (TCG, 2 vCPUs) with %d devices; the daemon coldplugs them\n", k.Version, len(e2e.DeviceSet))
	vm := e2e.Start(ctx, t, e2e.Scenario{
		Script:   script,
		QMP:      true,
		Timeout:  4 * time.Minute,
		Devices:  e2e.DeviceSet,
		QEMUArgs: e2e.DeviceSetQEMUArgs,
		Files: []e2e.File{
			{Guest: "/bin/modautoload", Host: bin, Mode: 0o755},
			{Guest: "/bin/forge", Host: forge, Mode: 0o755},
		},
	})
	vm.Await("READY")
	fmt.Println("coldplug settled; hotplugging a virtio-keyboard-pci through QMP")
	if _, err := vm.QMP().Execute(ctx, "device_add", map[string]any{"driver": "virtio-keyboard-pci", "id": "kbd1"}); err != nil {
		t.Fatalf("device_add: %v", err)
	}
	report(t, vm.Wait())
}

func report(t e2e.T, res *e2e.Result) {
	t0 := field(res.Value("T0"), 0)
	settledAt := field(res.Value("SETTLED"), 1)
	fmt.Printf("\n== report ==\n")
	fmt.Printf("devices in sysfs at boot: %s, of which %s have a MODALIAS\n", res.Value("DEVICES"), res.Value("MODALIASES"))
	loads := res.Lines("LOAD")
	last := 0.0
	fmt.Printf("modules loaded (seconds after the daemon started):\n")
	for _, l := range loads {
		// "... [000] .....     5.033750: module_load: xfrm_algo"
		f := strings.Fields(l)
		if len(f) < 3 {
			continue
		}
		at := field(strings.TrimSuffix(f[len(f)-3], ":"), 0) - t0
		last = max(last, at)
		fmt.Printf("  %6.2f s  %s\n", at, f[len(f)-1])
	}
	fmt.Printf("coldplug: %d modules live %.2f s after start; settle returned at %.2f s; %s finit_module calls in all\n",
		len(loads), last, settledAt-t0, res.Value("FINIT"))
	hot := strings.Fields(res.Value("HOTPLUG_LIVE"))
	if len(hot) == 2 && hot[1] == "live" {
		fmt.Printf("hotplug: virtio_input live %.2f s after the virtio-keyboard-pci appeared on the PCI bus (pci event -> virtio_pci, already live -> virtio bus event -> virtio_input)\n",
			field(hot[0], 0)-field(res.Value("HOTPLUG_SEEN"), 0))
	} else {
		t.Fatalf("virtio_input not live after hotplug: %q", res.Value("HOTPLUG_LIVE"))
	}
	for _, l := range res.Lines("REFUSED") {
		fmt.Println("a forged uevent from a root process in the guest was refused:\n    " + l)
	}
	fmt.Println("modautoload status at the end:")
	for _, l := range res.Lines("STATUS") {
		fmt.Println("    " + l)
	}
	if !strings.HasPrefix(res.Value("SETTLED"), "0 ") {
		t.Fatalf("settle failed: %q", res.Value("SETTLED"))
	}
	critical := res.Lines("CRITICAL")
	if len(critical) < 2 {
		t.Fatalf("no critical path in status --timeline: %q", critical)
	}
	fmt.Println("the coldplug's timeline (modautoload status --timeline; seconds since boot):")
	for _, l := range critical {
		fmt.Println("    " + l)
	}
	path, err := writeChart(res.Value("TIMELINE"))
	if err != nil {
		t.Fatalf("timeline chart: %v", err)
	}
	fmt.Printf("the load timeline as a chart (one bar per load, the critical path outlined): %s\n", path)
}

// writeChart draws the guest's timeline (status --timeline --json) as
// status --timeline --svg does in the guest, into MODAUTOLOAD_DEMO_SVG or
// the temporary directory.
func writeChart(timelineJSON string) (string, error) {
	var tl daemon.Timeline
	if err := json.Unmarshal([]byte(timelineJSON), &tl); err != nil {
		return "", fmt.Errorf("status --timeline --json: %w", err)
	}
	path := os.Getenv("MODAUTOLOAD_DEMO_SVG")
	if path == "" {
		path = filepath.Join(os.TempDir(), "modautoload-timeline.svg")
	}
	var b bytes.Buffer
	if err := daemon.WriteTimelineSVG(&b, &tl); err != nil {
		return "", err
	}
	return path, daemon.WriteFileAtomic(path, b.Bytes())
}

func field(s string, i int) float64 {
	f := strings.Fields(s)
	if i >= len(f) {
		return 0
	}
	v, _ := strconv.ParseFloat(f[i], 64)
	return v
}
