package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/modautoload/modautoload/loader"
	"github.com/modautoload/modautoload/loader/index"
	"github.com/modautoload/modautoload/loader/modprobed"
)

// These tests compare the resolver with libkmod on the real Debian module
// directory: every input must give exactly what modprobe --show-depends
// prints. They run on the host; no guest is booted.

// kmodref builds e2e/kmodref/kmodref.c, libkmod's answers in one process.
var kmodref = sync.OnceValues(func() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "kmodref-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "kmodref")
	out, err := exec.Command("cc", "-O2", "-Wall", "-o", bin, filepath.Join(root, "e2e/kmodref/kmodref.c"), "-lkmod").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building kmodref (needs gcc and libkmod-dev): %v\n%s", err, out)
	}
	return bin, nil
})

func requireKmodref(t *testing.T) string {
	t.Helper()
	bin, err := kmodref()
	if err != nil {
		unmet(t, "%v", err)
	}
	return bin
}

// kmodShow runs kmodref show: "== INPUT" and modprobe --show-depends's
// output (or NOTFOUND) for each input.
func kmodShow(t *testing.T, dir string, config []string, inputs []string) string {
	t.Helper()
	cmd := exec.Command(requireKmodref(t), append([]string{"show", dir}, config...)...)
	cmd.Stdin = strings.NewReader(strings.Join(inputs, "\n") + "\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kmodref: %v\n%s", err, stderr.String())
	}
	return string(out)
}

// ourShow answers the same inputs with the resolver, in kmodref's format.
func ourShow(t *testing.T, dir string, config []string, inputs []string) string {
	t.Helper()
	r := openResolver(t, dir, config)
	var b bytes.Buffer
	for _, in := range inputs {
		fmt.Fprintf(&b, "== %s\n", in)
		planned, err := r.Resolve(in, loader.ResolveOptions{})
		for _, p := range planned {
			if p.Err != nil {
				err = p.Err
			}
		}
		if err != nil || len(planned) == 0 {
			b.WriteString("NOTFOUND\n")
			continue
		}
		for _, p := range planned {
			if err := loader.WriteShowDepends(&b, p.Steps); err != nil {
				t.Fatal(err)
			}
		}
	}
	return b.String()
}

func openResolver(t testing.TB, dir string, config []string) *loader.Resolver {
	t.Helper()
	db, err := loader.OpenDB(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if len(db.Problems) > 0 {
		t.Errorf("index problems: %v", db.Problems)
	}
	// libkmod always reads the running kernel's command line; so must we.
	cmdline, _ := os.ReadFile("/proc/cmdline")
	cfg, err := modprobed.Load(modprobed.LoadOptions{Paths: config, ModuleDir: dir, Cmdline: string(cmdline)})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Problems) > 0 {
		t.Errorf("config problems: %v", cfg.Problems)
	}
	return &loader.Resolver{DB: db, Config: cfg}
}

// compareShow fails the test for every input whose answers differ,
// showing the first few in full.
func compareShow(t *testing.T, want, got string, replace ...string) {
	t.Helper()
	if len(replace) > 0 {
		got = strings.NewReplacer(replace...).Replace(got)
	}
	wantBy, gotBy := splitShow(want), splitShow(got)
	if len(wantBy) != len(gotBy) {
		t.Fatalf("libkmod answered %d inputs, the resolver %d", len(wantBy), len(gotBy))
	}
	bad := 0
	for i := range wantBy {
		if wantBy[i] != gotBy[i] {
			if bad < 5 {
				t.Errorf("input %d differs:\nlibkmod:\n%s\nresolver:\n%s", i, wantBy[i], gotBy[i])
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d inputs differ from libkmod", bad, len(wantBy))
	}
}

func splitShow(s string) []string {
	parts := strings.Split(s, "\n== ")
	return parts
}

// instantiate turns an fnmatch pattern into a string it matches, filling
// each '*' with star and each '?' with one; bracket expressions take their
// first member, or for negated sets a byte they exclude.
func instantiate(p, star string, one byte) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		switch c := p[i]; c {
		case '*':
			b.WriteString(star)
		case '?':
			b.WriteByte(one)
		case '\\':
			if i+1 < len(p) {
				i++
				b.WriteByte(p[i])
			}
		case '[':
			end := strings.IndexByte(p[i+1:], ']')
			if end == 0 { // "[]...]": ']' is the first member
				end = 1 + strings.IndexByte(p[i+2:], ']')
			}
			if end < 0 {
				b.WriteByte(c)
				continue
			}
			set := p[i+1 : i+1+end]
			i += 1 + end
			if set != "" && (set[0] == '!' || set[0] == '^') {
				for _, x := range []byte("Zz9#_") {
					if !strings.ContainsRune(set[1:], rune(x)) {
						b.WriteByte(x)
						break
					}
				}
			} else if set != "" {
				b.WriteByte(set[0])
			}
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// aliasInputs instantiates every alias pattern of the module directory
// several ways: wildcards filled two ways, a near miss, case changes and
// '-'/'_' swaps; plus every module name (both spellings), builtin names,
// a sample of symbols, and the MODALIAS values the guest's kernel sent.
func aliasInputs(t testing.TB, dir string) []string {
	t.Helper()
	set := map[string]bool{}
	add := func(s string) {
		if s != "" && !strings.ContainsAny(s, "\n\x00") {
			set[s] = true
		}
	}
	eachLine(t, filepath.Join(dir, "modules.alias"), func(f []string) {
		if len(f) != 3 || f[0] != "alias" {
			return
		}
		p := f[1]
		a, b := instantiate(p, "", '0'), instantiate(p, "1Ab", 'Z')
		add(a)
		add(b)
		if len(a) > 2 {
			add(a[:len(a)/2] + "#" + a[len(a)/2+1:])
		}
		add(strings.ToUpper(b))
		add(strings.ToLower(b))
		add(strings.ReplaceAll(a, "_", "-"))
	})
	eachLine(t, filepath.Join(dir, "modules.dep"), func(f []string) {
		name := index.ModuleName(strings.TrimSuffix(f[0], ":"))
		add(name)
		add(strings.ReplaceAll(name, "_", "-"))
	})
	eachLine(t, filepath.Join(dir, "modules.builtin"), func(f []string) { add(index.ModuleName(f[0])) })
	n := 0
	eachLine(t, filepath.Join(dir, "modules.symbols"), func(f []string) {
		if n++; len(f) == 3 && n%20 == 0 {
			add(f[1])
		}
	})
	for _, m := range guestModaliases(t) {
		add(m)
	}
	inputs := make([]string, 0, len(set))
	for s := range set {
		inputs = append(inputs, s)
	}
	sort.Strings(inputs)
	return inputs
}

func eachLine(t testing.TB, path string, fn func(fields []string)) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 0 {
			fn(fields)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
}

// guestModaliases are the MODALIAS values in the uevents captured from the
// guest (uevent/testdata/kernel-uevents.txt).
func guestModaliases(t testing.TB) []string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "uevent/testdata/kernel-uevents.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		raw, err := strconv.Unquote(line)
		if err != nil {
			t.Fatal(err)
		}
		for _, field := range strings.Split(raw, "\x00") {
			if v, ok := strings.CutPrefix(field, "MODALIAS="); ok {
				out = append(out, strings.TrimRight(v, "\n"))
			}
		}
	}
	if len(out) < 20 {
		t.Fatalf("only %d guest modaliases", len(out))
	}
	return out
}

// emptyConfig is a modprobe.d that says nothing, so the host's own
// /etc/modprobe.d cannot change the answers.
func emptyConfig(t *testing.T) []string { return []string{t.TempDir()} }

func TestResolveMatchesLibkmod(t *testing.T) {
	k := KernelFor(t)
	dir := k.ModulesDir()
	inputs := aliasInputs(t, dir)
	cfg := emptyConfig(t)
	want := kmodShow(t, dir, cfg, inputs)
	got := ourShow(t, dir, cfg, inputs)
	compareShow(t, want, got)
	t.Logf("%d inputs, %d answered by a module", len(inputs), len(inputs)-strings.Count(want, "\nNOTFOUND\n"))
}

// everyDirective is a modprobe.d configuration that uses each directive on
// modules of the real kernel, including a softdep cycle and an alias that
// overrides modules.alias.
const everyDirective = `# every directive modprobe.d has
alias my-nic e1000
alias myfs* ext4
alias pci:v00008086d0000100E* e1000e
alias net-pf-16-proto-6 xfrm_user
blacklist virtio_rng
blacklist floppy
options e1000 debug=1 copybreak=3
options myfs* foo=1
options virtio-net napi_tx=1
install dummy /bin/true
install pcspkr /bin/false $CMDLINE_OPTS
remove e1000 echo removing
softdep virtio_net pre: crc32c post: virtio_rng
softdep ext4 pre: crc16 post: loop
softdep loop pre: ext4
weakdep xfs crc32c
`

func TestResolveMatchesLibkmodWithConfig(t *testing.T) {
	k := KernelFor(t)
	dir := k.ModulesDir()
	conf := t.TempDir()
	if err := os.WriteFile(filepath.Join(conf, "test.conf"), []byte(everyDirective), 0o644); err != nil {
		t.Fatal(err)
	}
	all := aliasInputs(t, dir)
	inputs := []string{"my-nic", "my_nic", "myfs", "myfs2", "net-pf-16-proto-6", "dummy", "pcspkr", "e1000",
		"virtio_net", "virtio-net", "virtio_rng", "floppy", "ext4", "loop", "xfs"}
	for i, in := range all {
		if i%7 == 0 {
			inputs = append(inputs, in)
		}
	}
	inputs = append(inputs, guestModaliases(t)...)
	want := kmodShow(t, dir, []string{conf}, inputs)
	got := ourShow(t, dir, []string{conf}, inputs)
	compareShow(t, want, got)
}

// With the binary indexes removed the text fallback must give the same
// answers; libkmod, which cannot read text indexes, answers from the
// original directory.
func TestResolveTextIndexesMatchLibkmod(t *testing.T) {
	k := KernelFor(t)
	dir := k.ModulesDir()
	textDir := filepath.Join(t.TempDir(), "lib", "modules", k.Version)
	if err := os.MkdirAll(textDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"modules.dep", "modules.alias", "modules.symbols", "modules.builtin",
		"modules.builtin.modinfo", "modules.softdep", "modules.order"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(textDir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	all := aliasInputs(t, dir)
	var inputs []string
	for i, in := range all {
		if i%3 == 0 {
			inputs = append(inputs, in)
		}
	}
	cfg := emptyConfig(t)
	want := kmodShow(t, dir, cfg, inputs)
	got := ourShow(t, textDir, cfg, inputs)
	compareShow(t, want, got, textDir, dir)
}

// kmodref is the oracle above; this proves it prints what the real
// modprobe --show-depends prints, on a sample of inputs.
func TestKmodrefMatchesModprobe(t *testing.T) {
	k := KernelFor(t)
	if _, err := exec.LookPath("modprobe"); err != nil {
		unmet(t, "modprobe not found (apt-get install kmod)")
	}
	dir := k.ModulesDir()
	conf := t.TempDir()
	if err := os.WriteFile(filepath.Join(conf, "test.conf"), []byte(everyDirective), 0o644); err != nil {
		t.Fatal(err)
	}
	all := aliasInputs(t, dir)
	inputs := []string{"my-nic", "myfs1", "dummy", "pcspkr", "virtio_net", "ext4", "nonexistent_module"}
	for i := 0; i < len(all); i += len(all) / 60 {
		inputs = append(inputs, all[i])
	}
	ref := splitShow(kmodShow(t, dir, []string{conf}, inputs))
	for i, in := range inputs {
		out, _ := exec.Command("modprobe", "-d", k.Root, "-S", k.Version, "-C", conf, "--show-depends", "--", in).Output()
		want := strings.TrimPrefix(ref[i], "== ")
		want = strings.TrimPrefix(want, in+"\n")
		if want == "NOTFOUND\n" || want == "NOTFOUND" {
			want = ""
		}
		if strings.TrimRight(want, "\n") != strings.TrimRight(string(out), "\n") {
			t.Errorf("%q: modprobe printed\n%s\nkmodref printed\n%s", in, out, want)
		}
	}
}
