package index

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/modautoload/modautoload/internal/regfile"

	"github.com/modautoload/modautoload/internal/fnmatch"
	"golang.org/x/sys/unix"
)

// File format (libkmod-index.c, depmod's index_write): big-endian u32
// header {magic, version, root}; a node reference is a file offset whose
// high bits say which parts the node has, in this order: a NUL-terminated
// prefix, a child table {u8 first, u8 last, u32 child[last-first+1]}, and
// values {u32 count, count × {u32 priority, NUL-terminated string}}.
//
// The magic is typed: untyped, it overflows int where int is 32 bits (an
// untyped constant passed to fmt's variadic arguments becomes an int).
const trieMagic uint32 = 0xB007F457

const (
	trieMajor    = 2
	headerSize   = 12
	flagPrefix   = 0x80000000
	flagValues   = 0x40000000
	flagChildren = 0x20000000
	offsetMask   = 0x0FFFFFFF
	// childMax bounds child characters: depmod indexes 7-bit ASCII only.
	childMax = 128
	// minValueSize is a value's smallest encoding: priority and a NUL.
	minValueSize = 5
	// noLowerBound is the lower bound for nodes when no sibling gives one:
	// nodes start after the header.
	noLowerBound = headerSize - 1
)

var _ Index = (*Trie)(nil)

// Trie is one of kmod's binary index files. Its methods may be called
// concurrently; Close waits for lookups in progress.
//
// depmod writes nodes in post-order: a node's whole subtree lies before it
// in the file, and each child's subtree lies after its previous sibling.
// The reader checks this while walking, so a corrupt file cannot make it
// loop or visit a shared node twice in one walk.
type Trie struct {
	name   string
	mu     sync.RWMutex // write-held by Close, which unmaps data
	data   []byte
	mapped bool
	root   uint32
	// touched says a lookup may have faulted pages in since the last
	// DropPages, which has nothing to do (and skips its system call)
	// otherwise.
	touched atomic.Bool

	// subtrees caches the keys below wildcard branches (subtreeKey to
	// []storedKey), filled as searches visit them; cached counts the bytes
	// of their patterns, bounded by keyBudget.
	subtrees sync.Map
	cached   atomic.Int64
}

// keyBudget bounds the bytes of keys a Trie copies out of the file: in all,
// the patterns its wildcard cache keeps; in one Walk, the keys it passes
// on. In the file, keys share their prefixes; copied out, each has its
// own, so a crafted file with a long prefix above many short branches
// would take memory quadratic in its size. Debian's modules.alias.bin needs
// 0.4 times its size with every wildcard subtree cached, and its keys add
// up to 0.67 times; the floor covers small indexes.
func (t *Trie) keyBudget() int64 { return 4*int64(len(t.data)) + 64<<10 }

// OpenTrie maps the index file at path read-only and checks its header.
func OpenTrie(path string) (*Trie, error) {
	f, err := regfile.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close() // the mapping outlives the descriptor
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	if size < headerSize {
		return nil, &CorruptError{path, 0, fmt.Sprintf("file of %d bytes is shorter than the header", size)}
	}
	if size != int64(int(size)) {
		return nil, fmt.Errorf("%s: file too large to map (%d bytes)", path, size)
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_PRIVATE)
	if err != nil {
		return nil, fmt.Errorf("%s: mmap: %w", path, err)
	}
	t, err := NewTrie(path, data)
	if err != nil {
		unix.Munmap(data)
		return nil, err
	}
	t.mapped = true
	return t, nil
}

// NewTrie reads an index from data, which must stay unmodified while the
// Trie is in use; name is used in errors.
func NewTrie(name string, data []byte) (*Trie, error) {
	if len(data) < headerSize {
		return nil, &CorruptError{name, 0, fmt.Sprintf("file of %d bytes is shorter than the header", len(data))}
	}
	if m := binary.BigEndian.Uint32(data); m != trieMagic {
		return nil, &CorruptError{name, 0, fmt.Sprintf("bad magic %#08x, want %#08x", m, trieMagic)}
	}
	if v := binary.BigEndian.Uint32(data[4:]); v>>16 != trieMajor {
		return nil, &CorruptError{name, 4, fmt.Sprintf("unsupported format version %d.%d, want %d.x", v>>16, v&0xffff, trieMajor)}
	}
	return &Trie{name: name, data: data, root: binary.BigEndian.Uint32(data[8:])}, nil
}

// DropPages implements [Index]; an index built in memory has nothing to
// drop.
func (t *Trie) DropPages() error {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if !t.mapped || t.data == nil || !t.touched.Swap(false) {
		return nil
	}
	return unix.Madvise(t.data, unix.MADV_DONTNEED)
}

// Close unmaps the file. Lookups after Close return ErrClosed.
func (t *Trie) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	data := t.data
	t.data = nil
	if t.mapped && data != nil {
		return unix.Munmap(data)
	}
	return nil
}

// node is a parsed node header; its slices point into the file.
type node struct {
	off         uint32 // file offset, without flags
	prefix      []byte
	first, last byte
	children    []byte // (last-first+1) big-endian u32 references; nil if none
	table       int    // offset of children in the file
	nvalues     uint32
	values      int // offset of the first value
}

func (t *Trie) corrupt(off int, format string, args ...any) error {
	return &CorruptError{t.name, int64(off), fmt.Sprintf(format, args...)}
}

// scanBudget bounds the bytes one lookup may scan for string ends. In a
// well-formed file, nodes do not overlap, so a walk scans each byte once
// and a wildcard search at most once per key position (nested wildcard
// subtrees) plus once on its way down. Crafted overlapping nodes could
// otherwise make every visit scan most of the file.
//
// The product saturates: where int is 32 bits, a 2 KiB key against a
// 1 MiB index would wrap it negative and fail a sound lookup as corrupt.
func (t *Trie) scanBudget(key string) int {
	rounds := len(key) + 2
	if len(t.data) > 0 && rounds > math.MaxInt/len(t.data) {
		return math.MaxInt
	}
	return rounds * len(t.data)
}

// scan returns the length of the NUL-terminated string at d[p:], charging
// the bytes read to budget.
func (t *Trie) scan(p int, budget *int, what string) (int, error) {
	end := bytes.IndexByte(t.data[p:], 0)
	if end < 0 {
		return 0, t.corrupt(p, "%s runs past end of file", what)
	}
	if *budget -= end + 1; *budget < 0 {
		return 0, t.corrupt(p, "%s: nodes overlap (read more than a well-formed index needs)", what)
	}
	return end, nil
}

// readNode parses the node that ref points to. A reference whose offset is
// 0 means "no node" to libkmod; callers check that first.
func (t *Trie) readNode(ref uint32, budget *int) (node, error) {
	d := t.data
	n := node{off: ref & offsetMask}
	p := int(n.off)
	if p > len(d) || (p == len(d) && ref&(flagPrefix|flagChildren|flagValues) != 0) {
		return n, t.corrupt(p, "node past end of file (size %#x)", len(d))
	}
	if ref&flagPrefix != 0 {
		end, err := t.scan(p, budget, "prefix")
		if err != nil {
			return n, err
		}
		n.prefix = d[p : p+end]
		p += end + 1
	}
	if ref&flagChildren != 0 {
		if len(d)-p < 2 {
			return n, t.corrupt(p, "child range past end of file")
		}
		n.first, n.last = d[p], d[p+1]
		// depmod's keys are 7-bit C strings: no NUL, nothing above 0x7f.
		if n.first == 0 || n.first > n.last || n.last >= childMax {
			return n, t.corrupt(p, "bad child range %#x-%#x", n.first, n.last)
		}
		size := 4 * (int(n.last-n.first) + 1)
		p += 2
		if len(d)-p < size {
			return n, t.corrupt(p, "child table past end of file")
		}
		n.children, n.table = d[p:p+size], p
		p += size
	}
	if ref&flagValues != 0 {
		if len(d)-p < 4 {
			return n, t.corrupt(p, "value count past end of file")
		}
		n.nvalues = binary.BigEndian.Uint32(d[p:])
		p += 4
		if uint64(n.nvalues)*minValueSize > uint64(len(d)-p) {
			return n, t.corrupt(p-4, "value count %d does not fit in the file", n.nvalues)
		}
		n.values = p
	}
	return n, nil
}

// childRef returns n's child reference for ch (0 if none), requiring its
// offset to lie strictly between lo and n's own offset, as depmod's
// post-order layout guarantees.
func (t *Trie) childRef(n *node, ch byte, lo uint32) (uint32, error) {
	if n.children == nil || ch < n.first || ch > n.last {
		return 0, nil
	}
	at := 4 * int(ch-n.first)
	ref := binary.BigEndian.Uint32(n.children[at:])
	off := ref & offsetMask
	if off == 0 {
		return 0, nil
	}
	if off <= lo || off >= n.off {
		return 0, t.corrupt(n.table+at, "child %q points to %#x, outside [%#x, %#x) where depmod puts it (a cycle?)", ch, off, lo+1, n.off)
	}
	return ref, nil
}

// value reads the value at offset p.
func (t *Trie) value(p int, budget *int) (prio uint32, s []byte, next int, err error) {
	d := t.data
	if len(d)-p < minValueSize {
		return 0, nil, 0, t.corrupt(p, "value past end of file")
	}
	prio = binary.BigEndian.Uint32(d[p:])
	end, err := t.scan(p+4, budget, "value string")
	if err != nil {
		return 0, nil, 0, err
	}
	return prio, d[p+4 : p+4+end], p + 4 + end + 1, nil
}

// lookup runs fn with the mapping held, turning a fault on the mapping
// (the file truncated under us) into an error instead of a crash.
func (t *Trie) lookup(fn func() error) (err error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.data == nil {
		return fmt.Errorf("%s: %w", t.name, ErrClosed)
	}
	// Marked when the lookup is done: a DropPages meanwhile may have
	// taken the pages it had faulted so far, and what it faults after
	// must be dropped by the next.
	defer t.touched.Store(true)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if _, fault := r.(interface{ Addr() uintptr }); !fault {
				panic(r)
			}
			err = fmt.Errorf("%s: %v (file changed while mapped?)", t.name, r)
		}
	}()
	return fn()
}

// cstring cuts key at its first NUL, where libkmod's C string ends.
func cstring(key string) string {
	if i := strings.IndexByte(key, 0); i >= 0 {
		return key[:i]
	}
	return key
}

// Search returns the values stored under exactly key, in file order
// (ascending priority). libkmod's index_mm_search returns the first of
// them only; the caller decides.
func (t *Trie) Search(key string) ([]Value, error) {
	var out []Value
	err := t.lookup(func() error {
		key := cstring(key)
		budget := t.scanBudget(key)
		ref, i := t.root, 0
		for ref&offsetMask != 0 {
			n, err := t.readNode(ref, &budget)
			if err != nil {
				return err
			}
			if len(key)-i < len(n.prefix) || key[i:i+len(n.prefix)] != string(n.prefix) {
				return nil
			}
			i += len(n.prefix)
			if i == len(key) {
				out, err = t.appendValues(nil, &n, &budget)
				return err
			}
			if ref, err = t.childRef(&n, key[i], noLowerBound); err != nil {
				return err
			}
			i++
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// appendValues appends n's values in file order.
func (t *Trie) appendValues(out []Value, n *node, budget *int) ([]Value, error) {
	if out == nil && n.nvalues > 0 {
		out = make([]Value, 0, n.nvalues)
	}
	p := n.values
	for range n.nvalues {
		prio, s, next, err := t.value(p, budget)
		if err != nil {
			return out, err
		}
		out = append(out, Value{prio, string(s)})
		p = next
	}
	return out, nil
}

// SearchWild returns the values of every stored key that matches key, the
// way libkmod's index_mm_searchwild finds them: it follows key down the
// trie; wherever the stored keys continue with '*', '?' or '[' (inside a
// node's prefix, or as a child), it collects every stored key below that
// point whose remainder, as an fnmatch pattern, matches the remainder of
// key; and it adds the values stored under exactly key.
//
// Order: each value is inserted before the first one already collected
// whose priority is greater or equal, as libkmod's add_value does; so the
// result is sorted by priority, and among equal priorities the value found
// later comes first. Subtrees are visited children first, in ascending
// character order, then the node's own values in file order; at each node
// on the path, the '*', '?' and '[' subtrees are visited in that order,
// before the exact match.
func (t *Trie) SearchWild(key string) ([]Value, error) {
	w := wildSearch{t: t, key: cstring(key), buf: make([]byte, 0, 128)}
	w.budget = t.scanBudget(w.key)
	if err := t.lookup(w.descend); err != nil {
		return nil, err
	}
	orderAsAdded(w.out)
	return w.out, nil
}

type wildSearch struct {
	t      *Trie
	key    string
	buf    []byte // the stored key from the wildcard on, as a pattern
	out    []Value
	budget int // see scanBudget
}

// descend follows the key from the root (index_mm_searchwild_node).
func (w *wildSearch) descend() error {
	t := w.t
	ref, i := t.root, 0
	for ref&offsetMask != 0 {
		n, err := t.readNode(ref, &w.budget)
		if err != nil {
			return err
		}
		for j, ch := range n.prefix {
			if ch == '*' || ch == '?' || ch == '[' {
				return w.collect(n, j, w.key[i+j:])
			}
			if i+j >= len(w.key) || ch != w.key[i+j] {
				return nil
			}
		}
		i += len(n.prefix)
		for _, wild := range [...]byte{'*', '?', '['} {
			cref, err := t.childRef(&n, wild, noLowerBound)
			if err != nil {
				return err
			}
			if cref == 0 {
				continue
			}
			child, err := t.readNode(cref, &w.budget)
			if err != nil {
				return err
			}
			w.buf = append(w.buf, wild)
			err = w.collect(child, 0, w.key[i:])
			w.buf = w.buf[:len(w.buf)-1]
			if err != nil {
				return err
			}
		}
		if i == len(w.key) {
			return w.addValues(&n)
		}
		if ref, err = t.childRef(&n, w.key[i], noLowerBound); err != nil {
			return err
		}
		i++
	}
	return nil
}

// collect adds the values of every stored key in the subtree at n (whose
// keys continue with n.prefix[j:]) that matches subkey as an fnmatch
// pattern from the wildcard on (index_mm_searchwild_all). The subtree's
// keys are read from the file once and kept: walking the same wildcard
// branch for every lookup was most of the cost of a search.
func (w *wildSearch) collect(n node, j int, subkey string) error {
	keys, err := w.t.subtree(n, j, w.buf, &w.budget)
	if err != nil {
		return err
	}
	for i := range keys {
		if fnmatch.Match(keys[i].pattern, subkey) {
			if err := w.addValues(&node{values: keys[i].values, nvalues: keys[i].nvalues}); err != nil {
				return err
			}
		}
	}
	return nil
}

// storedKey is a key below a wildcard branch: the pattern from the
// wildcard on, and where its values are.
type storedKey struct {
	pattern string
	values  int
	nvalues uint32
}

type subtreeKey struct {
	off uint32
	j   int
}

// subtree returns the keys with values in the subtree at n, in libkmod's
// visiting order (children first, by ascending character, then the node),
// each pattern starting with lead. The result is cached per subtree; lead
// is the same for every visit of a subtree, since a node has one parent.
func (t *Trie) subtree(n node, j int, lead []byte, budget *int) ([]storedKey, error) {
	k := subtreeKey{n.off, j}
	if keys, ok := t.subtrees.Load(k); ok {
		return keys.([]storedKey), nil
	}
	var keys []storedKey
	var size int64 // charged to t.cached as the patterns are copied
	buf := append(make([]byte, 0, 128), lead...)
	err := t.traverse(n, j, buf, budget, false, func(n node, pattern []byte) error {
		size += int64(len(pattern))
		if t.cached.Add(int64(len(pattern))) > t.keyBudget() {
			return t.corrupt(int(n.off), "patterns below wildcards exceed %d bytes, 4 times the file size (depmod's need less than half)", t.keyBudget())
		}
		keys = append(keys, storedKey{pattern: string(pattern), values: n.values, nvalues: n.nvalues})
		return nil
	})
	if err != nil {
		t.cached.Add(-size)
		return nil, err
	}
	if _, loaded := t.subtrees.LoadOrStore(k, keys); loaded {
		t.cached.Add(-size) // a concurrent search cached it first
	}
	return keys, nil
}

// maxKeyLen bounds the keys a traversal builds. depmod's keys are at most
// 4,095 bytes (it cuts aliases there, as the kernel does; module and symbol
// names are shorter). Past it the file is crafted: a chain of nodes 6 bytes
// each would otherwise make the path a traversal keeps, and its key, grow
// with the file.
const maxKeyLen = 4 * (maxAliasLen + 1)

// pathNode is a node on a traversal's path, as much of it as the
// traversal still needs (a crafted path is thousands of nodes deep): where
// its child table and values are, the next child character to visit, the
// lower bound for that child, and the key's length before the node's part.
type pathNode struct {
	table, values, base int
	off, lo, nvalues    uint32
	first, last, next   byte
}

func newPathNode(n *node, lo uint32, base int) pathNode {
	return pathNode{table: n.table, values: n.values, base: base, off: n.off, lo: lo, nvalues: n.nvalues, first: n.first, last: n.last, next: n.first}
}

// node rebuilds the node from what p kept.
func (p *pathNode) node(t *Trie) node {
	n := node{off: p.off, first: p.first, last: p.last, table: p.table, nvalues: p.nvalues, values: p.values}
	if p.table != 0 { // a child table follows the header, so 0 means none
		n.children = t.data[p.table : p.table+4*(int(p.last-p.first)+1)]
	}
	return n
}

// traverse visits the subtree at n, whose key part starts at n.prefix[j:],
// depth first with children by ascending character, calling visit for each
// node with values and the key up to it (appended to buf): before the
// node's children if pre (libkmod's dump), after them if not (its wildcard
// search). The path is kept in a slice, not on the goroutine's stack: a
// crafted file's path can be as deep as the key is long.
func (t *Trie) traverse(n node, j int, buf []byte, budget *int, pre bool, visit func(n node, key []byte) error) error {
	path := append(make([]pathNode, 0, 16), newPathNode(&n, noLowerBound, len(buf)))
	buf = append(buf, n.prefix[j:]...)
	if len(buf) > maxKeyLen {
		return t.corrupt(int(n.off), "key longer than %d bytes", maxKeyLen)
	}
	if pre && n.nvalues > 0 {
		if err := visit(n, buf); err != nil {
			return err
		}
	}
	for len(path) > 0 {
		top := &path[len(path)-1]
		if top.table == 0 || top.next > top.last {
			if !pre && top.nvalues > 0 {
				if err := visit(top.node(t), buf); err != nil {
					return err
				}
			}
			buf = buf[:top.base]
			path = path[:len(path)-1]
			continue
		}
		ch := top.next
		top.next++
		n := top.node(t)
		cref, err := t.childRef(&n, ch, top.lo)
		if err != nil {
			return err
		}
		if cref == 0 {
			continue
		}
		child, err := t.readNode(cref, budget)
		if err != nil {
			return err
		}
		lo := top.lo
		top.lo = child.off // the next sibling's subtree starts after this one
		base := len(buf)
		buf = append(append(buf, ch), child.prefix...)
		if len(buf) > maxKeyLen {
			return t.corrupt(int(child.off), "key longer than %d bytes", maxKeyLen)
		}
		if pre && child.nvalues > 0 {
			if err := visit(child, buf); err != nil {
				return err
			}
		}
		path = append(path, newPathNode(&child, lo, base))
	}
	return nil
}

// addValues appends n's values in file order; SearchWild puts all it
// found in libkmod's order at the end.
func (w *wildSearch) addValues(n *node) error {
	w.out = slices.Grow(w.out, int(n.nvalues)) // readNode checked the count against the file
	p := n.values
	for range n.nvalues {
		prio, s, next, err := w.t.value(p, &w.budget)
		if err != nil {
			return err
		}
		w.out = append(w.out, Value{prio, string(s)})
		p = next
	}
	return nil
}

// orderAsAdded puts values, given in the order found, in the order that
// inserting each before the first of greater or equal priority gives
// (libkmod's add_value for a search, depmod's for an index): by ascending
// priority, and among equal priorities the latest first. Sorting once
// keeps many values under one key from taking quadratic time.
func orderAsAdded(values []Value) {
	slices.Reverse(values)
	slices.SortStableFunc(values, func(a, b Value) int { return cmp.Compare(a.Priority, b.Priority) })
}

// Walk calls fn for every key that has values, in the order of libkmod's
// index dump (a node's values before its children, children by ascending
// character). It stops at the first error from fn or the file.
func (t *Trie) Walk(fn func(key string, values []Value) error) error {
	return t.lookup(func() error {
		if t.root&offsetMask == 0 {
			return nil
		}
		budget := t.scanBudget("")
		n, err := t.readNode(t.root, &budget)
		if err != nil {
			return err
		}
		var size int64
		return t.traverse(n, 0, nil, &budget, true, func(n node, key []byte) error {
			if size += int64(len(key)); size > t.keyBudget() {
				return t.corrupt(int(n.off), "keys add up to more than %d bytes, 4 times the file size (depmod's to less than its size)", t.keyBudget())
			}
			values, err := t.appendValues(nil, &n, &budget)
			if err != nil {
				return err
			}
			return fn(string(key), values)
		})
	})
}
