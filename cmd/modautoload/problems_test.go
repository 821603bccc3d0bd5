package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modautoload/modautoload/internal/testfs"
)

// floodLines is how many bad lines the flooded files have: far more than
// the packages keep for one file.
const floodLines = 10000

// The commands log the problems the packages keep for a file, no more: a
// modprobe.d or list file of bad lines gives 100 log lines and one that
// counts the rest, and its good lines still apply.
func TestAFileOfBadLinesDoesNotFloodTheLog(t *testing.T) {
	dir := t.TempDir()
	testfs.WriteFiles(t, dir, map[string]string{
		"lib/modules/v/modules.dep": "kernel/a.ko:\n",
		"lib/modules/v/kernel/a.ko": "\x7fELF a",
		"modprobe.d/flood.conf":     strings.Repeat("x\n", floodLines) + "options a after=flood\n",
		"lists/flood.conf":          strings.Repeat("#modautoload:x\n", floodLines),
	})
	for _, tc := range []struct {
		args    []string
		message string
		output  string
	}{
		{[]string{"resolve", "-d", dir, "-S", "v", "-C", filepath.Join(dir, "modprobe.d"), "a"},
			"configuration line skipped", "a.ko after=flood"},
		{[]string{"load-static", filepath.Join(dir, "lists/flood.conf")},
			"static list: skipped", "no module listed"},
	} {
		var stdout, stderr bytes.Buffer
		run(context.Background(), &cliEnv{stdout: &stdout, stderr: &stderr}, append(tc.args, "--log-format", "json"))
		var logged int
		for _, l := range strings.Split(stderr.String(), "\n") {
			if strings.Contains(l, `"message":"`+tc.message+`"`) && strings.Contains(l, "flood.conf:") {
				logged++
			}
		}
		if logged != 101 || !strings.Contains(stderr.String(), "further problems from here on are not reported") {
			t.Errorf("%s: %d lines %q about flood.conf, want 101, the last counting the rest", tc.args[0], logged, tc.message)
		}
		if out := stdout.String() + stderr.String(); !strings.Contains(out, tc.output) {
			t.Errorf("%s: output lacks %q:\n%.2000s", tc.args[0], tc.output, out)
		}
	}
}
