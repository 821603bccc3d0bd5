// Command demo boots the cached Debian kernel under qemu and shows
// modautoload at work in the guest, on a machine that cannot load modules
// itself. `make demo` runs it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/modautoload/modautoload/e2e"
)

// script runs in the guest: monitor listens while a device is hotplugged
// and a root process forges a uevent.
const script = `
modautoload monitor --log-format json >/tmp/mon.txt 2>/tmp/mon.log &
MON=$!
for i in $(seq 100); do grep -q "listening for kernel uevents" /tmp/mon.log && break; sleep 0.05; done
echo "E2E:DEVICES $(find /sys/devices -name uevent | wc -l)"
echo "E2E:MODALIASES $(find /sys/devices -name modalias | wc -l)"
echo "E2E:READY"
for i in $(seq 200); do grep -q "MODALIAS=pci:v00001AF4d00001005" /tmp/mon.txt && break; sleep 0.05; done
forge --modalias pci:v00001AF4d00001005sv00001AF4sd00001100bc00scFFi00
kill -TERM $MON; wait $MON
echo "E2E:MONRC $?"
awk '/^KERNEL/{p=0} /^KERNEL.*add .*\/devices\/pci/{p=1} p' /tmp/mon.txt | while IFS= read -r l; do echo "E2E:HOTPLUG $l"; done
while IFS= read -r l; do echo "E2E:LOG $l"; done </tmp/mon.log
`

// demoT adapts the rig's test interface to a program: Fatal stops the demo.
type demoT struct{ cleanups []func() }

type fatal string

func (*demoT) Helper()                           {}
func (*demoT) Fatal(args ...any)                 { panic(fatal(fmt.Sprint(args...))) }
func (*demoT) Fatalf(format string, args ...any) { panic(fatal(fmt.Sprintf(format, args...))) }
func (*demoT) Logf(format string, args ...any)   { fmt.Fprintf(os.Stderr, "  "+format+"\n", args...) }
func (d *demoT) Cleanup(f func())                { d.cleanups = append(d.cleanups, f) }
func (d *demoT) TempDir() string {
	dir, err := os.MkdirTemp("", "modautoload-demo-")
	if err != nil {
		d.Fatal(err)
	}
	d.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func (d *demoT) done() {
	for i := len(d.cleanups) - 1; i >= 0; i-- {
		d.cleanups[i]()
	}
	e2e.RemoveBinaries()
}

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
	t := &demoT{}
	code := 0
	func() {
		defer func() {
			if r := recover(); r != nil {
				msg, ok := r.(fatal)
				if !ok {
					panic(r)
				}
				fmt.Fprintf(os.Stderr, "demo failed: %s\n", msg)
				code = 1
			}
		}()
		demo(ctx, t)
	}()
	t.done()
	stop()
	os.Exit(code)
}

func demo(ctx context.Context, t *demoT) {
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

	fmt.Printf("booting Linux %s under qemu (TCG, 2 vCPUs)\n", k.Version)
	t0 := time.Now()
	vm := e2e.Start(ctx, t, e2e.Scenario{
		Script: script,
		QMP:    true,
		Files: []e2e.File{
			{Guest: "/bin/modautoload", Host: bin, Mode: 0o755},
			{Guest: "/bin/forge", Host: forge, Mode: 0o755},
		},
		Devices:  []string{"e1000,netdev=n0", "virtio-balloon-pci", "qemu-xhci", "usb-kbd"},
		QEMUArgs: []string{"-netdev", "user,id=n0,restrict=on"},
	})
	vm.Await("READY")
	booted := time.Since(t0)
	fmt.Println("hotplugging a virtio-rng-pci device through QMP")
	if _, err := vm.QMP().Execute(ctx, "device_add", map[string]any{"driver": "virtio-rng-pci", "id": "rng0"}); err != nil {
		t.Fatalf("device_add: %v", err)
	}
	res := vm.Wait()

	fmt.Printf("\n== report ==\n")
	fmt.Printf("guest up in %.1f s; whole run %.1f s\n", booted.Seconds(), res.Duration.Seconds())
	fmt.Printf("devices in sysfs at boot: %s, of which %s have a MODALIAS a driver can match\n",
		res.Value("DEVICES"), res.Value("MODALIASES"))
	fmt.Println("the hotplug event, as `modautoload monitor` printed it in the guest:")
	for _, l := range res.Lines("HOTPLUG") {
		fmt.Println("    " + l)
	}
	for _, l := range res.Lines("LOG") {
		switch {
		case strings.Contains(l, `"uevent dropped"`):
			fmt.Println("a forged uevent from a root process in the guest was refused:\n    " + l)
		case strings.Contains(l, `"uevent totals"`):
			fmt.Println("monitor totals:\n    " + l)
		}
	}
	if len(res.Lines("HOTPLUG")) == 0 || res.Value("MONRC") != "0" {
		t.Fatalf("the hotplug event was not seen (monitor exit %q)", res.Value("MONRC"))
	}
	fmt.Println("\nNot yet here: resolving and loading modules (the resolver, loader and daemon are the next issues).")
}
