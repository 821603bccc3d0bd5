// Package cfnmatch exists only so tests can compare with glibc's fnmatch.
// Without cgo it cannot ask glibc, and Require says so.
package cfnmatch

import (
	"testing"

	"github.com/modautoload/modautoload/internal/testtool"
)

// Require skips a comparison with glibc when cgo is unavailable, but fails
// under testtool.Strict, where a skipped comparison would hide a regression.
func Require(t testing.TB) {
	t.Helper()
	if available {
		return
	}
	testtool.Missing(t, "cannot compare with glibc's fnmatch: built without cgo (needs CGO_ENABLED=1 and a C compiler)")
}
