package index

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/modautoload/modautoload/internal/problemcap"
)

// TestTextEqualsBin: the text files of the fixture build byte for byte the
// .bin files depmod wrote, so every lookup agrees.
func TestTextEqualsBin(t *testing.T) {
	checkTextEqualsBin(t, fixtureDir)
}

// TestSearchWildTextEqualsBin compares both forms of modules.alias on an
// instantiation and a mutation of each stored pattern.
func TestSearchWildTextEqualsBin(t *testing.T) {
	bin := openTrie(t, filepath.Join(fixtureDir, KindAlias.BinName()))
	text := loadText(t, fixtureDir, KindAlias)
	r := newRand()
	for _, e := range walkAll(t, bin) {
		s, ok := instantiate(e.key, r)
		if !ok {
			t.Fatalf("cannot instantiate %q", e.key)
		}
		for _, key := range []string{s, mutate(s, r), e.key} {
			a, err1 := bin.SearchWild(key)
			b, err2 := text.SearchWild(key)
			if err1 != nil || err2 != nil || !reflect.DeepEqual(a, b) {
				t.Fatalf("SearchWild(%q): .bin %v, %v; text %v, %v", key, a, err1, b, err2)
			}
			if key == s && len(a) == 0 {
				t.Errorf("SearchWild(%q) found nothing; it instantiates %q", key, e.key)
			}
		}
	}
}

// TestLoadOrder: the order from modules.dep matches modules.dep.bin's
// priorities.
func TestLoadOrder(t *testing.T) {
	fromBin, err := LoadOrder(fixtureDir)
	if err != nil {
		t.Fatal(err)
	}
	dir := copyFixture(t, "modules.dep")
	fromText, err := LoadOrder(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(fromBin) != 41 || !reflect.DeepEqual(fromBin, fromText) {
		t.Errorf("LoadOrder: %d from .bin, %d from text, equal: %v", len(fromBin), len(fromText), reflect.DeepEqual(fromBin, fromText))
	}
	if fromBin["usb_storage"] != 29 {
		t.Errorf("usb_storage has priority %d, want 29", fromBin["usb_storage"])
	}
}

// copyFixture copies the named fixture files into a new directory.
func copyFixture(t *testing.T, names ...string) string {
	dir := t.TempDir()
	for _, name := range names {
		data, err := os.ReadFile(filepath.Join(fixtureDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestOpenFallback: without .bin files, Open builds each index from text.
func TestOpenFallback(t *testing.T) {
	dir := copyFixture(t, "modules.dep", "modules.alias", "modules.symbols", "modules.builtin", "modules.builtin.modinfo")
	for _, kind := range []Kind{KindDep, KindAlias, KindSymbols, KindBuiltin, KindBuiltinAlias} {
		text, bad, err := Open(dir, kind)
		if err != nil || len(bad) > 0 {
			t.Fatalf("Open(%v): %v %v", kind, bad, err)
		}
		bin, _, err := Open(fixtureDir, kind)
		if err != nil {
			t.Fatal(err)
		}
		if !bin.mapped || text.mapped || string(bin.data) != string(text.data) {
			t.Errorf("Open(%v): text fallback differs from the .bin", kind)
		}
		text.Close()
		bin.Close()
	}
	if _, _, err := Open(t.TempDir(), KindAlias); !os.IsNotExist(err) {
		t.Errorf("Open on an empty directory: %v", err)
	}
}

func TestParseTextBadLines(t *testing.T) {
	tests := []struct {
		kind  Kind
		input string
		bad   []string // expected reports
		keys  []string // keys indexed
	}{
		{KindAlias, "# comment\nalias pci:v*d* e1000\nalias onlyone\nalias x]y m\nbogus a b\n\nalias usb:v-[a-b]* mod-x\n",
			[]string{`f:3: want "alias PATTERN MODULE"`, `f:4: unbalanced brackets in alias "x]y"`, `f:5: want "alias PATTERN MODULE"`},
			[]string{"pci:v*d*", "usb:v_[a-b]*"}},
		{KindSymbols, "alias symbol:foo mod\nalias foo mod\n", []string{`f:2: symbol alias "foo" lacks "symbol:"`}, []string{"symbol:foo"}},
		{KindDep, "kernel/a-b.ko: kernel/c.ko\nno colon here\nkernel/c.ko:\n", []string{`f:2: no ':' after the module path`}, []string{"a_b", "c"}},
		{KindBuiltin, "kernel/x/foo-bar.ko\n/abs.ko\nkernel/y.ko\n", []string{`f:2: module path does not start with a letter`}, []string{"foo_bar", "y"}},
		{KindAlias, "alias caf\xc3\xa9 m\nalias ok m\n", []string{`f:1: non-ASCII or NUL character in "caf\u00e9 m"`}, []string{"ok"}},
		{KindBuiltinModinfo, "a.alias=x\x00garbage\x00b.license=GPL\x00\x00c.alias=y-z\x00", []string{`f:2: want "module.key=value"`}, []string{"x", "y_z"}},
		// The reader refuses keys past maxKeyLen; the builder must not write one.
		{KindBuiltin, "k/" + strings.Repeat("a", maxKeyLen+1) + ".ko\nk/b.ko\n", []string{fmt.Sprintf("f:1: key of %d bytes is longer than %d", maxKeyLen+1, maxKeyLen)}, []string{"b"}},
	}
	for _, tt := range tests {
		ix, bad, err := ParseText("f", []byte(tt.input), tt.kind, nil)
		if err != nil {
			t.Fatalf("%v: %v", tt.kind, err)
		}
		var got []string
		for _, e := range bad {
			got = append(got, e.Error())
		}
		if !reflect.DeepEqual(got, tt.bad) {
			t.Errorf("%v: bad lines %q, want %q", tt.kind, got, tt.bad)
		}
		var keys []string
		for _, e := range walkAll(t, ix) {
			keys = append(keys, e.key)
		}
		if !reflect.DeepEqual(keys, tt.keys) {
			t.Errorf("%v: keys %q, want %q", tt.kind, keys, tt.keys)
		}
	}
}

// TestParseTextProblemCap: a file of garbage keeps 100 problems and a count
// of the rest, and a message quotes at most a clip of its line.
func TestParseTextProblemCap(t *testing.T) {
	long := strings.Repeat("\xc3\xa9", 5000)
	input := "alias " + long + " m\nalias [" + long + " m\n" + strings.Repeat("x\n", 1000)
	_, bad, err := ParseText("f", []byte(input), KindAlias, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) != problemcap.PerFile+1 {
		t.Fatalf("%d problems reported, want %d", len(bad), problemcap.PerFile+1)
	}
	for i, prefix := range []string{`f:1: non-ASCII or NUL character in "\u00e9`, `f:2: unbalanced brackets in alias "[é`, `f:3: want "alias PATTERN MODULE"`} {
		// A clip quoted with %+q takes up to 4 bytes for each of its 64.
		if msg := bad[i].Error(); !strings.HasPrefix(msg, prefix) || len(msg) > 400 {
			t.Errorf("problem %d: %.300q (%d bytes), want %q and a clip of the line", i+1, msg, len(msg), prefix)
		}
	}
	if got, want := bad[problemcap.PerFile-1].Error(), `f:100: want "alias PATTERN MODULE"`; got != want {
		t.Errorf("problem %d: %q, want %q", problemcap.PerFile, got, want)
	}
	if got, want := bad[problemcap.PerFile].Error(), "f:101: 902 further problems from here on are not reported"; got != want {
		t.Errorf("last entry %q, want %q", got, want)
	}
}

// TestTextValueOrder: values under one key come out as depmod's add_value
// leaves them: by priority, and among equal priorities the latest first.
func TestTextValueOrder(t *testing.T) {
	order := Order{"a": 2, "b": 1, "c": 2, "d": 1}
	ix, _, err := ParseText("f", []byte("alias x a\nalias x b\nalias x c\nalias x d\nalias x a\nalias x e\n"), KindAlias, order)
	if err != nil {
		t.Fatal(err)
	}
	want := []Value{{1, "d"}, {1, "b"}, {2, "a"}, {2, "c"}, {2, "a"}, {4, "e"}}
	if got, err := ix.Search("x"); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("Search(x) = %v, %v; want %v", got, err, want)
	}
}

// TestTextManyValues: many values under one key take about as long as as
// many keys. Inserting each value in place took time quadratic in their
// number: 20 s for 200,000, where distinct keys take a tenth of a second.
func TestTextManyValues(t *testing.T) {
	const n = 50000
	var oneKey, manyKeys bytes.Buffer
	for i := range n {
		fmt.Fprintf(&oneKey, "alias x m%d\n", i%7)
		fmt.Fprintf(&manyKeys, "alias x%d m%d\n", i, i%7)
	}
	parse := func(data []byte) time.Duration {
		start := time.Now()
		ix, _, err := ParseText("f", data, KindAlias, nil)
		if err != nil {
			t.Fatal(err)
		}
		if v, err := ix.Search("x"); err != nil || len(v) != n && len(v) != 0 {
			t.Fatalf("Search(x): %d values, %v", len(v), err)
		}
		return time.Since(start)
	}
	// The best of three of each, interleaved, so that a busy machine
	// slows both alike.
	best := [2]time.Duration{time.Hour, time.Hour}
	for range 3 {
		best[0] = min(best[0], parse(oneKey.Bytes()))
		best[1] = min(best[1], parse(manyKeys.Bytes()))
	}
	t.Logf("%d values under one key: %v; %d keys: %v", n, best[0], n, best[1])
	if best[0] > 5*best[1] {
		t.Errorf("%d values under one key took %v, %d keys %v", n, best[0], n, best[1])
	}
}

// TestTextPriorities: modules the order lacks rank after it, in order of
// first appearance.
func TestTextPriorities(t *testing.T) {
	ix, _, err := ParseText("f", []byte("alias a* new1\nalias ab known\nalias a? new2\nalias b new1\n"), KindAlias, Order{"known": 5})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := ix.SearchWild("ab")
	want := []Value{{1, "new1"}, {2, "new2"}, {5, "known"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("SearchWild(ab) = %v, want %v", got, want)
	}
}

func TestNormalizeAlias(t *testing.T) {
	for in, want := range map[string]string{
		"pci:v-d*":                "pci:v_d*",
		"a-[x-y]-b":               "a_[x-y]_b",
		"[-]-":                    "[-]_",
		"dmi*:svn[Ll]-x*":         "dmi*:svn[Ll]_x*",
		strings.Repeat("a", 5000): strings.Repeat("a", maxAliasLen),
	} {
		if got, err := normalizeAlias(in); err != nil || got != want {
			t.Errorf("normalizeAlias(%.20q) = %.20q, %v; want %.20q", in, got, err, want)
		}
	}
	for _, in := range []string{"a]", "a[b", "[a]]"} {
		if _, err := normalizeAlias(in); err == nil {
			t.Errorf("normalizeAlias(%q) accepted an unmatched bracket", in)
		}
	}
}

// FuzzText: whatever the text, the index built from it reads back without
// error and holds what Walk reports.
func FuzzText(f *testing.F) {
	for _, name := range []string{"modules.alias", "modules.dep"} {
		data, err := os.ReadFile(filepath.Join(fixtureDir, name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data[:min(len(data), 2000)], uint8(KindAlias))
	}
	f.Add([]byte("a.alias=x\x00b.alias=x*\x00"), uint8(KindBuiltinModinfo))
	f.Fuzz(func(t *testing.T, data []byte, kind uint8) {
		k := Kind(kind % uint8(len(kindNames)))
		ix, _, err := ParseText("fuzz", data, k, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := ix.Walk(func(key string, v []Value) error {
			got, err := ix.Search(key)
			if err != nil || !reflect.DeepEqual(got, v) {
				t.Fatalf("Search(%q) = %v, %v; Walk found %v", key, got, err, v)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	})
}
