package modprobed

import (
	"net"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modautoload/modautoload/internal/testfs"
	"github.com/modautoload/modautoload/internal/testtool"
)

func TestDefaultDirsUnderRoot(t *testing.T) {
	root := t.TempDir()
	testfs.WriteFiles(t, root, map[string]string{
		"etc/modprobe.d/50-x.conf":           "alias x from-etc\n",
		"run/modprobe.d/50-x.conf":           "alias x from-run\n",
		"run/modprobe.d/10-run.conf":         "alias r run\n",
		"usr/local/lib/modprobe.d/60-l.conf": "alias l local\n",
		"usr/lib/modprobe.d/50-x.conf":       "alias x from-usr-lib\n",
		"usr/lib/modprobe.d/70-u.conf":       "alias u usr-lib\n",
		"lib/modprobe.d/70-u.conf":           "alias u lib\n",
		"lib/modprobe.d/05-first.conf":       "alias f lib\n",
	})
	c := load(t, LoadOptions{Root: root})
	want := "alias f lib\nalias r run\nalias x from_etc\nalias l local\nalias u usr_lib\n"
	if got := dump(t, c); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	var files []string
	for _, f := range c.Files {
		rel, _ := filepath.Rel(root, f)
		files = append(files, rel)
	}
	wantFiles := []string{
		"lib/modprobe.d/05-first.conf",
		"run/modprobe.d/10-run.conf",
		"etc/modprobe.d/50-x.conf",
		"usr/local/lib/modprobe.d/60-l.conf",
		"usr/lib/modprobe.d/70-u.conf",
	}
	if !slices.Equal(files, wantFiles) {
		t.Errorf("files %q, want %q", files, wantFiles)
	}
	if len(c.Problems) != 0 {
		t.Errorf("problems: %v", c.Problems)
	}
}

func TestLoadSelection(t *testing.T) {
	top := t.TempDir()
	testfs.WriteFiles(t, top, map[string]string{
		"a/10-mask.conf":     "->/dev/null",
		"a/20-empty.conf":    "",
		"a/.hidden.conf":     "alias hidden x\n",
		"a/x.conf.bak":       "alias bak x\n",
		"a/old.alias":        "alias dotalias x\n", // kmod 30 read these; later releases do not
		"a/.conf":            "alias dotconf x\n",
		"a/dir.conf":         "/",
		"a/dangling.conf":    "->nowhere",
		"b/10-mask.conf":     "alias masked x\n",
		"b/20-empty.conf":    "alias shadowed-by-empty x\n",
		"b/dangling.conf":    "alias behind-dangling x\n",
		"b/30-b.conf":        "alias b b\n",
		"single/30-b.conf":   "alias single-shadowed x\n",
		"single/40-any.name": "alias single x\n",
	})
	c := load(t, LoadOptions{Paths: []string{
		filepath.Join(top, "a"),
		filepath.Join(top, "b"),
		filepath.Join(top, "single/30-b.conf"),
		filepath.Join(top, "single/40-any.name"),
		filepath.Join(top, "missing"),
	}})
	// A dangling symlink is skipped with a problem and shadows nothing,
	// as in kmod releases after 30.
	want := "alias b b\nalias single x\nalias behind_dangling x\n"
	if got := dump(t, c); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if got, want := problemLines(t, c), []string{"dangling.conf", "dir.conf"}; !slices.Equal(got, want) {
		t.Errorf("problems at %q, want %q: %v", got, want, c.Problems)
	}
}

func TestLoadUnreadableFile(t *testing.T) {
	dir := t.TempDir()
	// A socket passes the directory scan but cannot be opened.
	l, err := net.Listen("unix", filepath.Join(dir, "sock.conf"))
	if err != nil {
		testtool.Missing(t, "a Unix socket to stand for an unreadable file: %v", err)
	}
	defer l.Close()
	testfs.WriteFiles(t, dir, map[string]string{"z.conf": "blacklist z\n"})
	c := load(t, LoadOptions{Paths: []string{dir}})
	if got := dump(t, c); got != "blacklist z\n" {
		t.Errorf("got %q", got)
	}
	if len(c.Problems) != 1 || !strings.Contains(c.Problems[0].Error(), "sock.conf: ") {
		t.Errorf("problems: %v", c.Problems)
	}
}

func TestModuleDirSoftdeps(t *testing.T) {
	top := t.TempDir()
	testfs.WriteFiles(t, top, map[string]string{
		"conf/aa.conf":                "softdep m pre: from-aa\n",
		"conf/zz.conf":                "softdep m pre: from-zz\nsoftdep n pre: from-zz\n",
		"conf/modules.softdep":        "softdep m pre: shadowed\n",
		"kernel/modules.softdep":      "# Soft dependencies extracted from modules themselves.\nsoftdep n pre: from-depmod\n",
		"kernel/modules.weakdep":      "weakdep n from-depmod\n",
		"kernel/modules.dep":          "ignored\n",
		"kernel/modules.softdep.conf": "not read\n",
	})
	c := load(t, LoadOptions{
		Paths:     []string{filepath.Join(top, "conf"), filepath.Join(top, "conf/modules.softdep")},
		ModuleDir: filepath.Join(top, "kernel"),
	})
	// "aa.conf" < "modules.softdep" < "zz.conf" in byte order.
	if pre, _ := c.Softdep("m"); !slices.Equal(pre, []string{"from-aa"}) {
		t.Errorf("m: %v", pre)
	}
	if pre, _ := c.Softdep("n"); !slices.Equal(pre, []string{"from-depmod"}) {
		t.Errorf("n: %v", pre)
	}
	if got := c.Weakdep("n"); !slices.Equal(got, []string{"from-depmod"}) {
		t.Errorf("weakdep n: %v", got)
	}
	if len(c.Problems) != 0 {
		t.Errorf("problems: %v", c.Problems)
	}
}

// A FIFO where a configuration file belongs is reported, not waited on:
// opening it would block start-up, and a reload, for good.
func TestLoadFIFOIsReported(t *testing.T) {
	dir := t.TempDir()
	testfs.WriteFiles(t, dir, map[string]string{"a.conf": "blacklist a\n"})
	if err := syscall.Mkfifo(filepath.Join(dir, "b.conf"), 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan *Config, 1)
	go func() { done <- load(t, LoadOptions{Paths: []string{dir}}) }()
	select {
	case c := <-done:
		if !c.Blacklisted("a") {
			t.Error("the regular file beside the FIFO was not applied")
		}
		if got := problemLines(t, c); len(got) != 1 || got[0] != "b.conf" {
			t.Errorf("problems %v, want the FIFO", got)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("reading modprobe.d blocked on a FIFO")
	}
}
