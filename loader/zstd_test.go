package loader

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/modautoload/modautoload/internal/testtool"
)

// zstdContents are the inputs the decoder is checked on: empty, tiny, a
// module-like mix of text and noise, incompressible noise, long runs, and
// a real executable.
func zstdContents(t *testing.T) map[string][]byte {
	t.Helper()
	noise := make([]byte, 300<<10)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range noise {
		noise[i] = byte(rng.Uint32())
	}
	exe, err := os.ReadFile("/bin/sh")
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{
		"empty":   {},
		"one":     {'x'},
		"short":   []byte("modautoload"),
		"module":  moduleLike(700 << 10),
		"noise":   noise,
		"zeros":   make([]byte, 1<<20),
		"runs":    bytes.Repeat([]byte("ab"), 200_000),
		"program": exe,
	}
}

// What the zstd tool writes, as the kernel's build calls it (zstd -T0
// --rm -f -q: level 3 with a checksum) and at the other levels and modes
// a distribution may choose.
func TestZstdFromTheZstdTool(t *testing.T) {
	testtool.Need(t, "zstd")
	contents := zstdContents(t)
	some := map[string][]byte{"short": contents["short"], "module": contents["module"], "program": contents["program"]}
	for i, args := range [][]string{
		{"-3"},
		{"-1", "--no-check"},
		{"-19"},
		{"--ultra", "-22"},
		{"--long=27", "-9"},
		{"--fast=5"},
		{"-6", "--no-content-size"},
		{"-3", "-B200000", "-T2"},
	} {
		inputs := some
		switch {
		case i == 0:
			inputs = contents
		case args[0] == "--ultra": // seconds per megabyte
			inputs = map[string][]byte{"program": contents["program"]}
		}
		for name, content := range inputs {
			cmd := exec.Command("zstd", append([]string{"-c", "-q"}, args...)...)
			cmd.Stdin = bytes.NewReader(content)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("zstd %v: %v", args, err)
			}
			image, err := decompress(writeTemp(t, out), compZstd, maxModuleSize)
			if err != nil || !bytes.Equal(image, content) {
				t.Errorf("zstd %v of %s: %d of %d bytes back, equal %v, %v", args, name, len(image), len(content), bytes.Equal(image, content), err)
			}
		}
	}
}

// What the encoder of github.com/klauspost/compress writes at each of its
// levels, with and without checksum, several frames in a row, and a
// skippable frame between them.
func TestZstdFromAnotherEncoder(t *testing.T) {
	contents := zstdContents(t)
	for _, level := range []zstd.EncoderLevel{zstd.SpeedFastest, zstd.SpeedDefault, zstd.SpeedBetterCompression, zstd.SpeedBestCompression} {
		for _, crc := range []bool{true, false} {
			enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderCRC(crc), zstd.WithEncoderConcurrency(1))
			if err != nil {
				t.Fatal(err)
			}
			for name, content := range contents {
				frame := enc.EncodeAll(content, nil)
				got, err := decompressZstd(frame, maxModuleSize)
				if err != nil || !bytes.Equal(got, content) {
					t.Errorf("level %v crc %v %s: %d of %d bytes back, %v", level, crc, name, len(got), len(content), err)
				}
			}
			enc.Close()
		}
	}
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	a, b := contents["module"], contents["runs"]
	skippable := binary.LittleEndian.AppendUint32(nil, zstdSkippable|7)
	skippable = binary.LittleEndian.AppendUint32(skippable, 3)
	skippable = append(skippable, 1, 2, 3)
	stream := enc.EncodeAll(a, nil)
	stream = append(stream, skippable...)
	stream = enc.EncodeAll(b, stream)
	got, err := decompressZstd(stream, maxModuleSize)
	if err != nil || !bytes.Equal(got, append(append([]byte{}, a...), b...)) {
		t.Errorf("two frames and a skippable one: %d bytes back, %v", len(got), err)
	}
}

func TestZstdRefusesWhatItMustNot(t *testing.T) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderCRC(true))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	content := moduleLike(200 << 10)
	good := enc.EncodeAll(content, nil)

	// The checksum is the frame's last four bytes.
	bad := bytes.Clone(good)
	bad[len(bad)-1] ^= 1
	if _, err := decompressZstd(bad, maxModuleSize); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Errorf("flipped checksum: %v", err)
	}
	// The bound holds whether the frame states its size or not.
	if _, err := decompressZstd(good, 100<<10); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("over the bound: %v", err)
	}
	noSize, err := zstd.NewWriter(nil, zstd.WithSingleSegment(false))
	if err != nil {
		t.Fatal(err)
	}
	defer noSize.Close()
	var streamed bytes.Buffer
	noSize.Reset(&streamed)
	noSize.Write(content)
	noSize.Close()
	if _, err := decompressZstd(streamed.Bytes(), 100<<10); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("over the bound without a stated size: %v", err)
	}
	// A frame that needs a dictionary is refused by name.
	dict := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x01, 0x2a, 0x01, 0, 0}
	if _, err := decompressZstd(dict, maxModuleSize); err == nil || !strings.Contains(err.Error(), "dictionar") {
		t.Errorf("dictionary frame: %v", err)
	}
	// A frame claiming 4 GiB of content in a few bytes allocates nothing.
	huge := []byte{0x28, 0xb5, 0x2f, 0xfd, 0xe0, 0, 0, 0, 0, 1, 0, 0, 0, 0x01, 0, 0}
	if _, err := decompressZstd(huge, maxModuleSize); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("claimed 4 GiB: %v", err)
	}
	// Every truncation is an error, never a panic or a short image.
	small := enc.EncodeAll(content[:20<<10], nil)
	for n := range len(small) {
		if got, err := decompressZstd(small[:n], maxModuleSize); err == nil {
			t.Fatalf("truncated to %d bytes: %d bytes back and no error", n, len(got))
		}
	}
	// Trailing garbage after the last frame is an error.
	if _, err := decompressZstd(append(bytes.Clone(good), 0x42, 0x42, 0x42, 0x42), maxModuleSize); !errors.Is(err, errZstdCorrupt) {
		t.Errorf("trailing garbage: %v", err)
	}
}

// The checksum's hash against published XXH64 values (seed 0).
func TestXXHash64(t *testing.T) {
	for _, c := range []struct {
		in   string
		want uint64
	}{
		{"", 0xef46db3751d8e999},
		{"a", 0xd24ec4f1a98c6e5b},
		{"abc", 0x44bc2cf5ad770999},
		{"Nobody inspects the spammish repetition", 0xfbcea83c8a378bf1},
	} {
		if got := xxhash64([]byte(c.in)); got != c.want {
			t.Errorf("xxhash64(%q) = %#x, want %#x", c.in, got, c.want)
		}
	}
}

// The predefined distributions fill their tables exactly.
func TestZstdPredefinedTables(t *testing.T) {
	for _, c := range []struct {
		counts []int16
		log    int
	}{{llDefault, 6}, {mlDefault, 6}, {ofDefault, 5}} {
		sum := 0
		for _, n := range c.counts {
			sum += max(int(n), 1)
		}
		if sum != 1<<c.log {
			t.Errorf("distribution of %d symbols sums to %d, not %d", len(c.counts), sum, 1<<c.log)
		}
		var tbl fseTable
		if err := tbl.build(c.counts, c.log); err != nil {
			t.Error(err)
		}
	}
}

// The decoder never panics, never exceeds its bound, accepts nothing
// github.com/klauspost/compress's decoder refuses, and agrees with it on
// what both accept.
func FuzzZstd(f *testing.F) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderCRC(true))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range [][]byte{nil, []byte("a"), []byte("modautoload modautoload modautoload"), moduleLike(5000)} {
		f.Add(enc.EncodeAll(s, nil))
	}
	enc.Close()
	ref, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(1<<20))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := decompressZstd(data, 1<<20)
		if err != nil {
			return
		}
		if len(got) > 1<<20 {
			t.Fatalf("%d bytes, over the bound", len(got))
		}
		want, refErr := ref.DecodeAll(data, nil)
		// Its own limits (window, memory) are not ours.
		if errors.Is(refErr, zstd.ErrWindowSizeExceeded) || errors.Is(refErr, zstd.ErrDecoderSizeExceeded) {
			return
		}
		if refErr != nil {
			t.Fatalf("accepted (%d bytes) what the reference decoder refuses: %v", len(got), refErr)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%d bytes, the reference decoder %d", len(got), len(want))
		}
	})
}

// Decoding speed against github.com/klauspost/compress's decoder, on a
// module-sized input written as the kernel's build writes it (level 3).
func BenchmarkZstd(b *testing.B) {
	content := moduleLike(2 << 20)
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		b.Fatal(err)
	}
	frame := enc.EncodeAll(content, nil)
	enc.Close()
	b.Run("ours", func(b *testing.B) {
		b.SetBytes(int64(len(content)))
		for b.Loop() {
			if _, err := decompressZstd(frame, maxModuleSize); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("klauspost", func(b *testing.B) {
		dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
		if err != nil {
			b.Fatal(err)
		}
		defer dec.Close()
		b.SetBytes(int64(len(content)))
		for b.Loop() {
			if _, err := dec.DecodeAll(frame, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// zstdFrameOf writes a zstd frame by hand: the frame header descriptor,
// the header's other bytes (window descriptor, content size) as given,
// and one last block of the given type.
func zstdFrameOf(descriptor byte, header []byte, blockType int, block []byte, blockSize int) []byte {
	b := binary.LittleEndian.AppendUint32(nil, zstdMagic)
	b = append(b, descriptor)
	b = append(b, header...)
	h := uint32(blockSize)<<3 | uint32(blockType)<<1 | 1
	b = append(b, byte(h), byte(h>>8), byte(h>>16))
	return append(b, block...)
}

// Frames that lie about their sizes are refused: a stated content size
// the data does not match, a stated size over the bound (before any
// decoding), and a window over the supported one.
func TestZstdSizesChecked(t *testing.T) {
	const single, fcs2, fcs4 = 0x20, 0x40, 0x80
	data := bytes.Repeat([]byte("module"), 50)
	// A 1 KiB window (descriptor 0) and a 2-byte content size, which
	// counts from 256.
	stating := func(size int) []byte {
		return zstdFrameOf(fcs2, []byte{0, byte(size - 256), byte((size - 256) >> 8)}, 0, data, len(data))
	}
	for _, c := range []struct {
		name   string
		frame  []byte
		limit  int
		errHas string // "" for success
	}{
		{"stated size", stating(len(data)), maxModuleSize, ""},
		{"stated size, single segment", zstdFrameOf(single|fcs2, []byte{byte(len(data) - 256), 0}, 0, data, len(data)), maxModuleSize, ""},
		{"stated size one less than the data", stating(len(data) - 1), maxModuleSize, "frame says 299 bytes, decoded 300"},
		{"stated size one more than the data", stating(len(data) + 1), maxModuleSize, "frame says 301 bytes, decoded 300"},
		{"stated size over the bound", zstdFrameOf(fcs4, append([]byte{0}, binary.LittleEndian.AppendUint32(nil, 200<<10)...), 0, data, len(data)),
			100 << 10, "larger than the 102400-byte bound"},
		{"a 2 GiB window", zstdFrameOf(0, []byte{21 << 3}, 0, data, len(data)), maxModuleSize, "window of 2147483648 bytes"},
	} {
		got, err := decompressZstd(c.frame, c.limit)
		switch {
		case c.errHas == "" && (err != nil || !bytes.Equal(got, data)):
			t.Errorf("%s: %q, %v", c.name, got, err)
		case c.errHas != "" && (err == nil || !strings.Contains(err.Error(), c.errHas)):
			t.Errorf("%s: %d bytes, %v; want an error saying %q", c.name, len(got), err, c.errHas)
		}
	}
}
