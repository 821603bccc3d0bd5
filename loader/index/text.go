package index

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/modautoload/modautoload/internal/excerpt"
	"github.com/modautoload/modautoload/internal/problemcap"
	"github.com/modautoload/modautoload/internal/regfile"

	"github.com/modautoload/modautoload/internal/fnmatch"
)

// Kind names one of depmod's indexes and says how its text form maps to
// the keys and values of its binary form.
type Kind int

const (
	// KindDep is modules.dep: "path/mod.ko: dep.ko...". The key is the
	// module name, the value the whole line, the priority the line index.
	KindDep Kind = iota
	// KindAlias is modules.alias: "alias PATTERN MODULE". The key is the
	// pattern with '-' turned into '_' outside brackets.
	KindAlias
	// KindSymbols is modules.symbols: "alias symbol:NAME MODULE".
	KindSymbols
	// KindBuiltin is modules.builtin: "kernel/path/mod.ko". The key is the
	// module name, the value empty, the priority 0.
	KindBuiltin
	// KindBuiltinAlias is modules.builtin.alias.bin. Its text form is
	// "alias PATTERN MODULE" lines with priority 0; depmod itself writes no
	// such file but derives the index from modules.builtin.modinfo
	// (KindBuiltinModinfo), which Open falls back to.
	KindBuiltinAlias
	// KindBuiltinModinfo reads modules.builtin.modinfo ("mod.key=value",
	// NUL-separated) into the same index as KindBuiltinAlias.
	KindBuiltinModinfo
)

var kindNames = [...]struct{ text, bin string }{
	KindDep:            {"modules.dep", "modules.dep.bin"},
	KindAlias:          {"modules.alias", "modules.alias.bin"},
	KindSymbols:        {"modules.symbols", "modules.symbols.bin"},
	KindBuiltin:        {"modules.builtin", "modules.builtin.bin"},
	KindBuiltinAlias:   {"modules.builtin.alias", "modules.builtin.alias.bin"},
	KindBuiltinModinfo: {"modules.builtin.modinfo", "modules.builtin.alias.bin"},
}

func (k Kind) valid() bool { return k >= 0 && int(k) < len(kindNames) }

// TextName is the file name of the kind's text form.
func (k Kind) TextName() string {
	if !k.valid() {
		return ""
	}
	return kindNames[k].text
}

// BinName is the file name of the kind's binary form.
func (k Kind) BinName() string {
	if !k.valid() {
		return ""
	}
	return kindNames[k].bin
}

func (k Kind) String() string {
	if !k.valid() {
		return fmt.Sprintf("Kind(%d)", int(k))
	}
	return k.TextName()
}

// Order maps module names to the priorities depmod gives their values in
// modules.alias.bin and modules.symbols.bin: the module's index in
// depmod's module array, which is modules.dep's line order.
type Order map[string]uint32

// LoadOrder reads the module order of the module directory dir from
// modules.dep.bin, or from modules.dep when that is missing.
func LoadOrder(dir string) (Order, error) {
	order := Order{}
	t, err := OpenTrie(filepath.Join(dir, KindDep.BinName()))
	if errors.Is(err, os.ErrNotExist) {
		data, err := regfile.Read(filepath.Join(dir, KindDep.TextName()), maxTextIndex)
		if err != nil {
			return nil, err
		}
		var n uint32
		for line := range lines(data) {
			if name, _, ok := depLine(line.text); ok {
				order[name] = n
				n++
			}
		}
		return order, nil
	}
	if err != nil {
		return nil, err
	}
	defer t.Close()
	err = t.Walk(func(key string, values []Value) error {
		order[key] = values[0].Priority
		return nil
	})
	return order, err
}

// Open opens the index of the given kind in the module directory dir: the
// binary file if it exists, else its text form (for KindBuiltinAlias,
// modules.builtin.alias, else modules.builtin.modinfo), with priorities from
// LoadOrder where the kind needs them. bad lists the malformed text lines
// that were skipped.
func Open(dir string, kind Kind) (t *Trie, bad []error, err error) {
	if !kind.valid() {
		return nil, nil, fmt.Errorf("unknown index kind %d", int(kind))
	}
	t, err = OpenTrie(filepath.Join(dir, kind.BinName()))
	if !errors.Is(err, os.ErrNotExist) {
		return t, nil, err
	}
	var order Order
	if kind == KindAlias || kind == KindSymbols {
		if order, err = LoadOrder(dir); err != nil {
			return nil, nil, err
		}
	}
	t, bad, err = LoadText(filepath.Join(dir, kind.TextName()), kind, order)
	if kind == KindBuiltinAlias && errors.Is(err, os.ErrNotExist) {
		return LoadText(filepath.Join(dir, KindBuiltinModinfo.TextName()), KindBuiltinModinfo, nil)
	}
	return t, bad, err
}

// maxTextIndex bounds a text index file; Debian's largest,
// modules.builtin.modinfo, is under 1 MiB.
const maxTextIndex = 256 << 20

// LoadText builds the index of the given kind from its text file, with the
// same keys, values, priorities and value order as the .bin file depmod
// writes from the same data, so lookups give identical results. order
// gives the priorities of KindAlias and KindSymbols values; a module it
// lacks (or all, if order is nil) ranks after those it has, in order of
// first appearance. Malformed lines are skipped and returned in bad as
// "file:line: reason" errors, the first 100 of them and then their count;
// the rest of the file still applies.
func LoadText(path string, kind Kind, order Order) (t *Trie, bad []error, err error) {
	data, err := regfile.Read(path, maxTextIndex)
	if err != nil {
		return nil, nil, err
	}
	return ParseText(path, data, kind, order)
}

// ParseText is LoadText on file content already read; name is used in
// errors.
func ParseText(name string, data []byte, kind Kind, order Order) (t *Trie, bad []error, err error) {
	if !kind.valid() {
		return nil, nil, fmt.Errorf("%s: unknown index kind %d", name, int(kind))
	}
	b := builder{root: &buildNode{}}
	extra := map[string]uint32{} // priorities of modules order lacks
	priority := func(module string) uint32 {
		if p, ok := order[module]; ok {
			return p
		}
		p, ok := extra[module]
		if !ok {
			p = uint32(len(order) + len(extra))
			extra[module] = p
		}
		return p
	}
	var problems problemcap.Counter
	report := func(line int, format string, args ...any) {
		if problems.Keep(line) {
			bad = append(bad, fmt.Errorf("%s:%d: %s", name, line, fmt.Sprintf(format, args...)))
		}
	}
	add := func(line int, key, value string, prio uint32) {
		if len(key) > maxKeyLen {
			report(line, "key of %d bytes is longer than %d", len(key), maxKeyLen)
			return
		}
		if i := strings.IndexFunc(key+value, func(r rune) bool { return r == 0 || r >= childMax }); i >= 0 {
			report(line, "non-ASCII or NUL character in %+q", excerpt.Of(key+" "+value))
			return
		}
		b.insert(key, value, prio)
	}

	if kind == KindBuiltinModinfo {
		parseModinfo(data, add, report)
	} else {
		var depIndex uint32
		for l := range lines(data) {
			text := l.text
			if strings.TrimSpace(text) == "" || (text[0] == '#' && kind != KindBuiltin) {
				continue
			}
			switch kind {
			case KindDep:
				name, _, ok := depLine(text)
				if !ok {
					report(l.n, "no ':' after the module path")
					continue
				}
				add(l.n, name, text, depIndex)
				depIndex++
			case KindAlias, KindSymbols, KindBuiltinAlias:
				rest, ok := strings.CutPrefix(text, "alias ")
				sp := strings.LastIndexByte(rest, ' ')
				if !ok || sp <= 0 || sp == len(rest)-1 {
					report(l.n, "want \"alias PATTERN MODULE\"")
					continue
				}
				key, module := rest[:sp], rest[sp+1:]
				switch kind {
				case KindSymbols:
					if !strings.HasPrefix(key, "symbol:") {
						report(l.n, "symbol alias %q lacks \"symbol:\"", excerpt.Of(key))
						continue
					}
					add(l.n, key, module, priority(module))
				case KindAlias:
					norm, err := normalizeAlias(key)
					if err != nil {
						report(l.n, "%v", err)
						continue
					}
					add(l.n, norm, module, priority(module))
				default:
					norm, err := normalizeAlias(key)
					if err != nil {
						report(l.n, "%v", err)
						continue
					}
					add(l.n, norm, module, 0)
				}
			case KindBuiltin:
				if c := text[0]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
					report(l.n, "module path does not start with a letter")
					continue
				}
				add(l.n, ModuleName(text), "", 0)
			}
		}
	}
	if line, msg, ok := problems.Rest(); ok {
		bad = append(bad, fmt.Errorf("%s:%d: %s", name, line, msg))
	}
	out, err := b.bytes()
	if err != nil {
		return nil, bad, fmt.Errorf("%s: %w", name, err)
	}
	t, err = NewTrie(name, out)
	return t, bad, err
}

type line struct {
	n    int // 1-based line number
	text string
}

// lines yields data's lines without their newlines.
func lines(data []byte) func(func(line) bool) {
	return func(yield func(line) bool) {
		for n := 1; len(data) > 0; n++ {
			text := data
			if i := bytes.IndexByte(data, '\n'); i >= 0 {
				text, data = data[:i], data[i+1:]
			} else {
				data = nil
			}
			if !yield(line{n, string(text)}) {
				return
			}
		}
	}
}

// depLine splits a modules.dep line into the module name and the path.
func depLine(text string) (name, path string, ok bool) {
	path, _, ok = strings.Cut(text, ":")
	if !ok || path == "" {
		return "", "", false
	}
	return ModuleName(path), path, true
}

// ModuleName is libkmod's path_to_modname: the base name up to its first '.',
// with '-' turned into '_'.
func ModuleName(path string) string {
	base := path[strings.LastIndexByte(path, '/')+1:]
	if i := strings.IndexByte(base, '.'); i >= 0 {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}

// maxAliasLen is the length at which depmod cuts the keys it indexes.
const maxAliasLen = 4095

// normalizeAlias is libkmod's alias_normalize, which depmod applies to the
// keys of modules.alias.bin and modules.builtin.alias.bin, cut at the
// length depmod indexes.
func normalizeAlias(alias string) (string, error) {
	s, ok := fnmatch.Underscores(alias)
	if !ok {
		return "", fmt.Errorf("unbalanced brackets in alias %q", excerpt.Of(alias))
	}
	if len(s) > maxAliasLen {
		s = s[:maxAliasLen]
	}
	return s, nil
}

// parseModinfo reads modules.builtin.modinfo, NUL-separated
// "module.key=value" records, and adds each alias with priority 0, as
// depmod builds modules.builtin.alias.bin. Record numbers stand in for line
// numbers.
func parseModinfo(data []byte, add func(int, string, string, uint32), report func(int, string, ...any)) {
	for n := 1; len(data) > 0; n++ {
		rec := data
		if i := bytes.IndexByte(data, 0); i >= 0 {
			rec, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		if len(rec) == 0 {
			continue
		}
		module, kv, ok1 := strings.Cut(string(rec), ".")
		key, value, ok2 := strings.Cut(kv, "=")
		if !ok1 || !ok2 || module == "" {
			report(n, "want \"module.key=value\"")
			continue
		}
		if key != "alias" || value == "" {
			continue
		}
		norm, err := normalizeAlias(value)
		if err != nil {
			report(n, "%v", err)
			continue
		}
		add(n, norm, module, 0)
	}
}

// builder is depmod's in-memory index: a trie whose nodes keep the rest of
// their label as a prefix, built by the same insertion so that the same
// input gives the same trie and the same value order.
type builder struct {
	root *buildNode
	out  []byte
}

type buildNode struct {
	prefix   string
	values   []Value // as inserted; write puts them in depmod's order
	children []childEdge
}

type childEdge struct {
	ch   byte
	node *buildNode
}

func (n *buildNode) child(ch byte) *buildNode {
	for _, e := range n.children {
		if e.ch == ch {
			return e.node
		}
	}
	return nil
}

func (n *buildNode) addChild(ch byte, c *buildNode) {
	i := 0
	for i < len(n.children) && n.children[i].ch < ch {
		i++
	}
	n.children = append(n.children, childEdge{})
	copy(n.children[i+1:], n.children[i:])
	n.children[i] = childEdge{ch, c}
}

// insert is depmod's index_insert.
func (b *builder) insert(key, value string, prio uint32) {
	n, i := b.root, 0
	for {
		j := 0
		for ; j < len(n.prefix); j++ {
			if i+j == len(key) || n.prefix[j] != key[i+j] {
				// Split: n keeps prefix[:j]; a child at prefix[j] takes
				// the rest of the label with n's values and children.
				rest := &buildNode{prefix: n.prefix[j+1:], values: n.values, children: n.children}
				*n = buildNode{prefix: n.prefix[:j], children: []childEdge{{n.prefix[j], rest}}}
				break
			}
		}
		i += j
		if i == len(key) {
			n.values = append(n.values, Value{prio, value})
			return
		}
		c := n.child(key[i])
		if c == nil {
			c = &buildNode{prefix: key[i+1:], values: []Value{{prio, value}}}
			n.addChild(key[i], c)
			return
		}
		n, i = c, i+1
	}
}

// bytes serializes the trie as depmod's index_write does.
func (b *builder) bytes() ([]byte, error) {
	b.out = binary.BigEndian.AppendUint32(b.out[:0], trieMagic)
	b.out = binary.BigEndian.AppendUint32(b.out, trieMajor<<16|1)
	b.out = binary.BigEndian.AppendUint32(b.out, 0)
	root := b.write(b.root)
	if len(b.out) > offsetMask {
		return nil, fmt.Errorf("index of %d bytes exceeds the format's %d", len(b.out), offsetMask)
	}
	binary.BigEndian.PutUint32(b.out[8:], root)
	return b.out, nil
}

// write appends n after its children (post-order) and returns its
// reference.
func (b *builder) write(n *buildNode) uint32 {
	var refs []uint32
	if len(n.children) > 0 {
		first, last := n.children[0].ch, n.children[len(n.children)-1].ch
		refs = make([]uint32, int(last-first)+1)
		for _, e := range n.children {
			refs[e.ch-first] = b.write(e.node)
		}
	}
	ref := uint32(len(b.out)) // an oversized index is caught by the caller
	if n.prefix != "" {
		b.out = append(append(b.out, n.prefix...), 0)
		ref |= flagPrefix
	}
	if len(refs) > 0 {
		b.out = append(b.out, n.children[0].ch, n.children[len(n.children)-1].ch)
		for _, r := range refs {
			b.out = binary.BigEndian.AppendUint32(b.out, r)
		}
		ref |= flagChildren
	}
	if len(n.values) > 0 {
		b.out = binary.BigEndian.AppendUint32(b.out, uint32(len(n.values)))
		values := slices.Clone(n.values)
		orderAsAdded(values)
		for _, v := range values {
			b.out = binary.BigEndian.AppendUint32(b.out, v.Priority)
			b.out = append(append(b.out, v.Value...), 0)
		}
		ref |= flagValues
	}
	return ref
}
