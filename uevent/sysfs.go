package uevent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
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
}

// Walk calls fn with an "add" event for every device under Root/devices
// that has a uevent file, parents before children. Unreadable entries are
// skipped and counted; the walk fails only when they exceed the budget or
// fn returns an error (fs.SkipAll ends it early without error).
func (w *Walker) Walk(fn func(Event) error) error {
	return w.walkUevents(func(dir, devpath string) error {
		ev, err := w.read(dir, devpath)
		if err != nil {
			return w.skip(err)
		}
		return fn(ev)
	})
}

// walkUevents visits every directory below Root/devices holding a uevent
// file. Symlinks (subsystem, driver, device, ...) are never followed, so the
// walk cannot loop and never leaves the devices tree.
func (w *Walker) walkUevents(visit func(dir, devpath string) error) error {
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
		if _, err := os.Lstat(filepath.Join(path, "uevent")); err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				return w.skip(err)
			}
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
	body, err := readAttr(filepath.Join(dir, "uevent"))
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
		if alias, err := readAttr(filepath.Join(dir, "modalias")); err == nil {
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

// readAttr reads a sysfs attribute, refusing anything larger than a page.
func readAttr(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf, err := io.ReadAll(io.LimitReader(f, sysfsAttrMax+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(buf) > sysfsAttrMax {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, sysfsAttrMax)
	}
	return buf, nil
}
