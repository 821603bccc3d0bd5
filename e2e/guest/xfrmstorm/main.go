// Command xfrmstorm runs inside the test guest: many threads open a
// NETLINK_XFRM socket at the same moment, so the kernel runs that many
// "modprobe -q -- net-pf-16-proto-6" helpers in parallel (the trigger of
// the kmod-18 race). A helper that returns before xfrm_user is live makes
// socket() fail with EPROTONOSUPPORT.
package main

import (
	"flag"
	"fmt"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

func main() {
	threads := flag.Int("threads", 40, "sockets opened at once")
	flag.Parse()
	// A P per thread: with the default (one per CPU) the first threads to
	// block in socket() hold both Ps and the rest start only after the
	// module is in, so the kernel would see two requests, not forty.
	runtime.GOMAXPROCS(*threads + 1)

	var ready, done sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, *threads)
	for i := range errs {
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			// One OS thread each, so the socket() calls really overlap.
			runtime.LockOSThread()
			ready.Done()
			<-start
			fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_XFRM)
			if err == nil {
				unix.Close(fd)
			}
			errs[i] = err
		}()
	}
	ready.Wait()
	close(start)
	done.Wait()
	failed := 0
	for _, err := range errs {
		if err != nil {
			failed++
			fmt.Printf("E2E:SOCKET_ERR %v\n", err)
		}
	}
	fmt.Printf("E2E:SOCKETS ok=%d failed=%d\n", len(errs)-failed, failed)
}
