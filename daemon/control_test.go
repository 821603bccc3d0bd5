package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/modautoload/modautoload/daemon/daemontest"
)

// flakyListener fails its first accepts with EMFILE, as a process out of
// file descriptors does, then accepts.
type flakyListener struct {
	*net.UnixListener
	failsLeft atomic.Int64
	failed    atomic.Int64
}

func (l *flakyListener) AcceptUnix() (*net.UnixConn, error) {
	if l.failsLeft.Add(-1) >= 0 {
		l.failed.Add(1)
		return nil, &net.OpError{Op: "accept", Net: "unix", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.UnixListener.AcceptUnix()
}

// smallSendBuffer gives each accepted connection a small send buffer, so
// an answer of a few KiB fills it when the client does not read.
type smallSendBuffer struct{ *net.UnixListener }

func (l smallSendBuffer) AcceptUnix() (*net.UnixConn, error) {
	c, err := l.UnixListener.AcceptUnix()
	if err == nil {
		err = c.SetWriteBuffer(4096)
	}
	return c, err
}

// serving runs the rig's daemon's control server on ln wrapped by wrap,
// with writeBound; stop ends it and returns how long it took to return.
func serving(t *testing.T, r *rig, wrap func(*net.UnixListener) acceptor, writeBound time.Duration) (path string, stop func() time.Duration) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "control")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- r.d.serve(ctx, wrap(ln), writeBound) }()
	var once sync.Once
	var took time.Duration
	stop = func() time.Duration {
		once.Do(func() {
			start := time.Now()
			cancel()
			select {
			case err := <-served:
				if err != nil {
					t.Errorf("serve: %v", err)
				}
			case <-time.After(3 * time.Second):
				t.Fatal("the control server did not stop within 3s of its context's end")
			}
			took = time.Since(start)
		})
		return took
	}
	t.Cleanup(func() { stop() })
	return path, stop
}

func askStatus(t *testing.T, path string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := Ask(ctx, path, Request{Op: "status"}, Waits{Accept: 2 * time.Second})
	if err != nil || !resp.OK || resp.Status == nil {
		t.Fatalf("status: %+v, %v", resp, err)
	}
}

func TestServeOutlivesAcceptFailures(t *testing.T) {
	r := newRig(t, "", nil)
	var fl *flakyListener
	path, _ := serving(t, r, func(ln *net.UnixListener) acceptor {
		fl = &flakyListener{UnixListener: ln}
		fl.failsLeft.Store(6)
		return fl
	}, responseWriteBound)
	askStatus(t, path)
	if n := fl.failed.Load(); n != 6 {
		t.Errorf("%d accepts failed, want 6", n)
	}
	askStatus(t, path)
}

func TestServeEndsDuringAcceptBackoff(t *testing.T) {
	r := newRig(t, "", nil)
	_, stop := serving(t, r, func(ln *net.UnixListener) acceptor {
		fl := &flakyListener{UnixListener: ln}
		fl.failsLeft.Store(1 << 40)
		return fl
	}, responseWriteBound)
	time.Sleep(100 * time.Millisecond) // into the backoff
	if took := stop(); took > 500*time.Millisecond {
		t.Errorf("serve took %s to stop while backing off", took)
	}
}

// stuckClient sends a request whose answer is about 60 KiB (an unknown op
// is quoted back) and does not read it.
func stuckClient(t *testing.T, path string) *net.UnixConn {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	req, _ := json.Marshal(Request{Op: strings.Repeat("x", 60000)})
	if _, err := c.Write(append(req, '\n')); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestClientThatDoesNotReadIsDropped(t *testing.T) {
	r := newRig(t, "", nil)
	const bound = 200 * time.Millisecond
	path, _ := serving(t, r, func(ln *net.UnixListener) acceptor { return smallSendBuffer{ln} }, bound)
	stuck := stuckClient(t, path)
	// The stuck connection holds neither the server nor other clients.
	askStatus(t, path)
	askStatus(t, path)
	time.Sleep(5 * bound)
	stuck.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(stuck)
	if err != nil {
		t.Fatalf("reading the stuck connection: %v", err)
	}
	// What was buffered comes through, then the end: the acknowledgement
	// and part of the answer, never all of it.
	if lines := bytes.Count(got, []byte("\n")); lines != 1 {
		t.Errorf("the client got %d complete lines (%d bytes); want only the acknowledgement, the answer cut", lines, len(got))
	}
}

func TestShutdownWithClientThatDoesNotRead(t *testing.T) {
	r := newRig(t, "", nil)
	path, stop := serving(t, r, func(ln *net.UnixListener) acceptor { return smallSendBuffer{ln} }, responseWriteBound)
	stuckClient(t, path)
	askStatus(t, path) // the stuck request has been read by now, or soon
	time.Sleep(100 * time.Millisecond)
	if took := stop(); took > time.Second {
		t.Errorf("shutdown took %s with a client that does not read", took)
	}
}

// The daemon says it has the request before it works on it: the helper
// waits only briefly for that.
func TestLoadIsAcknowledgedBeforeTheWork(t *testing.T) {
	r := newRig(t, "", nil)
	path, _ := serving(t, r, func(ln *net.UnixListener) acceptor { return ln }, responseWriteBound)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(`{"op":"load","name":"dev:slow1"}` + "\n")); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var ack, answer Response
	line, err := br.ReadBytes('\n')
	if err != nil || json.Unmarshal(line, &ack) != nil || !ack.Accepted {
		t.Fatalf("first line %q, %v; want the acknowledgement", line, err)
	}
	if r.live("slow") {
		t.Error("acknowledged only after the load (slow's init takes 300 ms)")
	}
	line, err = br.ReadBytes('\n')
	if err != nil || json.Unmarshal(line, &answer) != nil || !answer.OK || answer.Accepted {
		t.Fatalf("second line %q, %v; want the answer", line, err)
	}
	if !r.live("slow") {
		t.Error("answered before slow was live")
	}
}

func neverAnswer(c *net.UnixConn, done <-chan struct{}) { <-done }

func acknowledge(c *net.UnixConn) { c.Write([]byte(`{"accepted":true,"ok":false}` + "\n")) }

func TestAskBounds(t *testing.T) {
	for _, tc := range []struct {
		name   string
		handle func(*net.UnixConn, <-chan struct{})
		want   error
	}{
		{"accepts the connection, never acknowledges", neverAnswer, ErrNotAccepted},
		{"acknowledges, never answers", func(c *net.UnixConn, done <-chan struct{}) { acknowledge(c); <-done }, ErrNoAnswer},
		{"acknowledges, hangs up", func(c *net.UnixConn, _ <-chan struct{}) { acknowledge(c) }, ErrHungUp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := daemontest.FakeServer(t, tc.handle)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			_, err := Ask(ctx, path, Request{Op: "load", Name: "x"}, Waits{Accept: 300 * time.Millisecond, Answer: 300 * time.Millisecond})
			if !errors.Is(err, tc.want) {
				t.Errorf("Ask: %v; want %v", err, tc.want)
			}
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("Ask took %s with 300 ms bounds", took)
			}
		})
	}
	t.Run("waits as long as the daemon's bounds say", func(t *testing.T) {
		path := daemontest.FakeServer(t, func(c *net.UnixConn, _ <-chan struct{}) {
			c.Write([]byte(`{"accepted":true,"answer_within_ms":3000,"ok":false}` + "\n"))
			time.Sleep(500 * time.Millisecond)
			c.Write([]byte(`{"ok":true}` + "\n"))
		})
		resp, err := Ask(context.Background(), path, Request{Op: "load", Name: "x"}, Waits{Accept: time.Second, Answer: 100 * time.Millisecond})
		if err != nil || !resp.OK {
			t.Errorf("Ask: %+v, %v; want the answer that came within the daemon's bound", resp, err)
		}
	})
	t.Run("refused before any work", func(t *testing.T) {
		path := daemontest.FakeServer(t, func(c *net.UnixConn, _ <-chan struct{}) {
			c.Write([]byte(`{"ok":false,"error":"bad request: x"}` + "\n"))
		})
		resp, err := Ask(context.Background(), path, Request{Op: "load", Name: "x"}, Waits{Accept: time.Second})
		if err != nil || resp.Error != "bad request: x" {
			t.Errorf("Ask: %+v, %v; want the refusal", resp, err)
		}
	})
	t.Run("the context ends", func(t *testing.T) {
		path := daemontest.FakeServer(t, neverAnswer)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if _, err := Ask(ctx, path, Request{Op: "status"}, Waits{}); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Ask: %v; want the context's end", err)
		}
	})
}

// A socket bound by another user at the control path is not talked to.
func TestAskRefusesServerNotRoot(t *testing.T) {
	got := make(chan int, 1)
	path := filepath.Join(t.TempDir(), "control")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.AcceptUnix()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _ := io.Copy(io.Discard, c)
		got <- int(n)
	}()
	asUser := func(*net.UnixConn) (int, error) { return 1000, nil }
	_, err = ask(context.Background(), path, Request{Op: "load", Name: "x"}, Waits{Accept: time.Second}, asUser)
	if !errors.Is(err, ErrNotAccepted) || !strings.Contains(err.Error(), "uid 1000") {
		t.Errorf("ask: %v; want a refusal naming uid 1000", err)
	}
	if n := <-got; n != 0 {
		t.Errorf("the server got %d bytes of request", n)
	}
}

func TestListenChecksTheDirectory(t *testing.T) {
	t.Run("created when missing", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "run", "modautoload")
		ln, err := Listen(filepath.Join(dir, "control"))
		if err != nil {
			t.Fatal(err)
		}
		ln.Close()
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() || fi.Mode().Perm()&0o022 != 0 {
			t.Errorf("created %v, %v; want a directory only its owner writes", fi.Mode(), err)
		}
	})
	t.Run("group-writable", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o775); err != nil {
			t.Fatal(err)
		}
		_, err := Listen(filepath.Join(dir, "control"))
		if err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "0775") {
			t.Errorf("Listen: %v; want a refusal naming %s and its mode 0775", err, dir)
		}
	})
	t.Run("not root's", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.Chown(dir, 65534, 65534); err != nil {
			t.Fatalf("chown (the control socket tests run as root): %v", err)
		}
		_, err := Listen(filepath.Join(dir, "control"))
		if err == nil || !strings.Contains(err.Error(), "uid 65534") {
			t.Errorf("Listen: %v; want a refusal naming the owner", err)
		}
	})
	t.Run("a file that is not a socket stays", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "control")
		if err := os.WriteFile(path, []byte("data"), 0o600); err != nil {
			t.Fatal(err)
		}
		if ln, err := Listen(path); err == nil {
			ln.Close()
			t.Error("Listen replaced a regular file")
		}
		if data, err := os.ReadFile(path); err != nil || string(data) != "data" {
			t.Errorf("the file at the path: %q, %v", data, err)
		}
	})
}
