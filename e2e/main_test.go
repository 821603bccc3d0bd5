package e2e

import (
	"os"
	"testing"
)

// TestMain removes the binaries BuildBinary left in the temp directory.
func TestMain(m *testing.M) {
	code := m.Run()
	RemoveBinaries()
	os.Exit(code)
}
