// Package ueventtest provides a fake uevent socket, so code that consumes
// uevents can be tested without root or a kernel.
package ueventtest

import (
	"context"
	"net"
	"sync"

	"golang.org/x/sys/unix"
)

// Kernel is the sender identity of a genuine kernel uevent.
var Kernel = Sender{Pid: 0, Uid: 0, Creds: true}

// Sender is who a fake message claims to come from.
type Sender struct {
	Pid   uint32 // netlink port id; the kernel's is 0
	Uid   uint32 // SCM_CREDENTIALS uid
	Creds bool   // attach SCM_CREDENTIALS at all
}

type datagram struct {
	msg  []byte
	from Sender
	err  error
}

// Source is a fake uevent.Socket fed by the test. It is safe for concurrent
// use: a test may Send while a listener reads.
type Source struct {
	mu     sync.Mutex
	queue  []datagram
	ready  chan struct{} // closed and replaced whenever queue grows
	closed chan struct{}
	once   sync.Once
}

// NewSource returns an empty fake socket.
func NewSource() *Source {
	return &Source{ready: make(chan struct{}), closed: make(chan struct{})}
}

// Send queues a message from the given sender.
func (s *Source) Send(msg []byte, from Sender) {
	s.push(datagram{msg: append([]byte(nil), msg...), from: from})
}

// SendKernel queues a message from the kernel.
func (s *Source) SendKernel(msg []byte) { s.Send(msg, Kernel) }

// Overrun queues an ENOBUFS error, as the kernel reports a full receive
// buffer.
func (s *Source) Overrun() { s.push(datagram{err: unix.ENOBUFS}) }

func (s *Source) push(d datagram) {
	s.mu.Lock()
	s.queue = append(s.queue, d)
	close(s.ready)
	s.ready = make(chan struct{})
	s.mu.Unlock()
}

// Recvmsg implements uevent.Socket. Messages longer than p are cut, as a
// datagram socket does.
func (s *Source) Recvmsg(ctx context.Context, p, oob []byte, _ int) (int, int, int, unix.Sockaddr, error) {
	for {
		s.mu.Lock()
		if len(s.queue) > 0 {
			d := s.queue[0]
			s.queue = s.queue[1:]
			s.mu.Unlock()
			return deliver(d, p, oob)
		}
		ready := s.ready
		s.mu.Unlock()
		select {
		case <-ready:
		case <-s.closed:
			return 0, 0, 0, nil, net.ErrClosed
		case <-ctx.Done():
			return 0, 0, 0, nil, ctx.Err()
		}
	}
}

func deliver(d datagram, p, oob []byte) (int, int, int, unix.Sockaddr, error) {
	if d.err != nil {
		return 0, 0, 0, nil, d.err
	}
	n := copy(p, d.msg)
	flags := 0
	if n < len(d.msg) {
		flags |= unix.MSG_TRUNC
	}
	oobn := 0
	if d.from.Creds {
		cred := unix.UnixCredentials(&unix.Ucred{Pid: int32(d.from.Pid), Uid: d.from.Uid, Gid: d.from.Uid})
		oobn = copy(oob, cred)
	}
	return n, oobn, flags, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: d.from.Pid, Groups: 1}, nil
}

// Close makes pending and future reads fail with net.ErrClosed.
func (s *Source) Close() error {
	s.once.Do(func() { close(s.closed) })
	return nil
}
