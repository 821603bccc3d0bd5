package sysfsattr

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	buf := make([]byte, 9)
	if got, err := Read(write("live", "live\n"), buf); err != nil || string(got) != "live\n" {
		t.Errorf("live: %q, %v", got, err)
	}
	if got, err := Read(write("eight", "12345678"), buf); err != nil || string(got) != "12345678" {
		t.Errorf("8 bytes in a 9-byte buffer: %q, %v", got, err)
	}
	if _, err := Read(write("nine", "123456789"), buf); err == nil || !strings.Contains(err.Error(), "larger than 8 bytes") {
		t.Errorf("9 bytes in a 9-byte buffer: %v", err)
	}
	if _, err := Read(filepath.Join(dir, "missing"), buf); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing: %v", err)
	}
	// A FIFO where an attribute belongs: an error at once, not a hang.
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := Read(fifo, buf); err == nil && len(got) != 0 {
		t.Errorf("fifo: %q", got)
	}
}

func BenchmarkRead(b *testing.B) {
	p := filepath.Join(b.TempDir(), "initstate")
	os.WriteFile(p, []byte("live\n"), 0o644)
	var buf [16]byte
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Read(p, buf[:]); err != nil {
			b.Fatal(err)
		}
	}
}

// A link target as long as the buffer may have been cut: refused, never
// taken as the whole target.
func TestReadlinkatRefusesTruncated(t *testing.T) {
	dir := t.TempDir()
	if err := os.Symlink("../../bus/virtio", filepath.Join(dir, "subsystem")); err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	name := []byte("subsystem\x00")
	if got, err := Readlinkat(fd, name, make([]byte, 64)); err != nil || string(got) != "../../bus/virtio" {
		t.Errorf("whole target: %q, %v", got, err)
	}
	if got, err := Readlinkat(fd, name, make([]byte, len("../../bus/virtio"))); !errors.Is(err, syscall.ENAMETOOLONG) {
		t.Errorf("target filling the buffer: %q, %v; want ENAMETOOLONG", got, err)
	}
	if _, err := Readlinkat(fd, []byte("subsystem"), make([]byte, 64)); err == nil {
		t.Error("a name without its NUL was used")
	}
}
