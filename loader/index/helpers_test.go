package index

import (
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/modautoload/modautoload/internal/fnmatch"
	"github.com/modautoload/modautoload/internal/testtool"
)

// fixtureDir is the committed "mini" fixture (see testdata/README.md).
var fixtureDir = filepath.Join("testdata", "mini")

// moduleDirEnv names a full module directory (ROOT/lib/modules/KVER with
// depmod's indexes) for the tests and benchmarks on real data.
const moduleDirEnv = "MODAUTOLOAD_MODULE_DIR"

// realModuleDir returns $MODAUTOLOAD_MODULE_DIR or skips.
func realModuleDir(tb testing.TB) string {
	dir := os.Getenv(moduleDirEnv)
	if dir == "" {
		// make test sets it once the e2e rig has the kernel; there a
		// missing directory is a failure, not a reason to prove nothing.
		testtool.Missing(tb, "%s is not set to a module directory, ROOT/lib/modules/KVER (make index-real sets it)", moduleDirEnv)
	}
	return dir
}

func openTrie(tb testing.TB, path string) *Trie {
	tb.Helper()
	t, err := OpenTrie(path)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { t.Close() })
	return t
}

func loadText(tb testing.TB, dir string, kind Kind) *Trie {
	tb.Helper()
	order, err := LoadOrder(dir)
	if err != nil {
		tb.Fatal(err)
	}
	t, bad, err := LoadText(filepath.Join(dir, kind.TextName()), kind, order)
	if err != nil {
		tb.Fatal(err)
	}
	if len(bad) > 0 {
		tb.Errorf("%v: %d bad lines, first: %v", kind, len(bad), bad[0])
	}
	return t
}

type entry struct {
	key    string
	values []Value
}

func walkAll(tb testing.TB, t *Trie) []entry {
	tb.Helper()
	var all []entry
	if err := t.Walk(func(key string, values []Value) error {
		all = append(all, entry{key, values})
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
	return all
}

// binKinds are the kinds whose .bin file depmod writes.
var binKinds = []Kind{KindDep, KindAlias, KindSymbols, KindBuiltin, KindBuiltinModinfo}

// checkTextEqualsBin checks that the text form of each index of dir builds
// the very file depmod wrote, and that lookups of every key agree.
func checkTextEqualsBin(t *testing.T, dir string) {
	for _, kind := range binKinds {
		bin := openTrie(t, filepath.Join(dir, kind.BinName()))
		text := loadText(t, dir, kind)
		if string(text.data) != string(bin.data) {
			t.Errorf("%v: text builds %d bytes that differ from %s (%d bytes)", kind, len(text.data), kind.BinName(), len(bin.data))
		}
		a, b := walkAll(t, bin), walkAll(t, text)
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%v: Walk differs: %d entries from .bin, %d from text", kind, len(a), len(b))
		}
		for _, e := range a {
			got, err := text.Search(e.key)
			if err != nil || !reflect.DeepEqual(got, e.values) {
				t.Fatalf("%v: text Search(%q) = %v, %v; .bin has %v", kind, e.key, got, err, e.values)
			}
			got, err = bin.Search(e.key)
			if err != nil || !reflect.DeepEqual(got, e.values) {
				t.Fatalf("%v: Search(%q) = %v, %v; Walk gave %v", kind, e.key, got, err, e.values)
			}
		}
		t.Logf("%v: %d keys agree", kind, len(a))
	}
}

// fillChars stand in for '*' and '?' when instantiating patterns.
const fillChars = "0123456789ABCDEFabcdef:_,*"

// instantiate returns a string that pattern matches, filling wildcards at
// random, and whether it found one.
func instantiate(pattern string, r *rand.Rand) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(pattern); i++ {
		switch c := pattern[i]; c {
		case '*':
			for n := r.Intn(4); n > 0; n-- {
				b.WriteByte(fillChars[r.Intn(len(fillChars))])
			}
		case '?':
			b.WriteByte(fillChars[r.Intn(len(fillChars))])
		case '[':
			end := bracketEnd(pattern, i)
			if end < 0 {
				b.WriteByte(c)
				continue
			}
			set := pattern[i : end+1]
			found := false
			for _, k := range r.Perm(0x5f) {
				if ch := string(rune(0x21 + k)); fnmatch.Match(set, ch) {
					b.WriteString(ch)
					found = true
					break
				}
			}
			if !found {
				return "", false
			}
			i = end
		case '\\':
			if i+1 < len(pattern) {
				i++
				b.WriteByte(pattern[i])
			}
		default:
			b.WriteByte(c)
		}
	}
	s := b.String()
	return s, fnmatch.Match(pattern, s)
}

// bracketEnd finds the ']' closing the bracket expression at pattern[i],
// roughly; callers check the result with Match.
func bracketEnd(pattern string, i int) int {
	j := i + 1
	if j < len(pattern) && (pattern[j] == '!' || pattern[j] == '^') {
		j++
	}
	if j < len(pattern) && pattern[j] == ']' {
		j++
	}
	if k := strings.IndexByte(pattern[j:], ']'); k >= 0 {
		return j + k
	}
	return -1
}

// mutate changes one byte of s, to get strings that often do not match.
func mutate(s string, r *rand.Rand) string {
	if s == "" {
		return "x"
	}
	b := []byte(s)
	b[r.Intn(len(b))] = fillChars[r.Intn(len(fillChars))]
	return string(b)
}

// newRand gives tests a fixed sequence, so failures repeat.
func newRand() *rand.Rand { return rand.New(rand.NewSource(1)) }
