package loader

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/ulikunitz/xz"
)

func xzFile(t *testing.T, dictCap int, content []byte) *os.File {
	t.Helper()
	var buf bytes.Buffer
	w, err := xz.WriterConfig{DictCap: dictCap}.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(content)
	w.Close()
	p := filepath.Join(t.TempDir(), "m.ko.xz")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// withDict rewrites the dictionary size in the first block header of an
// xz file (fixing its CRC), so a tiny file asks for a huge dictionary
// without the test having to allocate one to write it.
func withDict(t *testing.T, f *os.File, dict uint64) *os.File {
	t.Helper()
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	hsize := (int(b[12]) + 1) * 4
	head := b[12 : 12+hsize]
	i := bytes.Index(head, []byte{0x21, 0x01})
	if i < 0 {
		t.Fatal("no LZMA2 filter in the block header")
	}
	for p := byte(0); p <= 40; p++ {
		if xzDictSize(p) >= dict {
			head[i+2] = p
			break
		}
	}
	binary.LittleEndian.PutUint32(head[hsize-4:], crc32.ChecksumIEEE(head[:hsize-4]))
	p := filepath.Join(t.TempDir(), "patched.ko.xz")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { out.Close() })
	return out
}

func TestXZDictionaryBounded(t *testing.T) {
	ok := xzFile(t, 1<<20, []byte("module"))
	if image, err := decompress(ok, compXZ); err != nil || string(image) != "module" {
		t.Fatalf("1 MiB dictionary: %q, %v", image, err)
	}
	// xz -9's dictionary is fine too.
	if _, err := decompress(withDict(t, ok, 64<<20), compXZ); err != nil {
		t.Errorf("64 MiB dictionary: %v", err)
	}
	// The same tiny file asking for a 1 GiB dictionary: refused before
	// the decoder allocates it.
	huge := withDict(t, xzFile(t, 1<<20, []byte("m")), 1<<30)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := decompress(huge, compXZ)
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "1024 MiB dictionary") {
		t.Errorf("1 GiB dictionary: %v", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
		t.Errorf("allocated %d MiB for a refused file", grew>>20)
	}
}

func TestXZLayoutChecked(t *testing.T) {
	good := xzFile(t, 1<<20, []byte("module"))
	data, _ := os.ReadFile(good.Name())
	for name, mutate := range map[string]func([]byte) []byte{
		"truncated":   func(b []byte) []byte { return b[:len(b)-5] },
		"no footer":   func(b []byte) []byte { b[len(b)-1] = 'X'; return b },
		"huge index":  func(b []byte) []byte { b[len(b)-8] = 0xff; b[len(b)-7] = 0xff; return b },
		"two streams": func(b []byte) []byte { return append(append([]byte{}, b...), b...) },
	} {
		b := mutate(append([]byte{}, data...))
		p := filepath.Join(t.TempDir(), "bad.ko.xz")
		os.WriteFile(p, b, 0o644)
		f, _ := os.Open(p)
		if _, err := decompress(f, compXZ); err == nil {
			t.Errorf("%s: decompressed", name)
		}
		f.Close()
	}
}
