package regfile

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRefusesWithoutBlocking(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{fifo, dir, "/dev/null"} {
		done := make(chan error, 1)
		go func() { _, err := Read(p, 100); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "not a regular file") {
				t.Errorf("%s: %v, want a refusal", p, err)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("%s: open blocked", p)
		}
	}
}

func TestReadBound(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	os.WriteFile(p, []byte("0123456789"), 0o644)
	if data, err := Read(p, 10); err != nil || string(data) != "0123456789" {
		t.Errorf("Read at the bound: %q, %v", data, err)
	}
	if _, err := Read(p, 9); err == nil || !strings.Contains(err.Error(), "larger than 9 bytes") {
		t.Errorf("Read past the bound: %v", err)
	}
}

func TestIsDevNull(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "masked.conf")
	if err := os.Symlink("/dev/null", link); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "plain.conf")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{"/dev/null": true, link: true, plain: false, "/dev/zero": false, filepath.Join(dir, "missing"): false} {
		if got := IsDevNull(path); got != want {
			t.Errorf("IsDevNull(%s) = %v, want %v", path, got, want)
		}
	}
}
