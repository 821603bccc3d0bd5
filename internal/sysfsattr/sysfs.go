// Package sysfsattr reads sysfs attributes into the caller's buffer: the
// coldplug walk reads one or two per device and a load polls initstate,
// so each read is three system calls and no allocation (os.ReadFile
// allocates a page per read and os.Open a finalized File).
package sysfsattr

import (
	"fmt"
	"os"
	"unsafe"

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
	b, err := readAll(fd, buf)
	if err != nil {
		return nil, &os.PathError{Op: "read", Path: path, Err: err}
	}
	return b, nil
}

// ReadAt is Read of the attribute name (NUL-terminated) in the directory
// dirfd: the coldplug walk reads each device's attributes through the
// directory it has open, building no path. Its errors are bare (an
// unix.Errno, or too large), so a missing attribute allocates nothing:
// the caller names the file.
func ReadAt(dirfd int, name, buf []byte) ([]byte, error) {
	fd, err := Openat(dirfd, name, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	return readAll(fd, buf)
}

// Openat opens name (NUL-terminated) relative to dirfd, retrying on
// EINTR. unix.Openat takes a string and copies it to add the NUL: an
// allocation per call, thousands per coldplug walk.
func Openat(dirfd int, name []byte, flags int) (int, error) {
	if len(name) == 0 || name[len(name)-1] != 0 {
		return -1, unix.EINVAL
	}
	for {
		fd, _, errno := unix.Syscall6(unix.SYS_OPENAT, uintptr(dirfd), uintptr(unsafe.Pointer(&name[0])), uintptr(flags), 0, 0, 0)
		switch errno {
		case 0:
			return int(fd), nil
		case unix.EINTR:
			continue
		}
		return -1, errno
	}
}

// Readlinkat reads the symlink name (NUL-terminated) in dirfd into buf.
func Readlinkat(dirfd int, name, buf []byte) ([]byte, error) {
	if len(name) == 0 || name[len(name)-1] != 0 || len(buf) == 0 {
		return nil, unix.EINVAL
	}
	n, _, errno := unix.Syscall6(unix.SYS_READLINKAT, uintptr(dirfd), uintptr(unsafe.Pointer(&name[0])), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0)
	if errno != 0 {
		return nil, errno
	}
	if int(n) == len(buf) { // readlink truncates silently
		return nil, unix.ENAMETOOLONG
	}
	return buf[:n], nil
}

func readAll(fd int, buf []byte) ([]byte, error) {
	n := 0
	for {
		if n == len(buf) {
			return nil, fmt.Errorf("larger than %d bytes", len(buf)-1)
		}
		m, err := unix.Read(fd, buf[n:])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return nil, err
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
