package modprobed

import (
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// parsed returns the configuration of one file named t.conf.
func parsed(content string) *Config {
	c := &Config{}
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

func load(t *testing.T, opts LoadOptions) *Config {
	t.Helper()
	c, err := Load(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
