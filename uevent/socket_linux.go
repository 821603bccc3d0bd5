package uevent

import (
	"fmt"
	"math"

	"github.com/mdlayher/socket"
	"golang.org/x/sys/unix"
)

// KernelGroup is the netlink multicast group the kernel sends uevents to.
// (udevd re-broadcasts on group 2 in its own format, which we never read.)
const KernelGroup = 1

// DefaultReadBuffer is the receive buffer asked for by default. Coldplug of
// a large machine bursts thousands of events; udevd uses 128 MiB too.
const DefaultReadBuffer = 128 << 20

// Config sets up Listen.
type Config struct {
	// ReadBuffer is the socket receive buffer in bytes; 0 means
	// DefaultReadBuffer.
	ReadBuffer int
}

// Listen opens a NETLINK_KOBJECT_UEVENT socket bound to the kernel's group.
// The socket is close-on-exec and non-blocking, driven by Go's netpoller, so
// Next can be cancelled through its context without a goroutine stuck in
// recvmsg. It returns the receive buffer the kernel actually granted.
func Listen(cfg Config) (*Listener, int, error) {
	want := cfg.ReadBuffer
	if want <= 0 {
		want = DefaultReadBuffer
	}
	// The socket option is a C int on every architecture; a larger Go int
	// would be cut to its low 32 bits without a word.
	if want > math.MaxInt32 {
		return nil, 0, fmt.Errorf("uevent socket: receive buffer %d bytes does not fit the socket option (a C int, at most %d)", want, math.MaxInt32)
	}
	c, err := socket.Socket(unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_KOBJECT_UEVENT, "uevent", nil)
	if err != nil {
		return nil, 0, fmt.Errorf("uevent socket: %w", err)
	}
	granted, err := setupSocket(c, want)
	if err != nil {
		c.Close()
		return nil, 0, err
	}
	return NewListener(c), granted, nil
}

func setupSocket(c *socket.Conn, want int) (int, error) {
	// SO_RCVBUFFORCE ignores rmem_max but needs CAP_NET_ADMIN; without it
	// take what SO_RCVBUF allows (the kernel caps it at rmem_max).
	if err := c.SetsockoptInt(unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, want); err != nil {
		if err := c.SetsockoptInt(unix.SOL_SOCKET, unix.SO_RCVBUF, want); err != nil {
			return 0, fmt.Errorf("uevent socket: set receive buffer to %d: %w", want, err)
		}
	}
	// The kernel then attaches SCM_CREDENTIALS to every message, which is
	// how senders are checked.
	if err := c.SetsockoptInt(unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		return 0, fmt.Errorf("uevent socket: SO_PASSCRED: %w", err)
	}
	if err := c.Bind(&unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: KernelGroup}); err != nil {
		return 0, fmt.Errorf("uevent socket: bind to group %d: %w", KernelGroup, err)
	}
	granted, err := c.GetsockoptInt(unix.SOL_SOCKET, unix.SO_RCVBUF)
	if err != nil {
		return 0, fmt.Errorf("uevent socket: read receive buffer: %w", err)
	}
	// The kernel reports double the size it accounts for bookkeeping.
	return granted / 2, nil
}
