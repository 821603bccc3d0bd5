package index

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modautoload/modautoload/internal/cfnmatch"

	"github.com/modautoload/modautoload/internal/fnmatch"
)

// The answers below were checked against modprobe --resolve-alias on the
// fixture and against its modules.dep, whose line numbers (from 0) are the
// priorities: intel_cstate 0, rapl 1, aesni_intel 2, sha1_ssse3 3,
// ghash_clmulni_intel 4, crc32c_intel 5, kvm_intel 7, virtio_pci 15,
// smsc 22, virtio_net 24, usbcore 27, uas 28, usb_storage 29,
// acpi_cpufreq 32, pcc_cpufreq 33, dcdbas 35, hid_generic 37.
func TestSearchWildFixture(t *testing.T) {
	alias := openTrie(t, filepath.Join(fixtureDir, "modules.alias.bin"))
	builtinAlias := openTrie(t, filepath.Join(fixtureDir, "modules.builtin.alias.bin"))
	tests := []struct {
		ix   *Trie
		key  string
		want []Value
	}{
		{alias, "virtio:d00000001v00001AF4", []Value{{24, "virtio_net"}}},
		{alias, "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00", []Value{{15, "virtio_pci"}}},
		// Model-specific and feature patterns of seven modules; two
		// patterns of acpi_cpufreq match, and both stay, as in libkmod.
		{alias, "cpu:type:x86,ven0000fam0006mod003F:feature:,0000,0016,0081,0085,0089,0094,0099,00E8", []Value{
			{0, "intel_cstate"}, {1, "rapl"}, {2, "aesni_intel"}, {3, "sha1_ssse3"}, {4, "ghash_clmulni_intel"},
			{5, "crc32c_intel"}, {7, "kvm_intel"}, {32, "acpi_cpufreq"}, {32, "acpi_cpufreq"},
		}},
		{alias, "acpi:ACPI0007:", []Value{{32, "acpi_cpufreq"}, {33, "pcc_cpufreq"}}},
		// dmi:*:[bs]vnD[Ee][Ll][Ll]*:*
		{alias, "dmi:bvnDellInc.:bvr2.3.1:bd01/01/2020:svnDellInc.:pnXPS13:", []Value{{35, "dcdbas"}}},
		{alias, "dmi:bvnDELL:svnDELL:", []Value{{35, "dcdbas"}}},
		{alias, "dmi:bvnDeLL:", nil},
		// mdio:0000000000000111110000001111????
		{alias, "mdio:00000000000001111100000011110001", []Value{{22, "smsc"}}},
		{alias, "mdio:0000000000000111110000001111000", nil},
		{alias, "usb:v0BC2p2322d0100dc00dsc00dp00ic08isc06ip62in00", []Value{{28, "uas"}}},
		{alias, "usb:v0BC2p2322d0100dc00dsc00dp00ic08isc06ip50in00", []Value{{28, "uas"}, {29, "usb_storage"}}},
		{alias, "hid:b0003g0001v0000046Dp0000C52B", []Value{{37, "hid_generic"}}},
		{alias, "aes", []Value{{2, "aesni_intel"}}},
		{alias, "nonexistent", nil},
		{alias, "", nil},
		{builtinAlias, "char_major_4_64", []Value{{0, "8250"}}},
		{builtinAlias, "crypto_sha256", []Value{{0, "sha256_generic"}}},
	}
	for _, tt := range tests {
		got, err := tt.ix.SearchWild(tt.key)
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: SearchWild(%q) = %v, %v; want %v", tt.ix.name, tt.key, got, err, tt.want)
		}
	}
}

func TestSearchFixture(t *testing.T) {
	dep := openTrie(t, filepath.Join(fixtureDir, "modules.dep.bin"))
	alias := openTrie(t, filepath.Join(fixtureDir, "modules.alias.bin"))
	symbols := openTrie(t, filepath.Join(fixtureDir, "modules.symbols.bin"))
	builtin := openTrie(t, filepath.Join(fixtureDir, "modules.builtin.bin"))
	tests := []struct {
		ix   *Trie
		key  string
		want []Value
	}{
		{dep, "usb_storage", []Value{{29, "kernel/drivers/usb/storage/usb-storage.ko: kernel/drivers/scsi/scsi_mod.ko kernel/drivers/scsi/scsi_common.ko kernel/drivers/usb/core/usbcore.ko kernel/drivers/usb/common/usb-common.ko"}}},
		{dep, "virtio_rng", []Value{{16, "kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko"}}},
		{dep, "virtio-rng", nil}, // keys are normalised; callers normalise too
		{dep, "e1000e", []Value{{23, "kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko:"}}},
		{dep, "e1000", nil},
		{dep, "e1000e_", nil},
		{symbols, "symbol:usb_register_driver", []Value{{27, "usbcore"}}},
		{builtin, "8250", []Value{{0, ""}}},
		{builtin, "825", nil},
		// Exact search treats wildcards literally and returns file order.
		{alias, "acpi*:ACPI0007:*", []Value{{32, "acpi_cpufreq"}, {33, "pcc_cpufreq"}}},
		{alias, "acpi:ACPI0007:", nil},
		{alias, "acpi", []Value{{32, "acpi_cpufreq"}}},
		{alias, "", nil},
		{alias, "acpi\x00ignored", []Value{{32, "acpi_cpufreq"}}}, // C strings end at NUL
	}
	for _, tt := range tests {
		got, err := tt.ix.Search(tt.key)
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: Search(%q) = %v, %v; want %v", tt.ix.name, tt.key, got, err, tt.want)
		}
	}
}

// TestSearchWildTies checks libkmod's order for equal priorities against
// what depmod and modprobe --resolve-alias produced for this input: each
// value goes before those of equal priority already found.
func TestSearchWildTies(t *testing.T) {
	modinfo := "a.alias=foo\x00b.alias=foo\x00c.alias=fo*\x00a.alias=f-o-[a-b]\x00c.alias=x]y\x00b.alias=fo?\x00"
	ix, bad, err := ParseText("modules.builtin.modinfo", []byte(modinfo), KindBuiltinModinfo, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) != 1 || bad[0].Error() != `modules.builtin.modinfo:5: unbalanced brackets in alias "x]y"` {
		t.Errorf("bad = %v", bad)
	}
	for key, want := range map[string][]string{
		"foo":   {"a", "b", "b", "c"},
		"fox":   {"b", "c"},
		"f_o_b": {"a"},
		"f_o_c": nil,
	} {
		got, err := ix.SearchWild(key)
		var names []string
		for _, v := range got {
			names = append(names, v.Value)
		}
		if err != nil || !reflect.DeepEqual(names, want) {
			t.Errorf("SearchWild(%q) = %v, %v; want %v", key, names, err, want)
		}
	}
	// Search returns the stored order, where depmod put b before a.
	got, _ := ix.Search("foo")
	if want := []Value{{0, "b"}, {0, "a"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("Search(foo) = %v, want %v", got, want)
	}
}

// TestSearchWildManyValues: a search that finds many values of one
// priority puts the later found first, and takes about as long as reading
// them. Inserting each in place took time quadratic in their number: 18 s
// for the 200,000 values of a 1.2 MB index.
func TestSearchWildManyValues(t *testing.T) {
	const n = 50000
	ix, _, err := ParseText("f", bytes.Repeat([]byte("alias x m\n"), n), KindBuiltinAlias, nil)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := ix.Search("x")
	if err != nil || len(stored) != n {
		t.Fatalf("Search(x): %d values, %v", len(stored), err)
	}
	want := slices.Clone(stored)
	slices.Reverse(want)
	found, err := ix.SearchWild("x")
	if err != nil || !reflect.DeepEqual(found, want) {
		t.Fatalf("SearchWild(x): %d values, %v; want the %d stored, last first", len(found), err, n)
	}
	// The best of three of each, interleaved, so that a busy machine
	// slows both alike.
	timed := func(lookup func(string) ([]Value, error)) time.Duration {
		start := time.Now()
		if _, err := lookup("x"); err != nil {
			t.Fatal(err)
		}
		return time.Since(start)
	}
	search, wild := time.Hour, time.Hour
	for range 3 {
		search = min(search, timed(ix.Search))
		wild = min(wild, timed(ix.SearchWild))
	}
	t.Logf("%d values: Search %v, SearchWild %v", n, search, wild)
	if wild > 10*search {
		t.Errorf("SearchWild of %d values took %v, Search %v", n, wild, search)
	}
}

func TestWalkFixture(t *testing.T) {
	dep := openTrie(t, filepath.Join(fixtureDir, "modules.dep.bin"))
	all := walkAll(t, dep)
	if len(all) != 41 {
		t.Errorf("Walk found %d modules, want 41", len(all))
	}
	for i := 1; i < len(all); i++ {
		if all[i-1].key >= all[i].key {
			t.Errorf("Walk order: %q before %q", all[i-1].key, all[i].key)
		}
	}
	stop := errors.New("stop")
	n := 0
	err := dep.Walk(func(string, []Value) error { n++; return stop })
	if err != stop || n != 1 {
		t.Errorf("Walk did not stop at the first error: %v after %d calls", err, n)
	}
}

func TestClose(t *testing.T) {
	ix, err := OpenTrie(filepath.Join(fixtureDir, "modules.alias.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if err := ix.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ix.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := ix.SearchWild("acpi"); !errors.Is(err, ErrClosed) {
		t.Errorf("SearchWild after Close: %v", err)
	}
	if _, err := ix.Search("acpi"); !errors.Is(err, ErrClosed) {
		t.Errorf("Search after Close: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := OpenTrie(filepath.Join(fixtureDir, "no.bin")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	short := filepath.Join(t.TempDir(), "short.bin")
	os.WriteFile(short, []byte{0xB0, 0x07}, 0o644)
	var ce *CorruptError
	if _, err := OpenTrie(short); !errors.As(err, &ce) || ce.File != short {
		t.Errorf("short file: %v", err)
	}
}

// trieFile assembles an index from a root reference and node bytes that
// start at offset 12.
func trieFile(root uint32, nodes ...[]byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, trieMagic)
	b = binary.BigEndian.AppendUint32(b, 0x00020001)
	b = binary.BigEndian.AppendUint32(b, root)
	for _, n := range nodes {
		b = append(b, n...)
	}
	return b
}

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

var errFormat = regexp.MustCompile(`^x\.bin: offset 0x[0-9a-f]+: .+`)

// TestCorrupt feeds broken files to every entry point: each must fail with
// a *CorruptError naming the file and offset, without panicking.
func TestCorrupt(t *testing.T) {
	leaf := cat(u32(1), u32(7), []byte("m\x00")) // values {7 "m"}
	tests := []struct {
		name   string
		data   []byte
		reason string // part of the expected error
	}{
		{"bad magic", cat(u32(0xB007FA57), u32(0x20001), u32(12)), "bad magic"},
		{"bad version", cat(u32(trieMagic), u32(0x30001), u32(12)), "unsupported format version 3.1"},
		{"root past end", trieFile(flagValues | 0x1000), "node past end of file"},
		{"root at end with values", trieFile(flagValues | 12), "node past end of file"},
		{"prefix unterminated", trieFile(flagPrefix|12, []byte("abc")), "prefix runs past end"},
		{"child range truncated", trieFile(flagChildren|12, []byte{'a'}), "child range past end"},
		{"child range reversed", trieFile(flagChildren|12, []byte{'b', 'a'}, u32(0)), "bad child range"},
		{"child range not ASCII", trieFile(flagChildren|12, []byte{'a', 0x80}), "bad child range"},
		{"child table truncated", trieFile(flagChildren|12, []byte{'a', 'c'}, u32(0)), "child table past end"},
		{"child is itself", trieFile(flagChildren|12, []byte{'a', 'a'}, u32(flagChildren|12)), "outside"},
		{"child after parent", trieFile(flagChildren|12, []byte{'a', 'a'}, u32(flagValues|18), leaf), "outside"},
		{"children share a node", trieFile(flagChildren|uint32(12+len(leaf)), leaf, []byte{'a', 'b'}, u32(flagValues|12), u32(flagValues|12)), "outside"},
		{"value count truncated", trieFile(flagValues|12, []byte{0, 0}), "value count past end"},
		{"huge value count", trieFile(flagValues|12, u32(0xFFFFFFFF), u32(1), []byte("m\x00")), "value count 4294967295"},
		{"value unterminated", trieFile(flagValues|12, u32(1), u32(1), []byte("mod")), "value string runs past end"},
		{"value missing", trieFile(flagValues|12, u32(2), u32(1), []byte("m\x00"), []byte("xyzw")), "value past end"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := lookupAll(t, tt.data, "a", "ab", "*", "")
			if len(errs) == 0 {
				t.Fatal("no error")
			}
			for _, err := range errs {
				var ce *CorruptError
				if !errors.As(err, &ce) || !errFormat.MatchString(err.Error()) {
					t.Errorf("error %q is not a CorruptError for x.bin", err)
				}
			}
			if !strings.Contains(errs[0].Error(), tt.reason) {
				t.Errorf("error %q does not say %q", errs[0], tt.reason)
			}
		})
	}
}

// chainTrie returns an index whose root has a '*' child heading a chain of
// depth nodes that have only a child 'a' each, ending in a node with the
// value {7 "m"}: the one key is "*" followed by depth 'a's. Each chain node
// takes 6 bytes, so a small file can be very deep.
func chainTrie(depth int) []byte {
	data := trieFile(flagValues|headerSize, u32(1), u32(7), []byte("m\x00"))
	ref := uint32(flagValues | headerSize)
	for range depth {
		off := uint32(len(data))
		data = append(append(data, 'a', 'a'), u32(ref)...)
		ref = flagChildren | off
	}
	root := uint32(len(data))
	data = append(append(data, '*', '*'), u32(ref)...)
	binary.BigEndian.PutUint32(data[8:], flagChildren|root)
	return data
}

// TestDeepChain: the walks below a wildcard (SearchWild) and Walk keep
// their path off the goroutine's stack, so a chain as deep as the longest
// key allowed works on a small stack; one level deeper is reported as
// corrupt. Recursing once per level, a chain of millions of levels
// overflowed the stack, which kills the process.
func TestDeepChain(t *testing.T) {
	depth := maxKeyLen - 1 // "*" and the 'a's make a key of maxKeyLen bytes
	ix, err := NewTrie("x.bin", chainTrie(depth))
	if err != nil {
		t.Fatal(err)
	}
	// Recursion takes hundreds of bytes per level: well over 1 MiB here.
	defer debug.SetMaxStack(debug.SetMaxStack(1 << 20))
	want := []Value{{7, "m"}}
	key := "*" + strings.Repeat("a", depth)
	if got := walkAll(t, ix); !reflect.DeepEqual(got, []entry{{key, want}}) || len(got[0].key) != maxKeyLen {
		t.Errorf("Walk of a chain %d deep found %d keys", depth, len(got))
	}
	if got, err := ix.SearchWild(strings.Repeat("a", depth+1)); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("SearchWild below a chain %d deep = %v, %v; want %v", depth, got, err, want)
	}
	if got, err := ix.SearchWild("b"); err != nil || got != nil {
		t.Errorf("SearchWild(b) below a chain %d deep = %v, %v; want nothing", depth, got, err)
	}

	errs := lookupAll(t, chainTrie(depth+1), "a", "b")
	if len(errs) != 3 { // Walk and SearchWild twice; Search stops at the root
		t.Fatalf("a key of %d bytes: %d errors, want 3: %v", maxKeyLen+1, len(errs), errs)
	}
	for _, err := range errs {
		var ce *CorruptError
		if !errors.As(err, &ce) || !errFormat.MatchString(err.Error()) || !strings.Contains(err.Error(), "key longer than") {
			t.Errorf("a key of %d bytes: %v, want a CorruptError for x.bin saying the key is too long", maxKeyLen+1, err)
		}
	}
}

// prefixChainTrie returns an index whose root's prefix is "*" and
// prefixLen 'A's, above a chain of depth nodes that each have a child 'a'
// and the value {7 "m"}, ending in a node with that value: depth+1 keys,
// with 1 to depth+1 'a's after the root's prefix.
func prefixChainTrie(prefixLen, depth int) []byte {
	value := cat(u32(1), u32(7), []byte("m\x00"))
	data := trieFile(flagValues|headerSize, value)
	ref := uint32(flagValues | headerSize)
	for range depth {
		off := uint32(len(data))
		data = append(append(append(data, 'a', 'a'), u32(ref)...), value...)
		ref = flagChildren | flagValues | off
	}
	root := uint32(len(data))
	data = append(data, '*')
	data = append(append(data, strings.Repeat("A", prefixLen)...), 0, 'a', 'a')
	data = append(data, u32(ref)...)
	binary.BigEndian.PutUint32(data[8:], flagPrefix|flagChildren|root)
	return data
}

// TestKeyBudget: keys share their prefixes in the file but not once copied
// out, so a long prefix above a chain of nodes with values would make the
// wildcard cache, and Walk, copy it once per key: memory quadratic in the
// file. Past 4 times the file size, the file is reported as corrupt.
func TestKeyBudget(t *testing.T) {
	// 36 kB, keys under maxKeyLen; copied out, they would take 10 MB.
	data := prefixChainTrie(4000, 2000)
	ix, err := NewTrie("x.bin", data)
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = ix.SearchWild("x")
	runtime.ReadMemStats(&after)
	var ce *CorruptError
	if !errors.As(err, &ce) || !errFormat.MatchString(err.Error()) || !strings.Contains(err.Error(), "patterns below wildcards exceed") {
		t.Errorf("SearchWild with %d-byte patterns under a chain: %v, want a CorruptError for x.bin", len(data), err)
	}
	// The patterns copied before giving up, and the path to the deepest
	// node (a node per 16 bytes of this file, kept in a growing slice).
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > uint64(ix.keyBudget())+32*uint64(len(data)) {
		t.Errorf("SearchWild allocated %d bytes for a %d-byte file (budget %d)", alloc, len(data), ix.keyBudget())
	}
	if n := ix.cached.Load(); n != 0 {
		t.Errorf("a failed search left %d bytes charged to the cache", n)
	}
	err = ix.Walk(func(string, []Value) error { return nil })
	if !errors.As(err, &ce) || !errFormat.MatchString(err.Error()) || !strings.Contains(err.Error(), "keys add up to more than") {
		t.Errorf("Walk of %d-byte keys under a chain: %v, want a CorruptError for x.bin", len(data), err)
	}

	// Under the budget, the same shape is searched and cached.
	ix, err = NewTrie("x.bin", prefixChainTrie(200, 50))
	if err != nil {
		t.Fatal(err)
	}
	key := strings.Repeat("A", 200) + "aaa"
	if got, err := ix.SearchWild(key); err != nil || !reflect.DeepEqual(got, []Value{{7, "m"}}) {
		t.Errorf("SearchWild(%q) = %v, %v; want [{7 m}]", key, got, err)
	}
	if got := walkAll(t, ix); len(got) != 51 {
		t.Errorf("Walk found %d keys, want 51", len(got))
	}
	if want := int64(51*201 + 51*52/2); ix.cached.Load() != want {
		t.Errorf("the cache holds %d bytes of patterns, want %d", ix.cached.Load(), want)
	}
}

// TestCacheCharge: concurrent searches charge each cached subtree once.
func TestCacheCharge(t *testing.T) {
	ix := openTrie(t, filepath.Join(fixtureDir, KindAlias.BinName()))
	keys := walkAll(t, ix)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for _, e := range keys {
				if _, err := ix.SearchWild(e.key); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	var sum, subtrees int64
	ix.subtrees.Range(func(_, keys any) bool {
		for _, k := range keys.([]storedKey) {
			sum += int64(len(k.pattern))
		}
		subtrees++
		return true
	})
	if subtrees == 0 || ix.cached.Load() != sum {
		t.Errorf("%d subtrees cached, %d bytes of patterns; charged %d", subtrees, sum, ix.cached.Load())
	}
}

// lookupAll opens data as x.bin and runs every lookup, returning the errors.
func lookupAll(t *testing.T, data []byte, keys ...string) []error {
	ix, err := NewTrie("x.bin", data)
	if err != nil {
		return []error{err}
	}
	var errs []error
	if err := ix.Walk(func(string, []Value) error { return nil }); err != nil {
		errs = append(errs, err)
	}
	for _, k := range keys {
		if _, err := ix.Search(k); err != nil {
			errs = append(errs, err)
		}
		if _, err := ix.SearchWild(k); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// TestTruncated cuts a real index at every length: every cut must be
// reported (the root node is written last, so any cut damages it).
func TestTruncated(t *testing.T) {
	for _, name := range []string{"modules.dep.bin", "modules.builtin.alias.bin"} {
		data, err := os.ReadFile(filepath.Join(fixtureDir, name))
		if err != nil {
			t.Fatal(err)
		}
		for n := 0; n < len(data); n++ {
			errs := lookupAll(t, data[:n:n], "usb_storage", "aes", "crypto_*", "*")
			if len(errs) == 0 {
				t.Fatalf("%s cut to %d bytes: no error", name, n)
			}
			var ce *CorruptError
			if !errors.As(errs[0], &ce) || ce.File != "x.bin" {
				t.Fatalf("%s cut to %d bytes: %v", name, n, errs[0])
			}
		}
	}
}

func TestEmptyIndex(t *testing.T) {
	// depmod writes an empty index as a root node without any part.
	ix, err := NewTrie("x.bin", trieFile(12))
	if err != nil {
		t.Fatal(err)
	}
	if errs := lookupAll(t, ix.data, "a", ""); len(errs) > 0 {
		t.Errorf("empty index: %v", errs)
	}
	if v, err := ix.SearchWild("a"); v != nil || err != nil {
		t.Errorf("SearchWild on empty index: %v, %v", v, err)
	}
	// libkmod treats a reference to offset 0 as no node at all.
	ix, _ = NewTrie("x.bin", trieFile(flagValues))
	if v, err := ix.Search(""); v != nil || err != nil {
		t.Errorf("Search with root 0: %v, %v", v, err)
	}
}

func FuzzTrie(f *testing.F) {
	for _, name := range []string{"modules.dep.bin", "modules.builtin.alias.bin", "modules.builtin.bin"} {
		data, err := os.ReadFile(filepath.Join(fixtureDir, name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, "usb_storage")
		f.Add(data, "crypto_sha*")
	}
	f.Add(trieFile(flagChildren|12, []byte{'a', 'a'}, u32(flagChildren|12)), "aaa")
	f.Fuzz(func(t *testing.T, data []byte, key string) {
		ix, err := NewTrie("fuzz.bin", data)
		if err != nil {
			return
		}
		check := func(err error) {
			var ce *CorruptError
			if err != nil && !errors.As(err, &ce) {
				t.Fatalf("error is not a CorruptError: %v", err)
			}
		}
		_, err = ix.Search(key)
		check(err)
		_, err = ix.SearchWild(key)
		check(err)
		// Whatever Walk reports, Search must find under the same key.
		var all []entry
		err = ix.Walk(func(k string, v []Value) error {
			if len(all) < 100 {
				all = append(all, entry{k, v})
			}
			return nil
		})
		check(err)
		if err != nil {
			return
		}
		for _, e := range all {
			if got, err := ix.Search(e.key); err != nil || !reflect.DeepEqual(got, e.values) {
				t.Fatalf("Walk found %q = %v, Search gives %v, %v", e.key, e.values, got, err)
			}
		}
	})
}

// TestTruncatedWhileMapped: a file cut short under the mapping faults on
// access; the lookup reports it instead of crashing the process.
func TestTruncatedWhileMapped(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(fixtureDir, "modules.alias.bin"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "modules.alias.bin")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	ix := openTrie(t, path)
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	_, err = ix.SearchWild("acpi:ACPI0007:")
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("SearchWild on a truncated mapping: %v", err)
	}
}

// TestLongKeyLargeIndex: a CPU modalias lists every feature the CPU has
// (over a kilobyte on current x86), and Debian's modules.alias.bin is over
// a megabyte. Where int is 32 bits, their scan budget once wrapped negative
// and the lookup failed as "nodes overlap". The fixture is padded to 1 MiB
// (bytes past the nodes are never read) and the key made 2 KiB long, which
// is past that point.
func TestLongKeyLargeIndex(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(fixtureDir, "modules.alias.bin"))
	if err != nil {
		t.Fatal(err)
	}
	padded := make([]byte, 1<<20)
	copy(padded, data)
	ix, err := NewTrie("modules.alias.bin", padded)
	if err != nil {
		t.Fatal(err)
	}
	key := "cpu:type:x86,ven0000fam0006mod00AA:feature:" + strings.Repeat(",00AB", 410)
	got, err := ix.SearchWild(key)
	if err != nil {
		t.Fatalf("SearchWild of a %d-byte key in a %d-byte index: %v", len(key), len(padded), err)
	}
	short, err := ix.SearchWild(key[:len(key)-5*409])
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, short) || len(got) == 0 || got[0].Value != "intel_cstate" {
		t.Errorf("SearchWild of a %d-byte CPU modalias = %v, want intel_cstate first, as for one feature: %v", len(key), got, short)
	}
	if _, err := ix.Search(key); err != nil {
		t.Errorf("Search of a %d-byte key: %v", len(key), err)
	}
}

// TestOpenHugeFile: a file too large to address is an error naming it, not
// a crash; where int is 32 bits, one past 2 GiB cannot even be mapped.
// The file is sparse, so it costs no disk.
func TestOpenHugeFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "modules.alias.bin")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(3 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	ix, err := OpenTrie(path)
	if err == nil {
		ix.Close()
		t.Fatal("OpenTrie of a 3 GiB file of zeros succeeded")
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name the file", err)
	}
	if strconv.IntSize == 32 && !strings.Contains(err.Error(), "too large to map") {
		t.Errorf("error %q, want too large to map", err)
	}
}

// TestMatchAliasesGlibc compares with glibc on every alias pattern of the
// fixture (and of $MODAUTOLOAD_MODULE_DIR, if set) against strings made from
// it, matching and not.
func TestMatchAliasesGlibc(t *testing.T) {
	cfnmatch.Require(t)
	dirs := []string{fixtureDir}
	if dir := os.Getenv(moduleDirEnv); dir != "" {
		dirs = append(dirs, dir)
	}
	r := newRand()
	for _, dir := range dirs {
		n := 0
		for _, e := range walkAll(t, openTrie(t, filepath.Join(dir, KindAlias.BinName()))) {
			s, _ := instantiate(e.key, r)
			for _, subject := range []string{s, mutate(s, r), e.key, ""} {
				if got, want := fnmatch.Match(e.key, subject), cfnmatch.Fnmatch(e.key, subject, 0) == 0; got != want {
					t.Fatalf("Match(%q, %q) = %v, glibc says %v", e.key, subject, got, want)
				}
				n++
			}
		}
		t.Logf("%s: %d comparisons", dir, n)
	}
}

// mappedRss returns the resident kB of this process's mappings of path,
// from /proc/self/smaps.
func mappedRss(t *testing.T, path string) int {
	t.Helper()
	data, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	kb, ours := 0, false
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":"):
			ours = len(f) >= 6 && f[5] == path
		case ours && len(f) == 3 && f[0] == "Rss:":
			n, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatalf("smaps %q: %v", line, err)
			}
			kb += n
		}
	}
	return kb
}

// DropPages takes the mapping out of the resident set; lookups afterwards
// read the same data back, and the next DropPages drops what they mapped
// (it skips its system call only when nothing was looked up).
func TestDropPages(t *testing.T) {
	path, err := filepath.Abs(filepath.Join(fixtureDir, "modules.alias.bin"))
	if err != nil {
		t.Fatal(err)
	}
	ix, err := OpenTrie(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ix.Close()
	before, err := ix.SearchWild("acpi:ACPI0007:")
	if err != nil || len(before) == 0 {
		t.Fatalf("SearchWild: %v, %v", before, err)
	}
	// drop checks that the lookup before it left pages resident and
	// that DropPages takes them all.
	drop := func(round string) {
		t.Helper()
		if kb := mappedRss(t, path); kb == 0 {
			t.Fatalf("%s: the index is not resident after a lookup", round)
		}
		if err := ix.DropPages(); err != nil {
			t.Fatal(err)
		}
		if kb := mappedRss(t, path); kb != 0 {
			t.Errorf("%s: %d kB of the index still resident after DropPages", round, kb)
		}
		if ix.touched.Load() {
			t.Errorf("%s: the index counts as touched right after DropPages", round)
		}
	}
	drop("first")
	after, err := ix.SearchWild("acpi:ACPI0007:")
	if err != nil || !reflect.DeepEqual(after, before) {
		t.Errorf("after DropPages: %v, %v; before: %v", after, err, before)
	}
	drop("second")
}
