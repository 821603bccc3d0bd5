package loader

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

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
