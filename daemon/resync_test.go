package daemon

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/modautoload/modautoload/uevent/ueventtest"
)

// A message from the kernel that cannot be read (here one without its
// "ACTION@DEVPATH" header) is an event lost: the daemon makes it good by
// rescanning sysfs, as after an overrun.
func TestUnreadableKernelMessageResyncs(t *testing.T) {
	r := newRig(t, "", nil)
	r.device("pci0/lost", "dev:b-lost")
	os.WriteFile(filepath.Join(r.kernel.Sysfs, "kernel", "uevent_seqnum"), []byte("1\n"), 0o644)
	r.src.SendKernel([]byte("ACTION=add\x00DEVPATH=/devices/pci0/lost\x00SEQNUM=1\x00"))
	r.settle()
	st := r.d.Status()
	if st.Events.Malformed != 1 || st.Resyncs != 1 {
		t.Errorf("malformed %d, resyncs %d; want 1 and 1", st.Events.Malformed, st.Resyncs)
	}
	if !r.live("b") {
		t.Error("the device whose event could not be read was not handled")
	}
}

// What another process sends is dropped, and nothing more: it must not
// make the daemon rescan sysfs, or any user could keep it scanning.
func TestForgedMessagesDoNotResync(t *testing.T) {
	r := newRig(t, "", nil)
	for _, from := range []ueventtest.Sender{{Pid: 1234, Creds: true}, {Pid: 1234, Uid: 1000, Creds: true}, {Pid: 1234}} {
		r.src.Send([]byte("add@/devices/evil\x00ACTION=add\x00DEVPATH=/devices/evil\x00MODALIAS=dev:a1\x00SEQNUM=1\x00"), from)
		r.src.Send([]byte("garbage"), from)
	}
	// Read after the forged messages: settled, the daemon has seen them.
	r.send("add", "/devices/marker", "")
	r.settle()
	st := r.d.Status()
	if st.Events.Rejected != 6 || st.Resyncs != 0 {
		t.Errorf("rejected %d, resyncs %d; want 6 and none", st.Events.Rejected, st.Resyncs)
	}
}
