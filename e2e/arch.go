package e2e

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modautoload/modautoload/internal/testtool"
)

// Arch is a guest architecture other than the host's x86-64: Debian's
// kernel and user space for it, the Go port its binaries are built for,
// and the qemu board that boots it. Its devices are described by a device
// tree, as on embedded boards, plus a PCIe host bridge. A Scenario with
// Arch set boots it; nil boots the x86-64 guest.
type Arch struct {
	Name   string // Debian's name for it: arm64, armhf
	GOARCH string
	GOARM  string // for GOARCH=arm

	kernelMeta string   // the package that depends on the current kernel
	qemu       string   // qemu-system-* binary
	machine    []string // qemu arguments choosing the board and the CPU
	console    string   // the board's serial console

	prep struct {
		once   sync.Once
		kernel *Kernel
		base   string
		err    error
	}
}

var (
	// ARM64 is a 64-bit ARM board: qemu's virt machine, Cortex-A57.
	ARM64 = &Arch{Name: "arm64", GOARCH: "arm64", kernelMeta: "linux-image-arm64",
		qemu: "qemu-system-aarch64", machine: []string{"-M", "virt", "-cpu", "cortex-a57"}, console: "ttyAMA0"}
	// ARMHF is a 32-bit ARMv7 board: qemu's virt machine, Cortex-A15,
	// Debian's armmp kernel. highmem=off keeps the PCIe configuration
	// window below 4 GiB, where a kernel without LPAE can reach it.
	ARMHF = &Arch{Name: "armhf", GOARCH: "arm", GOARM: "7", kernelMeta: "linux-image-armmp",
		qemu: "qemu-system-arm", machine: []string{"-M", "virt,highmem=off", "-cpu", "cortex-a15"}, console: "ttyAMA0"}
)

// userlandPackages are the Debian packages the guest's user space comes
// from: busybox for the shell, and kmod with the libraries it links, as
// the reference modprobe.
var userlandPackages = []string{"busybox-static", "kmod", "libkmod2", "liblzma5", "libssl3", "libzstd1", "libc6"}

// userlandVersion is part of the unpacked user space's cache key: bump it
// when userlandPackages change.
const userlandVersion = 1

// RequireArch is Require for a guest of architecture a: it checks the
// host tools and prepares a's kernel, user space and base initramfs,
// fetching them with apt the first time. Anything missing skips the test,
// or fails it under CI=true or MODAUTOLOAD_E2E=1.
func RequireArch(t testing.TB, a *Arch) *Kernel {
	t.Helper()
	if testing.Short() && !testtool.Strict() {
		t.Skip("e2e: skipped in -short mode")
	}
	for _, tool := range []struct{ name, pkg string }{
		{a.qemu, "qemu-system-arm"}, {"apt-get", "apt"}, {"apt-cache", "apt"}, {"dpkg", "dpkg"}, {"depmod", "kmod"},
	} {
		if _, err := exec.LookPath(tool.name); err != nil {
			unmet(t, "%s not found (apt-get install %s)", tool.name, tool.pkg)
		}
	}
	k, _, err := a.prepare()
	if err != nil {
		unmet(t, "%s guest: %v", a.Name, err)
	}
	return k
}

// prepare fetches and builds what a's guests need, once per process.
func (a *Arch) prepare() (*Kernel, string, error) {
	a.prep.once.Do(func() {
		ctx := context.Background()
		a.prep.kernel, a.prep.base, a.prep.err = a.build(ctx)
	})
	return a.prep.kernel, a.prep.base, a.prep.err
}

func (a *Arch) build(ctx context.Context) (*Kernel, string, error) {
	cache, err := CacheDir()
	if err != nil {
		return nil, "", err
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, "", err
	}
	if err := a.addForeignArch(ctx, cache); err != nil {
		return nil, "", err
	}
	version, err := a.kernelVersion(ctx)
	if err != nil {
		return nil, "", err
	}
	k, err := ensureKernel(ctx, cache, version, "linux-image-"+version+":"+a.Name)
	if err != nil {
		return nil, "", err
	}
	user, err := a.ensureUserland(ctx, cache)
	if err != nil {
		return nil, "", err
	}
	base, err := ensureArchive(ctx, fmt.Sprintf("base-%s-%d-%d.cpio", k.Version, rigVersion, userlandVersion),
		func(c *cpioWriter) error { return writeArchBase(c, k, user) })
	if err != nil {
		return nil, "", fmt.Errorf("%s base initramfs: %w", a.Name, err)
	}
	return k, base, nil
}

// addForeignArch makes dpkg and apt know a's packages: dpkg
// --add-architecture (as root) and a refresh of the package lists, done
// once per machine.
func (a *Arch) addForeignArch(ctx context.Context, cache string) error {
	known := func() (bool, error) {
		out, err := exec.CommandContext(ctx, "dpkg", "--print-foreign-architectures").Output()
		if err != nil {
			return false, fmt.Errorf("dpkg --print-foreign-architectures: %w", err)
		}
		return slices.Contains(strings.Fields(string(out)), a.Name), nil
	}
	if ok, err := known(); ok || err != nil {
		return err
	}
	// apt and dpkg take their own locks, but fail rather than wait.
	unlock, err := lockFile(ctx, filepath.Join(cache, "apt.lock"))
	if err != nil {
		return err
	}
	defer unlock()
	if ok, err := known(); ok || err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("dpkg does not know the %s architecture; as root: dpkg --add-architecture %s && apt-get update", a.Name, a.Name)
	}
	progress("adding the %s architecture to dpkg and refreshing apt's lists", a.Name)
	if out, err := exec.CommandContext(ctx, "dpkg", "--add-architecture", a.Name).CombinedOutput(); err != nil {
		return fmt.Errorf("dpkg --add-architecture %s: %w\n%s", a.Name, err, out)
	}
	aptUpdate(ctx)
	return nil
}

// kernelVersion asks apt which kernel a's metapackage points at. When
// the security suite's index is briefly unavailable, apt has only the
// main suite's, and this is its kernel.
func (a *Arch) kernelVersion(ctx context.Context) (string, error) {
	version, err := a.aptKernelVersion(ctx)
	if err == nil {
		return version, nil
	}
	progress("apt-cache found no %s kernel (%v); running apt-get update", a.Name, err)
	aptUpdate(ctx)
	return a.aptKernelVersion(ctx)
}

func (a *Arch) aptKernelVersion(ctx context.Context) (string, error) {
	meta := a.kernelMeta + ":" + a.Name
	out, err := exec.CommandContext(ctx, "apt-cache", "depends", meta).Output()
	if err != nil {
		return "", fmt.Errorf("apt-cache depends %s: %w", meta, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if pkg, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "Depends: linux-image-"); ok {
			return strings.TrimSuffix(pkg, ":"+a.Name), nil
		}
	}
	return "", fmt.Errorf("apt-cache depends %s names no linux-image package", meta)
}

// ensureUserland returns the directory holding userlandPackages for a,
// unpacked, downloading them first if needed.
func (a *Arch) ensureUserland(ctx context.Context, cache string) (string, error) {
	dir := filepath.Join(cache, fmt.Sprintf("userland-%s-%d", a.Name, userlandVersion))
	if exists(filepath.Join(dir, stampName)) {
		return dir, nil
	}
	unlock, err := lockFile(ctx, dir+".lock")
	if err != nil {
		return "", err
	}
	defer unlock()
	if exists(filepath.Join(dir, stampName)) {
		return dir, nil
	}
	base := filepath.Base(dir)
	if err := removeGlob(filepath.Join(cache, base+".tmp*")); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(cache, base+".tmp")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp) // no-op after the rename

	start := time.Now()
	pkgs := make([]string, len(userlandPackages))
	for i, p := range userlandPackages {
		pkgs[i] = p + ":" + a.Name
	}
	progress("downloading %s user space: %s", a.Name, strings.Join(pkgs, " "))
	dl := exec.CommandContext(ctx, "apt-get", append([]string{"download", "-o", "APT::Sandbox::User=root"}, pkgs...)...)
	dl.Dir = tmp
	if out, err := dl.CombinedOutput(); err != nil {
		return "", fmt.Errorf("apt-get download: %w\n%s", err, out)
	}
	debs, err := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if err != nil || len(debs) != len(pkgs) {
		return "", fmt.Errorf("apt-get download of %d packages left %d .deb files", len(pkgs), len(debs))
	}
	root := filepath.Join(tmp, "root")
	for _, deb := range debs {
		if out, err := exec.CommandContext(ctx, "dpkg", "-x", deb, root).CombinedOutput(); err != nil {
			return "", fmt.Errorf("dpkg -x %s: %w\n%s", filepath.Base(deb), err, out)
		}
		if err := os.Remove(deb); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, stampName), nil, 0o644); err != nil {
		return "", err
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	progress("%s user space ready in %v", a.Name, time.Since(start).Round(time.Second))
	return dir, nil
}

// writeArchBase writes the base archive of a foreign guest: as the x86-64
// one, with busybox and kmod from the unpacked Debian packages in user.
func writeArchBase(c *cpioWriter, k *Kernel, user string) error {
	root := filepath.Join(user, "root")
	for _, d := range guestDirs {
		if err := c.Dir(d, 0o755); err != nil {
			return err
		}
	}
	if err := c.CopyFile("/bin/busybox", 0o755, filepath.Join(root, "bin", "busybox")); err != nil {
		return err
	}
	kmod, err := firstExisting(root, "/bin/kmod", "/usr/bin/kmod")
	if err != nil {
		return err
	}
	files, err := elfClosure(root, kmod)
	if err != nil {
		return err
	}
	for _, f := range files {
		src, err := resolveIn(root, f)
		if err != nil {
			return err
		}
		if err := c.CopyFile(f, 0, filepath.Join(root, src)); err != nil {
			return err
		}
	}
	for _, tool := range []string{"modprobe", "insmod", "rmmod", "lsmod", "depmod"} {
		if err := c.Symlink(KmodRefDir+"/"+tool, kmod); err != nil {
			return err
		}
	}
	if err := addTree(c, k.ModulesDir(), "/lib/modules/"+k.Version); err != nil {
		return err
	}
	return c.Close()
}

// firstExisting returns the first guest path that exists under root.
func firstExisting(root string, paths ...string) (string, error) {
	for _, p := range paths {
		if exists(filepath.Join(root, p)) {
			return p, nil
		}
	}
	return "", fmt.Errorf("none of %v in %s", paths, root)
}

// resolveIn follows the symbolic links of the guest path p within root
// (an absolute link target means root's, not the host's) and returns the
// guest path of the file they end at.
func resolveIn(root, p string) (string, error) {
	for range 40 {
		fi, err := os.Lstat(filepath.Join(root, p))
		if err != nil {
			return "", err
		}
		if fi.Mode().Type() != os.ModeSymlink {
			return p, nil
		}
		target, err := os.Readlink(filepath.Join(root, p))
		if err != nil {
			return "", err
		}
		if !path.IsAbs(target) {
			target = path.Join(path.Dir(p), target)
		}
		p = target
	}
	return "", fmt.Errorf("%s: too many levels of symbolic links", p)
}

// elfClosure is ldd for a foreign binary: bin (a guest path under root),
// its dynamic loader and every library it needs, directly or through
// another, found in the directories the loader searches by default, as
// guest paths.
func elfClosure(root, bin string) ([]string, error) {
	var libDirs []string
	for _, pattern := range []string{"/lib/*-linux-gnu*", "/usr/lib/*-linux-gnu*"} {
		dirs, err := filepath.Glob(filepath.Join(root, pattern))
		if err != nil {
			return nil, err
		}
		for _, d := range dirs {
			libDirs = append(libDirs, strings.TrimPrefix(d, root))
		}
	}
	files := []string{bin}
	seen := map[string]bool{bin: true}
	for i := 0; i < len(files); i++ {
		real, err := resolveIn(root, files[i])
		if err != nil {
			return nil, err
		}
		f, err := elf.Open(filepath.Join(root, real))
		if err != nil {
			return nil, err
		}
		needed, err := f.ImportedLibraries()
		if err == nil {
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP {
					interp := make([]byte, p.Filesz)
					if _, err := p.ReadAt(interp, 0); err != nil {
						f.Close()
						return nil, err
					}
					needed = append(needed, strings.TrimRight(string(interp), "\x00"))
				}
			}
		}
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", files[i], err)
		}
		for _, lib := range needed {
			p, err := findLib(root, lib, libDirs)
			if err != nil {
				return nil, fmt.Errorf("%s needs %s: %w", files[i], lib, err)
			}
			if !seen[p] {
				seen[p] = true
				files = append(files, p)
			}
		}
	}
	return files, nil
}

// findLib finds lib (a soname, or the loader's absolute path) under root.
// A loader path is kept as the program names it; a library is found in
// dirs.
func findLib(root, lib string, dirs []string) (string, error) {
	if path.IsAbs(lib) {
		if !exists(filepath.Join(root, lib)) {
			return "", errors.New("not in the unpacked packages")
		}
		return lib, nil
	}
	for _, d := range dirs {
		if exists(filepath.Join(root, d, lib)) {
			return path.Join(d, lib), nil
		}
	}
	return "", fmt.Errorf("not in %v", dirs)
}
