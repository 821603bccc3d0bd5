package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sync"
)

// Binaries built for guests, once per test process. They live in a
// per-process directory, not the shared cache, so that runs from different
// checkouts never swap each other's binaries.
var builds struct {
	sync.Mutex
	dir  string
	bins map[string]string // package -> binary
}

// BuildBinary builds a main package of this module (e.g. "./cmd/modautoload")
// as a static binary that runs in the busybox guest, and returns its path.
// It builds each package once per test process.
func BuildBinary(t T, pkg string) string {
	t.Helper()
	builds.Lock()
	defer builds.Unlock()
	if bin, ok := builds.bins[pkg]; ok {
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
	bin := filepath.Join(builds.dir, path.Base(pkg))
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, pkg)
	cmd.Dir = root
	// No cgo: the guest has no libc for Go programs.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("e2e: go build %s: %v\n%s", pkg, err, out)
	}
	builds.bins[pkg] = bin
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
