package e2e

import (
	"context"
	"strings"
	"testing"
)

// TestBootSmoke boots the guest and checks the rig's promises: the kernel
// is the cached one, its module indexes are there, the reference kmod runs,
// busybox insmod loads a real module, and a device hotplugged over QMP
// shows up in the guest.
func TestBootSmoke(t *testing.T) {
	Require(t)
	k := KernelFor(t)
	ctx := context.Background()
	vm := Start(ctx, t, Scenario{QMP: true, Script: `
echo "E2E:KVER $(uname -r)"
if [ -f "/lib/modules/$(uname -r)/modules.dep.bin" ]; then echo E2E:DEPBIN yes; else echo E2E:DEPBIN no; fi
/usr/lib/kmod-ref/modprobe -n -v raid6_pq >/tmp/dry 2>&1
echo "E2E:DRYRUN_RC $?"
while read -r line; do echo "E2E:DRYRUN $line"; done </tmp/dry
ko=$(sed -n 's/^insmod \([^ ]*\).*/\1/p' /tmp/dry)
insmod "$ko"
echo "E2E:INSMOD_RC $?"
echo "E2E:INITSTATE $(cat /sys/module/raid6_pq/initstate)"

echo E2E:READY
for i in $(seq 100); do
	for d in /sys/bus/pci/devices/*; do
		if [ "$(cat "$d/vendor"):$(cat "$d/device")" = 0x1af4:0x1005 ]; then
			echo "E2E:HOTPLUG $(cat "$d/modalias")"
			exit 0
		fi
	done
	sleep 0.1
done
echo "E2E:HOTPLUG none"
`})
	vm.Await("READY")
	if _, err := vm.QMP().Execute(ctx, "device_add", map[string]any{"driver": "virtio-rng-pci", "id": "rng0"}); err != nil {
		t.Errorf("device_add: %v", err)
	}
	res := vm.Wait()

	if got := res.Value("KVER"); got != k.Version {
		t.Errorf("guest runs kernel %q, want %q", got, k.Version)
	}
	if got := res.Value("DEPBIN"); got != "yes" {
		t.Errorf("modules.dep.bin present: %q, want yes", got)
	}
	if got := res.Value("DRYRUN_RC"); got != "0" {
		t.Errorf("kmod modprobe -n exited %s; output %q", got, res.Lines("DRYRUN"))
	}
	wantKo := "/lib/modules/" + k.Version + "/kernel/lib/raid6/raid6_pq.ko"
	if dry := res.Lines("DRYRUN"); len(dry) != 1 || !strings.HasPrefix(dry[0], "insmod "+wantKo) {
		t.Errorf("kmod modprobe -n -v printed %q, want one insmod of %s", dry, wantKo)
	}
	if got := res.Value("INSMOD_RC"); got != "0" {
		t.Errorf("busybox insmod exited %s", got)
	}
	if got := res.Value("INITSTATE"); got != "live" {
		t.Errorf("raid6_pq initstate %q, want live", got)
	}
	if got := res.Value("HOTPLUG"); !strings.HasPrefix(got, "pci:v00001AF4d00001005") {
		t.Errorf("hotplugged virtio-rng modalias %q, want pci:v00001AF4d00001005...", got)
	}
	if res.ExitCode != 0 {
		t.Errorf("scenario exited %d", res.ExitCode)
	}
	if first := res.Markers[0].Key; first != "BOOTED" {
		t.Errorf("first marker %q, want BOOTED", first)
	}
}
