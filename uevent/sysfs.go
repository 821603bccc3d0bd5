package uevent

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

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

	attr []byte // holds one attribute at a time
}

// buf returns the walk's attribute buffer: a page and the byte that tells
// a larger file.
func (w *Walker) buf() []byte {
	if w.attr == nil {
		w.attr = make([]byte, sysfsAttrMax+1)
	}
	return w.attr
}

// Walk calls fn with an "add" event for every device under Root/devices
// that has a uevent file, parents before children. Unreadable entries are
// skipped and counted; the walk fails only when they exceed the budget or
// fn returns an error (fs.SkipAll ends it early without error).
func (w *Walker) Walk(fn func(Event) error) error {
	return w.walkDirs(func(dir, devpath string) error {
		ev, err := w.read(dir, devpath)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			// No uevent file: not a device (or one removed meanwhile).
			return nil
		case err != nil:
			return w.skip(err)
		}
		return fn(ev)
	})
}

// walkDirs visits every directory below Root/devices, parents first.
// Symlinks (subsystem, driver, device, ...) are never followed, so the
// walk cannot loop and never leaves the devices tree.
func (w *Walker) walkDirs(visit func(dir, devpath string) error) error {
	root := w.Root
	if root == "" {
		root = "/sys"
	}
	top := filepath.Join(root, "devices")
	err := filepath.WalkDir(top, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == top {
				return err
			}
			return w.skip(err)
		}
		if !d.IsDir() {
			return nil
		}
		devpath := "/" + filepath.ToSlash(strings.TrimPrefix(path, root+string(filepath.Separator)))
		return visit(path, devpath)
	})
	if errors.Is(err, fs.SkipAll) {
		return nil
	}
	return err
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

// read builds the event for one device directory from its uevent file, its
// subsystem link and, if the uevent file lacks it, its modalias file. The
// message goes through Parse so sysfs input gets the same checks as netlink
// input.
func (w *Walker) read(dir, devpath string) (Event, error) {
	body, err := sysfsattr.Read(filepath.Join(dir, "uevent"), w.buf())
	if err != nil {
		return Event{}, err
	}
	var msg bytes.Buffer
	msg.Grow(len(devpath)*2 + len(body) + 64)
	fmt.Fprintf(&msg, "add@%s\x00ACTION=add\x00DEVPATH=%s\x00", devpath, devpath)
	if target, err := os.Readlink(filepath.Join(dir, "subsystem")); err == nil {
		fmt.Fprintf(&msg, "SUBSYSTEM=%s\x00", filepath.Base(target))
	}
	hasModalias := false
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" {
			continue
		}
		hasModalias = hasModalias || strings.HasPrefix(line, "MODALIAS=")
		msg.WriteString(line)
		msg.WriteByte(0)
	}
	if !hasModalias {
		// Some buses expose a modalias file but do not put MODALIAS in
		// their uevent; it is still what a driver matches on.
		if alias, err := sysfsattr.Read(filepath.Join(dir, "modalias"), w.buf()); err == nil {
			if a := strings.TrimRight(string(alias), "\n"); a != "" {
				fmt.Fprintf(&msg, "MODALIAS=%s\x00", a)
			}
		}
	}
	ev, err := Parse(msg.Bytes())
	if err != nil {
		return Event{}, fmt.Errorf("%s: %w", dir, err)
	}
	return ev, nil
}
