// Package dist holds the integration kit (units, scripts, rules, manual
// pages, the Debian package's files); its tests build what make install
// and make deb make and check them.
package dist

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/modautoload/modautoload/internal/testtool"
)

const repoRoot = ".."

// makeIn runs make in the repository with args and returns its output.
func makeIn(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("make", append([]string{"--no-print-directory", "-C", repoRoot}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// installed is one entry of an installed tree: a file's mode, or "link"
// and its target.
type installed struct{ mode, target string }

// documentedTree reads the README's table of what make install puts
// where (default PREFIX=/usr/local): path, mode or "link".
func documentedTree(t *testing.T) map[string]installed {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(readme), "<!-- install tree")
	block, _, ok2 := strings.Cut(block, "<!-- end of install tree -->")
	if !ok || !ok2 {
		t.Fatal("README.md has no install tree block")
	}
	row := regexp.MustCompile("^\\| `(/[^`]+)` \\| (0[0-7]{3}|link to `[^`]+`) \\|")
	tree := map[string]installed{}
	sc := bufio.NewScanner(strings.NewReader(block))
	for sc.Scan() {
		m := row.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		if target, ok := strings.CutPrefix(m[2], "link to "); ok {
			tree[m[1]] = installed{mode: "link", target: strings.Trim(target, "`")}
		} else {
			tree[m[1]] = installed{mode: m[2]}
		}
	}
	if len(tree) < 5 {
		t.Fatalf("README's install tree lists %d paths: the table did not parse", len(tree))
	}
	return tree
}

// walk lists the files and links under root (directories are implied).
func walk(t *testing.T, root string) map[string]installed {
	t.Helper()
	got := map[string]installed{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel := "/" + strings.TrimPrefix(path, root+"/")
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Mode()&fs.ModeSymlink != 0 {
			target, err := os.Readlink(path)
			got[rel] = installed{mode: "link", target: target}
			return err
		}
		got[rel] = installed{mode: fmt.Sprintf("%04o", info.Mode().Perm())}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func sameContents(t *testing.T, installed, source string) {
	t.Helper()
	a, err1 := os.ReadFile(installed)
	b, err2 := os.ReadFile(source)
	if err1 != nil || err2 != nil || !bytes.Equal(a, b) {
		t.Errorf("%s is not %s (%v, %v)", installed, source, err1, err2)
	}
}

// make install lays out the tree README documents, under DESTDIR, for the
// default PREFIX and for PREFIX=/usr with the modprobe link and without
// OpenRC; the units and the OpenRC script name the installed binary.
func TestMakeInstallLaysOutTheDocumentedTree(t *testing.T) {
	testtool.Need(t, "make", "go")
	bin := filepath.Join(t.TempDir(), "modautoload")
	doc := documentedTree(t)
	cases := []struct {
		name   string
		args   []string
		prefix string
		link   bool
		openrc bool
	}{
		{"default", nil, "/usr/local", false, true},
		{"usr with modprobe link, no OpenRC", []string{"PREFIX=/usr", "INSTALL_MODPROBE_LINK=1", "OPENRCDIR="}, "/usr", true, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dest := t.TempDir()
			makeIn(t, append([]string{"install", "BIN=" + bin, "DESTDIR=" + dest}, c.args...)...)
			want := map[string]installed{}
			for path, e := range doc {
				if e.mode == "link" && !c.link || strings.Contains(path, "/init.d/") && !c.openrc {
					continue
				}
				want[strings.Replace(path, "/usr/local/", c.prefix+"/", 1)] = e
			}
			got := walk(t, dest)
			for path, e := range want {
				if got[path] != e {
					t.Errorf("%s: installed %+v, README says %+v", path, got[path], e)
				}
			}
			for path := range got {
				if _, ok := want[path]; !ok {
					t.Errorf("%s installed but not in README's install tree", path)
				}
			}
			sbin := c.prefix + "/sbin/modautoload"
			out, err := exec.Command(filepath.Join(dest, sbin), "--version").CombinedOutput()
			if err != nil || !strings.HasPrefix(string(out), "modautoload ") {
				t.Errorf("installed binary --version: %v: %s", err, out)
			}
			for _, unit := range []string{"modautoload.service", "modautoload-settle.service"} {
				data, _ := os.ReadFile(filepath.Join(dest, c.prefix, "lib/systemd/system", unit))
				if !strings.Contains(string(data), "ExecStart="+sbin+" ") {
					t.Errorf("%s does not start %s:\n%s", unit, sbin, data)
				}
			}
			if c.openrc {
				data, _ := os.ReadFile(filepath.Join(dest, "etc/init.d/modautoload"))
				if !strings.Contains(string(data), `command="`+sbin+`"`) {
					t.Errorf("the OpenRC script does not run %s", sbin)
				}
			}
			// The generators' hooks copy the installed binary into the image.
			for _, hook := range []string{"usr/share/initramfs-tools/hooks/modautoload", "usr/lib/dracut/modules.d/90modautoload/module-setup.sh"} {
				data, _ := os.ReadFile(filepath.Join(dest, hook))
				if !regexp.MustCompile(`(?m)^BIN=` + regexp.QuoteMeta(sbin) + `$`).Match(data) {
					t.Errorf("/%s does not name %s", hook, sbin)
				}
			}
			sameContents(t, filepath.Join(dest, "usr/lib/modautoload/rules.d/80-drivers.rules"), filepath.Join(repoRoot, "dist/rules.d/80-drivers.rules"))
			sameContents(t, filepath.Join(dest, c.prefix, "share/man/man8/modautoload.8"), filepath.Join(repoRoot, "dist/man/modautoload.8"))
			sameContents(t, filepath.Join(dest, c.prefix, "share/man/man5/modautoload-rules.5"), filepath.Join(repoRoot, "dist/man/modautoload-rules.5"))
		})
	}
}

// make deb picks the Debian architecture of GOARCH, and refuses one it
// has no name for (checked with make -n: nothing is built).
func TestMakeDebArchitecture(t *testing.T) {
	testtool.Need(t, "make", "go")
	for goarch, debArch := range map[string]string{"amd64": "amd64", "arm64": "arm64", "386": "i386", "arm": "armhf"} {
		cmd := exec.Command("make", "--no-print-directory", "-C", repoRoot, "-n", "deb", "DEBDIR=/nonexistent")
		cmd.Env = append(os.Environ(), "GOARCH="+goarch)
		out, err := cmd.CombinedOutput()
		if err != nil || !regexp.MustCompile(`modautoload_[0-9][^ ]*_`+debArch+`\.deb`).Match(out) {
			t.Errorf("GOARCH=%s: want a package for %s (%v)\n%s", goarch, debArch, err, out)
		}
	}
	cmd := exec.Command("make", "--no-print-directory", "-C", repoRoot, "-n", "deb", "DEBDIR=/nonexistent")
	cmd.Env = append(os.Environ(), "GOARCH=wasm")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "no Debian architecture for GOARCH=wasm") {
		t.Errorf("GOARCH=wasm: %v\n%s", err, out)
	}
}

// make deb builds a package that lintian passes without an error, that
// dpkg installs into an empty root with its files owned by root, whose
// binary and manual pages work there, and that dpkg purges leaving
// nothing but dpkg's own database.
func TestMakeDebInstallsAndPurgesCleanly(t *testing.T) {
	testtool.Need(t, "make", "go", "dpkg", "dpkg-deb", "lintian", "man")
	testtool.NeedRoot(t, "dpkg --root -i")
	dir := t.TempDir()
	out := makeIn(t, "deb", "BIN="+filepath.Join(dir, "modautoload"), "DEBDIR="+dir)
	debs, _ := filepath.Glob(filepath.Join(dir, "modautoload_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb made %v\n%s", debs, out)
	}
	deb := debs[0]

	field := func(name string) string {
		out, err := exec.Command("dpkg-deb", "--field", deb, name).Output()
		if err != nil {
			t.Fatalf("dpkg-deb --field %s: %v", name, err)
		}
		return strings.TrimSpace(string(out))
	}
	native, err := exec.Command("dpkg", "--print-architecture").Output()
	if err != nil {
		t.Fatal(err)
	}
	if a := field("Architecture"); a != strings.TrimSpace(string(native)) {
		t.Errorf("Architecture %q, want this machine's %q", a, native)
	}
	if v := field("Version"); !regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*$`).MatchString(v) {
		t.Errorf("Version %q is not a Debian version without a revision", v)
	}
	if n, err := strconv.Atoi(field("Installed-Size")); err != nil || n <= 0 {
		t.Errorf("Installed-Size %q", field("Installed-Size"))
	}
	for _, f := range []string{"Package", "Maintainer", "Description", "Section", "Priority"} {
		if field(f) == "" {
			t.Errorf("control field %s missing", f)
		}
	}
	listing, err := exec.Command("dpkg-deb", "--contents", deb).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(listing)), "\n") {
		if f := strings.Fields(l); len(f) < 2 || f[1] != "root/root" || f[0][0] == 'd' && f[0] != "drwxr-xr-x" {
			t.Errorf("not owned by root, or a directory not 0755: %s", l)
		}
	}

	lint := exec.Command("lintian", "--fail-on", "error", deb)
	report, err := lint.CombinedOutput()
	if err != nil || regexp.MustCompile(`(?m)^E: `).Match(report) {
		t.Errorf("lintian: %v\n%s", err, report)
	}
	t.Logf("lintian:\n%s", report)

	root := filepath.Join(dir, "root")
	for _, d := range []string{"info", "updates", "triggers"} {
		if err := os.MkdirAll(filepath.Join(root, "var/lib/dpkg", d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	dpkg := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("dpkg", append([]string{"--root=" + root, "--log=/dev/null"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	dpkg("-i", deb)
	files := walk(t, root)
	for _, p := range []string{"/usr/sbin/modautoload", "/usr/lib/systemd/system/modautoload.service", "/usr/lib/modautoload/rules.d/80-drivers.rules",
		"/usr/share/man/man8/modautoload.8.gz", "/usr/share/man/man5/modautoload-rules.5.gz", "/usr/share/doc/modautoload/copyright"} {
		if _, ok := files[p]; !ok {
			t.Errorf("%s not installed", p)
		}
	}
	for p := range files {
		if strings.HasPrefix(p, "/etc/") || strings.HasSuffix(p, "/modprobe") {
			t.Errorf("%s installed: the package must not take over configuration or kmod's modprobe", p)
		}
	}
	if out, err := exec.Command(filepath.Join(root, "usr/sbin/modautoload"), "--version").CombinedOutput(); err != nil {
		t.Errorf("installed binary: %v: %s", err, out)
	}
	for _, page := range []string{"usr/share/man/man8/modautoload.8.gz", "usr/share/man/man5/modautoload-rules.5.gz"} {
		cmd := exec.Command("man", "--warnings=all", "-l", filepath.Join(root, page))
		cmd.Env = append(os.Environ(), "MANPAGER=cat", "PAGER=cat", "MANWIDTH=80")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil || stderr.Len() > 0 || !strings.Contains(stdout.String(), "NAME") {
			t.Errorf("man -l %s: %v\n%s", page, err, &stderr)
		}
	}

	dpkg("--purge", "modautoload")
	if out, err := exec.Command("dpkg", "--root="+root, "--status", "modautoload").CombinedOutput(); err == nil && !strings.Contains(string(out), "not-installed") {
		t.Errorf("still known to dpkg after purge:\n%s", out)
	}
	for p := range walk(t, root) {
		if !strings.HasPrefix(p, "/var/lib/dpkg/") {
			t.Errorf("%s left behind after purge", p)
		}
	}
	entries, _ := os.ReadDir(root)
	if len(entries) != 1 || entries[0].Name() != "var" {
		t.Errorf("root holds %v after purge, want only var (dpkg's database)", entries)
	}
}
