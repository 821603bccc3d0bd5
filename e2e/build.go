package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
)

// Binaries built for guests, once per test process. They live in a
// per-process directory, not the shared cache, so that runs from different
// checkouts never swap each other's binaries.
var builds struct {
	sync.Mutex
	dir  string
	bins map[string]string // binary name (package, kind, architecture) -> path
}

// BuildBinary builds a main package of this module (e.g. "./cmd/modautoload")
// as a static binary that runs in the busybox guest, and returns its path.
// It builds each package once per test process.
func BuildBinary(t T, pkg string) string {
	t.Helper()
	return BuildBinaryFor(t, pkg, nil)
}

// BuildBinaryFor is BuildBinary for a guest of architecture arch (nil:
// x86-64).
func BuildBinaryFor(t T, pkg string, arch *Arch) string {
	t.Helper()
	if arch == nil {
		return build(t, pkg, "", "", false)
	}
	return build(t, pkg, arch.GOARCH, arch.GOARM, false)
}

// BuildTest builds the tests of a package of this module as a static
// binary for the Go port goarch (with goarm for arm), to run in a guest
// as root on a real kernel of that architecture, or of one that runs its
// binaries (the x86-64 guest runs 386 ones).
func BuildTest(t T, pkg, goarch, goarm string) string {
	t.Helper()
	return build(t, pkg, goarch, goarm, true)
}

// build runs go build, or go test -c, once per process for each package,
// port and kind; an empty goarch is the host's.
func build(t T, pkg, goarch, goarm string, test bool) string {
	t.Helper()
	name, env := path.Base(pkg), []string{"CGO_ENABLED=0"} // no cgo: the guest has no libc for Go programs
	if test {
		name += ".test"
	}
	if goarch != "" {
		name += "-" + goarch + goarm
		env = append(env, "GOOS=linux", "GOARCH="+goarch, "GOARM="+goarm)
	}
	builds.Lock()
	defer builds.Unlock()
	if bin, ok := builds.bins[name]; ok {
		return bin
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatalf("e2e: %v", err)
	}
	if builds.dir == "" {
		if builds.dir, err = os.MkdirTemp("", "modautoload-e2e-bin-"); err != nil {
			t.Fatalf("e2e: %v", err)
		}
		builds.bins = map[string]string{}
	}
	bin := filepath.Join(builds.dir, name)
	args := []string{"build", "-trimpath", "-ldflags=-s -w", "-o", bin, pkg}
	if test {
		args = []string{"test", "-c", "-o", bin, pkg} // as make cross builds them, to share its cache
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("e2e: go %s (%s): %v\n%s", strings.Join(args, " "), name, err, out)
	}
	builds.bins[name] = bin
	return bin
}

// RemoveBinaries deletes what BuildBinary built; TestMain and the demo
// call it when they are done.
func RemoveBinaries() {
	builds.Lock()
	defer builds.Unlock()
	if builds.dir != "" {
		os.RemoveAll(builds.dir)
		builds.dir, builds.bins = "", nil
	}
}

// moduleRoot walks up from the working directory, which go test sets to
// the package directory, to the directory holding go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if exists(filepath.Join(dir, "go.mod")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}
