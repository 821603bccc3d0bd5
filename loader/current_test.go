package loader

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/modautoload/modautoload/loader/index"
	"github.com/modautoload/modautoload/loader/modprobed"
)

// writeDir replaces dir's modules.dep and modules.alias the way depmod
// does: write a temporary file, rename it over the old one.
func writeDir(t *testing.T, dir, dep, alias string) {
	t.Helper()
	for name, content := range map[string]string{"modules.dep": dep, "modules.alias": alias} {
		tmp := filepath.Join(dir, name+".tmp")
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLiveReopensAfterDepmod(t *testing.T) {
	dir := t.TempDir()
	writeDir(t, dir, "kernel/a.ko:\n", "alias dev:A a\n")
	opens := 0
	live := &CurrentResolver{
		Open: func() (*Resolver, error) {
			opens++
			db, err := OpenDB(dir)
			if err != nil {
				return nil, err
			}
			cfg, err := modprobed.Load(modprobed.LoadOptions{Paths: []string{t.TempDir()}})
			if err != nil {
				return nil, err
			}
			return &Resolver{DB: db, Config: cfg}, nil
		},
		Watch:    []string{dir},
		Interval: 20 * time.Millisecond,
	}
	defer live.Close()
	found := func(alias string) bool {
		var n int
		if err := live.Use(func(r *Resolver) error {
			mods, err := r.Lookup(alias)
			n = len(mods)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return n > 0
	}
	if !found("dev:A") || found("dev:B") {
		t.Fatal("initial index not as written")
	}
	writeDir(t, dir, "kernel/a.ko:\nkernel/b.ko:\n", "alias dev:A a\nalias dev:B b\n")
	// Within the interval the old index serves: no stat storm per event.
	if found("dev:B") {
		t.Error("reopened before the interval passed")
	}
	time.Sleep(30 * time.Millisecond)
	if !found("dev:B") {
		t.Error("new alias not seen after depmod rewrote the index")
	}
	// Nothing changed: no reopen.
	time.Sleep(30 * time.Millisecond)
	found("dev:A")
	if opens != 2 {
		t.Errorf("opened %d times, want 2", opens)
	}
}

func TestLiveKeepsLastGoodState(t *testing.T) {
	dir := t.TempDir()
	writeDir(t, dir, "kernel/a.ko:\n", "alias dev:A a\n")
	var reloadErrs []error
	live := &CurrentResolver{
		Open:     openDir(dir),
		Watch:    []string{dir},
		Reloaded: func(err error) { reloadErrs = append(reloadErrs, err) },
	}
	defer live.Close()
	if err := live.Use(func(*Resolver) error { return nil }); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "modules.dep"))
	if err := live.Reload(); err != nil {
		t.Fatalf("a failed reload must keep serving: %v", err)
	}
	if len(reloadErrs) != 1 || !errors.Is(reloadErrs[0], os.ErrNotExist) {
		t.Errorf("reload reports %v", reloadErrs)
	}
	var n int
	live.Use(func(r *Resolver) error {
		mods, err := r.Lookup("dev:A")
		n = len(mods)
		return err
	})
	if n != 1 {
		t.Error("previous index no longer served after a failed reload")
	}
}

// Reloads while lookups run: the race detector and ErrClosed would show
// a database closed under a lookup.
func TestLiveConcurrentUseAndReload(t *testing.T) {
	dir := t.TempDir()
	writeDir(t, dir, "kernel/a.ko:\n", "alias dev:A a\n")
	live := &CurrentResolver{
		Open:  openDir(dir),
		Watch: []string{dir},
	}
	defer live.Close()
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				if err := live.Use(func(r *Resolver) error {
					_, err := r.Resolve("dev:A", ResolveOptions{})
					return err
				}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for i := 0; i < 30; i++ {
		if err := live.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
}

// openDir opens dir's indexes with an empty configuration.
func openDir(dir string) func() (*Resolver, error) {
	return func() (*Resolver, error) {
		db, err := OpenDB(dir)
		if err != nil {
			return nil, err
		}
		cfg, err := modprobed.Load(modprobed.LoadOptions{Paths: []string{dir + "/none"}})
		return &Resolver{DB: db, Config: cfg}, err
	}
}

// A modprobe.d file edited in place (no rename: its directory does not
// change) is seen at the next check, whether its size or only its mtime
// tells.
func TestLiveSeesInPlaceEdits(t *testing.T) {
	dir := t.TempDir()
	writeDir(t, dir, "kernel/a.ko:\nkernel/b.ko:\n", "")
	conf := t.TempDir()
	file := filepath.Join(conf, "x.conf")
	if err := os.WriteFile(file, []byte("alias dev:X a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	live := &CurrentResolver{
		Open: func() (*Resolver, error) {
			db, err := OpenDB(dir)
			if err != nil {
				return nil, err
			}
			cfg, err := modprobed.Load(modprobed.LoadOptions{Paths: []string{conf}})
			return &Resolver{DB: db, Config: cfg}, err
		},
		Watch: []string{dir, conf},
	}
	defer live.Close()
	target := func() string {
		var name string
		if err := live.Use(func(r *Resolver) error {
			mods, err := r.Lookup("dev:X")
			if len(mods) == 1 {
				name = mods[0].Name
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return name
	}
	if got := target(); got != "a" {
		t.Fatalf("dev:X is %q, want a", got)
	}
	dirBefore, err := os.Stat(conf)
	if err != nil {
		t.Fatal(err)
	}
	fileBefore, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	// A larger file within the same tick of a coarse clock (the mtime
	// kept), then one of the same size, a second later.
	for i, edit := range []struct {
		content, want string
		mtime         time.Time
	}{
		{"alias dev:X b # edited\n", "b", fileBefore.ModTime()},
		{"alias dev:X a # edited\n", "a", fileBefore.ModTime().Add(time.Second)},
	} {
		if err := os.WriteFile(file, []byte(edit.content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(file, edit.mtime, edit.mtime); err != nil {
			t.Fatal(err)
		}
		if got := target(); got != edit.want {
			t.Errorf("edit %d: dev:X is %q, want %s", i+1, got, edit.want)
		}
	}
	dirAfter, err := os.Stat(conf)
	if err != nil {
		t.Fatal(err)
	}
	if !dirAfter.ModTime().Equal(dirBefore.ModTime()) {
		t.Fatalf("the directory changed (%v -> %v): the edits were not in place", dirBefore.ModTime(), dirAfter.ModTime())
	}
}

// Reload (SIGHUP) reopens even when nothing changed and reports it; the
// resolver it replaced is closed once its last use is done.
func TestLiveReloadForcedAndOldClosed(t *testing.T) {
	dir := t.TempDir()
	writeDir(t, dir, "kernel/a.ko:\n", "alias dev:A a\n")
	opens := 0
	var reloaded []error
	open := openDir(dir)
	live := &CurrentResolver{
		Open:     func() (*Resolver, error) { opens++; return open() },
		Watch:    []string{dir},
		Interval: time.Hour,
		Reloaded: func(err error) { reloaded = append(reloaded, err) },
	}
	defer live.Close()
	var kept *Resolver
	if err := live.Use(func(r *Resolver) error {
		kept = r
		// A reload while this use runs leaves its resolver open.
		if err := live.Reload(); err != nil {
			return err
		}
		_, err := r.Lookup("dev:A")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if opens != 2 || len(reloaded) != 1 || reloaded[0] != nil {
		t.Errorf("%d opens, reloads reported %v; want the forced reopen, reported as a success", opens, reloaded)
	}
	if _, err := kept.Lookup("dev:A"); !errors.Is(err, index.ErrClosed) {
		t.Errorf("the replaced resolver after its last use: %v, want closed", err)
	}
}
