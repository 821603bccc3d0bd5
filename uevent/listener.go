package uevent

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// ErrOverrun reports that the kernel dropped events because the receive
// buffer was full (ENOBUFS). The listener keeps working; the caller must
// resync from sysfs, since the lost events cannot be read again.
var ErrOverrun = fmt.Errorf("uevent receive buffer overrun, events lost: %w", unix.ENOBUFS)

// DropError reports a message that was read and discarded: a sender other
// than the kernel, or a message with no usable event. The listener keeps
// working after it.
type DropError struct {
	Reason string // short, stable description for counters and logs
	Pid    uint32 // netlink port of the sender; 0 is the kernel
	Uid    int64  // sender uid from SCM_CREDENTIALS, -1 if absent
	Err    error  // parse error, if that was the reason
}

func (e *DropError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("uevent dropped: %s: %v", e.Reason, e.Err)
	}
	return fmt.Sprintf("uevent dropped: %s (sender port %d, uid %d)", e.Reason, e.Pid, e.Uid)
}

func (e *DropError) Unwrap() error { return e.Err }

// Socket is the system-call seam of a Listener: a netlink socket bound to the
// uevent multicast group. The Linux implementation is in socket_linux.go;
// ueventtest provides a fake.
type Socket interface {
	// Recvmsg reads one datagram and its ancillary data, blocking until one
	// arrives or ctx is done.
	Recvmsg(ctx context.Context, p, oob []byte, flags int) (n, oobn, recvflags int, from unix.Sockaddr, err error)
	Close() error
}

// Stats counts what a Listener has seen. Read it with Listener.Stats.
type Stats struct {
	Received  uint64 // accepted kernel events
	Rejected  uint64 // messages from a sender other than the kernel
	Malformed uint64 // kernel messages with no usable event
	Defective uint64 // accepted events with skipped or repaired fields
	Overruns  uint64 // ENOBUFS conditions
}

// Listener reads kernel uevents from a Socket. Next is not safe for
// concurrent use; Stats and Close are.
type Listener struct {
	sock Socket
	buf  []byte
	oob  []byte

	received, rejected, malformed, defective, overruns atomic.Uint64
}

// NewListener wraps an open socket. Most callers want Listen.
func NewListener(s Socket) *Listener {
	return &Listener{
		sock: s,
		// One byte more than the largest valid message, so that MSG_TRUNC
		// or a full buffer both mean "oversized".
		buf: make([]byte, MaxMessageSize+1),
		oob: make([]byte, unix.CmsgSpace(unix.SizeofUcred)),
	}
}

// Next returns the next kernel event. Besides ctx and socket errors, which
// end the stream, it returns two kinds of error after which the caller
// should simply call Next again: ErrOverrun (resync needed) and *DropError
// (one message discarded).
func (l *Listener) Next(ctx context.Context) (Event, error) {
	n, oobn, _, from, err := l.sock.Recvmsg(ctx, l.buf, l.oob, 0)
	if err != nil {
		if errors.Is(err, unix.ENOBUFS) {
			l.overruns.Add(1)
			return Event{}, ErrOverrun
		}
		return Event{}, err
	}
	if err := l.checkSender(from, l.oob[:oobn]); err != nil {
		l.rejected.Add(1)
		return Event{}, err
	}
	// A datagram longer than the buffer arrives cut to MaxMessageSize+1
	// bytes; Parse keeps what fits and records the cut.
	ev, err := Parse(l.buf[:n])
	if err != nil {
		l.malformed.Add(1)
		return Event{}, &DropError{Reason: "malformed", Err: err}
	}
	if ev.Defects != nil {
		l.defective.Add(1)
	}
	l.received.Add(1)
	return ev, nil
}

// checkSender accepts only the kernel: netlink port 0 and uid 0 in
// SCM_CREDENTIALS. Trusting anything else was CVE-2009-1185 in udev.
func (l *Listener) checkSender(from unix.Sockaddr, oob []byte) error {
	nl, ok := from.(*unix.SockaddrNetlink)
	if !ok {
		return &DropError{Reason: "not a netlink sender", Uid: -1}
	}
	cred, ok := parseCred(oob)
	uid := int64(-1)
	if ok {
		uid = int64(cred.Uid)
	}
	switch {
	case nl.Pid != 0:
		return &DropError{Reason: "sender is not the kernel", Pid: nl.Pid, Uid: uid}
	case !ok:
		return &DropError{Reason: "no sender credentials", Pid: nl.Pid, Uid: uid}
	case cred.Uid != 0:
		return &DropError{Reason: "sender uid is not 0", Pid: nl.Pid, Uid: uid}
	}
	return nil
}

func parseCred(oob []byte) (*unix.Ucred, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, false
	}
	for i := range msgs {
		if msgs[i].Header.Level == unix.SOL_SOCKET && msgs[i].Header.Type == unix.SCM_CREDENTIALS {
			if cred, err := unix.ParseUnixCredentials(&msgs[i]); err == nil {
				return cred, true
			}
		}
	}
	return nil, false
}

// Stats returns the counters so far.
func (l *Listener) Stats() Stats {
	return Stats{
		Received:  l.received.Load(),
		Rejected:  l.rejected.Load(),
		Malformed: l.malformed.Load(),
		Defective: l.defective.Load(),
		Overruns:  l.overruns.Load(),
	}
}

// Close closes the socket; a Next blocked in Recvmsg returns an error.
func (l *Listener) Close() error { return l.sock.Close() }
