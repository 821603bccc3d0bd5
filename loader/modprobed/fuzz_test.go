package modprobed

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/modautoload/modautoload/internal/fnmatch"
)

func FuzzParse(f *testing.F) {
	for _, tt := range parseCases {
		f.Add([]byte(tt.in))
	}
	f.Add([]byte("softdep m pre: a post: b\\\n c\ninstall x-[a-] /bin/true \\\\\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := &Config{}
		c.parse("fuzz.conf", data)

		lines := bytes.Count(data, []byte("\n")) + 1
		for _, err := range c.Problems {
			var pe *ParseError
			if !errors.As(err, &pe) || pe.File != "fuzz.conf" || pe.Line < 1 || pe.Line > lines {
				t.Fatalf("problem %#v does not point into the file (%d lines)", err, lines)
			}
			if prefix := fmt.Sprintf("fuzz.conf:%d: ", pe.Line); !strings.HasPrefix(err.Error(), prefix) {
				t.Fatalf("problem %q lacks %q", err, prefix)
			}
		}

		// Every kept name is normalised and the dump has one line per
		// entry: nothing from a file can carry a newline or a NUL.
		names := c.Blacklist
		entries := len(c.Blacklist)
		for _, a := range c.Aliases {
			names = append(names, a.Pattern, a.Module)
		}
		for _, o := range c.ModuleOptions {
			names = append(names, o.Module)
		}
		for _, l := range [][]Command{c.InstallCommands, c.RemoveCommands} {
			for _, cmd := range l {
				names = append(names, cmd.Module)
			}
			entries += len(l)
		}
		for _, s := range c.Softdeps {
			names = append(names, s.Module)
		}
		for _, w := range c.Weakdeps {
			names = append(names, w.Module)
		}
		entries += len(c.Aliases) + len(c.ModuleOptions) + len(c.Softdeps) + len(c.Weakdeps)
		for _, n := range names {
			if u, ok := fnmatch.Underscores(n); !ok || u != n || n == "" {
				t.Fatalf("kept unnormalised name %q", n)
			}
		}
		var b strings.Builder
		if err := c.Dump(&b); err != nil {
			t.Fatal(err)
		}
		if strings.ContainsRune(b.String(), 0) || strings.Count(b.String(), "\n") != entries {
			t.Fatalf("dump of %d entries is %q", entries, b.String())
		}

		c.MatchAliases("a")
		c.Softdep("a")
		c.Weakdep("a")
		c.Install("a")
		c.Options("a")
	})
}

func FuzzCmdline(f *testing.F) {
	for _, tt := range cmdlineCases {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c := &Config{}
		c.addCmdline(s)
		for _, err := range c.Problems {
			if !strings.HasPrefix(err.Error(), cmdlineFile+": ") {
				t.Fatalf("problem %q does not name the kernel command line", err)
			}
		}
		for _, o := range c.ModuleOptions {
			if u, ok := fnmatch.Underscores(o.Module); !ok || u != o.Module {
				t.Fatalf("kept unnormalised module %q", o.Module)
			}
			if strings.ContainsAny(o.Options, "\t\x00") {
				t.Fatalf("option %q keeps a tab or NUL", o.Options)
			}
		}
		if len(c.Aliases)+len(c.InstallCommands)+len(c.Softdeps) != 0 {
			t.Fatal("the kernel command line added more than options and blacklist")
		}
	})
}
