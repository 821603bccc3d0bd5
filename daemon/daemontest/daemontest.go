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
				bufio.NewReader(c).ReadBytes('\n')
				handle(c, done)
			}()
		}
	}()
	t.Cleanup(func() { close(done); ln.Close(); wg.Wait() })
	return path
}
