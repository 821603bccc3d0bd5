package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestCPIOWriter checks the archive against GNU cpio: the names it lists,
// and what it extracts.
func TestCPIOWriter(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		unmet(t, "cpio not found (apt-get install cpio)")
	}
	dir := t.TempDir()
	host := filepath.Join(dir, "host.bin")
	if err := os.WriteFile(host, []byte("odd length"), 0o750); err != nil {
		t.Fatal(err)
	}

	var buf bytes.Buffer
	c := newCPIOWriter(&buf)
	steps := []error{
		c.Dir("/etc", 0o700),
		c.File("/etc/hello", 0o644, []byte("hi\n")),
		c.File("/a/b/c.txt", 0o600, []byte("nested")), // parents are implicit
		c.File("/empty", 0o644, nil),
		c.CopyFile("/usr/bin/tool", 0, host),
		c.Symlink("/bin/sh", "busybox"),
		c.Dir("etc/", 0o755), // already there: not repeated
		c.Close(),
	}
	for i, err := range steps {
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d is not a multiple of 4", buf.Len())
	}

	list := exec.Command("cpio", "-it", "--quiet")
	list.Stdin = bytes.NewReader(buf.Bytes())
	out, err := list.Output()
	if err != nil {
		t.Fatalf("cpio -it: %v", err)
	}
	want := []string{"etc", "etc/hello", "a", "a/b", "a/b/c.txt", "empty", "usr", "usr/bin", "usr/bin/tool", "bin", "bin/sh"}
	if got := strings.Fields(string(out)); !slices.Equal(got, want) {
		t.Errorf("cpio -it lists %q, want %q", got, want)
	}

	root := filepath.Join(dir, "x")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	extract := exec.Command("cpio", "-idm", "--quiet")
	extract.Dir = root
	extract.Stdin = bytes.NewReader(buf.Bytes())
	if out, err := extract.CombinedOutput(); err != nil {
		t.Fatalf("cpio -id: %v\n%s", err, out)
	}
	for name, content := range map[string]string{
		"etc/hello": "hi\n", "a/b/c.txt": "nested", "empty": "", "usr/bin/tool": "odd length",
	} {
		if b, err := os.ReadFile(filepath.Join(root, name)); err != nil || string(b) != content {
			t.Errorf("%s = %q, %v; want %q", name, b, err, content)
		}
	}
	for name, perm := range map[string]os.FileMode{"etc": 0o700, "a/b/c.txt": 0o600, "usr/bin/tool": 0o750} {
		if st, err := os.Stat(filepath.Join(root, name)); err != nil || st.Mode().Perm() != perm {
			t.Errorf("%s: mode %v, %v; want %v", name, st.Mode().Perm(), err, perm)
		}
	}
	if target, err := os.Readlink(filepath.Join(root, "bin/sh")); err != nil || target != "busybox" {
		t.Errorf("bin/sh -> %q, %v; want busybox", target, err)
	}
}
