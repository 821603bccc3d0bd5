package daemon

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// dialAs connects to the control socket at path as uid: the connecting
// thread alone takes uid as its effective uid, which SO_PEERCRED reports,
// and keeps root's filesystem uid, so the socket's mode does not refuse
// the connection first. That thread is never handed back to the runtime,
// which ends it with its goroutine.
func dialAs(path string, uid int) (*net.UnixConn, error) {
	type dialed struct {
		c   *net.UnixConn
		err error
	}
	got := make(chan dialed, 1)
	go func() {
		runtime.LockOSThread()
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(uid), ^uintptr(0)); e != 0 {
			got <- dialed{nil, os.NewSyscallError("setresuid (the control socket tests run as root)", e)}
			return
		}
		unix.RawSyscall(unix.SYS_SETFSUID, 0, 0, 0) // returns the previous fsuid, no error
		c, err := dialUnix(path)
		got <- dialed{c, err}
	}()
	d := <-got
	return d.c, d.err
}

// Only root may talk to the daemon: a load request is a privileged act,
// and even status is refused to another user, before any work.
func TestControlRefusesOtherUsers(t *testing.T) {
	r := newRig(t, "", nil)
	path, _ := r.serveControl()
	c, err := dialAs(path, 65534)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	// The daemon may have answered and hung up before the request is
	// written: it refuses before reading.
	c.Write([]byte(`{"op":"load","name":"dev:a0"}` + "\n"))
	var resp Response
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil || json.Unmarshal(line, &resp) != nil {
		t.Fatalf("answer %q, %v", line, err)
	}
	if resp.Accepted || resp.OK || !strings.Contains(resp.Error, "root only") {
		t.Errorf("answer to uid 65534: %+v; want a refusal, root only", resp)
	}
	if n := r.kernel.CallsOf("a"); n != 0 {
		t.Errorf("a request from uid 65534 handed a to the kernel %d times", n)
	}
}

// A settle request that names no bound, or a bound of its own that makes
// no sense, is bounded by the daemon (maxSettle), not refused at once.
func TestSettleRequestWithoutABound(t *testing.T) {
	r := newRig(t, "", nil)
	path, ctx := r.serveControl()
	for _, ms := range []int64{0, -1} {
		resp, err := Ask(ctx, path, Request{Op: "settle", TimeoutMS: ms}, Waits{})
		if err != nil || !resp.OK {
			t.Errorf("settle with timeout_ms %d on an idle daemon: %+v, %v", ms, resp, err)
		}
	}
}

// A request line is bounded (maxRequest): a longer one is not read whole,
// and gets no answer, not even an acknowledgement.
func TestOversizedRequestIsNotServed(t *testing.T) {
	r := newRig(t, "", nil)
	path, _ := r.serveControl()
	c, err := dialUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	req, _ := json.Marshal(Request{Op: "status", Params: strings.Repeat("x", maxRequest)})
	written := make(chan error, 1)
	// The daemon stops reading at the bound: the rest may never go.
	go func() { _, err := c.Write(append(req, '\n')); written <- err }()
	got, err := io.ReadAll(c)
	if len(got) != 0 {
		t.Errorf("a %d-byte request line got %q (%v); want no answer", len(req)+1, got, err)
	}
	c.Close()
	<-written
	askStatus(t, path) // the server goes on
}

// failingAcceptor fails every accept, as a process out of descriptors
// does, and notes when.
type failingAcceptor struct {
	*net.UnixListener
	mu    sync.Mutex
	times []time.Time
}

func (l *failingAcceptor) AcceptUnix() (*net.UnixConn, error) {
	l.mu.Lock()
	l.times = append(l.times, time.Now())
	l.mu.Unlock()
	return nil, &net.OpError{Op: "accept", Net: "unix", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
}

func (l *failingAcceptor) failures() []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]time.Time(nil), l.times...)
}

// A failed accept is retried after a pause that doubles at each failure
// in a row, so a lack of descriptors does not spin the daemon.
func TestAcceptBackoffDoubles(t *testing.T) {
	r := newRig(t, "", nil)
	fa := &failingAcceptor{}
	serving(t, r, func(ln *net.UnixListener) acceptor {
		fa.UnixListener = ln
		return fa
	}, responseWriteBound)
	const n = 7 // 6 pauses, 5 ms doubling to 160 ms
	eventually(t, "7 failed accepts", func() bool { return len(fa.failures()) >= n })
	times := fa.failures()
	want := acceptBackoffMin
	for i := 1; i < n; i++ {
		if gap := times[i].Sub(times[i-1]); gap < want {
			t.Errorf("accept %d came %v after the failure before it, want at least %v", i+1, gap, want)
		}
		want = min(2*want, acceptBackoffMax)
	}
}
