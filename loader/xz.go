package loader

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"io"

	"github.com/ulikunitz/xz/lzma"
)

// The xz container is read here and only its LZMA2 data is given to the
// lzma package: the layout is checked and bounded before anything is
// allocated, and github.com/ulikunitz/xz's own container reader would add
// 70 KiB to the binary, SHA-256 included, for a check the kernel's modules
// never use (they are compressed with --check=crc32).

// maxXZDict bounds the LZMA2 dictionary an xz module may ask for: the
// decoder allocates what the block header says before a byte is
// decompressed, so a 64-byte file could ask for 4 GiB. xz -9 uses 64 MiB;
// the kernel's build uses 1 MiB.
const maxXZDict = 64 << 20

var (
	errXZLayout = errors.New("not a single xz stream with an index")
	xzMagic     = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
)

// xz's check IDs.
const (
	xzCheckNone   = 0x00
	xzCheckCRC32  = 0x01
	xzCheckCRC64  = 0x04
	xzCheckSHA256 = 0x0a
)

// xzBlock is one block as the index and its header describe it.
type xzBlock struct {
	offset       int64 // of the block header in the file
	headerSize   int64
	unpadded     int64 // header, data and check, without the padding
	uncompressed int64
	dict         int
}

// decompressXZ decodes a module compressed with xz: one stream of LZMA2
// blocks, each check verified. The index, read first, bounds the image
// and places every block; each block header's dictionary is bounded before
// its decoder exists.
func decompressXZ(f io.ReaderAt, size int64, limit int) ([]byte, error) {
	check, blocks, total, err := readXZLayout(f, size, limit)
	if err != nil {
		return nil, err
	}
	// The index is not trusted with the allocation: a small file may
	// claim 256 MiB. The image grows as it is decoded.
	var image bytes.Buffer
	image.Grow(int(min(total, 16*size)))
	for _, b := range blocks {
		if err := b.decode(f, check, &image); err != nil {
			return nil, fmt.Errorf("block at %d: %w", b.offset, err)
		}
	}
	return image.Bytes(), nil
}

// readXZLayout reads the stream header and footer, the index and every
// block header: the check ID, the blocks and the decompressed size, at
// most limit.
func readXZLayout(f io.ReaderAt, size int64, limit int) (check byte, blocks []xzBlock, total int64, err error) {
	var header, footer [12]byte
	if size < 32 {
		return 0, nil, 0, errXZLayout
	}
	if _, err := f.ReadAt(header[:], 0); err != nil {
		return 0, nil, 0, err
	}
	if _, err := f.ReadAt(footer[:], size-12); err != nil {
		return 0, nil, 0, err
	}
	if !bytes.Equal(header[:6], xzMagic) || footer[10] != 'Y' || footer[11] != 'Z' ||
		crc32.ChecksumIEEE(header[6:8]) != binary.LittleEndian.Uint32(header[8:]) ||
		crc32.ChecksumIEEE(footer[4:10]) != binary.LittleEndian.Uint32(footer[:4]) ||
		header[6] != 0 || header[6] != footer[8] || header[7] != footer[9] {
		return 0, nil, 0, errXZLayout
	}
	check = header[7]
	switch check {
	case xzCheckNone, xzCheckCRC32, xzCheckCRC64:
	case xzCheckSHA256:
		return 0, nil, 0, errors.New("SHA-256 check not supported: compress modules with --check=crc32 (as the kernel's build does) or crc64")
	default:
		return 0, nil, 0, fmt.Errorf("unknown check type %#x", check)
	}
	indexSize := (int64(binary.LittleEndian.Uint32(footer[4:8])) + 1) * 4
	indexStart := size - 12 - indexSize
	if indexStart < 12 || indexSize > 1<<20 {
		return 0, nil, 0, errXZLayout
	}
	index := make([]byte, indexSize)
	if _, err := f.ReadAt(index, indexStart); err != nil {
		return 0, nil, 0, err
	}
	if crc32.ChecksumIEEE(index[:indexSize-4]) != binary.LittleEndian.Uint32(index[indexSize-4:]) {
		return 0, nil, 0, errors.New("index CRC32 mismatch")
	}
	r := xzReader{b: index[:indexSize-4]}
	if r.byte() != 0 {
		return 0, nil, 0, errXZLayout
	}
	records := r.varint()
	offset := int64(12)
	for i := uint64(0); i < records && r.err == nil; i++ {
		unpadded, uncompressed := r.varint(), r.varint()
		if unpadded > uint64(indexStart) {
			return 0, nil, 0, errXZLayout
		}
		// A record alone past the bound is checked first: the sum of
		// records up to 2^63 each could overflow.
		if uncompressed > uint64(limit) || total+int64(uncompressed) > int64(limit) {
			return 0, nil, 0, fmt.Errorf("index: decompressed module larger than %d bytes", limit)
		}
		total += int64(uncompressed)
		b := xzBlock{offset: offset, unpadded: int64(unpadded), uncompressed: int64(uncompressed)}
		if err := b.readHeader(f, check); err != nil {
			return 0, nil, 0, err
		}
		blocks = append(blocks, b)
		offset += (int64(unpadded) + 3) &^ 3
	}
	// What is left of the index is padding: zeros to a multiple of 4.
	if r.err != nil || offset != indexStart || len(r.b) > 3 || !allZero(r.b) {
		return 0, nil, 0, errXZLayout
	}
	return check, blocks, total, nil
}

// readHeader reads the block header at b.offset: one LZMA2 filter with a
// bounded dictionary, sizes that agree with the index.
func (b *xzBlock) readHeader(f io.ReaderAt, check byte) error {
	var head [1024]byte
	n, err := f.ReadAt(head[:], b.offset)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	hsize := (int(head[0]) + 1) * 4
	if head[0] == 0 || hsize > n {
		return errXZLayout
	}
	if crc32.ChecksumIEEE(head[:hsize-4]) != binary.LittleEndian.Uint32(head[hsize-4:hsize]) {
		return fmt.Errorf("block header at %d: CRC32 mismatch", b.offset)
	}
	b.headerSize = int64(hsize)
	if b.unpadded < b.headerSize+int64(xzCheckSize(check))+1 {
		return errXZLayout
	}
	r := xzReader{b: head[2 : hsize-4]}
	flags := head[1]
	if flags&0x3c != 0 {
		return fmt.Errorf("block header at %d: reserved flags %#x", b.offset, flags)
	}
	if flags&0x40 != 0 && r.varint() != uint64(b.unpadded-b.headerSize-int64(xzCheckSize(check))) {
		return errXZLayout
	}
	if flags&0x80 != 0 && r.varint() != uint64(b.uncompressed) {
		return errXZLayout
	}
	if flags&3 != 0 {
		return fmt.Errorf("block at %d has %d filters: only LZMA2 alone is supported, as the kernel's build writes", b.offset, flags&3+1)
	}
	id, propsLen := r.varint(), r.varint()
	props := r.bytes(propsLen)
	if r.err != nil || !allZero(r.b) {
		return errXZLayout
	}
	if id != 0x21 || len(props) != 1 || props[0] > 40 {
		return fmt.Errorf("block at %d: filter %#x is not LZMA2: only LZMA2 is supported, as the kernel's build writes", b.offset, id)
	}
	dict := xzDictSize(props[0])
	if dict > maxXZDict {
		return fmt.Errorf("xz block at %d wants a %d MiB dictionary (at most %d MiB)", b.offset, dict>>20, maxXZDict>>20)
	}
	b.dict = max(int(dict), lzma.MinDictCap)
	return nil
}

// decode appends the block's data to image and verifies its check.
func (b xzBlock) decode(f io.ReaderAt, check byte, image *bytes.Buffer) error {
	checkSize := int64(xzCheckSize(check))
	dataSize := b.unpadded - b.headerSize - checkSize
	data := io.NewSectionReader(f, b.offset+b.headerSize, dataSize)
	zr, err := lzma.Reader2Config{DictCap: b.dict}.NewReader2(data)
	if err != nil {
		return err
	}
	start := image.Len()
	if n, err := io.CopyN(image, zr, b.uncompressed); err != nil {
		return fmt.Errorf("LZMA2 data: %d of %d bytes: %w", n, b.uncompressed, err)
	}
	// The data must end where the index says: nothing decodes past the
	// block's size, and no compressed bytes are left over.
	var extra [1]byte
	if n, err := zr.Read(extra[:]); n != 0 || !errors.Is(err, io.EOF) {
		return errors.New("LZMA2 data longer than the index says")
	}
	if rest, _ := data.Seek(0, io.SeekCurrent); rest != dataSize {
		return errors.New("LZMA2 data shorter than the block")
	}
	padding := (4 - dataSize%4) % 4
	tail := make([]byte, padding+checkSize)
	if _, err := f.ReadAt(tail, b.offset+b.headerSize+dataSize); err != nil {
		return err
	}
	if !allZero(tail[:padding]) {
		return errors.New("block padding is not zero")
	}
	var h hash.Hash
	switch check {
	case xzCheckCRC32:
		h = crc32.NewIEEE()
	case xzCheckCRC64:
		// Made here, not at start: its 32 KiB of tables would cost
		// every process, the kernel's helper first, for a check the
		// kernel's modules do not use.
		h = crc64.New(crc64.MakeTable(crc64.ECMA))
	default:
		return nil
	}
	h.Write(image.Bytes()[start:])
	if want := tail[padding:]; !bytes.Equal(h.Sum(nil), reversed(want)) {
		return errors.New("check mismatch: the file is corrupt")
	}
	return nil
}

// reversed returns b's bytes in reverse order: xz stores its CRCs little
// endian, hash.Hash.Sum writes them big endian.
func reversed(b []byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		out[len(b)-1-i] = c
	}
	return out
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
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
