package e2e

import (
	"bytes"
	"os"
	"testing"
)

// The shipped binary stays within 4 MiB stripped (issue 10; an initramfs
// carries it, and its pages are most of the daemon's resident memory), and
// what once pushed it over stays out: xz's container reader with its
// SHA-256 check, klauspost's second copy of flate, and the DNS resolver
// (brought by dialling through net.Dialer).
func TestBinarySize(t *testing.T) {
	bin := BuildBinary(t, "./cmd/modautoload")
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stripped binary: %d bytes", len(data))
	if len(data) > 4<<20 {
		t.Errorf("stripped binary %d bytes, more than 4 MiB", len(data))
	}
	// Function names stay in a stripped Go binary (the runtime needs
	// them for tracebacks).
	for _, pkg := range []string{"crypto/sha256.", "github.com/ulikunitz/xz.", "github.com/klauspost/compress/flate.", "net.(*Resolver)."} {
		if bytes.Contains(data, []byte(pkg)) {
			t.Errorf("the binary links %s", pkg)
		}
	}
}
