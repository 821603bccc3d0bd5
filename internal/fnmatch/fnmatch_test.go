package fnmatch

import (
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/modautoload/modautoload/internal/cfnmatch"
)

// matchCases were checked against glibc 2.36's fnmatch(pattern, s, 0).
var matchCases = []struct {
	pattern, s string
	want       bool
}{
	{"", "", true},
	{"", "a", false},
	{"abc", "abc", true},
	{"abc", "abd", false},
	{"a?c", "abc", true},
	{"a?c", "ac", false},
	{"*", "", true},
	{"*", "anything", true},
	{"a*", "a", true},
	{"*c", "abc", true},
	{"*c", "abd", false},
	{"a*b*c", "aXbYbZc", true},
	{"a*b*c", "aXbYbZ", false},
	{"*??", "a", false},
	{"*??", "ab", true},
	{"pci:v00008086d*sv*", "pci:v00008086d00001234sv0000", true},
	{"cpu:type:x86,ven*fam*mod*:feature:*0081*", "cpu:type:x86,ven0000fam0006mod003F:feature:,0000,0081,0085", true},
	{"cpu:type:x86,ven*fam*mod*:feature:*0081*", "cpu:type:x86,ven0000fam0006mod003F:feature:,0000,0082,0085", false},
	// Escapes.
	{`\*`, "*", true},
	{`\*`, "a", false},
	{`a\`, "a", false}, // a trailing backslash never matches
	{`a\`, `a\`, false},
	{`*\`, `a\`, false},
	{`\a`, "a", true},
	{`*\*`, "x*", true},
	// Brackets.
	{"[abc]", "b", true},
	{"[abc]", "d", false},
	{"[a-c]", "b", true},
	{"[c-a]", "b", false},
	{"[!a-c]", "d", true},
	{"[^a-c]", "d", true}, // '^' negates unless POSIXLY_CORRECT is set
	{"[!a-c]", "b", false},
	{"[]]", "]", true}, // ']' first is a member
	{"[!]]", "a", true},
	{"[!]]", "]", false},
	{"[]a]", "a", true},
	{"[a-]", "-", true},
	{"[-a]", "-", true},
	{"[a-c-e]", "-", true},
	{"[a-c-e]", "d", false},
	{`[\]]`, "]", true},
	{`[a\-c]`, "b", false},
	{`[a\-c]`, "-", true},
	{"[Ee][Ll]", "eL", true},
	{"[bs]vnD[Ee][Ll][Ll]*", "svnDELL Inc.", true},
	// Classes, equivalence classes, collating symbols (C locale).
	{"[[:alpha:]]", "x", true},
	{"[[:alpha:]]", "1", false},
	{"[[:digit:][:upper:]]", "Q", true},
	{"[[:xdigit:]]", "f", true},
	{"[[:xdigit:]]", "g", false},
	{"[[:space:]]", "\t", true},
	{"[[:alpha:]]", "\xe9", false}, // no byte above 0x7f is in a class
	{"[[:nope:]]", "n", false},     // unknown class: the pattern fails
	{"[[:alpha:]-z]", "-", true},   // '-' after a class is a member
	{"[[=a=]b]", "a", true},
	{"[[=ab]", "=", true}, // not an equivalence class: '[', '=', 'a', 'b'
	{"[[.a.]]", "a", true},
	{"[[.a.]-c]", "b", true},
	{"[[.a.]-]", "a", false}, // glibc takes a symbol before "-]" for a range start
	{"[[.a.]-]", "-", true},
	{"[[.ab.]]", "a", false},
	// Unterminated brackets are literal.
	{"[", "[", true},
	{"[a", "[a", true},
	{"[a", "a", false},
	{"[[", "[[", true},
	{"[]", "]", false},
	{"[]", "[]", true},
	{"a[", "a[", true},
	{"*[", "x[", true},
	{"[a-", "[a-", false}, // a range without its end fails
	{"[!", "[!", true},
	// Bytes above 0x7f compare by value; NUL ends both strings.
	{"[\x80-\xff]", "\xe9", true},
	{"\xe9*", "\xe9t\xe9", true},
	{"ab\x00cd", "ab", true},
	{"ab", "ab\x00cd", true},
}

func TestMatch(t *testing.T) {
	for _, c := range matchCases {
		if got := Match(c.pattern, c.s); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.pattern, c.s, got, c.want)
		}
	}
}

// TestMatchStars: glibc's algorithm stays polynomial with many stars,
// where naive backtracking would take exponential time.
func TestMatchStars(t *testing.T) {
	pattern := strings.Repeat("*a", 40) + "*b"
	s := strings.Repeat("a", 5000)
	start := time.Now()
	if Match(pattern, s) {
		t.Error("matched")
	}
	if !Match(pattern, s+"b") {
		t.Error("did not match")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v", d)
	}
}

func checkGlibc(t *testing.T, pattern, s string) {
	t.Helper()
	want := cfnmatch.Fnmatch(pattern, s, 0) == 0
	if got := Match(pattern, s); got != want {
		t.Fatalf("Match(%q, %q) = %v, glibc says %v", pattern, s, got, want)
	}
}

func TestMatchCasesGlibc(t *testing.T) {
	cfnmatch.Require(t)
	for _, c := range matchCases {
		checkGlibc(t, c.pattern, c.s)
	}
}

// Pieces of patterns and subjects that reach every branch of glibc's code.
var (
	patternPieces = []string{"a", "b", "z", "A", "0", " ", "\xe9", "[", "]", "!", "^", "-", `\`, "*", "?",
		":", "=", ".", "[:alpha:]", "[:digit:]", "[:nope:]", "[:", ":]", "[=", "=]", "[.", ".]", "a-z"}
	subjectPieces = []string{"a", "b", "z", "A", "0", " ", "\xe9", "[", "]", "!", "^", "-", `\`, "*", "?", ":", "=", "."}
)

func join(r *rand.Rand, pieces []string, max int) string {
	var b strings.Builder
	for n := r.Intn(max + 1); n > 0; n-- {
		b.WriteString(pieces[r.Intn(len(pieces))])
	}
	return b.String()
}

// TestMatchRandomGlibc compares with glibc on random patterns built to hit
// its corner cases, with an occasional random byte.
func TestMatchRandomGlibc(t *testing.T) {
	cfnmatch.Require(t)
	r := newRand()
	n := 300000
	if testing.Short() {
		n = 30000
	}
	for range n {
		p, s := join(r, patternPieces, 10), join(r, subjectPieces, 8)
		if r.Intn(4) == 0 {
			p = mutateByte(p, r)
		}
		if r.Intn(4) == 0 {
			s = mutateByte(s, r)
		}
		checkGlibc(t, p, s)
	}
}

func mutateByte(s string, r *rand.Rand) string {
	if s == "" {
		return s
	}
	b := []byte(s)
	b[r.Intn(len(b))] = byte(r.Intn(256))
	return string(b)
}

// TestMatchLongClassGlibc pins glibc's limit on class names.
func TestMatchLongClassGlibc(t *testing.T) {
	cfnmatch.Require(t)
	for _, n := range []int{classNameMax - 2, classNameMax - 1, classNameMax, classNameMax + 1} {
		name := strings.Repeat("a", n)
		for _, p := range []string{"[[:" + name + "]", "[[:" + name + ":]]", "[a[:" + name + "]", "[a[:" + name + ":]]"} {
			for _, s := range []string{"a", "[", ":"} {
				checkGlibc(t, p, s)
			}
		}
	}
}

func FuzzMatch(f *testing.F) {
	for _, c := range matchCases {
		f.Add(c.pattern, c.s)
	}
	f.Fuzz(func(t *testing.T, pattern, s string) {
		cfnmatch.Require(t)
		if got, want := Match(pattern, s), cfnmatch.Fnmatch(pattern, s, 0) == 0; got != want {
			t.Fatalf("Match(%q, %q) = %v, glibc says %v", pattern, s, got, want)
		}
	})
}

// newRand gives tests a fixed sequence, so failures repeat.
func newRand() *rand.Rand { return rand.New(rand.NewSource(1)) }

func TestUnderscores(t *testing.T) {
	tests := []struct {
		in, out string
		ok      bool
	}{
		{"snd-hda-intel", "snd_hda_intel", true},
		{"a-[0-9]-b", "a_[0-9]_b", true},
		{"[-][-]-", "[-][-]_", true},
		{"[a-]]", "", false}, // the second ] has no [
		{"x]", "", false},
		{"[a-", "", false},
		{"", "", true},
	}
	for _, tt := range tests {
		out, ok := Underscores(tt.in)
		if out != tt.out || ok != tt.ok {
			t.Errorf("Underscores(%q) = %q, %v; want %q, %v", tt.in, out, ok, tt.out, tt.ok)
		}
	}
}
