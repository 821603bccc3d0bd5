package uevent_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/modautoload/modautoload/internal/testtool"
	"github.com/modautoload/modautoload/uevent"
)

// rmemMax is net.core.rmem_max, the most SO_RCVBUF grants without
// CAP_NET_ADMIN.
func rmemMax(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/core/rmem_max")
	if err != nil {
		testtool.Missing(t, "rmem_max: %v", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n <= 0 {
		t.Fatalf("rmem_max %q: %v", b, err)
	}
	return n
}

// A root process sending to the kernel's group through the real socket
// layer must be refused by the real credential check. This needs
// CAP_NET_ADMIN to send to a netlink group; CI runs as root.
func TestListenRejectsForgedUserspaceEvent(t *testing.T) {
	testtool.NeedRoot(t, "sending to a uevent multicast group")
	// More than rmem_max: only SO_RCVBUFFORCE grants it (invariant 5).
	want := min(2*rmemMax(t), math.MaxInt32/2)
	l, granted, err := uevent.Listen(uevent.Config{ReadBuffer: want})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if granted != want {
		t.Errorf("granted receive buffer %d, want %d (SO_RCVBUFFORCE as root, beyond rmem_max)", granted, want)
	}

	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	forged := []byte("add@/devices/forged\x00ACTION=add\x00DEVPATH=/devices/forged\x00MODALIAS=forged:x\x00SEQNUM=1\x00")
	if err := unix.Sendto(fd, forged, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: uevent.KernelGroup}); err != nil {
		t.Fatalf("send forged event: %v", err)
	}
	// The send bound the socket to a port of its own: the drop of our
	// message names it (another process may forge at the same time).
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	port := sa.(*unix.SockaddrNetlink).Pid

	// Real kernel events may arrive in between on a live machine; read
	// until the forged one shows up as a rejection.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var drops uint64
	for {
		ev, err := l.Next(ctx)
		var drop *uevent.DropError
		switch {
		case errors.As(err, &drop):
			if drop.Pid == 0 {
				t.Fatalf("dropped with kernel port: %v", drop)
			}
			drops++
			if drop.Pid != port {
				continue // someone else's
			}
			// The sender's credentials arrived (SO_PASSCRED is on):
			// without them every kernel event would be dropped too.
			if drop.Uid != int64(os.Geteuid()) {
				t.Errorf("drop %v: sender uid %d, want %d from SCM_CREDENTIALS", drop, drop.Uid, os.Geteuid())
			}
			if s := l.Stats(); s.Rejected != drops {
				t.Errorf("stats %+v, want %d rejected, the drops read", s, drops)
			}
			return
		case err != nil:
			t.Fatalf("no rejection seen: %v", err)
		case ev.DevPath == "/devices/forged":
			t.Fatal("forged event accepted")
		}
	}
}

// Without CAP_NET_ADMIN, SO_RCVBUFFORCE fails and Listen falls back to
// SO_RCVBUF, which the kernel caps at rmem_max: the daemon still starts
// (invariant 5). Capabilities are per thread, so the test drops
// CAP_NET_ADMIN on a locked thread that exits with the goroutine.
func TestListenFallsBackWithoutNetAdmin(t *testing.T) {
	testtool.NeedRoot(t, "dropping CAP_NET_ADMIN")
	limit := rmemMax(t)
	want := min(2*limit, math.MaxInt32/2)
	type result struct {
		granted int
		err     error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			done <- result{err: fmt.Errorf("capget: %w", err)}
			return
		}
		data[0].Effective &^= 1 << unix.CAP_NET_ADMIN
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			done <- result{err: fmt.Errorf("capset: %w", err)}
			return
		}
		l, granted, err := uevent.Listen(uevent.Config{ReadBuffer: want})
		if err == nil {
			l.Close()
		}
		done <- result{granted, err}
	}()
	r := <-done
	if r.err != nil {
		t.Fatalf("Listen without CAP_NET_ADMIN: %v", r.err)
	}
	if r.granted != min(want, limit) {
		t.Errorf("granted %d, want %d (asked %d, rmem_max %d)", r.granted, min(want, limit), want, limit)
	}
}

// The option is a C int: a larger size is refused, not cut to its low 32
// bits.
func TestListenRefusesBufferBeyondCInt(t *testing.T) {
	if math.MaxInt == math.MaxInt32 {
		t.Skip("an int is a C int here")
	}
	tooBig := int64(math.MaxInt32) + 1 // a variable: the constant would not compile on 32 bits
	_, _, err := uevent.Listen(uevent.Config{ReadBuffer: int(tooBig)})
	if err == nil || !strings.Contains(err.Error(), "does not fit") {
		t.Fatalf("err = %v, want a refusal", err)
	}
}
