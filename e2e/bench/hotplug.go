package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/modautoload/modautoload/e2e"
)

// Each guest of an approach that keeps listening hotplugs hotplugDevice
// hotplugs times after coldplug. Every time the guest is brought back to
// the same state first: the driver unloaded (rmmod) and the previous
// device deleted, so each hotplug measures the same thing, a device whose
// driver is not loaded, and the driver's init binds only the new device.
// Each device gets its own id and slot (firstHotplugSlot on, above the
// slots the device set takes), so that no add can race the previous
// device's removal and every devpath in the trace is unique.
const (
	hotplugs         = 5
	hotplugDevice    = "virtio-keyboard-pci"
	hotplugDriver    = "virtio_input"
	firstHotplugSlot = 0x1a // to 0x1e: the root bus has 32 slots
)

// hotplugScript runs in the guest after coldplug. For each hotplug it
// marks the window, asks the host to add the device, waits for the
// driver to be live (polling slowly: the trace times it, the poll only
// paces the script), gives the agent a second for the events that follow
// (the keyboard's input devices), reports which device the driver bound,
// unloads the driver, and asks the host to delete the device.
var hotplugScript = fmt.Sprintf(`
echo 1 >$T/events/kprobes/%[1]s/enable
echo 1 >$T/events/kprobes/%[2]s/enable
i=0
for slot in %[3]s; do
	i=$((i+1)) pci=/sys/bus/pci/devices/0000:00:$slot.0
	mark "hp-start $i"
	echo "E2E:HP_ADD_$i"
	n=0; until live %[4]s || [ $n -ge 600 ]; do usleep 50000; n=$((n+1)); done
	usleep 1000000
	p=-; [ -e $pci ] && p=$(readlink -f $pci) && p=${p#/sys}
	set -- /sys/bus/virtio/drivers/%[4]s/virtio*
	d=-; [ -e "$1" ] && d=$(readlink -f "$1") && d=${d#/sys}
	echo "E2E:HOTPLUG $i $p $d"
	n=0; until rmmod %[4]s 2>/dev/null || [ $n -ge 20 ]; do usleep 100000; n=$((n+1)); done
	echo "E2E:HP_DEL_$i"
	n=0; while [ -e $pci ] && [ $n -lt 200 ]; do usleep 50000; n=$((n+1)); done
	usleep 500000
	mark "hp-end $i"
done
`, ueventProbe, sendProbe, hotplugSlots(), hotplugDriver)

// hotplugSlots lists the slots, in hex as sysfs spells them.
func hotplugSlots() string {
	var slots []string
	for i := range hotplugs {
		slots = append(slots, fmt.Sprintf("%02x", firstHotplugSlot+i))
	}
	return strings.Join(slots, " ")
}

// driveHotplugs answers hotplugScript's requests over QMP.
func driveHotplugs(ctx context.Context, t e2e.T, vm *e2e.VM) {
	for i := 1; i <= hotplugs; i++ {
		id := fmt.Sprintf("kbd%d", i)
		vm.Await(fmt.Sprintf("HP_ADD_%d", i))
		_, err := vm.QMP().Execute(ctx, "device_add", map[string]any{
			"driver": hotplugDevice, "id": id, "bus": "pci.0", "addr": fmt.Sprintf("0x%x", firstHotplugSlot+i-1),
		})
		if err != nil {
			t.Fatalf("hotplug %d: device_add: %v", i, err)
		}
		vm.Await(fmt.Sprintf("HP_DEL_%d", i))
		if _, err := vm.QMP().Execute(ctx, "device_del", map[string]any{"id": id}); err != nil {
			t.Fatalf("hotplug %d: device_del: %v", i, err)
		}
	}
}

// hotplug is where the time of one hotplug went, in seconds. It starts
// when the kernel broadcasts the uevent of the new PCI function and ends
// when the driver is live.
type hotplug struct {
	// probe: the PCI function's uevent to the uevent of the device the
	// driver is for, the virtio device virtio_pci creates while probing
	// the function. The kernel's own work, though a busy agent can slow it.
	probe float64
	// reaction: that device's uevent to the agent's finit_module entry for
	// the driver. Everything the agent does: receiving, matching,
	// resolving, opening the file, and for some forking a process.
	reaction float64
	// load: finit_module entry to the driver live. The kernel's load work
	// (copying, checking the signature, relocating, init binding the device).
	load float64
}

func (h hotplug) total() float64 { return h.probe + h.reaction + h.load }

// parseHotplugs reads the guest's HOTPLUG lines and times each hotplug in
// its window of the trace.
func parseHotplugs(res *e2e.Result, tl *timeline) ([]hotplug, error) {
	lines := res.Lines("HOTPLUG")
	if len(lines) != hotplugs {
		return nil, fmt.Errorf("%d hotplugs reported, want %d", len(lines), hotplugs)
	}
	var hs []hotplug
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) != 3 || f[0] != strconv.Itoa(i+1) {
			return nil, fmt.Errorf("E2E:HOTPLUG %q: want %d, the PCI function's and the bound device's devpaths", l, i+1)
		}
		if f[1] == "-" {
			return nil, fmt.Errorf("hotplug %d: the %s never appeared on the PCI bus", i+1, hotplugDevice)
		}
		if f[2] == "-" {
			return nil, fmt.Errorf("hotplug %d: %s did not bind the %s within 30 s", i+1, hotplugDriver, hotplugDevice)
		}
		w, err := tl.between(fmt.Sprintf("hp-start %d", i+1), fmt.Sprintf("hp-end %d", i+1))
		if err != nil {
			return nil, err
		}
		h, err := timeHotplug(w, f[1], f[2], hotplugDriver)
		if err != nil {
			return nil, fmt.Errorf("hotplug %d: %w", i+1, err)
		}
		hs = append(hs, h)
	}
	return hs, nil
}

// timeHotplug finds in w the add uevents of the hotplugged PCI function
// (pciPath) and of the device the driver bound (devPath), and the first
// finit_module call after the latter that loaded driver.
func timeHotplug(w window, pciPath, devPath, driver string) (hotplug, error) {
	pci, err := addUevent(w, pciPath, 0)
	if err != nil {
		return hotplug{}, err
	}
	dev, err := addUevent(w, devPath, pci.sent)
	if err != nil {
		return hotplug{}, err
	}
	for _, c := range w.calls {
		if c.module != driver {
			continue
		}
		switch {
		case c.enter < dev.sent:
			// Then something else than the device's uevent led to the
			// load, and this is not a reaction to it.
			return hotplug{}, fmt.Errorf("%s was loaded by a finit_module call at %.6f, before the uevent of %s at %.6f", driver, c.enter, devPath, dev.sent)
		case c.ret != 0:
			return hotplug{}, fmt.Errorf("%s failed to load: %s", driver, errnoName(-c.ret))
		}
		return hotplug{probe: dev.sent - pci.sent, reaction: c.enter - dev.sent, load: c.live - c.enter}, nil
	}
	return hotplug{}, fmt.Errorf("no finit_module call loaded %s after the uevent of %s", driver, devPath)
}

// addUevent is the first broadcast "add" uevent of devpath built at or
// after the time after.
func addUevent(w window, devpath string, after float64) (uevent, error) {
	for _, u := range w.uevents {
		if u.action != "add" || u.devpath != devpath || u.built < after {
			continue
		}
		if u.sent == 0 {
			return uevent{}, fmt.Errorf("the add uevent of %s was not broadcast: no listener?", devpath)
		}
		return u, nil
	}
	return uevent{}, errors.New("the trace has no add uevent of " + devpath + ": are the " + ueventProbe + " and " + sendProbe + " kprobes set?")
}
