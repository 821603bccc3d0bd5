// Package sysfsattr reads sysfs attributes into the caller's buffer: the
// coldplug walk reads one or two per device and a load polls initstate,
// so each read is three system calls and no allocation (os.ReadFile
// allocates a page per read and os.Open a finalized File).
package sysfsattr

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Read reads the attribute at path into buf and returns the bytes
// read. An attribute that fills buf is refused as too large, so buf must
// be one byte longer than the largest attribute wanted. Errors are
// *os.PathError, so errors.Is(err, fs.ErrNotExist) works.
func Read(path string, buf []byte) ([]byte, error) {
	fd, err := openRetry(path)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	n := 0
	for {
		if n == len(buf) {
			return nil, &os.PathError{Op: "read", Path: path, Err: fmt.Errorf("larger than %d bytes", len(buf)-1)}
		}
		m, err := unix.Read(fd, buf[n:])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		case m == 0:
			return buf[:n], nil
		}
		n += m
	}
}

func openRetry(path string) (int, error) {
	for {
		// O_NONBLOCK: a FIFO put where an attribute belongs (a sysfs
		// root given for tests) must not hang the open.
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}
