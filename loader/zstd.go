package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
)

// A Zstandard (RFC 8878) decoder for whole modules held in memory. It is
// here rather than github.com/klauspost/compress/zstd because that package
// carries its encoder, whose import of crypto/rand links Go's FIPS module:
// 300 KB of the binary for a loader that never compresses. Dictionaries
// are refused (depmod's tools and the kernel's build never use them);
// everything a frame says is checked against what was read, and the image
// is grown as decoded, never allocated from a size the input claims.

var errZstdCorrupt = errors.New("zstd: corrupt input")

const (
	zstdMagic         = 0xFD2FB528
	zstdSkippableMask = 0xFFFFFFF0
	zstdSkippable     = 0x184D2A50
	zstdMaxBlock      = 128 << 10
	// zstdMaxWindow bounds the window a frame may ask for: more than any
	// module needs (zstd's own decoder refuses more than 128 MiB unless
	// told otherwise), and offsets within it fit a 32-bit int.
	zstdMaxWindow = 1 << 30
)

// decompressZstd decodes every frame of data, skippable frames skipped,
// into one image of at most limit bytes.
func decompressZstd(data []byte, limit int) ([]byte, error) {
	var out []byte
	frames := 0
	for len(data) > 0 {
		if len(data) < 4 {
			return nil, fmt.Errorf("%w: %d stray bytes after the last frame", errZstdCorrupt, len(data))
		}
		magic := binary.LittleEndian.Uint32(data)
		if magic&zstdSkippableMask == zstdSkippable {
			if len(data) < 8 {
				return nil, fmt.Errorf("%w: truncated skippable frame", errZstdCorrupt)
			}
			size := uint64(binary.LittleEndian.Uint32(data[4:]))
			if size > uint64(len(data)-8) {
				return nil, fmt.Errorf("%w: skippable frame of %d bytes runs past the end", errZstdCorrupt, size)
			}
			data = data[8+size:]
			continue
		}
		if magic != zstdMagic {
			return nil, fmt.Errorf("%w: bad frame magic %#08x", errZstdCorrupt, magic)
		}
		var d zstdFrame
		d.limit = limit
		var err error
		out, data, err = d.decode(out, data[4:])
		if err != nil {
			return nil, err
		}
		frames++
	}
	if frames == 0 {
		return nil, fmt.Errorf("%w: no frame", errZstdCorrupt)
	}
	return out, nil
}

// zstdFrame is the state that lasts across the blocks of one frame.
type zstdFrame struct {
	limit     int
	start     int // of this frame's content in the output
	window    uint64
	reps      [3]int
	huff      huffTable
	hasHuff   bool
	ll, of, m fseTable
	hasTables [3]bool
	literals  []byte
}

func (d *zstdFrame) decode(out, in []byte) ([]byte, []byte, error) {
	if len(in) < 1 {
		return nil, nil, fmt.Errorf("%w: truncated frame header", errZstdCorrupt)
	}
	desc := in[0]
	in = in[1:]
	fcsFlag := desc >> 6
	single := desc&0x20 != 0
	if desc&0x08 != 0 {
		return nil, nil, fmt.Errorf("%w: reserved frame header bit set", errZstdCorrupt)
	}
	checksum := desc&0x04 != 0
	dictSize := [4]int{0, 1, 2, 4}[desc&3]
	fcsSize := [4]int{0, 2, 4, 8}[fcsFlag]
	if fcsFlag == 0 && single {
		fcsSize = 1
	}
	need := dictSize + fcsSize
	if !single {
		need++
	}
	if len(in) < need {
		return nil, nil, fmt.Errorf("%w: truncated frame header", errZstdCorrupt)
	}
	if !single {
		exp, mantissa := uint64(in[0]>>3), uint64(in[0]&7)
		base := uint64(1) << (10 + exp)
		d.window = base + base/8*mantissa
		in = in[1:]
	}
	var dict uint64
	for i := dictSize - 1; i >= 0; i-- {
		dict = dict<<8 | uint64(in[i])
	}
	in = in[dictSize:]
	if dict != 0 {
		return nil, nil, fmt.Errorf("zstd: frame needs dictionary %d; dictionaries are not supported", dict)
	}
	var fcs uint64
	for i := fcsSize - 1; i >= 0; i-- {
		fcs = fcs<<8 | uint64(in[i])
	}
	if fcsSize == 2 {
		fcs += 256
	}
	in = in[fcsSize:]
	if single {
		d.window = fcs
	}
	if d.window > zstdMaxWindow {
		return nil, nil, fmt.Errorf("zstd: window of %d bytes is larger than %d", d.window, uint64(zstdMaxWindow))
	}
	if fcsSize > 0 && fcs > uint64(d.limit-len(out)) {
		return nil, nil, fmt.Errorf("zstd: frame content of %d bytes is larger than the %d-byte bound", fcs, d.limit)
	}
	d.start = len(out)
	d.reps = [3]int{1, 4, 8}
	if fcsSize > 0 {
		// Room for the stated size, but no more than the input could
		// plausibly hold: a few bytes must not reserve the whole bound.
		var err error
		if out, err = d.grow(out, int(min(fcs, 32*uint64(len(in))+zstdMaxBlock))); err != nil {
			return nil, nil, err
		}
	}
	for {
		if len(in) < 3 {
			return nil, nil, fmt.Errorf("%w: truncated block header", errZstdCorrupt)
		}
		h := uint32(in[0]) | uint32(in[1])<<8 | uint32(in[2])<<16
		in = in[3:]
		last, kind, size := h&1 != 0, (h>>1)&3, int(h>>3)
		maxBlock := min(uint64(zstdMaxBlock), max(d.window, 1))
		if uint64(size) > maxBlock {
			return nil, nil, fmt.Errorf("%w: block of %d bytes, more than the frame's %d", errZstdCorrupt, size, maxBlock)
		}
		var err error
		switch kind {
		case 0: // raw
			if size > len(in) {
				return nil, nil, fmt.Errorf("%w: raw block runs past the end", errZstdCorrupt)
			}
			if out, err = d.grow(out, size); err != nil {
				return nil, nil, err
			}
			out = append(out, in[:size]...)
			in = in[size:]
		case 1: // one byte, repeated size times
			if len(in) < 1 {
				return nil, nil, fmt.Errorf("%w: truncated RLE block", errZstdCorrupt)
			}
			if out, err = d.grow(out, size); err != nil {
				return nil, nil, err
			}
			run := out[len(out) : len(out)+size]
			for i := range run {
				run[i] = in[0]
			}
			out = out[:len(out)+size]
			in = in[1:]
		case 2:
			if size > len(in) {
				return nil, nil, fmt.Errorf("%w: compressed block of %d bytes", errZstdCorrupt, size)
			}
			before := len(out)
			if out, err = d.block(out, in[:size]); err != nil {
				return nil, nil, err
			}
			if uint64(len(out)-before) > maxBlock {
				return nil, nil, fmt.Errorf("%w: block decodes to more than %d bytes", errZstdCorrupt, maxBlock)
			}
			in = in[size:]
		default:
			return nil, nil, fmt.Errorf("%w: reserved block type", errZstdCorrupt)
		}
		if last {
			break
		}
	}
	content := out[d.start:]
	if fcsSize > 0 && uint64(len(content)) != fcs {
		return nil, nil, fmt.Errorf("%w: frame says %d bytes, decoded %d", errZstdCorrupt, fcs, len(content))
	}
	if checksum {
		if len(in) < 4 {
			return nil, nil, fmt.Errorf("%w: truncated content checksum", errZstdCorrupt)
		}
		if want, got := binary.LittleEndian.Uint32(in), uint32(xxhash64(content)); want != got {
			return nil, nil, fmt.Errorf("zstd: content checksum %#08x, computed %#08x", want, got)
		}
		in = in[4:]
	}
	return out, in, nil
}

// grow makes room for n more bytes of output within the limit.
func (d *zstdFrame) grow(out []byte, n int) ([]byte, error) {
	if n > d.limit-len(out) {
		return nil, fmt.Errorf("zstd: decompressed module larger than %d bytes", d.limit)
	}
	if cap(out)-len(out) < n {
		grown := make([]byte, len(out), min(max(2*cap(out), len(out)+n), d.limit))
		copy(grown, out)
		out = grown
	}
	return out, nil
}

// block decodes one compressed block: literals, then sequences.
func (d *zstdFrame) block(out, in []byte) ([]byte, error) {
	n, err := d.readLiterals(in)
	if err != nil {
		return nil, err
	}
	return d.sequences(out, in[n:])
}

// readLiterals decodes the literals section into d.literals and returns
// the section's size.
func (d *zstdFrame) readLiterals(in []byte) (int, error) {
	if len(in) < 1 {
		return 0, fmt.Errorf("%w: empty block", errZstdCorrupt)
	}
	kind, sizeFormat := in[0]&3, (in[0]>>2)&3
	if kind < 2 { // raw or RLE: only the regenerated size
		var size, hdr int
		switch sizeFormat {
		case 0, 2:
			size, hdr = int(in[0]>>3), 1
		case 1:
			if len(in) < 2 {
				return 0, fmt.Errorf("%w: truncated literals header", errZstdCorrupt)
			}
			size, hdr = int(in[0]>>4)|int(in[1])<<4, 2
		case 3:
			if len(in) < 3 {
				return 0, fmt.Errorf("%w: truncated literals header", errZstdCorrupt)
			}
			size, hdr = int(in[0]>>4)|int(in[1])<<4|int(in[2])<<12, 3
		}
		if size > zstdMaxBlock {
			return 0, fmt.Errorf("%w: %d literals", errZstdCorrupt, size)
		}
		d.literals = d.literals[:0]
		if kind == 0 {
			if len(in)-hdr < size {
				return 0, fmt.Errorf("%w: raw literals run past the block", errZstdCorrupt)
			}
			d.literals = append(d.literals, in[hdr:hdr+size]...)
			return hdr + size, nil
		}
		if len(in)-hdr < 1 {
			return 0, fmt.Errorf("%w: truncated RLE literals", errZstdCorrupt)
		}
		for range size {
			d.literals = append(d.literals, in[hdr])
		}
		return hdr + 1, nil
	}
	// Huffman-coded: regenerated and compressed sizes, one or four streams.
	hdr, fieldBits := 3, 10
	switch sizeFormat {
	case 2:
		hdr, fieldBits = 4, 14
	case 3:
		hdr, fieldBits = 5, 18
	}
	if len(in) < hdr {
		return 0, fmt.Errorf("%w: truncated literals header", errZstdCorrupt)
	}
	var h uint64
	for i := hdr - 1; i >= 0; i-- {
		h = h<<8 | uint64(in[i])
	}
	mask := uint64(1)<<fieldBits - 1
	regen, compSize := int(h>>4&mask), int(h>>(4+fieldBits)&mask)
	streams := 4
	if sizeFormat == 0 {
		streams = 1
	}
	if regen > zstdMaxBlock || compSize > len(in)-hdr {
		return 0, fmt.Errorf("%w: literals of %d bytes in %d", errZstdCorrupt, regen, compSize)
	}
	src := in[hdr : hdr+compSize]
	if kind == 2 {
		n, err := d.huff.read(src)
		if err != nil {
			return 0, err
		}
		src = src[n:]
		d.hasHuff = true
	} else if !d.hasHuff {
		return 0, fmt.Errorf("%w: literals reuse a Huffman table never sent", errZstdCorrupt)
	}
	if cap(d.literals) < regen {
		d.literals = make([]byte, 0, zstdMaxBlock)
	}
	d.literals = d.literals[:regen]
	if streams == 1 {
		if err := d.huff.decode(d.literals, src); err != nil {
			return 0, err
		}
		return hdr + compSize, nil
	}
	if len(src) < 6 {
		return 0, fmt.Errorf("%w: truncated literals jump table", errZstdCorrupt)
	}
	sizes := [4]int{int(binary.LittleEndian.Uint16(src)), int(binary.LittleEndian.Uint16(src[2:])), int(binary.LittleEndian.Uint16(src[4:]))}
	src = src[6:]
	sizes[3] = len(src) - sizes[0] - sizes[1] - sizes[2]
	if sizes[3] < 0 {
		return 0, fmt.Errorf("%w: literals jump table past the streams", errZstdCorrupt)
	}
	each := (regen + 3) / 4
	if 3*each > regen {
		return 0, fmt.Errorf("%w: %d literals in four streams", errZstdCorrupt, regen)
	}
	dst := d.literals
	for i, size := range sizes {
		n := each
		if i == 3 {
			n = len(dst)
		}
		if err := d.huff.decode(dst[:n], src[:size]); err != nil {
			return 0, err
		}
		dst, src = dst[n:], src[size:]
	}
	return hdr + compSize, nil
}

// backBits reads a zstd backward bit stream: a little-endian number whose
// highest set bit marks its top, read from the top down.
type backBits struct {
	b   []byte
	pos int // bits not yet read; negative once reads ran past the start
}

func (r *backBits) init(b []byte) error {
	if len(b) == 0 || b[len(b)-1] == 0 {
		return fmt.Errorf("%w: bit stream without its end mark", errZstdCorrupt)
	}
	r.b = b
	r.pos = 8*(len(b)-1) + bits.Len8(b[len(b)-1]) - 1
	return nil
}

// peek returns the next n bits (n <= 56) without consuming them; bits
// before the stream's start read as zeros.
func (r *backBits) peek(n int) uint64 {
	// Inlined: most reads are eight whole bytes inside the stream.
	if lo := r.pos - n; lo >= 0 && lo>>3+8 <= len(r.b) {
		return binary.LittleEndian.Uint64(r.b[lo>>3:]) >> uint(lo&7) & (1<<uint(n) - 1)
	}
	return r.peekEdge(n)
}

// peekEdge is peek near the stream's ends.
func (r *backBits) peekEdge(n int) uint64 {
	if n == 0 {
		return 0
	}
	lo := r.pos - n
	shift := 0
	if lo < 0 {
		shift, lo = -lo, 0
	}
	if r.pos <= 0 {
		return 0
	}
	i := lo >> 3
	var v uint64
	if i+8 <= len(r.b) {
		v = binary.LittleEndian.Uint64(r.b[i:])
	} else {
		for j := len(r.b) - 1; j >= i; j-- {
			v = v<<8 | uint64(r.b[j])
		}
	}
	v >>= uint(lo & 7)
	width := n - shift
	return (v & (1<<uint(width) - 1)) << uint(shift)
}

func (r *backBits) read(n int) uint64 {
	v := r.peek(n)
	r.pos -= n
	return v
}

// huffTable decodes literals: 1<<maxBits entries, each a symbol and the
// length of its code.
type huffTable struct {
	maxBits int
	entries [1 << 11]struct{ sym, bits uint8 }
}

// read reads a Huffman tree description and returns its size.
func (t *huffTable) read(in []byte) (int, error) {
	if len(in) < 1 {
		return 0, fmt.Errorf("%w: missing Huffman tree", errZstdCorrupt)
	}
	var weights [256]uint8
	var count, used int
	if h := int(in[0]); h < 128 {
		if h == 0 || h > len(in)-1 {
			return 0, fmt.Errorf("%w: Huffman weights of %d bytes", errZstdCorrupt, h)
		}
		var err error
		if count, err = fseWeights(&weights, in[1:1+h]); err != nil {
			return 0, err
		}
		used = 1 + h
	} else {
		count = h - 127
		used = 1 + (count+1)/2
		if used > len(in) {
			return 0, fmt.Errorf("%w: truncated Huffman weights", errZstdCorrupt)
		}
		for i := range count {
			b := in[1+i/2]
			if i%2 == 0 {
				weights[i] = b >> 4
			} else {
				weights[i] = b & 15
			}
		}
	}
	// The last symbol's weight is implied: it completes a power of two.
	var total uint32
	for _, w := range weights[:count] {
		if w > 11 {
			return 0, fmt.Errorf("%w: Huffman weight %d", errZstdCorrupt, w)
		}
		if w > 0 {
			total += 1 << (w - 1)
		}
	}
	if total == 0 || count >= 256 {
		return 0, fmt.Errorf("%w: Huffman weights describe no tree", errZstdCorrupt)
	}
	maxBits := bits.Len32(total)
	rest := uint32(1)<<maxBits - total
	if maxBits > 11 || rest&(rest-1) != 0 {
		return 0, fmt.Errorf("%w: Huffman weights do not sum to a power of two", errZstdCorrupt)
	}
	weights[count] = uint8(bits.Len32(rest))
	count++
	// Codes are handed out by increasing weight, then symbol.
	var next [13]int
	for _, w := range weights[:count] {
		if w > 0 {
			next[w] += 1 << (w - 1)
		}
	}
	pos := 0
	for w := 1; w <= maxBits; w++ {
		n := next[w]
		next[w] = pos
		pos += n
	}
	for sym, w := range weights[:count] {
		if w == 0 {
			continue
		}
		entry := struct{ sym, bits uint8 }{uint8(sym), uint8(maxBits + 1 - int(w))}
		n := 1 << (w - 1)
		for i := next[w]; i < next[w]+n; i++ {
			t.entries[i] = entry
		}
		next[w] += n
	}
	t.maxBits = maxBits
	return used, nil
}

// decode fills dst from one Huffman-coded stream, which must end exactly.
func (t *huffTable) decode(dst, src []byte) error {
	var r backBits
	if err := r.init(src); err != nil {
		return err
	}
	for i := range dst {
		e := t.entries[r.peek(t.maxBits)]
		dst[i] = e.sym
		r.pos -= int(e.bits)
	}
	if r.pos != 0 {
		return fmt.Errorf("%w: Huffman stream does not end with its literals", errZstdCorrupt)
	}
	return nil
}

// fseWeights decodes FSE-compressed Huffman weights into w, returning
// how many there are.
func fseWeights(w *[256]uint8, in []byte) (int, error) {
	var t fseTable
	n, err := t.readDescription(in, 6, 255)
	if err != nil {
		return 0, err
	}
	var r backBits
	if err := r.init(in[n:]); err != nil {
		return 0, err
	}
	// Two states share the table and take turns until the stream is
	// overread; the state not yet advanced gives the last weight.
	states := [2]int{t.start(&r), t.start(&r)}
	for count := 0; ; count++ {
		if count >= 254 {
			return 0, fmt.Errorf("%w: too many Huffman weights", errZstdCorrupt)
		}
		state := &states[count&1]
		w[count] = t.symbol(*state)
		*state = t.next(*state, &r)
		if r.pos < 0 {
			w[count+1] = t.symbol(states[(count+1)&1])
			return count + 2, nil
		}
	}
}

// fseTable is a finite state entropy decoding table.
type fseTable struct {
	log     int
	entries []fseEntry
}

type fseEntry struct {
	sym   uint8
	bits  uint8
	state uint16 // the next state's base
}

func (t *fseTable) start(r *backBits) int { return int(r.read(t.log)) }

func (t *fseTable) symbol(state int) uint8 { return t.entries[state].sym }

func (t *fseTable) next(state int, r *backBits) int {
	e := t.entries[state]
	return int(e.state) + int(r.read(int(e.bits)))
}

// readDescription reads a table's normalized counts (a forward bit
// stream) and builds the table; it returns the description's size.
func (t *fseTable) readDescription(in []byte, maxLog, maxSym int) (int, error) {
	var counts [256]int16
	pos := 0 // in bits
	get := func(n int) uint64 {
		var v uint64
		for i := range n {
			p := pos + i
			if p>>3 < len(in) && in[p>>3]>>(p&7)&1 != 0 {
				v |= 1 << i
			}
		}
		return v
	}
	if len(in) < 1 {
		return 0, fmt.Errorf("%w: missing FSE table", errZstdCorrupt)
	}
	log := int(get(4)) + 5
	pos = 4
	if log > maxLog {
		return 0, fmt.Errorf("%w: FSE accuracy %d above %d", errZstdCorrupt, log, maxLog)
	}
	remaining := 1<<log + 1
	threshold := 1 << log
	width := log + 1
	sym := 0
	zeroBefore := false
	for remaining > 1 && sym <= maxSym {
		if zeroBefore {
			for {
				rep := int(get(2))
				pos += 2
				for range rep {
					if sym > maxSym {
						return 0, fmt.Errorf("%w: FSE counts past symbol %d", errZstdCorrupt, maxSym)
					}
					counts[sym] = 0
					sym++
				}
				if rep != 3 {
					break
				}
				if pos > 8*len(in) {
					return 0, fmt.Errorf("%w: truncated FSE table", errZstdCorrupt)
				}
			}
			if sym > maxSym {
				break
			}
		}
		limit := 2*threshold - 1 - remaining
		v := int(get(width))
		if v&(threshold-1) < limit {
			v &= threshold - 1
			pos += width - 1
		} else {
			if v >= threshold {
				v -= limit
			}
			pos += width
		}
		count := v - 1
		if count < 0 {
			remaining--
		} else {
			remaining -= count
		}
		if remaining < 1 {
			return 0, fmt.Errorf("%w: FSE counts exceed the table", errZstdCorrupt)
		}
		counts[sym] = int16(count)
		sym++
		zeroBefore = count == 0
		for remaining < threshold {
			width--
			threshold >>= 1
		}
		if pos > 8*len(in) {
			return 0, fmt.Errorf("%w: truncated FSE table", errZstdCorrupt)
		}
	}
	if remaining != 1 || sym > maxSym+1 {
		return 0, fmt.Errorf("%w: FSE counts do not fill the table", errZstdCorrupt)
	}
	if err := t.build(counts[:sym], log); err != nil {
		return 0, err
	}
	return (pos + 7) / 8, nil
}

// build spreads the symbols over the table as the format prescribes.
func (t *fseTable) build(counts []int16, log int) error {
	size := 1 << log
	if cap(t.entries) < size {
		t.entries = make([]fseEntry, size, 1<<9)
	}
	t.entries = t.entries[:size]
	t.log = log
	var next [256]uint16
	high := size - 1
	for s, c := range counts {
		if c == -1 {
			t.entries[high].sym = uint8(s)
			high--
			next[s] = 1
		} else if c > 0 {
			next[s] = uint16(c)
		}
	}
	step := size>>1 + size>>3 + 3
	pos := 0
	for s, c := range counts {
		for range max(int(c), 0) {
			t.entries[pos].sym = uint8(s)
			for {
				pos = (pos + step) & (size - 1)
				if pos <= high {
					break
				}
			}
		}
	}
	if pos != 0 {
		return fmt.Errorf("%w: FSE counts do not spread over the table", errZstdCorrupt)
	}
	for i := range t.entries {
		e := &t.entries[i]
		n := int(next[e.sym])
		next[e.sym]++
		if n == 0 {
			return fmt.Errorf("%w: FSE table inconsistent", errZstdCorrupt)
		}
		e.bits = uint8(log - (bits.Len(uint(n)) - 1))
		e.state = uint16(n<<e.bits - size)
	}
	return nil
}

// rle makes a one-symbol table that reads no bits.
func (t *fseTable) rle(sym uint8) {
	if cap(t.entries) < 1 {
		t.entries = make([]fseEntry, 1, 1<<9)
	}
	t.entries = t.entries[:1]
	t.entries[0] = fseEntry{sym: sym}
	t.log = 0
}

// The sequence codes' baselines and extra bits (RFC 8878 3.1.1.3.2.1.1).
var (
	llBase = [36]uint32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
		16, 18, 20, 22, 24, 28, 32, 40, 48, 64, 128, 256, 512, 1024, 2048, 4096,
		8192, 16384, 32768, 65536}
	llExtra = [36]uint8{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		1, 1, 1, 1, 2, 2, 3, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	mlBase = [53]uint32{3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,
		19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34,
		35, 37, 39, 41, 43, 47, 51, 59, 67, 83, 99, 131, 259, 515, 1027, 2051,
		4099, 8195, 16387, 32771, 65539}
	mlExtra = [53]uint8{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		1, 1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 7, 8, 9, 10, 11,
		12, 13, 14, 15, 16}
	// The predefined distributions, used when a block says so.
	llDefault = []int16{4, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1,
		2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 2, 1, 1, 1, 1, 1, -1, -1, -1, -1}
	mlDefault = []int16{1, 4, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1,
		1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
		1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1}
	ofDefault = []int16{1, 1, 1, 1, 1, 1, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1,
		1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1}
)

// sequences decodes the sequences section and executes it, appending
// the block's content to out.
func (d *zstdFrame) sequences(out, in []byte) ([]byte, error) {
	if len(in) < 1 {
		return nil, fmt.Errorf("%w: missing sequences section", errZstdCorrupt)
	}
	var count int
	switch b := int(in[0]); {
	case b < 128:
		count, in = b, in[1:]
	case b < 255:
		if len(in) < 2 {
			return nil, fmt.Errorf("%w: truncated sequence count", errZstdCorrupt)
		}
		count, in = (b-128)<<8|int(in[1]), in[2:]
	default:
		if len(in) < 3 {
			return nil, fmt.Errorf("%w: truncated sequence count", errZstdCorrupt)
		}
		count, in = int(in[1])|int(in[2])<<8+0x7F00, in[3:]
	}
	if count == 0 {
		if len(in) != 0 {
			return nil, fmt.Errorf("%w: bytes after an empty sequences section", errZstdCorrupt)
		}
		out, err := d.grow(out, len(d.literals))
		if err != nil {
			return nil, err
		}
		return append(out, d.literals...), nil
	}
	if len(in) < 1 {
		return nil, fmt.Errorf("%w: missing sequence modes", errZstdCorrupt)
	}
	modes := in[0]
	in = in[1:]
	if modes&3 != 0 {
		return nil, fmt.Errorf("%w: reserved sequence mode bits set", errZstdCorrupt)
	}
	kinds := [3]struct {
		t              *fseTable
		mode           uint8
		maxLog, maxSym int
		predefined     []int16
		predefinedLog  int
	}{
		{&d.ll, modes >> 6, 9, 35, llDefault, 6},
		{&d.of, modes >> 4 & 3, 8, 31, ofDefault, 5},
		{&d.m, modes >> 2 & 3, 9, 52, mlDefault, 6},
	}
	for i, k := range kinds {
		switch k.mode {
		case 0:
			if err := k.t.build(k.predefined, k.predefinedLog); err != nil {
				return nil, err
			}
		case 1:
			if len(in) < 1 || int(in[0]) > k.maxSym {
				return nil, fmt.Errorf("%w: bad RLE sequence code", errZstdCorrupt)
			}
			k.t.rle(in[0])
			in = in[1:]
		case 2:
			n, err := k.t.readDescription(in, k.maxLog, k.maxSym)
			if err != nil {
				return nil, err
			}
			in = in[n:]
		case 3:
			if !d.hasTables[i] {
				return nil, fmt.Errorf("%w: sequences repeat a table never sent", errZstdCorrupt)
			}
		}
		d.hasTables[i] = true
	}
	var r backBits
	if err := r.init(in); err != nil {
		return nil, err
	}
	ll, of, ml := d.ll.start(&r), d.of.start(&r), d.m.start(&r)
	lits := d.literals
	for i := range count {
		ofCode, mlCode, llCode := d.of.symbol(of), d.m.symbol(ml), d.ll.symbol(ll)
		if ofCode > 31 || int(mlCode) >= len(mlBase) || int(llCode) >= len(llBase) {
			return nil, fmt.Errorf("%w: sequence code out of range", errZstdCorrupt)
		}
		// Offset code 31 overflows a 32-bit int: bounded by the window
		// (three more for the repeat codes) before it becomes one.
		ov := uint64(1)<<ofCode + r.read(int(ofCode))
		if ov > d.window+3 {
			return nil, fmt.Errorf("%w: offset beyond the window", errZstdCorrupt)
		}
		offsetValue := int(ov)
		matchLen := int(mlBase[mlCode]) + int(r.read(int(mlExtra[mlCode])))
		litLen := int(llBase[llCode]) + int(r.read(int(llExtra[llCode])))
		offset, err := d.offset(offsetValue, litLen)
		if err != nil {
			return nil, err
		}
		if r.pos < 0 {
			return nil, fmt.Errorf("%w: sequences overrun their bit stream", errZstdCorrupt)
		}
		if i < count-1 {
			ll, ml, of = d.ll.next(ll, &r), d.m.next(ml, &r), d.of.next(of, &r)
		}
		if litLen > len(lits) {
			return nil, fmt.Errorf("%w: sequence uses more literals than the block has", errZstdCorrupt)
		}
		if out, err = d.grow(out, litLen+matchLen); err != nil {
			return nil, err
		}
		out = append(out, lits[:litLen]...)
		lits = lits[litLen:]
		if offset > len(out)-d.start || uint64(offset) > d.window {
			return nil, fmt.Errorf("%w: match %d bytes back, before the frame's start", errZstdCorrupt, offset)
		}
		// A match may overlap its own output: copy what exists, which
		// doubles with each pass.
		for from := len(out) - offset; matchLen > 0; {
			n := min(matchLen, len(out)-from)
			out = append(out, out[from:from+n]...)
			from += n
			matchLen -= n
		}
	}
	if r.pos != 0 {
		return nil, fmt.Errorf("%w: sequences do not end with their bit stream", errZstdCorrupt)
	}
	out, err := d.grow(out, len(lits))
	if err != nil {
		return nil, err
	}
	return append(out, lits...), nil
}

// offset turns a sequence's offset value into a distance, keeping the
// three most recent offsets as the format prescribes.
func (d *zstdFrame) offset(value, litLen int) (int, error) {
	if value > 3 {
		d.reps = [3]int{value - 3, d.reps[0], d.reps[1]}
		return d.reps[0], nil
	}
	if litLen == 0 {
		value++
	}
	switch value {
	case 1:
	case 2:
		d.reps[0], d.reps[1] = d.reps[1], d.reps[0]
	case 3:
		d.reps = [3]int{d.reps[2], d.reps[0], d.reps[1]}
	case 4:
		if d.reps[0] == 1 {
			return 0, fmt.Errorf("%w: repeat offset of zero", errZstdCorrupt)
		}
		d.reps = [3]int{d.reps[0] - 1, d.reps[0], d.reps[1]}
	}
	return d.reps[0], nil
}

// xxhash64 is XXH64 with seed 0, whose low half is a frame's checksum.
func xxhash64(b []byte) uint64 {
	const (
		p1 = 11400714785074694791
		p2 = 14029467366897019727
		p3 = 1609587929392839161
		p4 = 9650029242287828579
		p5 = 2870177450012600261
	)
	round := func(acc, v uint64) uint64 {
		return bits.RotateLeft64(acc+v*p2, 31) * p1
	}
	merge := func(acc, v uint64) uint64 {
		return (acc^round(0, v))*p1 + p4
	}
	n := uint64(len(b))
	var h uint64
	if len(b) >= 32 {
		prime1, prime2 := uint64(p1), uint64(p2)
		v1, v2, v3, v4 := prime1+prime2, prime2, uint64(0), -prime1
		for ; len(b) >= 32; b = b[32:] {
			v1 = round(v1, binary.LittleEndian.Uint64(b))
			v2 = round(v2, binary.LittleEndian.Uint64(b[8:]))
			v3 = round(v3, binary.LittleEndian.Uint64(b[16:]))
			v4 = round(v4, binary.LittleEndian.Uint64(b[24:]))
		}
		h = bits.RotateLeft64(v1, 1) + bits.RotateLeft64(v2, 7) + bits.RotateLeft64(v3, 12) + bits.RotateLeft64(v4, 18)
		h = merge(merge(merge(merge(h, v1), v2), v3), v4)
	} else {
		h = p5
	}
	h += n
	for ; len(b) >= 8; b = b[8:] {
		h ^= round(0, binary.LittleEndian.Uint64(b))
		h = bits.RotateLeft64(h, 27)*p1 + p4
	}
	if len(b) >= 4 {
		h ^= uint64(binary.LittleEndian.Uint32(b)) * p1
		h = bits.RotateLeft64(h, 23)*p2 + p3
		b = b[4:]
	}
	for _, c := range b {
		h ^= uint64(c) * p5
		h = bits.RotateLeft64(h, 11) * p1
	}
	h ^= h >> 33
	h *= p2
	h ^= h >> 29
	h *= p3
	h ^= h >> 32
	return h
}
