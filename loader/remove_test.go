package loader

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/modautoload/modautoload/loader/loadertest"
)

// modprobe -r of a built-in module says so, and asks the kernel nothing:
// also when it has a /sys/module directory (a built-in module with
// parameters has one, without initstate), as libkmod checks
// modules.builtin before sysfs.
func TestRemoveBuiltin(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"m"})
	if err := os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte("kernel/drivers/bi.ko\nkernel/drivers/bip.ko\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	k := loadertest.NewKernel(t, nil)
	l := newTestLoader(t, k)
	r := newResolver(t, dir, "")
	k.ModuleIn("bip", "")
	if err := os.Mkdir(filepath.Join(k.Sysfs, "module", "bip", "parameters"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"bi", "bip"} {
		if err := l.Remove(r, name); !errors.Is(err, ErrBuiltin) {
			t.Errorf("%s: %v, want ErrBuiltin", name, err)
		}
	}
	if calls := k.Calls(); len(calls) != 0 {
		t.Errorf("calls %v: delete_module for a built-in module", calls)
	}
}

// A module something uses stays, and the error says why; a module the
// kernel refuses to unload reports the kernel's error; one removed shows
// as removed in the status.
func TestRemoveRefusals(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"used", "stuck", "free"})
	k := &refusingKernel{Kernel: loadertest.NewKernel(t, nil), refuse: map[string]error{"stuck": unix.EPERM}}
	l := NewLoader(k, k.Sysfs)
	t.Cleanup(func() { l.Shutdown(context.Background()) })
	r := newResolver(t, dir, "")
	for _, m := range []string{"used", "stuck", "free"} {
		k.ModuleIn(m, "live")
	}
	if err := os.WriteFile(filepath.Join(k.Sysfs, "module", "used", "refcnt"), []byte("2\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	err := l.Remove(r, "used")
	var le *LoadError
	if !errors.Is(err, unix.EBUSY) || !errors.As(err, &le) || le.Op != "delete_module" || !strings.Contains(err.Error(), "in use by 2") {
		t.Errorf("used: %v, want delete_module refused with EBUSY, in use by 2", err)
	}
	if k.CallsOf("-used") != 0 {
		t.Error("delete_module called for a module in use")
	}

	if err := l.Remove(r, "stuck"); !errors.Is(err, unix.EPERM) || !errors.As(err, &le) || le.Op != "delete_module" {
		t.Errorf("stuck: %v, want the kernel's EPERM", err)
	}
	if st := l.States()["stuck"].State; st == "removed" {
		t.Errorf("stuck: state %q after the kernel refused", st)
	}

	if err := l.Remove(r, "free"); err != nil {
		t.Fatal(err)
	}
	if st := l.States()["free"].State; st != "removed" {
		t.Errorf("free: state %q, want removed", st)
	}
}

// refusingKernel is the fake kernel with delete_module failing for some
// modules.
type refusingKernel struct {
	*loadertest.Kernel
	refuse map[string]error
}

func (k *refusingKernel) DeleteModule(name string, flags int) error {
	if err := k.refuse[name]; err != nil {
		return err
	}
	return k.Kernel.DeleteModule(name, flags)
}

// A dependency with a remove command is removed by its command, as
// modprobe -r does for each module it removes.
func TestRemoveCommandForDependency(t *testing.T) {
	dir := loadertest.ModuleTree(t, map[string][]string{"top": {"dep"}}, []string{"dep", "top"})
	k := loadertest.NewKernel(t, nil)
	l := newTestLoader(t, k)
	ran := filepath.Join(t.TempDir(), "ran")
	r := newResolver(t, dir, "remove dep touch "+ran+"\n")
	for _, m := range []string{"dep", "top"} {
		k.ModuleIn(m, "live")
	}
	if err := l.Remove(r, "top"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ran); err != nil {
		t.Errorf("dep's remove command did not run: %v", err)
	}
	if got := strings.Join(k.Calls(), " "); got != "-top" {
		t.Errorf("calls %q, want only top's delete_module", got)
	}
}
