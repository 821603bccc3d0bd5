package uevent

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/modautoload/modautoload/internal/sysfsattr"
)

// DefaultErrorBudget is how many unreadable sysfs entries a walk tolerates
// before it gives up: a few vanish or refuse reads on any live system (a
// device removed mid-walk), thousands mean the tree is not sysfs.
const DefaultErrorBudget = 64

// ErrBudgetExceeded ends a walk that met more unreadable entries than its
// budget.
var ErrBudgetExceeded = errors.New("sysfs walk: too many unreadable entries")

// sysfsAttrMax bounds what is read from one attribute file; sysfs attributes
// are at most a page.
const sysfsAttrMax = 4096

// maxWalkDepth bounds how deep the walk descends below devices/: each
// level holds a directory open, and real device paths are a dozen levels
// deep.
const maxWalkDepth = 64

// Walker reads the devices present in a sysfs tree as events, the same
// events the kernel would send for them on "add".
type Walker struct {
	// Root is the sysfs mount point, normally "/sys".
	Root string
	// ErrorBudget overrides DefaultErrorBudget when positive.
	ErrorBudget int
	// Skipped counts entries that could not be read, with the first few
	// reasons kept in Errors.
	Skipped int
	Errors  []error

	// Buffers reused across the walk: a coldplug reads thousands of
	// directories, and the daemon's collector pays for every allocation.
	attr    []byte   // one attribute (a page and the byte that tells a larger file)
	link    []byte   // the subsystem link's target
	dirents []byte   // getdents64 records
	path    []byte   // the directory being read, below Root
	msg     []byte   // the event being built
	levels  []*level // child directory names, per depth
}

// level holds the subdirectory names of one directory, NUL-terminated, in
// a reused buffer.
type level struct {
	names []byte
	spans []span
}

type span struct{ start, end int } // end includes the NUL

// Names of the attributes a device directory has, NUL-terminated for
// openat.
var (
	nameUevent    = []byte("uevent\x00")
	nameModalias  = []byte("modalias\x00")
	nameSubsystem = []byte("subsystem\x00")
)

func (w *Walker) level(depth int) *level {
	for len(w.levels) <= depth {
		w.levels = append(w.levels, &level{})
	}
	lv := w.levels[depth]
	lv.names, lv.spans = lv.names[:0], lv.spans[:0]
	return lv
}

// Walk calls fn with an "add" event for every device under Root/devices
// that has a uevent file, parents before children, siblings in byte
// order. Symlinks (subsystem, driver, device, ...) are never followed, so
// the walk cannot loop and never leaves the devices tree. Unreadable
// entries are skipped and counted; the walk fails only when they exceed
// the budget or fn returns an error (fs.SkipAll ends it early without
// error).
func (w *Walker) Walk(fn func(Event) error) error {
	root := w.Root
	if root == "" {
		root = "/sys"
	}
	if w.attr == nil {
		w.attr = make([]byte, sysfsAttrMax+1)
		w.link = make([]byte, 256)
		w.dirents = make([]byte, 8192)
	}
	top := filepath.Join(root, "devices")
	fd, err := unix.Open(top, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: top, Err: err}
	}
	w.path = append(w.path[:0], top...)
	err = w.walkDir(fd, len(top)-len("/devices"), 0, fn)
	if errors.Is(err, fs.SkipAll) {
		return nil
	}
	return err
}

// walkDir visits the directory open as fd (w.path names it; rootLen
// bytes of it are Root), then its subdirectories. It closes fd.
func (w *Walker) walkDir(fd, rootLen, depth int, fn func(Event) error) error {
	defer unix.Close(fd)
	lv := w.level(depth)
	hasUevent, err := w.readDir(fd, lv)
	if errors.Is(err, ErrBudgetExceeded) {
		return err
	}
	if err != nil {
		if depth == 0 {
			return &os.PathError{Op: "readdir", Path: string(w.path), Err: err}
		}
		return w.skip(&os.PathError{Op: "readdir", Path: string(w.path), Err: err})
	}
	if hasUevent {
		ev, err := w.read(fd, rootLen)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			// Removed meanwhile.
		case err != nil:
			if err := w.skip(err); err != nil {
				return err
			}
		default:
			if err := fn(ev); err != nil {
				return err
			}
		}
	}
	names := lv.names
	slices.SortFunc(lv.spans, func(a, b span) int {
		return bytes.Compare(names[a.start:a.end], names[b.start:b.end])
	})
	if depth == maxWalkDepth && len(lv.spans) > 0 {
		return w.skip(fmt.Errorf("%s: deeper than %d levels, not read", w.path, maxWalkDepth))
	}
	for _, sp := range lv.spans {
		name := lv.names[sp.start:sp.end]
		child, err := sysfsattr.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC)
		parent := len(w.path)
		w.path = append(append(w.path, '/'), name[:len(name)-1]...)
		if err != nil {
			if !errors.Is(err, unix.ENOENT) {
				err = w.skip(&os.PathError{Op: "open", Path: string(w.path), Err: err})
			} else {
				err = nil
			}
		} else {
			err = w.walkDir(child, rootLen, depth+1, fn)
		}
		w.path = w.path[:parent]
		if err != nil {
			return err
		}
	}
	return nil
}

// readDir collects the subdirectories of fd into lv and says whether it
// has a uevent file (of any type: one that cannot be read is counted).
func (w *Walker) readDir(fd int, lv *level) (bool, error) {
	hasUevent := false
	for {
		n, err := unix.Getdents(fd, w.dirents)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false, err
		}
		if n <= 0 {
			return hasUevent, nil
		}
		for buf := w.dirents[:n]; len(buf) >= 19; {
			reclen := int(binary.NativeEndian.Uint16(buf[16:]))
			if reclen < 19 || reclen > len(buf) {
				return false, fmt.Errorf("getdents64 record of %d bytes", reclen)
			}
			typ, name := buf[18], buf[19:reclen]
			buf = buf[reclen:]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			switch {
			case string(name) == "." || string(name) == ".." || len(name) == 0:
				continue
			case string(name) == "uevent":
				hasUevent = true
			}
			if typ == unix.DT_UNKNOWN {
				var st unix.Stat_t
				if err := unix.Fstatat(fd, string(name), &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
					if err := w.skip(&os.PathError{Op: "stat", Path: string(w.path) + "/" + string(name), Err: err}); err != nil {
						return false, err
					}
					continue
				}
				if st.Mode&unix.S_IFMT == unix.S_IFDIR {
					typ = unix.DT_DIR
				}
			}
			if typ == unix.DT_DIR {
				start := len(lv.names)
				lv.names = append(append(lv.names, name...), 0)
				lv.spans = append(lv.spans, span{start, len(lv.names)})
			}
		}
	}
}

func (w *Walker) skip(err error) error {
	w.Skipped++
	if len(w.Errors) < 8 {
		w.Errors = append(w.Errors, err)
	}
	budget := w.ErrorBudget
	if budget <= 0 {
		budget = DefaultErrorBudget
	}
	if w.Skipped > budget {
		return fmt.Errorf("%w (%d, first: %v)", ErrBudgetExceeded, w.Skipped, w.Errors[0])
	}
	return nil
}

// read builds the event for the device directory dirfd (w.path) from its
// uevent file, its subsystem link and, if the uevent file lacks it, its
// modalias file. The message goes through Parse so sysfs input gets the
// same checks as netlink input.
func (w *Walker) read(dirfd, rootLen int) (Event, error) {
	body, err := sysfsattr.ReadAt(dirfd, nameUevent, w.attr)
	if err != nil {
		return Event{}, &os.PathError{Op: "read", Path: string(w.path) + "/uevent", Err: err}
	}
	devpath := w.path[rootLen:]
	m := append(w.msg[:0], "add@"...)
	m = append(m, devpath...)
	m = append(m, "\x00ACTION=add\x00DEVPATH="...)
	m = append(m, devpath...)
	m = append(m, 0)
	if target, err := sysfsattr.Readlinkat(dirfd, nameSubsystem, w.link); err == nil {
		if i := bytes.LastIndexByte(target, '/'); i >= 0 {
			target = target[i+1:]
		}
		m = append(append(append(m, "SUBSYSTEM="...), target...), 0)
	}
	hasModalias := false
	for len(body) > 0 {
		line := body
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			body = nil
		}
		if len(line) == 0 {
			continue
		}
		hasModalias = hasModalias || bytes.HasPrefix(line, []byte("MODALIAS="))
		m = append(append(m, line...), 0)
	}
	if !hasModalias {
		// Some buses expose a modalias file but do not put MODALIAS in
		// their uevent; it is still what a driver matches on.
		if alias, err := sysfsattr.ReadAt(dirfd, nameModalias, w.attr); err == nil {
			if a := bytes.TrimRight(alias, "\n"); len(a) > 0 {
				m = append(append(append(m, "MODALIAS="...), a...), 0)
			}
		}
	}
	w.msg = m
	ev, err := Parse(m)
	if err != nil {
		return Event{}, fmt.Errorf("%s: %w", w.path, err)
	}
	return ev, nil
}
