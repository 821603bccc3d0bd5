package loader

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Every format stops at the bound on a module's size (a compression
// bomb, or a file too large to be a module): an image of exactly the
// bound decompresses, one byte more is refused, naming the bound. Tests
// pass a small bound; the loader passes maxModuleSize.
func TestDecompressBounded(t *testing.T) {
	const limit = 64 << 10
	compressors := map[string]func(t *testing.T, b []byte) []byte{
		compGzip: func(t *testing.T, b []byte) []byte {
			var buf bytes.Buffer
			w := gzip.NewWriter(&buf)
			w.Write(b)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			return buf.Bytes()
		},
		compXZ: func(t *testing.T, b []byte) []byte {
			var buf bytes.Buffer
			w, err := xz.NewWriter(&buf)
			if err != nil {
				t.Fatal(err)
			}
			w.Write(b)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			return buf.Bytes()
		},
		compZstd: func(t *testing.T, b []byte) []byte {
			enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
			if err != nil {
				t.Fatal(err)
			}
			defer enc.Close()
			return enc.EncodeAll(b, nil)
		},
	}
	for comp, compress := range compressors {
		for _, size := range []int{limit, limit + 1} {
			image, err := decompress(writeTemp(t, compress(t, make([]byte, size))), comp, limit)
			switch {
			case size <= limit && (err != nil || len(image) != size):
				t.Errorf("%s, %d bytes with a bound of %d: %d bytes, %v", comp, size, limit, len(image), err)
			case size > limit && (err == nil || !strings.Contains(err.Error(), "larger than")):
				t.Errorf("%s, %d bytes with a bound of %d: %d bytes, %v; want refused", comp, size, limit, len(image), err)
			}
		}
	}
	// zstd reads the whole compressed file first: that is bounded too.
	noise := make([]byte, limit+1)
	rand.Read(noise)
	copy(noise, []byte{0x28, 0xb5, 0x2f, 0xfd})
	if _, err := decompress(writeTemp(t, noise), compZstd, limit); err == nil || !strings.Contains(err.Error(), "compressed module larger than 65536 bytes") {
		t.Errorf("zstd file of %d bytes with a bound of %d: %v", len(noise), limit, err)
	}
}
