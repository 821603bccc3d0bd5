package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/modautoload/modautoload/e2e"
)

// The kernel's request_module() runs /proc/sys/kernel/modprobe as
// `modprobe -q -- NAME` and waits for it to exit. This part times that
// call, exec to exit, for kmod's modprobe and for modautoload's in both of
// its paths: handing the request to a running daemon, and loading by
// itself when no daemon listens. NAME is a module already live (what most
// requests find) or one that does not exist. /bin/true is the floor of a
// process's exec and exit in this guest; a static Go program that does
// nothing, built as modautoload is, the floor of any helper written in Go.

// helperCalls is how many calls a cell times in one repetition, and
// helperReps how many times the guest goes through every cell, interleaved
// so that a slow moment of the host does not fall on one cell only.
const (
	helperCalls = 40
	helperReps  = 3
)

// helperCells are the measured cases, in the order the guest runs them.
var helperCells = []struct{ id, command string }{
	{"true", "/bin/true"},
	{"empty-go", "/bin/empty-go"},
	{"kmod-live", e2e.KmodRefDir + "/modprobe -q -- dummy"},
	{"kmod-missing", e2e.KmodRefDir + "/modprobe -q -- no_such_module"},
	{"direct-live", "/usr/lib/mal/modprobe -q -- dummy"},
	{"direct-missing", "/usr/lib/mal/modprobe -q -- no_such_module"},
	{"handoff-live", "/usr/lib/mal/modprobe -q -- dummy"},
	{"handoff-missing", "/usr/lib/mal/modprobe -q -- no_such_module"},
}

// helperScript runs every cell helperReps times. The link has another
// directory than /sbin: busybox's own modprobe applet answers there.
func helperScript() string {
	var b strings.Builder
	b.WriteString(`
# As in the coldplug guests: each exec maps a program and its libraries
# where the last one did, so QEMU's translation of their code is reused,
# as a real CPU needs none (with randomization on, every exec of a
# dynamically linked program translated its libraries again).
echo 0 >/proc/sys/kernel/randomize_va_space
mkdir -p /usr/lib/mal
ln -s /bin/modautoload /usr/lib/mal/modprobe
` + e2e.KmodRefDir + `/modprobe dummy || echo "E2E:ERROR cannot load dummy"
calls() {
	s=$(cut -d' ' -f1 /proc/uptime)
	i=0
	while [ $i -lt ` + strconv.Itoa(helperCalls) + ` ]; do $1 >/dev/null 2>&1; i=$((i+1)); done
	e=$(cut -d' ' -f1 /proc/uptime)
	echo "E2E:CALLS $2 $s $e"
}
`)
	fmt.Fprintf(&b, "for rep in %s; do\n", strings.TrimSpace(strings.Repeat("x ", helperReps)))
	for _, c := range helperCells {
		if c.id == "handoff-live" {
			b.WriteString(`	modautoload daemon --log-format json 2>>/tmp/daemon.log &
	D=$!
	modautoload settle --timeout 30s || echo "E2E:ERROR the daemon did not come up"
`)
		}
		fmt.Fprintf(&b, "\tcalls %q %s\n", c.command, c.id)
	}
	b.WriteString("\tkill $D; wait $D\ndone\n")
	return b.String()
}

// helperResult holds the milliseconds per call of each cell, one figure
// per repetition.
type helperResult struct {
	perCall map[string][]float64
	err     string
}

// runHelperBench boots one guest and times the cells.
func runHelperBench(ctx context.Context, bin string) *helperResult {
	r := &helperResult{perCall: map[string][]float64{}}
	var res *e2e.Result
	err := e2e.Run(func(t e2e.T) {
		empty := buildEmptyGo(t)
		res = e2e.Boot(ctx, t, e2e.Scenario{
			Script: helperScript(),
			Files: []e2e.File{
				{Guest: "/bin/modautoload", Host: bin, Mode: 0o755},
				{Guest: "/bin/empty-go", Host: empty, Mode: 0o755},
			},
			Timeout: 5 * time.Minute,
		})
	})
	if err != nil {
		first, _, _ := strings.Cut(err.Error(), "\n")
		r.err = first
		return r
	}
	if e := res.Lines("ERROR"); len(e) > 0 {
		r.err = strings.Join(e, "; ")
		return r
	}
	for _, line := range res.Lines("CALLS") {
		id, ms, err := parseCalls(line)
		if err != nil {
			r.err = err.Error()
			return r
		}
		r.perCall[id] = append(r.perCall[id], ms)
	}
	for _, c := range helperCells {
		if len(r.perCall[c.id]) != helperReps {
			r.err = fmt.Sprintf("%s: %d repetitions reported, want %d", c.id, len(r.perCall[c.id]), helperReps)
		}
	}
	return r
}

// buildEmptyGo builds a Go program whose main does nothing, with the
// flags e2e.BuildBinary gives modautoload, and returns its path.
func buildEmptyGo(t e2e.T) string {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nfunc main() {}\n"), 0o644); err != nil {
		t.Fatalf("bench: %v", err)
	}
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", "empty-go", "main.go")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bench: building an empty Go program: %v\n%s", err, out)
	}
	return filepath.Join(dir, "empty-go")
}

// parseCalls reads "ID START END" (uptime seconds) into milliseconds per
// call.
func parseCalls(line string) (string, float64, error) {
	f := strings.Fields(line)
	if len(f) != 3 {
		return "", 0, fmt.Errorf("calls line %q", line)
	}
	start, err1 := strconv.ParseFloat(f[1], 64)
	end, err2 := strconv.ParseFloat(f[2], 64)
	if err1 != nil || err2 != nil || end < start {
		return "", 0, fmt.Errorf("calls line %q", line)
	}
	return f[0], (end - start) * 1000 / helperCalls, nil
}

// helperSection is the report's part on the kernel's helper.
func helperSection(r *helperResult) string {
	var b strings.Builder
	b.WriteString("## The kernel's modprobe helper\n\n")
	if r == nil {
		b.WriteString("Not run (`-only`).\n")
		return b.String()
	}
	if r.err != "" {
		fmt.Fprintf(&b, "Failed: %s.\n", r.err)
		return b.String()
	}
	ms := func(id string) stat { return summarize(r.perCall[id]) }
	row := func(name, live, missing string) []string {
		return []string{name, ms(live).format(1), ratio(ms(live), ms("kmod-live")),
			ms(missing).format(1), ratio(ms(missing), ms("kmod-missing"))}
	}
	b.WriteString(table([]string{"`modprobe -q -- NAME`", "module live: ms per call", "vs kmod", "no such module: ms per call", "vs kmod"}, [][]string{
		row("kmod's modprobe", "kmod-live", "kmod-missing"),
		row("modautoload, handing off to the daemon", "handoff-live", "handoff-missing"),
		row("modautoload, loading by itself (no daemon)", "direct-live", "direct-missing"),
	}))
	fmt.Fprintf(&b, "\nExec to exit, as the kernel's `request_module()` runs it; medians (min–max) of %d repetitions of %d calls each, the cells interleaved, in one guest without the device set. `/bin/true` takes %s ms per call in the same guest: a process's exec and exit; a static Go program that does nothing, built as modautoload is, %s ms: the Go runtime's own start, which any helper written in Go pays. Address randomization is off in the guest, so each exec finds its program's and libraries' code translated by QEMU already, as a real CPU needs none (with it on, as until 2026-12-01, every exec of kmod's dynamically linked modprobe translated libkmod, liblzma, libzstd and libcrypto again, and it measured 56–62 ms per call here); modautoload is static. The module is `dummy`, loaded first; the missing one is `no_such_module`.\n",
		helperReps, helperCalls, ms("true").format(1), ms("empty-go").format(1))
	return b.String()
}
