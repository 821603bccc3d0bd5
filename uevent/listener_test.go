package uevent_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/modautoload/modautoload/uevent"
	"github.com/modautoload/modautoload/uevent/ueventtest"
)

var moduleAdd = []byte("add@/module/raid6_pq\x00ACTION=add\x00DEVPATH=/module/raid6_pq\x00SUBSYSTEM=module\x00SEQNUM=2001\x00")

func next(t *testing.T, l *uevent.Listener) (uevent.Event, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return l.Next(ctx)
}

func TestListenerAcceptsKernel(t *testing.T) {
	src := ueventtest.NewSource()
	l := uevent.NewListener(src)
	src.SendKernel(moduleAdd)
	ev, err := next(t, l)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Action != "add" || ev.DevPath != "/module/raid6_pq" || ev.Seqnum != 2001 || ev.Subsystem != "module" {
		t.Errorf("got %+v", ev)
	}
	if s := l.Stats(); s.Received != 1 || s.Rejected != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestListenerRejectsSenders(t *testing.T) {
	cases := []struct {
		name   string
		from   ueventtest.Sender
		reason string
	}{
		{"userspace port", ueventtest.Sender{Pid: 4242, Uid: 0, Creds: true}, "not the kernel"},
		{"non-root uid", ueventtest.Sender{Pid: 0, Uid: 1000, Creds: true}, "uid is not 0"},
		{"no credentials", ueventtest.Sender{Pid: 0, Creds: false}, "no sender credentials"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := ueventtest.NewSource()
			l := uevent.NewListener(src)
			src.Send(moduleAdd, tc.from)
			src.SendKernel(moduleAdd)

			_, err := next(t, l)
			var drop *uevent.DropError
			if !errors.As(err, &drop) || !strings.Contains(drop.Reason, tc.reason) {
				t.Fatalf("err = %v, want a drop for %q", err, tc.reason)
			}
			// The stream goes on: the genuine event after it is delivered.
			ev, err := next(t, l)
			if err != nil || ev.Seqnum != 2001 {
				t.Fatalf("after a rejection: %+v, %v", ev, err)
			}
			if s := l.Stats(); s.Rejected != 1 || s.Received != 1 {
				t.Errorf("stats %+v, want 1 rejected and 1 received", s)
			}
		})
	}
}

func TestListenerOverrunIsTypedAndRecoverable(t *testing.T) {
	src := ueventtest.NewSource()
	l := uevent.NewListener(src)
	src.Overrun()
	src.SendKernel(moduleAdd)

	_, err := next(t, l)
	if !errors.Is(err, uevent.ErrOverrun) {
		t.Fatalf("err = %v, want ErrOverrun", err)
	}
	if ev, err := next(t, l); err != nil || ev.DevPath != "/module/raid6_pq" {
		t.Fatalf("after overrun: %+v, %v", ev, err)
	}
	if s := l.Stats(); s.Overruns != 1 || s.Received != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestListenerMalformedAndDefective(t *testing.T) {
	src := ueventtest.NewSource()
	l := uevent.NewListener(src)
	src.SendKernel([]byte("garbage without header\x00"))
	src.SendKernel([]byte("add@/devices/x\x00NOEQUALS\x00MODALIAS=pci:v1\x00"))

	_, err := next(t, l)
	var drop *uevent.DropError
	if !errors.As(err, &drop) || !errors.Is(err, uevent.ErrNoHeader) {
		t.Fatalf("err = %v, want a malformed drop", err)
	}
	ev, err := next(t, l)
	if err != nil || ev.Modalias != "pci:v1" || len(ev.Defects) != 1 {
		t.Fatalf("defective event: %+v, %v", ev, err)
	}
	if s := l.Stats(); s.Malformed != 1 || s.Defective != 1 || s.Received != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestListenerTruncatedDatagram(t *testing.T) {
	src := ueventtest.NewSource()
	l := uevent.NewListener(src)
	big := "add@/devices/x\x00MODALIAS=pci:v1\x00BIG=" + strings.Repeat("y", 2*uevent.MaxMessageSize) + "\x00"
	src.SendKernel([]byte(big))
	ev, err := next(t, l)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Modalias != "pci:v1" {
		t.Errorf("modalias lost: %+v", ev)
	}
	if _, ok := ev.Get("BIG"); ok {
		t.Error("the cut field was kept")
	}
	if len(ev.Defects) == 0 {
		t.Error("the cut was not reported")
	}
}

func TestListenerStopsOnContextAndClose(t *testing.T) {
	src := ueventtest.NewSource()
	l := uevent.NewListener(src)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := l.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline", err)
	}

	done := make(chan error, 1)
	go func() {
		_, err := l.Next(context.Background())
		done <- err
	}()
	l.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("err = %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Next did not return after Close")
	}
}
