// Package index reads kmod's module indexes (modules.alias, modules.dep,
// modules.symbols, modules.builtin, modules.builtin.alias) and answers the
// same lookups libkmod does, with the same results in the same order.
//
// The binary form (*.bin, a trie written by depmod) is read by OpenTrie
// through a read-only mmap. When a .bin file is missing, LoadText builds
// the same trie in memory from the text file depmod wrote beside it, so
// both forms answer through the same code. Every read from an index file is
// bounds-checked: a corrupt or truncated file gives a *CorruptError naming
// the file and offset, never a panic or an endless walk.
//
// Priorities: depmod stores each value with a priority, and libkmod lists
// wildcard matches by ascending priority. For modules.dep, modules.alias and
// modules.symbols the priority is the module's index in depmod's module
// array, which is sorted by modules.order (the line order of modules.dep);
// for modules.builtin and modules.builtin.alias it is 0.
//
// SearchWild returns what libkmod's index_mm_searchwild returns: one value
// per matching (pattern, module) pair, so a module whose patterns match
// twice appears twice, as modprobe --resolve-alias prints it; equal
// priorities keep libkmod's order (the value found later first). Keys are
// looked up as given: callers normalise aliases and module names ('-' to
// '_' outside brackets) first, as libkmod does.
package index

import (
	"errors"
	"fmt"
)

// Value is one value stored under a key, with the priority depmod gave it.
type Value struct {
	Priority uint32
	Value    string
}

// Index answers lookups on one module index. *Trie implements it, whether
// opened from a .bin file or built from text; consumers can substitute
// fakes in tests.
type Index interface {
	// Search returns the values stored under exactly key.
	Search(key string) ([]Value, error)
	// SearchWild returns the values of every stored key that matches key,
	// treating stored keys as fnmatch patterns, in libkmod's order.
	SearchWild(key string) ([]Value, error)
	// DropPages lets the kernel take the index's pages out of the
	// process's resident memory until the next lookup faults them back
	// from the page cache (a daemon drops them after each request). It
	// does nothing if no lookup ran since the last call.
	DropPages() error
	// Close releases the index; it must not be used afterwards.
	Close() error
}

// ErrClosed is returned by lookups on a closed index.
var ErrClosed = errors.New("index is closed")

// CorruptError reports malformed index content.
type CorruptError struct {
	File   string // file name as given to the constructor
	Offset int64  // byte offset of the problem
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("%s: offset %#x: %s", e.File, e.Offset, e.Reason)
}
