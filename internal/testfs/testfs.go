// Package testfs stages files for tests of the configuration and rule
// readers, which both read trees of files, links and directories.
package testfs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// WriteFiles creates files under dir: a value starting with "->" makes a
// symlink to the rest, "/" a directory, anything else a regular file.
func WriteFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case strings.HasPrefix(content, "->"):
			err = os.Symlink(content[2:], p)
		case content == "/":
			err = os.MkdirAll(p, 0o755)
		default:
			err = os.WriteFile(p, []byte(content), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}
