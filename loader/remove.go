package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNotLoaded is returned by Remove for a module that is not in the kernel.
var ErrNotLoaded = errors.New("module is not loaded")

// ErrBuiltin is returned by Remove for a module built into the kernel.
var ErrBuiltin = errors.New("module is built in")

// Remove unloads the modules name resolves to, then those of their
// dependencies nothing uses any more, as modprobe -r does. A modprobe.d
// remove command runs instead of unloading its module.
func (l *Loader) Remove(r *Resolver, name string) error {
	mods, err := r.Lookup(name)
	if err != nil {
		return err
	}
	if len(mods) == 0 {
		return fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	var errs []error
	for _, m := range mods {
		if err := l.removeOne(r, m.Name, true); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (l *Loader) removeOne(r *Resolver, name string, asked bool) error {
	if err := checkModuleName(name); err != nil {
		return err
	}
	if cmd, ok := r.Config.Remove(name); ok {
		return l.runCommand("remove", name, cmd, "")
	}
	// modules.builtin first, as libkmod: a built-in module with
	// parameters has a /sys/module directory, without initstate.
	if builtin, _ := r.DB.isBuiltin(name); builtin {
		if asked {
			return fmt.Errorf("%s: %w", name, ErrBuiltin)
		}
		return nil
	}
	st, err := l.readState(l.Sysfs, name)
	if err != nil {
		return err
	}
	if st == stateAbsent {
		if asked {
			return fmt.Errorf("%s: %w", name, ErrNotLoaded)
		}
		return nil
	}
	if n, err := l.refcnt(name); err == nil && n > 0 {
		if asked {
			return &LoadError{Module: name, Op: "delete_module", Err: fmt.Errorf("in use by %d: %w", n, unix.EBUSY)}
		}
		return nil // a dependency still needed by something else stays
	}
	if err := l.Kernel.DeleteModule(name, unix.O_NONBLOCK); err != nil {
		if asked {
			return &LoadError{Module: name, Op: "delete_module", Err: err}
		}
		return nil
	}
	l.setState(name, "removed", nil)
	deps, err := r.Dependencies(&Module{Name: name})
	if err != nil {
		return err
	}
	// Dependencies load deepest first; unload the other way round.
	for i := len(deps) - 1; i >= 0; i-- {
		l.removeOne(r, deps[i].Name, false)
	}
	return nil
}

// refcnt reads how many users the kernel counts for a loaded module.
func (l *Loader) refcnt(name string) (int, error) {
	data, err := os.ReadFile(filepath.Join(l.Sysfs, "module", name, "refcnt"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(data)))
}
