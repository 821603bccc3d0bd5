// Package loader turns module names and aliases into modules and loads
// them: the module database (depmod's indexes of one module directory),
// resolution as libkmod does it, and loading with per-module
// serialization.
package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/modautoload/modautoload/loader/index"
)

// DB is the module database of one module directory (/lib/modules/VERSION):
// depmod's indexes, opened once (mmapped where a .bin exists) and looked up
// many times. Its methods may be called concurrently.
type DB struct {
	// Dir is the module directory; every module path lies below it.
	Dir string
	// Problems lists malformed lines skipped in text indexes.
	Problems []error

	dep, alias, symbols, builtin, builtinAlias index.Index

	// entries caches parsed modules.dep lines by module name: a plan reads
	// the same few lines many times. Only modules that exist are cached,
	// so made-up names cannot grow it.
	entries sync.Map
}

// ModuleDir is where modules of kernel version kver live below the root
// basedir ("" or "/" for the running system), as modprobe -d/-S compute it.
func ModuleDir(basedir, kver string) string {
	return filepath.Join("/", basedir, "lib", "modules", kver)
}

// OpenDB opens the indexes of dir. A missing index (and its text form) is
// not an error: lookups in it find nothing, as with libkmod. A missing
// modules.dep is, since no module could ever be loaded.
func OpenDB(dir string) (*DB, error) {
	db := &DB{Dir: dir}
	for _, ix := range []struct {
		kind     index.Kind
		dst      *index.Index
		required bool
	}{
		{index.KindDep, &db.dep, true},
		{index.KindAlias, &db.alias, false},
		{index.KindSymbols, &db.symbols, false},
		{index.KindBuiltin, &db.builtin, false},
		{index.KindBuiltinAlias, &db.builtinAlias, false},
	} {
		t, bad, err := index.Open(dir, ix.kind)
		db.Problems = append(db.Problems, bad...)
		switch {
		case err == nil:
			*ix.dst = t
		case errors.Is(err, os.ErrNotExist) && !ix.required:
		default:
			db.Close()
			return nil, fmt.Errorf("module directory %s: %w", dir, err)
		}
	}
	return db, nil
}

// Close releases the indexes; lookups in progress finish first.
func (db *DB) Close() error {
	var errs []error
	for _, ix := range []index.Index{db.dep, db.alias, db.symbols, db.builtin, db.builtinAlias} {
		if ix != nil {
			errs = append(errs, ix.Close())
		}
	}
	return errors.Join(errs...)
}

// DropPages takes the mapped indexes out of the process's resident memory
// until they are used again.
func (db *DB) DropPages() error {
	// Called after every event: it allocates only for an error.
	var errs []error
	for _, ix := range [...]index.Index{db.dep, db.alias, db.symbols, db.builtin, db.builtinAlias} {
		if ix == nil {
			continue
		}
		if err := ix.DropPages(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// depEntry is a module's line of modules.dep.
type depEntry struct {
	path string   // absolute path of the module file
	deps []string // absolute paths of its dependencies, as listed
}

// lookupDep returns the modules.dep entry of the module named name, or
// nil. Paths are checked: a module file must lie inside the module
// directory, so a corrupt or hostile index cannot make us load a file from
// anywhere else.
func (db *DB) lookupDep(name string) (*depEntry, error) {
	if e, ok := db.entries.Load(name); ok {
		return e.(*depEntry), nil
	}
	vals, err := db.dep.Search(name)
	if err != nil || len(vals) == 0 {
		return nil, err
	}
	line := vals[0].Value
	file, rest, ok := strings.Cut(line, ":")
	if !ok {
		return nil, fmt.Errorf("%s: modules.dep entry of %s has no ':': %q", db.Dir, name, line)
	}
	e := &depEntry{}
	if e.path, err = db.modulePath(file); err != nil {
		return nil, fmt.Errorf("modules.dep entry of %s: %w", name, err)
	}
	for _, d := range strings.Fields(rest) {
		p, err := db.modulePath(d)
		if err != nil {
			return nil, fmt.Errorf("modules.dep entry of %s: %w", name, err)
		}
		e.deps = append(e.deps, p)
	}
	db.entries.Store(name, e)
	return e, nil
}

// modulePath joins a modules.dep path to the module directory. depmod
// writes paths relative to it; anything absolute or climbing out with ".."
// is refused.
func (db *DB) modulePath(rel string) (string, error) {
	if !filepath.IsLocal(rel) {
		return "", fmt.Errorf("module path %q is not inside %s", rel, db.Dir)
	}
	return filepath.Join(db.Dir, rel), nil
}

// isBuiltin reports whether name is built into the kernel according to
// modules.builtin (or its text form).
func (db *DB) isBuiltin(name string) (bool, error) {
	if db.builtin == nil {
		return false, nil
	}
	vals, err := db.builtin.Search(name)
	return len(vals) > 0, err
}

// wild looks key up in an alias-like index, returning module names in
// libkmod's order; nil index means no match.
func wild(ix index.Index, key string) ([]string, error) {
	if ix == nil {
		return nil, nil
	}
	vals, err := ix.SearchWild(key)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(vals))
	for i, v := range vals {
		names[i] = v.Value
	}
	return names, nil
}
