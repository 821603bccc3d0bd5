package rules

import (
	"errors"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// pathMatch stands in for fnmatch in tests: path.Match agrees with it on
// the patterns used here (no '/', no backslash, no "[!").
func pathMatch(pattern, s string) bool {
	ok, _ := path.Match(pattern, s)
	return ok
}

// parsed returns the configuration of one file named t.conf.
func parsed(content string) *Config {
	c := &Config{match: pathMatch}
	c.parse("t.conf", []byte(content))
	return c
}

func dump(t *testing.T, c *Config) string {
	t.Helper()
	var b strings.Builder
	if err := c.Dump(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// problemLines returns "file:line" for every problem, for comparing where
// problems were found without depending on the wording.
func problemLines(t *testing.T, c *Config) []string {
	t.Helper()
	var out []string
	for _, err := range c.Problems {
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Fatalf("problem %v is %T, not *ParseError", err, err)
		}
		where := filepath.Base(pe.File)
		if pe.Line > 0 {
			where += ":" + strconv.Itoa(pe.Line)
		}
		out = append(out, where)
	}
	return out
}

// writeFiles creates files under dir: a value starting with "->" makes a
// symlink to the rest, "/" a directory, anything else a regular file.
func writeFiles(t *testing.T, dir string, files map[string]string) {
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

func load(t *testing.T, opts LoadOptions) *Config {
	t.Helper()
	if opts.Match == nil {
		opts.Match = pathMatch
	}
	c, err := Load(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
