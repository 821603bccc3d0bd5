package loader

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"os"
	"os/exec"
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
	if image, err := decompress(ok, compXZ, maxModuleSize); err != nil || string(image) != "module" {
		t.Fatalf("1 MiB dictionary: %q, %v", image, err)
	}
	// xz -9's dictionary is fine too.
	if _, err := decompress(withDict(t, ok, 64<<20), compXZ, maxModuleSize); err != nil {
		t.Errorf("64 MiB dictionary: %v", err)
	}
	// The same tiny file asking for a 1 GiB dictionary: refused before
	// the decoder allocates it.
	huge := withDict(t, xzFile(t, 1<<20, []byte("m")), 1<<30)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := decompress(huge, compXZ, maxModuleSize)
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
		"header CRC":  func(b []byte) []byte { b[8] ^= 1; return b },
		"block CRC":   func(b []byte) []byte { b[12+(int(b[12])+1)*4-1] ^= 1; return b },
		"index CRC":   func(b []byte) []byte { b[len(b)-13] ^= 1; return b },
		"data":        func(b []byte) []byte { b[len(b)-30] ^= 0x55; return b },
	} {
		b := mutate(append([]byte{}, data...))
		p := filepath.Join(t.TempDir(), "bad.ko.xz")
		os.WriteFile(p, b, 0o644)
		f, _ := os.Open(p)
		if _, err := decompress(f, compXZ, maxModuleSize); err == nil {
			t.Errorf("%s: decompressed", name)
		}
		f.Close()
	}
}

func writeTemp(t *testing.T, b []byte) *os.File {
	t.Helper()
	p := filepath.Join(t.TempDir(), "m.ko.xz")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// moduleLike is content that compresses like a module: text, tables and
// noise, several LZMA2 chunks long.
func moduleLike(n int) []byte {
	b := make([]byte, n)
	x := uint32(1)
	for i := range b {
		x = x*1664525 + 1013904223
		if i%7 == 0 {
			b[i] = byte(x >> 24)
		} else {
			b[i] = "ELF module text "[i%16]
		}
	}
	return b
}

// What xz itself writes: the kernel's own settings, xz's default (CRC64),
// no check, and several blocks (xz -T writes one per block size).
func TestXZFromTheXZTool(t *testing.T) {
	if _, err := exec.LookPath("xz"); err != nil {
		t.Fatalf("xz (xz-utils) is needed to write the reference files: %v", err)
	}
	content := moduleLike(600 << 10)
	for _, args := range [][]string{
		{"--check=crc32", "--lzma2=dict=1MiB"},
		{},
		{"--check=none", "-1"},
		{"--check=crc32", "--block-size=150000", "-T2"},
	} {
		cmd := exec.Command("xz", append([]string{"-c"}, args...)...)
		cmd.Stdin = bytes.NewReader(content)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("xz %v: %v", args, err)
		}
		image, err := decompress(writeTemp(t, out), compXZ, maxModuleSize)
		if err != nil || !bytes.Equal(image, content) {
			t.Errorf("xz %v: %d bytes back, equal %v, %v", args, len(image), bytes.Equal(image, content), err)
		}
	}
	// A filter before LZMA2 (x86 branch conversion): refused by name.
	cmd := exec.Command("xz", "-c", "--x86", "--lzma2")
	cmd.Stdin = bytes.NewReader(content[:4096])
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decompress(writeTemp(t, out), compXZ, maxModuleSize); err == nil || !strings.Contains(err.Error(), "only LZMA2") {
		t.Errorf("x86 filter: %v", err)
	}
}

func TestXZChecksVerified(t *testing.T) {
	content := moduleLike(200_000)
	for _, c := range []struct {
		name  string
		check byte
	}{{"CRC32", xz.CRC32}, {"CRC64", xz.CRC64}} {
		var buf bytes.Buffer
		w, err := xz.WriterConfig{CheckSum: c.check, BlockSize: 64 << 10}.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(content)
		w.Close()
		good := buf.Bytes()
		if image, err := decompress(writeTemp(t, good), compXZ, maxModuleSize); err != nil || !bytes.Equal(image, content) {
			t.Fatalf("%s: %d bytes back, %v", c.name, len(image), err)
		}
		// Damage the last block's check: the only thing that would show
		// it, since the data still decodes.
		_, blocks, _, err := readXZLayout(bytes.NewReader(good), int64(len(good)), maxModuleSize)
		if err != nil || len(blocks) < 3 {
			t.Fatalf("%s: %d blocks, %v", c.name, len(blocks), err)
		}
		last := blocks[len(blocks)-1]
		bad := append([]byte{}, good...)
		bad[last.offset+(last.unpadded+3)&^3-1] ^= 1
		if _, err := decompress(writeTemp(t, bad), compXZ, maxModuleSize); err == nil || !strings.Contains(err.Error(), "check mismatch") {
			t.Errorf("%s: damaged check: %v", c.name, err)
		}
	}
	var buf bytes.Buffer
	w, _ := xz.WriterConfig{CheckSum: xz.SHA256}.NewWriter(&buf)
	w.Write(content)
	w.Close()
	if _, err := decompress(writeTemp(t, buf.Bytes()), compXZ, maxModuleSize); err == nil || !strings.Contains(err.Error(), "SHA-256") {
		t.Errorf("SHA-256 check: %v", err)
	}
}

// Hostile files: decompressXZ returns an error or an image, never panics,
// and never allocates past the bounds.
func FuzzXZ(f *testing.F) {
	for _, c := range []struct {
		check byte
		block int64
	}{{xz.CRC32, 0}, {xz.CRC64, 100}, {xz.None, 0}} {
		var buf bytes.Buffer
		w, _ := xz.WriterConfig{CheckSum: c.check, BlockSize: c.block}.NewWriter(&buf)
		w.Write(moduleLike(300))
		w.Close()
		f.Add(buf.Bytes())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		image, err := decompressXZ(bytes.NewReader(data), int64(len(data)), maxModuleSize)
		if err == nil && len(image) > maxModuleSize {
			t.Fatalf("%d bytes decompressed", len(image))
		}
	})
}

// xzBlockSpec is one block of a hand-built xz stream: its data, stored
// as one uncompressed LZMA2 chunk, and the size the index claims for it.
type xzBlockSpec struct {
	data    []byte
	claimed uint64
}

// xzStreamOf writes an xz stream by hand, with no check, so that its index
// can claim what a test wants.
func xzStreamOf(blocks []xzBlockSpec) []byte {
	varint := func(b []byte, v uint64) []byte {
		for v >= 0x80 {
			b = append(b, byte(v)|0x80)
			v >>= 7
		}
		return append(b, byte(v))
	}
	crc := func(b []byte) []byte { return binary.LittleEndian.AppendUint32(nil, crc32.ChecksumIEEE(b)) }
	flags := []byte{0, xzCheckNone}
	out := append(append(bytes.Clone(xzMagic), flags...), crc(flags)...)
	index := []byte{0}
	index = varint(index, uint64(len(blocks)))
	for _, b := range blocks {
		// 12 bytes: size, flags (one filter, no sizes), LZMA2 with a
		// 1 MiB dictionary (property 8), padding, CRC32.
		header := []byte{2, 0, 0x21, 1, 8, 0, 0, 0}
		header = append(header, crc(header)...)
		// Chunk 1: uncompressed, dictionary reset, size-1 big endian;
		// then the end of the LZMA2 data.
		chunk := append([]byte{1, byte((len(b.data) - 1) >> 8), byte(len(b.data) - 1)}, b.data...)
		chunk = append(chunk, 0)
		out = append(append(out, header...), chunk...)
		index = varint(index, uint64(len(header)+len(chunk))) // unpadded: no check
		index = varint(index, b.claimed)
		for n := len(chunk); n%4 != 0; n++ {
			out = append(out, 0)
		}
	}
	for len(index)%4 != 0 {
		index = append(index, 0)
	}
	index = append(index, crc(index)...)
	out = append(out, index...)
	footer := binary.LittleEndian.AppendUint32(nil, uint32(len(index)/4-1))
	footer = append(footer, flags...)
	out = append(out, crc(footer)...)
	return append(append(out, footer...), 'Y', 'Z')
}

// The index is checked against the data: sizes over the bound in total
// are refused before decoding, even when each block's is under it, and a
// block decoding to more than its index entry says is an error, also
// without a check to catch the short image.
func TestXZIndexSizesChecked(t *testing.T) {
	a, b := []byte("first block "), []byte("second block")
	for _, c := range []struct {
		name   string
		blocks []xzBlockSpec
		errHas string // "" for success
	}{
		{"sizes as claimed", []xzBlockSpec{{a, uint64(len(a))}, {b, uint64(len(b))}}, ""},
		{"two blocks of 200 MiB claimed", []xzBlockSpec{{a, 200 << 20}, {b, 200 << 20}}, "larger than 268435456 bytes"},
		{"a block longer than claimed", []xzBlockSpec{{a, uint64(len(a))}, {b, uint64(len(b) - 1)}}, "longer than the index says"},
	} {
		f := writeTemp(t, xzStreamOf(c.blocks))
		image, err := decompress(f, compXZ, maxModuleSize)
		switch {
		case c.errHas == "" && (err != nil || string(image) != string(a)+string(b)):
			t.Errorf("%s: %q, %v", c.name, image, err)
		case c.errHas != "" && (err == nil || !strings.Contains(err.Error(), c.errHas)):
			t.Errorf("%s: %d bytes, %v; want an error saying %q", c.name, len(image), err, c.errHas)
		}
	}
}
