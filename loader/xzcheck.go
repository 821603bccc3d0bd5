package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// maxXZDict bounds the LZMA2 dictionary an xz module may ask for: the
// decoder allocates what the block header says before a byte is
// decompressed, so a 64-byte file could ask for 4 GiB. xz -9 uses 64 MiB;
// the kernel's build uses 1 MiB.
const maxXZDict = 64 << 20

var errXZLayout = errors.New("not a single xz stream with an index")

// checkXZ reads the xz file's index and every block header, before the
// decoder is given the file: the dictionary sizes and the total size are
// bounded first.
func checkXZ(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	var footer [12]byte
	if size < 24 {
		return errXZLayout
	}
	if _, err := f.ReadAt(footer[:], size-12); err != nil {
		return err
	}
	if footer[10] != 'Y' || footer[11] != 'Z' {
		return errXZLayout
	}
	checkSize := xzCheckSize(footer[9] & 0x0f)
	indexSize := (int64(binary.LittleEndian.Uint32(footer[4:8])) + 1) * 4
	indexStart := size - 12 - indexSize
	if indexStart < 12 || indexSize > 1<<20 {
		return errXZLayout
	}
	index := make([]byte, indexSize)
	if _, err := f.ReadAt(index, indexStart); err != nil {
		return err
	}
	r := xzReader{b: index}
	if r.byte() != 0 {
		return errXZLayout
	}
	records := r.varint()
	offset, total := int64(12), uint64(0)
	for i := uint64(0); i < records && r.err == nil; i++ {
		unpadded, uncompressed := r.varint(), r.varint()
		if total += uncompressed; total > maxModuleSize {
			return fmt.Errorf("xz index: decompressed module larger than %d bytes", maxModuleSize)
		}
		if unpadded > uint64(indexStart) || unpadded < uint64(checkSize)+8 {
			return errXZLayout
		}
		if err := checkXZBlock(f, offset); err != nil {
			return err
		}
		offset += (int64(unpadded) + 3) &^ 3
	}
	if r.err != nil || offset != indexStart {
		return errXZLayout
	}
	return nil
}

// checkXZBlock reads the block header at off and bounds its LZMA2
// dictionary.
func checkXZBlock(f *os.File, off int64) error {
	var head [1024]byte
	n, err := f.ReadAt(head[:], off)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	hsize := (int(head[0]) + 1) * 4
	if head[0] == 0 || hsize > n {
		return errXZLayout
	}
	r := xzReader{b: head[2:hsize]}
	flags := head[1]
	if flags&0x40 != 0 {
		r.varint() // compressed size
	}
	if flags&0x80 != 0 {
		r.varint() // uncompressed size
	}
	for range int(flags&3) + 1 {
		id, propsLen := r.varint(), r.varint()
		props := r.bytes(propsLen)
		if r.err != nil {
			return errXZLayout
		}
		if id == 0x21 && len(props) == 1 {
			if dict := xzDictSize(props[0]); dict > maxXZDict {
				return fmt.Errorf("xz block at %d wants a %d MiB dictionary (at most %d MiB)", off, dict>>20, maxXZDict>>20)
			}
		}
	}
	return nil
}

// xzDictSize decodes LZMA2's dictionary size property.
func xzDictSize(p byte) uint64 {
	bits := uint64(p & 0x3f)
	if bits >= 40 {
		return 1<<32 - 1
	}
	return (2 | bits&1) << (bits/2 + 11)
}

// xzCheckSize is the size of a block's check field for the check ID.
func xzCheckSize(id byte) int {
	if id == 0 {
		return 0
	}
	return 4 << ((id - 1) / 3)
}

// xzReader reads xz's variable-length integers from a buffer; the first
// error sticks.
type xzReader struct {
	b   []byte
	err error
}

func (r *xzReader) byte() byte {
	if len(r.b) == 0 {
		r.err = errXZLayout
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *xzReader) varint() uint64 {
	var v uint64
	for i := 0; i < 9; i++ {
		c := r.byte()
		v |= uint64(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			return v
		}
	}
	r.err = errXZLayout
	return 0
}

func (r *xzReader) bytes(n uint64) []byte {
	if n > uint64(len(r.b)) {
		r.err = errXZLayout
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}
