package e2e

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// armDevices exercise both ways an ARM board describes its devices. The
// virt board's device tree brings virtio-mmio transports, fw_cfg and a
// gpio-keys power button; the virtio devices added here sit on those
// transports, so their drivers load only after virtio_mmio, found through
// the device tree. Behind the PCIe host bridge: the PCI devices.
var armDevices = []string{
	"virtio-balloon-device", "virtio-serial-device",
	"virtio-rng-pci", "virtio-net-pci,netdev=n0", "e1000e,netdev=n1", "qemu-xhci", "usb-kbd",
}

// armQEMUArgs are armDevices' backends, and the character device of the
// USB serial adapter the hotplug adds.
var armQEMUArgs = []string{
	"-netdev", "user,id=n0,restrict=on", "-netdev", "user,id=n1,restrict=on",
	"-chardev", "ringbuf,id=ser0",
}

// armCase is what one ARM guest must show.
type armCase struct {
	arch *Arch
	// deviceTree are the drivers of device-tree devices that are modules
	// in this kernel (armhf builds gpio_keys in, and has no qemu_fw_cfg).
	deviceTree []string
	// pci are drivers of the PCIe devices.
	pci []string
}

// TestArm64 and TestArmhf boot Debian's ARM kernels on qemu's virt board:
// coldplug loads what kmod's modprobe fixpoint loop loads on the same
// devices, device-tree drivers included; a USB device hotplugged over QMP
// gets its driver; a forged uevent is refused; raid6_pq's slow init
// returns no loader early; and the unit tests of unitPkgs, built for the
// architecture, pass on its kernel.
func TestArm64(t *testing.T) {
	testArm(t, armCase{
		arch:       ARM64,
		deviceTree: []string{"virtio_mmio", "gpio_keys", "qemu_fw_cfg", "virtio_balloon", "virtio_console"},
		pci:        []string{"virtio_pci", "virtio_rng", "virtio_net", "e1000e", "xhci_pci", "usbhid"},
	})
}

func TestArmhf(t *testing.T) {
	testArm(t, armCase{
		arch:       ARMHF,
		deviceTree: []string{"virtio_mmio", "virtio_balloon", "virtio_console"},
		pci:        []string{"virtio_pci", "virtio_rng", "virtio_net", "e1000e", "xhci_pci", "usbhid"},
	})
}

// forgedAlias is the MODALIAS of the forged uevents: an FTDI USB serial
// adapter, whose driver nothing else loads before the hotplug.
const forgedAlias = "usb:v0403p6001d0400dc00dsc00dp00icFFiscFFipFFin00"

func testArm(t *testing.T, c armCase) {
	a := c.arch
	k := RequireArch(t, a)
	files := []File{
		{Guest: "/bin/modautoload", Host: BuildBinaryFor(t, "./cmd/modautoload", a), Mode: 0o755},
		{Guest: "/bin/forge", Host: BuildBinaryFor(t, "./e2e/guest/forge", a), Mode: 0o755},
	}
	unitFiles, units := unitScenario(t, a.GOARCH, a.GOARM)

	ref := Boot(t.Context(), t, Scenario{
		Arch: a, Devices: armDevices, QEMUArgs: armQEMUArgs, Timeout: 5 * time.Minute,
		Script: kmodFixpoint,
	})

	// One boot for the rest. The race comes first, with no daemon to
	// load for the loaders; the unit tests last, as their forged event
	// would count among the daemon's refusals.
	vm := Start(t.Context(), t, Scenario{
		Arch: a, Devices: armDevices, QEMUArgs: armQEMUArgs, Timeout: 8 * time.Minute, QMP: true,
		Files: append(files, unitFiles...),
		Script: `echo "E2E:UNAME $(uname -m) $(uname -r)"
phase() { echo "E2E:PHASE $1 $(cut -d' ' -f1 /proc/uptime)"; }
phase race` + slowInitRace + `phase coldplug` + helperSetup + startDaemon("--coldplug") + settleAndReport + `
phase forge
echo "E2E:FORGED_RESOLVES $(modautoload resolve ` + forgedAlias + ` | tr '\n' ' ')"
forge --modalias ` + forgedAlias + ` --count 3
modautoload settle --timeout 60s
echo "E2E:AFTER_FORGE $(cut -d' ' -f1 /proc/modules | sort | tr '\n' ' ')"
phase hotplug
echo "E2E:READY"
for i in $(seq 1200); do [ "$(cat /sys/module/ftdi_sio/initstate 2>/dev/null)" = live ] && break; sleep 0.05; done
echo "E2E:HOTPLUGGED $(cat /sys/module/ftdi_sio/initstate 2>/dev/null || echo absent)"
modautoload settle --timeout 60s; echo "E2E:HOT_RC $?"
echo "E2E:STATUS $(modautoload status --json)"
` + daemonLog + `phase units` + units + `phase end`,
	})
	vm.Await("READY")
	if _, err := vm.QMP().Execute(t.Context(), "device_add", map[string]any{"driver": "usb-serial", "id": "ser1", "chardev": "ser0"}); err != nil {
		t.Errorf("device_add usb-serial: %v", err)
	}
	res := vm.Wait()
	if got, want := res.Value("UNAME"), map[string]string{"arm64": "aarch64", "armhf": "armv7l"}[a.Name]+" "+k.Version; got != want {
		t.Errorf("guest machine and kernel %q, want %q", got, want)
	}

	// Coldplug parity with kmod, device-tree drivers among them.
	if res.Value("SETTLE_RC") != "0" {
		t.Fatalf("settle exited %q; log %q", res.Value("SETTLE_RC"), res.Lines("LOG"))
	}
	ours, kmods := res.Lines("MODULE"), ref.Lines("MODULE")
	if missing := minus(kmods, ours); len(missing) > 0 {
		t.Errorf("the daemon did not load %v, which kmod's fixpoint loop loads", missing)
	}
	for _, m := range append(c.deviceTree, c.pci...) {
		for name, set := range map[string][]string{"kmod": kmods, "the daemon": ours} {
			if !slices.Contains(set, m) {
				t.Errorf("%s did not load %s", name, m)
			}
		}
	}
	t.Logf("coldplug: the daemon %d modules, kmod %d; extra %v", len(ours), len(kmods), minus(ours, kmods))

	// Forged events: refused, and the module they name not loaded by them.
	if !strings.Contains(res.Value("FORGED_RESOLVES"), "ftdi_sio") {
		t.Errorf("the forged alias resolves to %q, not ftdi_sio: the test would prove nothing", res.Value("FORGED_RESOLVES"))
	}
	if slices.Contains(strings.Fields(res.Value("AFTER_FORGE")), "ftdi_sio") {
		t.Error("a forged uevent loaded ftdi_sio")
	}
	st := daemonStatus(t, res)
	if st.Events.Rejected != 3 {
		t.Errorf("the daemon rejected %d events, want the 3 forged ones", st.Events.Rejected)
	}

	// Hotplug: the real device's event loads the driver.
	if got := res.Value("HOTPLUGGED"); got != "live" || res.Value("HOT_RC") != "0" {
		t.Errorf("after hotplugging a USB serial adapter: ftdi_sio %s, settle exited %q; log %q", got, res.Value("HOT_RC"), res.Lines("LOG"))
	}
	if st.Modules["ftdi_sio"].State != "live" {
		t.Errorf("the daemon's state of ftdi_sio: %+v", st.Modules["ftdi_sio"])
	}

	checkSlowInitRace(t, res)
	checkUnits(t, res, a.Name)
	t.Logf("phases (guest uptime, s): %s", strings.Join(res.Lines("PHASE"), ", "))
}
