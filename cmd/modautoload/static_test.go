package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// load-static's exit status for lists it cannot read or that name
// nothing, which need no kernel: a bad line fails the run and is named by
// file and line; a list of comments is no failure; options are checked.
func TestLoadStaticListStatus(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.conf")
	if err := os.WriteFile(bad, []byte("# ok\n"+strings.Repeat("x", 5000)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.conf")
	if err := os.WriteFile(empty, []byte("# nothing\n; here\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"load-static", "--log-format", "json", bad}, 1, `"error":"` + bad + `:2: module name longer than 4096 bytes`},
		{[]string{"load-static", "--log-format", "json", empty}, 0, `"message":"no module listed"`},
		{[]string{"load-static", "--log-format", "json", filepath.Join(dir, "missing.conf")}, 1, "missing.conf: cannot read"},
		{[]string{"load-static", "--jobs", "0", empty}, 2, "--jobs must be at least 1"},
		{[]string{"load-static", "--live-timeout", "soon", empty}, 2, `option --live-timeout: "soon": not a positive duration`},
	} {
		var out bytes.Buffer
		code := run(context.Background(), &cliEnv{stdout: &out, stderr: &out}, tc.args)
		if code != tc.code || !strings.Contains(out.String(), tc.want) {
			t.Errorf("%v: exit %d, want %d; output lacks %q:\n%s", tc.args, code, tc.code, tc.want, out.String())
		}
	}
}
