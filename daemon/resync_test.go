package daemon

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/modautoload/modautoload/loader/index"
	"github.com/modautoload/modautoload/loader/loadertest"
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

// gatedKernel is the fake kernel whose finit_module of one module does
// not return, once the module is live, until the test lets it: the call
// is still in the kernel and the module's live uevent is the only news.
type gatedKernel struct {
	*loadertest.Kernel
	module string
	gate   chan struct{}
}

func (k *gatedKernel) FinitModule(f *os.File, params string, flags int) error {
	err := k.Kernel.FinitModule(f, params, flags)
	if index.ModuleName(f.Name()) == k.module {
		<-k.gate
	}
	return err
}

// Lost events may include a module's live notice, which a daemon's own
// load waits for (polling sysfs only as a safety net, ever less often):
// an overrun wakes every waiter to look at sysfs at once, not at its next
// safety poll.
func TestOverrunWakesLoadsWaitingForLive(t *testing.T) {
	initGate, callGate := make(chan struct{}), make(chan struct{})
	r := newRig(t, "", func(c *Config, k *loadertest.Kernel) {
		k.SetModule("a", loadertest.Module{During: func() { <-initGate }})
		c.Loader.Kernel = &gatedKernel{Kernel: k, module: "a", gate: callGate}
		c.Loader.ModuleEvents = true
	})
	letInit := sync.OnceFunc(func() { close(initGate) })
	// Before the rig's stop, which waits for the call.
	t.Cleanup(letInit)
	t.Cleanup(func() { close(callGate) })
	r.send("add", "/devices/a0", "dev:a0")
	// Three safety polls (50, 100, 200 ms apart) saw a coming: the next
	// is 400 ms away.
	eventually(t, "three safety polls of a's initstate", func() bool { return r.ld.Stats().Polls >= 3 })
	polls := r.ld.Stats().Polls
	letInit()
	eventually(t, "a live, its uevent lost", func() bool { return r.live("a") })
	r.src.Overrun()
	eventually(t, "a0's event done", func() bool {
		q, busy, handled := r.queueState()
		return q == 0 && busy == 0 && handled >= 1
	})
	if n := r.ld.Stats().Polls; n != polls {
		t.Errorf("the load saw a live after %d more safety polls, want at once, on the overrun", n-polls)
	}
}
