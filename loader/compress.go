package loader

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// compression names as /sys/module/compression spells them.
const (
	compNone = ""
	compGzip = "gzip"
	compXZ   = "xz"
	compZstd = "zstd"
)

// maxModuleSize bounds a decompressed module (the largest Debian module is
// about 30 MiB); a compression bomb stops there.
const maxModuleSize = 256 << 20

// detectCompression reads the file's magic number; the file name's
// extension is not trusted.
func detectCompression(f *os.File) (string, error) {
	var magic [6]byte
	n, err := f.ReadAt(magic[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	m := magic[:n]
	switch {
	case bytes.HasPrefix(m, []byte{0x1f, 0x8b}):
		return compGzip, nil
	case bytes.HasPrefix(m, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}):
		return compXZ, nil
	case bytes.HasPrefix(m, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return compZstd, nil
	}
	return compNone, nil
}

// kernelCompression is the algorithm the kernel can decompress modules
// with (CONFIG_MODULE_DECOMPRESS, kernel 6.4 and later), or "" for none.
func kernelCompression(sysfs string) string {
	data, err := os.ReadFile(filepath.Join(sysfs, "module", "compression"))
	if err != nil {
		return compNone
	}
	return strings.TrimSpace(string(data))
}

// decompress reads the whole module from f, compressed with comp, into
// an image of at most limit bytes (maxModuleSize; tests pass less).
func decompress(f *os.File, comp string, limit int) ([]byte, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	var r io.Reader
	switch comp {
	case compGzip:
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, err
		}
		defer zr.Close()
		r = zr
	case compXZ:
		st, err := f.Stat()
		if err != nil {
			return nil, err
		}
		image, err := decompressXZ(f, st.Size(), limit)
		if err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		return image, nil
	case compZstd:
		data, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
		if err != nil {
			return nil, err
		}
		if len(data) > limit {
			return nil, fmt.Errorf("zstd: compressed module larger than %d bytes", limit)
		}
		return decompressZstd(data, limit)
	default:
		return nil, fmt.Errorf("unknown compression %q", comp)
	}
	image, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("decompressing %s: %w", comp, err)
	}
	if len(image) > limit {
		return nil, fmt.Errorf("decompressed module larger than %d bytes", limit)
	}
	return image, nil
}
