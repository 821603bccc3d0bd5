package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// rigVersion is part of the base archive's cache key: bump it whenever
// writeBase puts something different into the archive.
const rigVersion = 1

// KmodRefDir is the guest directory holding Debian's kmod tools (modprobe,
// insmod, rmmod, lsmod, depmod), the reference to compare modautoload with.
const KmodRefDir = "/usr/lib/kmod-ref"

// guestDirs are created in every guest; /init mounts filesystems on some.
var guestDirs = []string{"/dev", "/proc", "/sys", "/tmp", "/run", "/etc", "/root",
	"/bin", "/sbin", "/usr/bin", "/usr/sbin"}

// ensureBase returns the cached base archive for k, building it if needed:
// busybox, the module tree and kmod. It is the bulk of every guest's
// initramfs and is the same for all tests, so it is built once per kernel.
func ensureBase(ctx context.Context, k *Kernel) (string, error) {
	return ensureArchive(ctx, fmt.Sprintf("base-%s-%d.cpio", k.Version, rigVersion),
		func(c *cpioWriter) error { return writeBase(c, k) })
}

// ensureArchive returns the cached archive name in the cache directory,
// building it with write if needed; concurrent callers build it once.
func ensureArchive(ctx context.Context, name string, write func(*cpioWriter) error) (string, error) {
	cache, err := CacheDir()
	if err != nil {
		return "", err
	}
	final := filepath.Join(cache, name)
	if exists(final) {
		return final, nil
	}
	unlock, err := lockFile(ctx, final+".lock")
	if err != nil {
		return "", err
	}
	defer unlock()
	if exists(final) {
		return final, nil
	}
	if err := removeGlob(final + ".tmp*"); err != nil {
		return "", err
	}

	start := time.Now()
	progress("building base initramfs %s", final)
	f, err := os.CreateTemp(cache, name+".tmp")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name()) // no-op after the rename
	err = write(newCPIOWriter(f))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("base initramfs: %w", err)
	}
	// Renaming makes a complete archive appear at once to other processes.
	if err := os.Rename(f.Name(), final); err != nil {
		return "", err
	}
	progress("base initramfs built in %v", time.Since(start).Round(time.Millisecond))
	return final, nil
}

func writeBase(c *cpioWriter, k *Kernel) error {
	for _, d := range guestDirs {
		if err := c.Dir(d, 0o755); err != nil {
			return err
		}
	}
	if err := c.CopyFile("/bin/busybox", 0o755, "/bin/busybox"); err != nil {
		return err
	}
	if err := addKmod(c); err != nil {
		return err
	}
	if err := addTree(c, k.ModulesDir(), "/lib/modules/"+k.Version); err != nil {
		return err
	}
	return c.Close()
}

// addKmod copies the host's kmod with the shared libraries and loader it
// needs to the same paths in the guest, and links the multi-call binary
// under the tool names it dispatches on.
func addKmod(c *cpioWriter) error {
	bin, err := hostKmod()
	if err != nil {
		return err
	}
	libs, err := sharedLibs(bin)
	if err != nil {
		return err
	}
	for _, f := range append([]string{bin}, libs...) {
		if err := c.CopyFile(f, 0, f); err != nil {
			return err
		}
	}
	for _, tool := range []string{"modprobe", "insmod", "rmmod", "lsmod", "depmod"} {
		if err := c.Symlink(KmodRefDir+"/"+tool, bin); err != nil {
			return err
		}
	}
	return nil
}

// hostKmod is the kmod binary by its real path (/bin is a symlink to
// /usr/bin on merged-/usr systems, but the guest's /bin is busybox's).
func hostKmod() (string, error) {
	p, err := exec.LookPath("kmod")
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(p)
}

// sharedLibs lists the absolute paths ldd names for bin: the libraries and
// the dynamic loader, as the binary will look for them.
func sharedLibs(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", bin, err)
	}
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		// "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
		// "/lib64/ld-linux-x86-64.so.2 (0x...)"; the vDSO has no path.
		line := sc.Text()
		if _, after, ok := strings.Cut(line, "=>"); ok {
			line = after
		}
		if f := strings.Fields(line); len(f) > 0 && filepath.IsAbs(f[0]) {
			libs = append(libs, f[0])
		}
	}
	if len(libs) == 0 {
		return nil, fmt.Errorf("ldd %s named no libraries", bin)
	}
	return libs, nil
}

// addTree copies the host directory src to guest path dst, keeping
// symlinks as symlinks.
func addTree(c *cpioWriter, src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		guest := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return c.Dir(guest, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return c.Symlink(guest, target)
		case d.Type().IsRegular():
			return c.CopyFile(guest, 0, p)
		default:
			return fmt.Errorf("%s: unsupported file type %v", p, d.Type())
		}
	})
}

// HostProgram returns the host binary bin with the libraries and loader it
// needs, at the same paths, as files for a guest: Debian's own tools run
// there as they do on the host (systemd-modules-load in the bench).
func HostProgram(bin string) ([]File, error) {
	libs, err := sharedLibs(bin)
	if err != nil {
		return nil, err
	}
	files := []File{{Guest: bin, Host: bin}}
	for _, l := range libs {
		files = append(files, File{Guest: l, Host: l})
	}
	return files, nil
}
