package uevent_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/modautoload/modautoload/internal/testtool"
	"github.com/modautoload/modautoload/uevent"
)

// A root process sending to the kernel's group through the real socket
// layer must be refused by the real credential check. This needs
// CAP_NET_ADMIN to send to a netlink group; CI runs as root.
func TestListenRejectsForgedUserspaceEvent(t *testing.T) {
	testtool.NeedRoot(t, "sending to a uevent multicast group")
	l, granted, err := uevent.Listen(uevent.Config{ReadBuffer: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if granted < 1<<20 {
		t.Errorf("granted receive buffer %d, want at least 1 MiB (SO_RCVBUFFORCE as root)", granted)
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

	// Real kernel events may arrive in between on a live machine; read
	// until the forged one shows up as a rejection.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		ev, err := l.Next(ctx)
		var drop *uevent.DropError
		switch {
		case errors.As(err, &drop):
			if drop.Pid == 0 {
				t.Fatalf("dropped with kernel port: %v", drop)
			}
			if s := l.Stats(); s.Rejected != 1 {
				t.Errorf("stats %+v, want 1 rejected", s)
			}
			return
		case err != nil:
			t.Fatalf("no rejection seen: %v", err)
		case ev.DevPath == "/devices/forged":
			t.Fatal("forged event accepted")
		}
	}
}
