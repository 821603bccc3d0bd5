package modprobed

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/modautoload/modautoload/internal/testfs"
	"github.com/modautoload/modautoload/internal/testtool"
)

// The tests in this file compare Load and Dump with kmod's own modprobe -c,
// the reference this package must reproduce. They run wherever kmod is
// installed; with CI=true a missing modprobe is a failure, not a skip.

// oracleKernel is the kernel version given to modprobe -S, so that its
// module directory is one the test controls (root/lib/modules/VERSION).
const oracleKernel = "0.0.0-rules-test"

type oracle struct {
	modprobe string
	version  int    // kmod's major version
	root     string // for modprobe -d: holds no module indexes
}

func newOracle(t *testing.T) *oracle {
	t.Helper()
	missing := func(format string, args ...any) {
		t.Helper()
		testtool.Missing(t, "kmod's modprobe is not usable: "+format, args...)
	}
	path, err := exec.LookPath("modprobe")
	if err != nil {
		// /usr/sbin is often not in a user's PATH.
		path = "/usr/sbin/modprobe"
		if _, err := os.Stat(path); err != nil {
			missing("%v", err)
		}
	}
	out, err := exec.Command(path, "--version").Output()
	if err != nil {
		missing("%s --version: %v", path, err)
	}
	o := &oracle{modprobe: path, root: t.TempDir()}
	if _, err := fmt.Sscanf(string(out), "kmod version %d", &o.version); err != nil {
		missing("%s is not kmod's: %q", path, out)
	}
	if err := os.MkdirAll(o.moduleDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	return o
}

func (o *oracle) moduleDir() string {
	return filepath.Join(o.root, "lib", "modules", oracleKernel)
}

func (o *oracle) args(paths []string) []string {
	args := []string{"-d", o.root, "-S", oracleKernel}
	for _, p := range paths {
		args = append(args, "-C", p)
	}
	return append(args, "-c")
}

// kmodGlue matches the missing blank before "post:" in kmod's softdep dump.
var kmodGlue = regexp.MustCompile(`^(softdep .*\S)post: `)

// result splits modprobe -c output into the configuration part (softdep
// lines given back their blank) and libkmod's error lines.
func (o *oracle) result(t *testing.T, stdout, stderr []byte) (string, []string) {
	t.Helper()
	out := string(stdout)
	end := strings.Index(out, "\n# End of configuration files.")
	if end < 0 {
		t.Fatalf("modprobe -c printed no end-of-configuration marker:\n%s", out)
	}
	lines := strings.SplitAfter(out[:end], "\n")
	for i, l := range lines {
		lines[i] = kmodGlue.ReplaceAllString(l, "$1 post: ")
	}
	var errs []string
	for _, l := range strings.Split(string(stderr), "\n") {
		if strings.HasPrefix(l, "libkmod: ERROR") {
			errs = append(errs, l)
		}
	}
	return strings.Join(lines, ""), errs
}

// run is modprobe -c with only paths as configuration. It reads the real
// /proc/cmdline.
func (o *oracle) run(t *testing.T, paths ...string) (string, []string) {
	t.Helper()
	cmd := exec.Command(o.modprobe, o.args(paths)...)
	cmd.Env = []string{"LC_ALL=C"}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v: %v\n%s", cmd, err, stderr.Bytes())
	}
	return o.result(t, stdout.Bytes(), stderr.Bytes())
}

// runWithCmdline is run with /proc/cmdline replaced by a bind mount in a
// private mount namespace, which needs root and unshare(1).
func (o *oracle) runWithCmdline(t *testing.T, cmdline string, paths ...string) (string, []string, error) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "cmdline")
	if err := os.WriteFile(f, []byte(cmdline), 0o644); err != nil {
		t.Fatal(err)
	}
	script := `mount --bind "$1" /proc/cmdline && shift && exec "$@"`
	args := append([]string{"-m", "sh", "-c", script, "sh", f, o.modprobe}, o.args(paths)...)
	cmd := exec.Command("unshare", args...)
	cmd.Env = []string{"LC_ALL=C", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", nil, fmt.Errorf("%v: %v: %s", cmd, err, stderr.Bytes())
	}
	cfg, errs := o.result(t, stdout.Bytes(), stderr.Bytes())
	return cfg, errs, nil
}

// ours loads what modprobe -C paths would read and returns our dump and
// the number of problems kmod should have reported.
func (o *oracle) ours(t *testing.T, cmdline string, paths ...string) (string, int) {
	t.Helper()
	c := load(t, LoadOptions{Paths: paths, ModuleDir: o.moduleDir(), Cmdline: cmdline})
	d := dump(t, c)
	problems := len(c.Problems)
	if o.version < 33 {
		// weakdep lines are unknown directives to kmod before 33.
		problems += len(c.Weakdeps)
		var keep []string
		for _, l := range strings.SplitAfter(d, "\n") {
			if !strings.HasPrefix(l, "weakdep ") {
				keep = append(keep, l)
			}
		}
		d = strings.Join(keep, "")
	}
	return d, problems
}

func realCmdline() string {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return ""
	}
	return string(b)
}

func compareDumps(t *testing.T, input, kmod, ours string, kmodErrs []string, ourProblems int) {
	t.Helper()
	if kmod != ours {
		t.Errorf("input %q\nmodprobe -c:\n%s\nDump:\n%s", input, kmod, ours)
	}
	if len(kmodErrs) != ourProblems {
		t.Errorf("input %q: kmod reported %d problems, we %d:\n%s",
			input, len(kmodErrs), ourProblems, strings.Join(kmodErrs, "\n"))
	}
}

// kmodQuirks are parse cases where kmod 30's output differs on purpose.
var kmodQuirks = map[string]string{
	"softdep interleaved":      "kmod 30 dumps the post name q1 inside the pre list",
	"backslash at EOF dropped": "kmod 30 stores EOF as a 0xff byte",
	"lone backslash at EOF":    "kmod 30 stores EOF as a 0xff byte",
}

func TestModprobeParseCases(t *testing.T) {
	o := newOracle(t)
	cmdline := realCmdline()
	for _, tt := range parseCases {
		t.Run(tt.name, func(t *testing.T) {
			if why := kmodQuirks[tt.name]; why != "" && o.version <= 30 {
				t.Skip(why)
			}
			dir := t.TempDir()
			testfs.WriteFiles(t, dir, map[string]string{"t.conf": tt.in})
			kmod, errs := o.run(t, dir)
			ours, problems := o.ours(t, cmdline, dir)
			compareDumps(t, tt.in, kmod, ours, errs, problems)
		})
	}
}

// TestModprobeConfigFiles stages several modprobe.d directories and checks
// file selection, name order, shadowing and masking against kmod.
func TestModprobeConfigFiles(t *testing.T) {
	o := newOracle(t)
	top := t.TempDir()
	testfs.WriteFiles(t, top, map[string]string{
		"etc/10-a.conf":       "alias a1 from-etc\noptions shared o=etc\nsoftdep sd pre: from-etc\n",
		"etc/30-mask.conf":    "->/dev/null",
		"etc/50-empty.conf":   "",
		"etc/.hidden.conf":    "alias hidden x\n",
		"etc/notes.txt":       "alias txt x\n",
		"etc/conf":            "alias noext x\n",
		"etc/dir.conf":        "/",
		"etc/link.conf":       "->../lib/real",
		"lib/real":            "alias via-link x\n",
		"lib/10-a.conf":       "alias a1 from-lib\n",
		"lib/20-b.conf":       "alias a2 from-lib\noptions shared o=lib\n",
		"lib/30-mask.conf":    "alias masked x\nblacklist masked\n",
		"lib/50-empty.conf":   "blacklist not-empty\n",
		"lib/zz-last.conf":    "softdep sd pre: from-zz\nsoftdep from-dep pre: zz\n",
		"run/05-c.conf":       "alias a3 from-run\ninstall i-m /bin/true\ninstall i-m /bin/false\n",
		"single/15-one.conf":  "alias single s\n",
		"single/20-b.conf":    "alias shadowed-single x\n",
		"single/anything.txt": "options single-file-any-name x\n",
	})
	softdep := "# Soft dependencies extracted from modules themselves.\nsoftdep from-dep pre: dep-a\n"
	testfs.WriteFiles(t, o.moduleDir(), map[string]string{"modules.softdep": softdep})
	if o.version >= 33 {
		testfs.WriteFiles(t, o.moduleDir(), map[string]string{"modules.weakdep": "weakdep from-dep wd\n"})
	}
	paths := []string{
		filepath.Join(top, "etc"),
		filepath.Join(top, "run"),
		filepath.Join(top, "single/15-one.conf"),
		filepath.Join(top, "lib"),
		filepath.Join(top, "single/20-b.conf"), // shadowed by lib/20-b.conf
		filepath.Join(top, "single/anything.txt"),
		"/dev/null",
		filepath.Join(top, "does-not-exist"),
	}
	kmod, errs := o.run(t, paths...)
	ours, problems := o.ours(t, realCmdline(), paths...)
	compareDumps(t, strings.Join(paths, " "), kmod, ours, errs, problems)
}

func TestModprobeCmdline(t *testing.T) {
	o := newOracle(t)
	empty := t.TempDir()
	if _, _, err := o.runWithCmdline(t, "x.y=1\n", empty); err != nil {
		testtool.Missing(t, "cannot give modprobe a private /proc/cmdline (needs root and unshare): %v", err)
	}
	inputs := []string{strings.Repeat("a", 4082) + " m.p=123456789 late.q=1", "nul.a=1 \x00 nul.b=2"}
	for _, tt := range cmdlineCases {
		inputs = append(inputs, tt.in)
	}
	for _, line := range inputs {
		kmod, errs, err := o.runWithCmdline(t, line+"\n", empty)
		if err != nil {
			t.Fatal(err)
		}
		ours, problems := o.ours(t, line+"\n", empty)
		compareDumps(t, line, kmod, ours, errs, problems)
	}
}

// TestModprobeRandomFiles compares random files made of the words kmod's
// parser treats specially. The seed is fixed so a failure repeats.
func TestModprobeRandomFiles(t *testing.T) {
	o := newOracle(t)
	rng := rand.New(rand.NewPCG(1, 2))
	cmdline := realCmdline()
	n := 300
	if testing.Short() {
		n = 30
	}
	failures := 0
	for range n {
		dir := t.TempDir()
		in := randomConfig(rng)
		testfs.WriteFiles(t, dir, map[string]string{"r.conf": in})
		kmod, errs := o.run(t, dir)
		ours, problems := o.ours(t, cmdline, dir)
		if kmod != ours || len(errs) != problems {
			compareDumps(t, in, kmod, ours, errs, problems)
			if failures++; failures == 3 {
				t.Fatal("stopping after 3 mismatches")
			}
		}
	}
}

// randomConfig builds a file that avoids the documented kmod 30 dump quirks:
// it never ends in a backslash, and no softdep line has a second "pre:" or
// "post:" or continues onto the next line.
func randomConfig(rng *rand.Rand) string {
	directives := []string{"alias", "blacklist", "options", "install", "remove", "softdep",
		"weakdep", "include", "config", "#", " #", "Alias", "", "junk", "\r"}
	words := []string{"a-b", "m_x", "snd-*", "[a-c]-x", "[-]", "x]", "[y", "pre:", "post:",
		"pre:x", "a=1", `p="q r"`, "/bin/true", "$CMDLINE_OPTS", "x\\y", "\x00z", "\xff",
		"-", "_", "a-b-c-d"}
	seps := []string{" ", "\t", "  ", " \t", "\t ", "   ", "\\\n", " \\\n ", "\v", "\r"}
	ends := []string{"\n", "\n", "\n", "\r\n", "\\\n", " \n", "\t\n"}
	pick := func(s []string) string { return s[rng.IntN(len(s))] }

	var b strings.Builder
	for range 1 + rng.IntN(8) {
		d := pick(directives)
		b.WriteString(d)
		seen := map[string]bool{}
		for range rng.IntN(6) {
			b.WriteString(pick(seps))
			w := pick(words)
			if d == "softdep" && (w == "pre:" || w == "post:") {
				if seen[w] {
					w = "z"
				}
				seen[w] = true
			}
			b.WriteString(w)
		}
		end := pick(ends)
		if d == "softdep" && strings.HasPrefix(end, "\\") {
			end = "\n"
		}
		b.WriteString(end)
	}
	return b.String()
}
