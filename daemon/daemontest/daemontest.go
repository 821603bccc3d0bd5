// Package daemontest gives tests of the control socket's clients a fake
// daemon that behaves as badly as a test needs: never acknowledging,
// hanging up, answering late.
package daemontest

import (
	"bufio"
	"net"
	"path/filepath"
	"sync"
	"testing"
)

// FakeServer listens on a new control socket path, and for each
// connection reads the request line and runs handle; done closes when the
// test ends, and every connection is closed and waited for then.
func FakeServer(t testing.TB, handle func(c *net.UnixConn, done <-chan struct{})) string {
	t.Helper()
	return RequestServer(t, func(c *net.UnixConn, _ []byte, done <-chan struct{}) { handle(c, done) })
}

// RequestServer is FakeServer whose handle is also given the request line
// read, for fakes whose answer depends on what was asked.
func RequestServer(t testing.TB, handle func(c *net.UnixConn, request []byte, done <-chan struct{})) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "control")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				request, _ := bufio.NewReader(c).ReadBytes('\n')
				handle(c, request, done)
			}()
		}
	}()
	t.Cleanup(func() { close(done); ln.Close(); wg.Wait() })
	return path
}
