package main

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
	"strings"

	"github.com/modautoload/modautoload/e2e"
)

// udevBundle is Debian's systemd-udevd, unpacked with the shared libraries
// it needs, ready to be added to a guest whose only other userland is a
// static busybox and kmod.
type udevBundle struct {
	version string     // Debian version of the udev package
	files   []e2e.File // udevadm, its libraries and loader, 80-drivers.rules
}

// udevStamp marks a complete bundle directory (written before the rename).
const udevStamp = ".complete"

// ensureUdev returns the udev bundle, downloading the packages into the
// rig's cache beside the kernel on first use. The libraries come from
// Debian's packages, not the host, so the guest runs the exact udev that
// Debian ships whatever the host has installed.
func ensureUdev(ctx context.Context) (*udevBundle, error) {
	cache, err := e2e.CacheDir()
	if err != nil {
		return nil, err
	}
	version, err := aptField(ctx, "udev", "Version")
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(cache, "udev-"+version)
	if _, err := os.Stat(filepath.Join(dir, udevStamp)); err != nil {
		if err := fetchUdev(ctx, cache, dir); err != nil {
			return nil, fmt.Errorf("udev %s: %w", version, err)
		}
	}
	files, err := udevFiles(filepath.Join(dir, "root"))
	if err != nil {
		return nil, fmt.Errorf("udev %s: %w", version, err)
	}
	return &udevBundle{version: version, files: files}, nil
}

// aptField returns a field of the candidate version of a package.
func aptField(ctx context.Context, pkg, field string) (string, error) {
	out, err := exec.CommandContext(ctx, "apt-cache", "show", "--no-all-versions", pkg).Output()
	if err != nil {
		return "", fmt.Errorf("apt-cache show %s: %w", pkg, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+": "); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("apt-cache show %s has no %s", pkg, field)
}

// fetchUdev downloads udev and the library packages it depends on
// (transitively, lib* packages only: the rest is maintainer-script
// plumbing) and unpacks them into dir/root. It works in a temporary
// directory renamed into place, so an interrupted run leaves no bundle
// that looks complete.
func fetchUdev(ctx context.Context, cache, dir string) error {
	pkgs, err := libClosure(ctx, "udev")
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: downloading %s into %s (once)\n", strings.Join(pkgs, " "), cache)
	tmp, err := os.MkdirTemp(cache, filepath.Base(dir)+".tmp")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp) // no-op after the rename
	// The sandbox user _apt cannot write into a root-owned temp directory.
	dl := exec.CommandContext(ctx, "apt-get", append([]string{"download", "-o", "APT::Sandbox::User=root"}, pkgs...)...)
	dl.Dir = tmp
	if out, err := dl.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get download: %w\n%s", err, out)
	}
	debs, err := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if err != nil {
		return err
	}
	for _, deb := range debs {
		if out, err := exec.CommandContext(ctx, "dpkg", "-x", deb, filepath.Join(tmp, "root")).CombinedOutput(); err != nil {
			return fmt.Errorf("dpkg -x %s: %w\n%s", filepath.Base(deb), err, out)
		}
		if err := os.Remove(deb); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, udevStamp), nil, 0o644); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.Rename(tmp, dir)
}

// libClosure returns pkg and the lib* packages it depends on, directly or
// through other lib* packages, as apt-cache names them.
func libClosure(ctx context.Context, pkg string) ([]string, error) {
	seen := map[string]bool{pkg: true}
	list := []string{pkg}
	for i := 0; i < len(list); i++ {
		out, err := exec.CommandContext(ctx, "apt-cache", "depends", "--no-recommends", "--no-suggests",
			"--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", list[i]).Output()
		if err != nil {
			return nil, fmt.Errorf("apt-cache depends %s: %w", list[i], err)
		}
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			// "  Depends: libkmod2"; "<name>" is a virtual package, which
			// some real lib* dependency of the same package provides.
			dep, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "Depends: ")
			if !ok || !strings.HasPrefix(dep, "lib") || seen[dep] {
				continue
			}
			seen[dep] = true
			list = append(list, dep)
		}
	}
	return list, nil
}

// udevFiles lists what a guest needs from the unpacked packages under root:
// udevadm (also systemd-udevd when invoked by that name; the script makes
// the link), every shared library it needs transitively, installed where
// the loader looks for them, the loader itself, and the one rules file.
func udevFiles(root string) ([]e2e.File, error) {
	bin := filepath.Join(root, "bin", "udevadm")
	files := []e2e.File{
		{Guest: "/bin/udevadm", Host: bin, Mode: 0o755},
		{Guest: "/lib/udev/rules.d/80-drivers.rules", Host: filepath.Join(root, "lib/udev/rules.d/80-drivers.rules")},
	}
	interp, err := interpreter(bin)
	if err != nil {
		return nil, err
	}
	host, err := inRoot(root, interp)
	if err != nil {
		return nil, fmt.Errorf("loader %s: %w", interp, err)
	}
	files = append(files, e2e.File{Guest: interp, Host: host, Mode: 0o755})

	seen := map[string]bool{}
	queue := []string{bin}
	for len(queue) > 0 {
		needed, err := neededLibs(queue[0])
		queue = queue[1:]
		if err != nil {
			return nil, err
		}
		for _, so := range needed {
			if seen[so] {
				continue
			}
			seen[so] = true
			host, err := findLib(root, so)
			if err != nil {
				return nil, err
			}
			// One directory for all: the guest's base archive already has
			// the host's copies of some of these (for kmod) there, and a
			// second copy elsewhere on the search path would make which one
			// loads depend on search order.
			files = append(files, e2e.File{Guest: "/lib/x86_64-linux-gnu/" + so, Host: host})
			queue = append(queue, host)
		}
	}
	for _, f := range files {
		if _, err := os.Stat(f.Host); err != nil {
			return nil, err
		}
	}
	return files, nil
}

// libDirs are the multiarch library directories of Debian's packages.
var libDirs = []string{"lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"}

func findLib(root, soname string) (string, error) {
	for _, d := range libDirs {
		if p, err := inRoot(root, path.Join("/", d, soname)); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not in the downloaded packages (a lib* dependency apt-cache does not name?)", soname)
}

// inRoot resolves the absolute path p inside root, following symlinks the
// way they resolve once root is /: Debian's /lib64/ld-linux-x86-64.so.2
// is an absolute link, which on the host would leave root.
func inRoot(root, p string) (string, error) {
	for range 16 {
		host := filepath.Join(root, p)
		fi, err := os.Lstat(host)
		if err != nil {
			return "", err
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			return host, nil
		}
		target, err := os.Readlink(host)
		if err != nil {
			return "", err
		}
		if !path.IsAbs(target) {
			target = path.Join(path.Dir(p), target)
		}
		p = target
	}
	return "", fmt.Errorf("%s: too many symlinks", p)
}

func interpreter(bin string) (string, error) {
	f, err := elf.Open(bin)
	if err != nil {
		return "", err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return "", err
			}
			return string(bytes.TrimRight(b, "\x00")), nil
		}
	}
	return "", errors.New(bin + ": no PT_INTERP: not a dynamic executable")
}

func neededLibs(file string) ([]string, error) {
	f, err := elf.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	libs, err := f.ImportedLibraries()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return libs, nil
}
