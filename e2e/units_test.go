package e2e

import (
	"io/fs"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// unitPkgs are the packages whose unit tests run in guests of other word
// sizes and architectures: they read binary input (the index files,
// netlink messages) and talk to the kernel (the uevent socket, whose
// credentials the real-socket test checks as root).
var unitPkgs = []string{"loader/index", "uevent", "rules"}

// unitScenario returns the files and the guest script that run the unit
// tests of unitPkgs built for goarch (goarm for arm), each in a copy of
// its package directory (for testdata), and report E2E:UNIT <pkg> rc=N,
// with the output of a failure as E2E:UNITLOG lines. TestReal* need the
// host's module tree and run in make index-real instead.
func unitScenario(t *testing.T, goarch, goarm string) ([]File, string) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	var files []File
	var script strings.Builder
	for _, pkg := range unitPkgs {
		dir := "/e2e/units/" + pkg
		bin := dir + "/" + path.Base(pkg) + ".test"
		files = append(files, File{Guest: bin, Host: BuildTest(t, "./"+pkg, goarch, goarm), Mode: 0o755})
		testdata := filepath.Join(root, filepath.FromSlash(pkg), "testdata")
		if exists(testdata) {
			files = append(files, treeFiles(t, testdata, dir+"/testdata")...)
		}
		script.WriteString(`
( cd ` + dir + ` && ./` + path.Base(bin) + ` -test.count=1 -test.skip '^TestReal' ) >/tmp/unit.log 2>&1
rc=$?
echo "E2E:UNIT ` + pkg + ` rc=$rc"
[ $rc = 0 ] || while read -r l; do echo "E2E:UNITLOG ` + pkg + `: $l"; done </tmp/unit.log
`)
	}
	return files, script.String()
}

// checkUnits fails the test unless every package's tests passed.
func checkUnits(t *testing.T, res *Result, port string) {
	t.Helper()
	passed := map[string]bool{}
	for _, l := range res.Lines("UNIT") {
		pkg, rc, _ := strings.Cut(l, " ")
		passed[pkg] = rc == "rc=0"
	}
	for _, pkg := range unitPkgs {
		if !passed[pkg] {
			t.Errorf("%s unit tests of %s failed in the guest (%q):\n%s", port, pkg, res.Lines("UNIT"), strings.Join(res.Lines("UNITLOG"), "\n"))
		}
	}
}

// treeFiles lists the regular files under the host directory src as
// guest files under dst.
func treeFiles(t *testing.T, src, dst string) []File {
	var files []File
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		files = append(files, File{Guest: path.Join(dst, filepath.ToSlash(rel)), Host: p})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestUnits386: the unit tests of unitPkgs built for 386 pass as root on
// the x86-64 guest's kernel, which runs 32-bit binaries through its
// compat layer (netlink credentials and socket options converted there).
// The host may not run them: not every kernel has IA32 emulation, and
// qemu-i386 cannot run Go's 386 binaries.
func TestUnits386(t *testing.T) {
	Require(t)
	files, script := unitScenario(t, "386", "")
	res := Boot(t.Context(), t, Scenario{Files: files, Script: script})
	checkUnits(t, res, "386")
	t.Logf("386 unit tests: %s", strings.Join(res.Lines("UNIT"), ", "))
}
