package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Kernel is an unpacked Debian kernel package with depmod indexes.
type Kernel struct {
	Root    string // extracted package root; holds lib/modules/<Version>
	Version string // e.g. 6.1.0-56-amd64, what uname -r prints in the guest
	Vmlinuz string // the bootable image
}

// ModulesDir is the kernel's module tree on the host.
func (k *Kernel) ModulesDir() string {
	return filepath.Join(k.Root, "lib", "modules", k.Version)
}

// stampName marks a fully built kernel directory. It is written before the
// directory is renamed into place, so its presence means complete.
const stampName = ".complete"

// CacheDir is where the rig keeps downloads and archives between runs:
// $MODAUTOLOAD_CACHE, else $HOME/.cache/modautoload.
func CacheDir() (string, error) {
	if dir := os.Getenv("MODAUTOLOAD_CACHE"); dir != "" {
		return dir, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("cache directory: %w (set MODAUTOLOAD_CACHE)", err)
	}
	return filepath.Join(home, ".cache", "modautoload"), nil
}

// EnsureKernel returns the current Debian kernel (the one linux-image-amd64
// depends on), downloading, unpacking and indexing it into the cache first if
// needed. Concurrent callers, in this process or others, build it once.
func EnsureKernel(ctx context.Context) (*Kernel, error) {
	cache, err := CacheDir()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, err
	}
	version, err := currentKernelVersion(ctx)
	if err != nil {
		return nil, err
	}
	return ensureKernel(ctx, cache, version, "linux-image-"+version)
}

// ensureKernel returns the kernel version from the cache, building it
// from the Debian package pkg first if needed.
func ensureKernel(ctx context.Context, cache, version, pkg string) (*Kernel, error) {
	dir := filepath.Join(cache, "kernel-"+version)
	k := &Kernel{
		Root:    filepath.Join(dir, "root"),
		Version: version,
		Vmlinuz: filepath.Join(dir, "root", "boot", "vmlinuz-"+version),
	}
	if exists(filepath.Join(dir, stampName)) {
		return k, nil
	}

	unlock, err := lockFile(ctx, dir+".lock")
	if err != nil {
		return nil, err
	}
	defer unlock()
	if exists(filepath.Join(dir, stampName)) {
		return k, nil // another process built it while we waited
	}
	if err := buildKernelDir(ctx, cache, dir, version, pkg); err != nil {
		return nil, fmt.Errorf("kernel %s: %w", version, err)
	}
	return k, nil
}

// currentKernelVersion asks apt which kernel linux-image-amd64 points at,
// refreshing the package lists once if apt knows nothing yet (fresh CI
// machines have empty lists).
func currentKernelVersion(ctx context.Context) (string, error) {
	version, err := aptKernelVersion(ctx)
	if err == nil {
		return version, nil
	}
	progress("apt-cache found no kernel (%v); running apt-get update", err)
	aptUpdate(ctx)
	return aptKernelVersion(ctx)
}

// aptUpdate refreshes apt's package lists. A failure is reported, not
// returned: an index can be briefly unavailable (a security mirror in the
// middle of a sync), and apt then keeps the lists it could fetch, so the
// main suite's packages can still be had; the look-up after it decides.
func aptUpdate(ctx context.Context) {
	if out, err := exec.CommandContext(ctx, "apt-get", "update").CombinedOutput(); err != nil {
		progress("apt-get update: %v (going on with the lists apt has)\n%s", err, out)
	}
}

func aptKernelVersion(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "apt-cache", "depends", "linux-image-amd64").Output()
	if err != nil {
		return "", fmt.Errorf("apt-cache depends linux-image-amd64: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if pkg, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "Depends: linux-image-"); ok {
			return pkg, nil
		}
	}
	return "", errors.New("apt-cache depends linux-image-amd64 names no linux-image package")
}

// buildKernelDir downloads and unpacks the kernel into a temporary directory
// and renames it to dir, so a killed run never leaves a half-built kernel
// where EnsureKernel would take it for a complete one. The caller holds the
// lock.
func buildKernelDir(ctx context.Context, cache, dir, version, pkg string) error {
	base := filepath.Base(dir)
	if err := removeGlob(filepath.Join(cache, base+".tmp*")); err != nil {
		return err // leftovers of an interrupted build
	}
	tmp, err := os.MkdirTemp(cache, base+".tmp")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp) // no-op after the rename

	start := time.Now()
	progress("downloading %s into %s (once; about 100 MB)", pkg, cache)
	// The sandbox user _apt cannot write into a root-owned temp directory.
	dl := exec.CommandContext(ctx, "apt-get", "download", "-o", "APT::Sandbox::User=root", pkg)
	dl.Dir = tmp
	if out, err := dl.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get download %s: %w\n%s", pkg, err, out)
	}
	debs, err := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if err != nil || len(debs) != 1 {
		return fmt.Errorf("apt-get download %s left %d .deb files", pkg, len(debs))
	}
	progress("downloaded in %v; unpacking", time.Since(start).Round(time.Second))

	root := filepath.Join(tmp, "root")
	if out, err := exec.CommandContext(ctx, "dpkg", "-x", debs[0], root).CombinedOutput(); err != nil {
		return fmt.Errorf("dpkg -x: %w\n%s", err, out)
	}
	if err := os.Remove(debs[0]); err != nil {
		return err
	}
	// The package ships no module indexes; depmod makes them.
	if out, err := exec.CommandContext(ctx, "depmod", "-b", root, version).CombinedOutput(); err != nil {
		return fmt.Errorf("depmod: %w\n%s", err, out)
	}
	for _, p := range []string{"boot/vmlinuz-" + version, "lib/modules/" + version + "/modules.dep.bin"} {
		if !exists(filepath.Join(root, p)) {
			return fmt.Errorf("unpacked package lacks %s", p)
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, stampName), nil, 0o644); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err // an unstamped directory someone left by hand
	}
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	progress("kernel %s ready in %v", version, time.Since(start).Round(time.Second))
	return nil
}

// lockFile takes an exclusive flock on path for cache building across test
// processes. It polls rather than blocks so that ctx can cancel the wait.
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	waiting := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing drops the lock
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if !waiting {
			waiting = true
			progress("waiting for another process building %s", strings.TrimSuffix(path, ".lock"))
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func removeGlob(pattern string) error {
	matches, err := filepath.Glob(pattern)
	if err != nil {
		return err
	}
	for _, m := range matches {
		if err := os.RemoveAll(m); err != nil {
			return err
		}
	}
	return nil
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// progress reports slow cache work on stderr. It goes around testing.T
// because the work is shared by all tests of the process and can take
// minutes, and go test -v shows stderr as it comes.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "e2e: "+format+"\n", args...)
}
