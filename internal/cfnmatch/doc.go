// Package cfnmatch exists only so tests can compare with glibc's fnmatch.
// Without cgo it cannot ask glibc, and Require says so.
package cfnmatch

import (
	"os"
	"testing"
)

// Require skips a comparison with glibc when cgo is unavailable, but fails
// under CI=true, where a skipped comparison would hide a regression.
func Require(t testing.TB) {
	t.Helper()
	if available {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("cannot compare with glibc's fnmatch: built without cgo (CI=true needs CGO_ENABLED=1 and a C compiler)")
	}
	t.Skip("built without cgo: cannot compare with glibc's fnmatch")
}
