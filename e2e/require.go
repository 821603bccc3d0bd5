package e2e

import (
	"context"
	"debug/elf"
	"fmt"
	"os/exec"
	"sync"
	"testing"

	"github.com/modautoload/modautoload/internal/testtool"
)

// unmet applies testtool's policy to a missing prerequisite: skip on a
// developer's machine, fail in CI or when the e2e tests are asked for.
func unmet(t testing.TB, format string, args ...any) {
	t.Helper()
	testtool.Missing(t, "e2e prerequisite missing: "+format, args...)
}

// Process-wide results: every test asks, the work is done once.
var (
	kernelOnce = sync.OnceValues(func() (*Kernel, error) { return EnsureKernel(context.Background()) })
	baseOnce   = sync.OnceValues(func() (string, error) {
		k, err := kernelOnce()
		if err != nil {
			return "", err
		}
		return ensureBase(context.Background(), k)
	})
)

// KernelFor returns the cached Debian kernel for tests that only read its
// module tree on the host, fetching it first if needed. If it cannot be
// had, the test skips, or fails under CI=true or MODAUTOLOAD_E2E=1.
func KernelFor(t testing.TB) *Kernel {
	t.Helper()
	if testing.Short() && !testtool.Strict() {
		t.Skip("e2e: skipped in -short mode")
	}
	for _, tool := range []string{"apt-get", "apt-cache", "dpkg", "depmod"} {
		if _, err := exec.LookPath(tool); err != nil {
			unmet(t, "%s not found (needs apt, dpkg and kmod)", tool)
		}
	}
	k, err := kernelOnce()
	if err != nil {
		unmet(t, "fetching the kernel: %v", err)
	}
	return k
}

// Require is the first call of every test that boots a guest. It checks
// the host tools (qemu-system-x86_64, a static busybox, kmod) and prepares
// the kernel and base initramfs. Anything missing skips the test, or fails
// it under CI=true or MODAUTOLOAD_E2E=1.
func Require(t testing.TB) {
	t.Helper()
	if testing.Short() && !testtool.Strict() {
		t.Skip("e2e: skipped in -short mode")
	}
	if err := hostTools(); err != nil {
		unmet(t, "%v", err)
	}
	KernelFor(t)
	if _, err := baseOnce(); err != nil {
		t.Fatalf("e2e: %v", err) // the tools are there, so this is a rig bug
	}
}

// Prepare is Require for programs outside go test (the demo): it returns
// what is missing instead of skipping.
func Prepare() error {
	if err := hostTools(); err != nil {
		return err
	}
	_, err := baseOnce()
	return err
}

// hostTools checks the tools a guest boot needs on the host.
func hostTools() error {
	for _, tool := range []struct{ name, pkg string }{
		{"qemu-system-x86_64", "qemu-system-x86"}, {"kmod", "kmod"}, {"ldd", "libc-bin"},
		{"apt-get", "apt"}, {"dpkg", "dpkg"}, {"depmod", "kmod"},
	} {
		if _, err := exec.LookPath(tool.name); err != nil {
			return fmt.Errorf("%s not found (apt-get install %s)", tool.name, tool.pkg)
		}
	}
	if err := checkStatic("/bin/busybox"); err != nil {
		return fmt.Errorf("%v (apt-get install busybox-static)", err)
	}
	return nil
}

// checkStatic makes sure bin runs without a libc: the guest's busybox is
// its shell and must not depend on the libraries copied for kmod.
func checkStatic(bin string) error {
	f, err := elf.Open(bin)
	if err != nil {
		return fmt.Errorf("busybox: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked", bin)
		}
	}
	return nil
}
