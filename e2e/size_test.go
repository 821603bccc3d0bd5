package e2e

import (
	"bytes"
	"os"
	"testing"
)

// The shipped binary stays within 4 MiB (an initramfs carries it, and its
// pages are most of the daemon's resident memory: issue 10), and what once
// made it larger stays out: xz's container reader with its SHA-256 check
// (70 KB), klauspost's second copy of flate (60 KB), the DNS resolver
// brought by dialling through net.Dialer (250 KB), and klauspost's zstd
// package, whose encoder's crypto/rand linked Go's FIPS module (377 KB
// with it: 3,850,402 bytes without).
const maxBinary = 4 << 20

func TestBinarySize(t *testing.T) {
	bin := BuildBinary(t, "./cmd/modautoload")
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stripped binary: %d bytes", len(data))
	if len(data) > maxBinary {
		t.Errorf("stripped binary %d bytes, more than %d", len(data), maxBinary)
	}
	// Function names stay in a stripped Go binary (the runtime needs
	// them for tracebacks).
	for _, pkg := range []string{"crypto/sha256.", "github.com/ulikunitz/xz.", "github.com/klauspost/compress/", "crypto/internal/fips140/drbg.", "net.(*Resolver)."} {
		if bytes.Contains(data, []byte(pkg)) {
			t.Errorf("the binary links %s", pkg)
		}
	}
}
