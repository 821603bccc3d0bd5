package testtool

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// recorder stands for a test: it records how Missing ended it, and like
// testing.T, ending it stops the goroutine.
type recorder struct {
	testing.TB
	fatal, skip string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *recorder) Skipf(format string, args ...any) {
	r.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestMissingFailsOnlyWhenStrict(t *testing.T) {
	for _, c := range []struct {
		ci, e2e    string
		wantFailed bool
	}{
		{"", "", false},
		{"true", "", true},
		{"", "1", true},
		{"false", "0", false},
	} {
		t.Setenv("CI", c.ci)
		t.Setenv("MODAUTOLOAD_E2E", c.e2e)
		var r recorder
		done := make(chan struct{})
		go func() {
			defer close(done)
			Missing(&r, "thing %d", 7)
		}()
		<-done
		if failed := r.fatal != ""; failed != c.wantFailed || failed == (r.skip != "") {
			t.Errorf("CI=%q MODAUTOLOAD_E2E=%q: fatal %q, skip %q; want failed %v", c.ci, c.e2e, r.fatal, r.skip, c.wantFailed)
		}
		if msg := r.fatal + r.skip; !strings.HasPrefix(msg, "thing 7 (") {
			t.Errorf("message %q does not say what is missing", msg)
		}
	}
}
