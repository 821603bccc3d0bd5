// Package regfile opens files that must be regular (configuration, index
// and module files) without blocking: a FIFO or a device put where one of
// them belongs would otherwise hang the open, and with it start-up or a
// reload.
package regfile

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Open opens path for reading, refusing anything but a regular file.
// O_NONBLOCK makes the open of a FIFO return at once; it changes nothing
// for a regular file.
func Open(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, &os.PathError{Op: "open", Path: path, Err: fmt.Errorf("not a regular file (%s)", st.Mode().Type())}
	}
	return f, nil
}

// Read reads a whole regular file of at most max bytes.
func Read(path string, max int64) ([]byte, error) {
	f, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, &os.PathError{Op: "read", Path: path, Err: fmt.Errorf("larger than %d bytes, not read", max)}
	}
	return data, nil
}

// IsDevNull reports whether path is (or links to) /dev/null, the
// character device 1:3: how configuration directories mask a file.
func IsDevNull(path string) bool {
	st, err := os.Stat(path)
	if err != nil || st.Mode()&fs.ModeCharDevice == 0 {
		return false
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	// Rdev is 32 bits wide on some architectures (mips).
	return ok && uint64(sys.Rdev) == unix.Mkdev(1, 3)
}
