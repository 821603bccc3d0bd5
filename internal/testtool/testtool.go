// Package testtool is the tests' policy for what they need from the
// system (man, dpkg-deb, lintian, root, sysfs): a test without it is skipped on a
// developer's machine, and fails in CI (CI=true) or when the full suite is
// asked for (MODAUTOLOAD_E2E=1), so a missing install step cannot pass
// unnoticed.
package testtool

import (
	"fmt"
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
			Missing(t, "%s not found: %v", p, err)
		}
	}
}

// NeedRoot skips or fails t, by Strict, unless the test runs as root;
// why says what needs it.
func NeedRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "%s needs root", why)
	}
}

// Missing skips t, or fails it under Strict, saying what the test lacks.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Strict() {
		t.Fatalf("%s (required because CI=true or MODAUTOLOAD_E2E=1)", msg)
	}
	t.Skipf("%s (set MODAUTOLOAD_E2E=1 to fail instead)", msg)
}
