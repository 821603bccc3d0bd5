package index

import (
	"bufio"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/modautoload/modautoload/internal/testtool"
)

// These tests need a full module tree; see testdata/README.md.

func TestRealTextEqualsBin(t *testing.T) {
	checkTextEqualsBin(t, realModuleDir(t))
}

// TestRealOrder checks where depmod's priorities come from: the line order
// of modules.dep and, for a tree whose modules are all in modules.order,
// that file's line order.
func TestRealOrder(t *testing.T) {
	dir := realModuleDir(t)
	fromBin, err := LoadOrder(dir)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "modules.dep"))
	if err != nil {
		t.Fatal(err)
	}
	fromText := Order{}
	for l := range lines(data) {
		name, _, _ := depLine(l.text)
		fromText[name] = uint32(len(fromText))
	}
	if !reflect.DeepEqual(fromBin, fromText) {
		t.Errorf("modules.dep.bin priorities differ from modules.dep line numbers")
	}
	order, err := os.ReadFile(filepath.Join(dir, "modules.order"))
	if err != nil {
		t.Fatal(err)
	}
	same := 0
	for l := range lines(order) {
		if p, ok := fromBin[ModuleName(l.text)]; ok && p == uint32(l.n-1) {
			same++
		}
	}
	t.Logf("%d modules; %d have priority = modules.order line - 1", len(fromBin), same)
}

// TestRealSearchWild compares the binary and text forms of modules.alias on
// an instantiation and a mutation of every stored pattern.
func TestRealSearchWild(t *testing.T) {
	dir := realModuleDir(t)
	bin := openTrie(t, filepath.Join(dir, KindAlias.BinName()))
	text := loadText(t, dir, KindAlias)
	r := rand.New(rand.NewSource(1))
	n, found := 0, 0
	for _, e := range walkAll(t, bin) {
		s, ok := instantiate(e.key, r)
		if !ok {
			t.Errorf("cannot instantiate %q", e.key)
			continue
		}
		for _, key := range []string{s, mutate(s, r)} {
			a, err1 := bin.SearchWild(key)
			b, err2 := text.SearchWild(key)
			if err1 != nil || err2 != nil || !reflect.DeepEqual(a, b) {
				t.Fatalf("SearchWild(%q): .bin %v, %v; text %v, %v", key, a, err1, b, err2)
			}
			n++
			if len(a) > 0 {
				found++
			}
		}
	}
	t.Logf("%d lookups agree, %d with results", n, found)
}

// TestRealModprobe compares module lookups with kmod's own answer
// (modprobe --resolve-alias) on a sample of instantiated aliases.
func TestRealModprobe(t *testing.T) {
	dir := realModuleDir(t)
	modprobe, err := exec.LookPath("modprobe")
	if err != nil {
		// Debian keeps it in /usr/sbin, outside a user's PATH.
		modprobe, err = exec.LookPath("/usr/sbin/modprobe")
	}
	if err != nil {
		testtool.Missing(t, "kmod's modprobe not found: %v", err)
	}
	root, kver := filepath.Dir(filepath.Dir(filepath.Dir(dir))), filepath.Base(dir)
	if filepath.Join(root, "lib", "modules", kver) != filepath.Clean(dir) {
		testtool.Missing(t, "%s is not ROOT/lib/modules/KVER", dir)
	}
	conf := t.TempDir() // no modprobe.d configuration
	dep := openTrie(t, filepath.Join(dir, KindDep.BinName()))
	alias := openTrie(t, filepath.Join(dir, KindAlias.BinName()))
	builtin := openTrie(t, filepath.Join(dir, KindBuiltin.BinName()))
	builtinAlias := openTrie(t, filepath.Join(dir, KindBuiltinAlias.BinName()))
	entries := walkAll(t, alias)
	r := rand.New(rand.NewSource(2))
	const samples = 400
	matched := 0
	for i := 0; i < samples; i++ {
		e := entries[r.Intn(len(entries))]
		s, _ := instantiate(e.key, r)
		if i%4 == 3 {
			s = mutate(s, r)
		}
		key, err := normalizeAlias(s)
		if err != nil || strings.HasPrefix(key, "-") {
			continue // modprobe would take it for an option
		}
		// libkmod's order: exact module name, then aliases, then built-ins.
		var want []string
		if v, _ := dep.Search(key); len(v) > 0 {
			want = []string{key}
		} else if v, _ := alias.SearchWild(key); len(v) > 0 {
			for _, x := range v {
				want = append(want, x.Value)
			}
		} else if v, _ := builtin.Search(key); len(v) > 0 {
			want = []string{key}
		} else {
			v, _ := builtinAlias.SearchWild(key)
			for _, x := range v {
				want = append(want, x.Value)
			}
		}
		out, _ := exec.Command(modprobe, "-C", conf, "-d", root, "-S", kver, "-R", s).Output()
		var got []string
		sc := bufio.NewScanner(strings.NewReader(string(out)))
		for sc.Scan() {
			got = append(got, sc.Text())
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("modprobe -R %q: %q, we find %q", s, got, want)
		}
		if len(want) > 0 {
			matched++
		}
	}
	t.Logf("%d aliases resolved like modprobe (%d matched some module)", samples, matched)
}
