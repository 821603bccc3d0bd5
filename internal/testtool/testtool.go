// Package testtool is the tests' policy for programs they need from the
// system (man, dpkg-deb, lintian): a test without them is skipped on a
// developer's machine, and fails in CI (CI=true) or when the full suite is
// asked for (MODAUTOLOAD_E2E=1), so a missing install step cannot pass
// unnoticed.
package testtool

import (
	"os"
	"os/exec"
	"testing"
)

// Strict reports whether a missing program must fail the test.
func Strict() bool {
	return os.Getenv("CI") == "true" || os.Getenv("MODAUTOLOAD_E2E") == "1"
}

// Need skips or fails t, by Strict, unless every program is in PATH.
func Need(t testing.TB, programs ...string) {
	t.Helper()
	for _, p := range programs {
		if _, err := exec.LookPath(p); err != nil {
			if Strict() {
				t.Fatalf("%s not found (required because CI=true or MODAUTOLOAD_E2E=1): %v", p, err)
			}
			t.Skipf("%s not found (set MODAUTOLOAD_E2E=1 to fail instead): %v", p, err)
		}
	}
}
