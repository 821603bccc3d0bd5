package modlist

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/modautoload/modautoload/internal/problemcap"
	"github.com/modautoload/modautoload/internal/testfs"
	"github.com/modautoload/modautoload/internal/testtool"
)

// entries prints entries as "name[ params][ alone]@where" for comparison.
func entries(l *List) string {
	var out []string
	for _, e := range l.Entries {
		s := e.Name
		if e.Params != "" {
			s += " {" + e.Params + "}"
		}
		if e.Alone {
			s += " alone"
		}
		out = append(out, s+"@"+e.Where())
	}
	return strings.Join(out, "\n")
}

func problems(l *List) string {
	var out []string
	for _, p := range l.Problems {
		out = append(out, p.Error())
	}
	return strings.Join(out, "\n")
}

// A file's lines, as systemd-modules-load reads them and as /etc/modules
// reads. Every case is one file, "x.conf" in /etc/modules-load.d or
// /etc/modules itself.
var parseCases = []struct {
	name, in       string
	form           Form
	want, problems string
}{
	{"plain", "loop\nbr_netfilter\n", FormModulesLoad, "loop@F:1\nbr_netfilter@F:2", ""},
	{"no final newline", "loop", FormModulesLoad, "loop@F:1", ""},
	{"blanks stripped, empty lines skipped", "  loop\t\n\n \t \nfuse  \n", FormModulesLoad, "loop@F:1\nfuse@F:4", ""},
	{"comments at line start only", "# a\n; b\n  # c\nx # not a comment\n", FormModulesLoad, "x # not a comment@F:4", ""},
	{"a line is one name, blanks inside kept", "loop max_loop=8\n", FormModulesLoad, "loop max_loop=8@F:1", ""},
	{"CR LF is one line end", "a\r\nb\r\n", FormModulesLoad, "a@F:1\nb@F:2", ""},
	{"LF CR is one line end", "a\n\rb", FormModulesLoad, "a@F:1\nb@F:2", ""},
	{"CR alone ends a line", "a\rb", FormModulesLoad, "a@F:1\nb@F:2", ""},
	{"LF LF is two", "a\n\nb", FormModulesLoad, "a@F:1\nb@F:3", ""},
	{"NUL ends a line", "a\x00b", FormModulesLoad, "a@F:1\nb@F:2", ""},
	{"LF NUL is one, NUL LF two", "a\n\x00b\x00\nc", FormModulesLoad, "a@F:1\nb@F:2\nc@F:4", ""},
	{"CR LF NUL is one", "a\r\n\x00b", FormModulesLoad, "a@F:1\nb@F:2", ""},
	{"form feed is not a blank to systemd", "\fa\n", FormModulesLoad, "\fa@F:1", ""},
	{"listed twice, - and _ alike: first wins", "dm-crypt\ndm_crypt\nloop\n", FormModulesLoad, "dm-crypt@F:1\nloop@F:3", ""},
	{"alias kept as written", "fs-btrfs\npci:v00008086d*\n", FormModulesLoad, "fs-btrfs@F:1\npci:v00008086d*@F:2", ""},
	{"name too long", strings.Repeat("a", 4097) + "\nok\n", FormModulesLoad, "ok@F:2", `F:1: module name longer than 4096 bytes ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"...)`},
	{"4096 bytes is fine", strings.Repeat("b", 4096) + "\n", FormModulesLoad, strings.Repeat("b", 4096) + "@F:1", ""},
	{"line of 1 MiB ends the file", "a\n" + strings.Repeat("x", 1<<20) + "\nb\n", FormModulesLoad, "a@F:1", "F:2: line of 1048576 bytes or more; the rest of the file is not read"},
	{"alone directive", "#modautoload:alone nvidia zfs\nnvidia\nloop\nzfs\n", FormModulesLoad, "nvidia alone@F:2\nloop@F:3\nzfs alone@F:4", ""},
	{"alone directive, - and _ alike", "nvidia-drm\n  #modautoload:alone nvidia_drm\n", FormModulesLoad, "nvidia-drm alone@F:1", ""},
	{"alone with no name", "#modautoload:alone\na\n", FormModulesLoad, "a@F:2", "F:1: #modautoload:alone names no module"},
	{"unknown directive", "#modautoload:first x\na\n", FormModulesLoad, "a@F:2", `F:1: unknown directive "#modautoload:first" (known: #modautoload:alone NAME...)`},
	{"a comment that is no directive", "# modautoload:alone x\nx\n", FormModulesLoad, "x@F:2", ""},

	{"etc: module and parameters", "loop max_loop=8  part_show=1\nfuse\n", FormEtcModules, "loop {max_loop=8 part_show=1}@F:1\nfuse@F:2", ""},
	{"etc: comments", "# Debian's header\nloop # Alpine's trailing comment\n;x\n", FormEtcModules, "loop@F:2", ""},
	{"etc: # inside a value kept", "m opt=a#b\n", FormEtcModules, "m {opt=a#b}@F:1", ""},
	{"etc: quotes go to the kernel as they are", "m opt=\"a b\"\n", FormEtcModules, "m {opt=\"a b\"}@F:1", ""},
	{"etc: tabs separate", "\tm\tp=1\t\n", FormEtcModules, "m {p=1}@F:1", ""},
	{"etc: first of two wins", "loop\nloop max_loop=8\n", FormEtcModules, "loop@F:1", ""},
	{"etc: a directive", "#modautoload:alone loop\nloop\n", FormEtcModules, "loop alone@F:2", ""},
	{"binary junk is names, not a crash", "\xff\xfe\x01\n", FormModulesLoad, "\xff\xfe\x01@F:1", ""},
}

func TestParse(t *testing.T) {
	for _, tt := range parseCases {
		t.Run(tt.name, func(t *testing.T) {
			r := &reader{list: &List{}, seen: map[string]bool{}, alone: map[string]bool{}}
			r.parse("F", []byte(tt.in), tt.form)
			for i := range r.list.Entries {
				r.list.Entries[i].Alone = r.alone[dedupKey(r.list.Entries[i].Name)]
			}
			if got := entries(r.list); got != tt.want {
				t.Errorf("entries\n%q\nwant\n%q", got, tt.want)
			}
			if got := problems(r.list); got != tt.problems {
				t.Errorf("problems\n%q\nwant\n%q", got, tt.problems)
			}
		})
	}
}

func TestCmdline(t *testing.T) {
	for _, tt := range []struct {
		name, cmdline string
		initrd        bool
		want, probs   string
	}{
		{"comma-separated, repeated", "quiet modules_load=a,b root=/dev/vda modules_load=c", false,
			"a@kernel command line, word 2\nb@kernel command line, word 2\nc@kernel command line, word 4", ""},
		{"the other spelling", "modules-load=a", false, "a@kernel command line, word 1", ""},
		{"empty items skipped", "modules_load=,a,,b,", false, "a@kernel command line, word 1\nb@kernel command line, word 1", ""},
		{"rd. ignored in the real root", "rd.modules_load=a modules_load=b", false, "b@kernel command line, word 2", ""},
		{"rd. applies in an initramfs", "rd.modules_load=a modules_load=b", true, "a@kernel command line, word 1\nb@kernel command line, word 2", ""},
		{"rd. with the other spelling", "rd.modules-load=a", true, "a@kernel command line, word 1", ""},
		{"quotes removed", `"modules_load=a,b" modules_load='c'`, false,
			"a@kernel command line, word 1\nb@kernel command line, word 1\nc@kernel command line, word 2", ""},
		{"quoted blanks stay in the word", `modules_load="a b"`, false, "a b@kernel command line, word 1", ""},
		{"unclosed quote runs to the end", `modules_load="a x=y`, false, "a x=y@kernel command line, word 1", ""},
		{"no value", "modules_load modules_load=", false, "", "kernel command line: word 1: modules_load without a value, ignored"},
		{"other keys", "modules_loadx=a xmodules_load=b modules.load=c", false, "", ""},
		{"a NUL ends it", "modules_load=a\x00 modules_load=b", false, "a@kernel command line, word 1", ""},
		{"line ends separate words, as /proc/cmdline's last", "modules_load=a\nmodules_load=b\r\n", false, "a@kernel command line, word 1\nb@kernel command line, word 2", ""},
		{"duplicates once", "modules_load=a-b,a_b", false, "a-b@kernel command line, word 1", ""},
		{"backslash is a character", `modules_load=a\,b`, false, `a\@kernel command line, word 1` + "\nb@kernel command line, word 1", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := Read(Options{Root: t.TempDir(), Cmdline: tt.cmdline, Initrd: tt.initrd})
			if got := entries(l); got != tt.want {
				t.Errorf("entries\n%q\nwant\n%q", got, tt.want)
			}
			if got := problems(l); got != tt.probs {
				t.Errorf("problems\n%q\nwant\n%q", got, tt.probs)
			}
		})
	}
}

func TestKernelBlacklist(t *testing.T) {
	got := strings.Join(KernelBlacklist(`quiet module_blacklist=a,b-c "module-blacklist=d" rd.module_blacklist=e module_blacklist`), " ")
	if got != "a b-c d" {
		t.Errorf("got %q", got)
	}
}

// TestRead stages whole systems: directories, shadowing, masking,
// /etc/modules and its link, hostile entries.
func TestRead(t *testing.T) {
	for _, tt := range []struct {
		name        string
		files       map[string]string
		opts        Options
		want, probs string
	}{
		{
			name: "sorted by name across directories, earlier directory shadows",
			files: map[string]string{
				"etc/modules-load.d/b.conf":           "from_etc_b\n",
				"usr/lib/modules-load.d/b.conf":       "shadowed\n",
				"usr/lib/modules-load.d/a.conf":       "from_usr_a\n",
				"run/modules-load.d/c.conf":           "from_run_c\n",
				"lib/modules-load.d/c.conf":           "shadowed_too\n",
				"usr/local/lib/modules-load.d/0.conf": "from_local_0\n",
			},
			want: "from_local_0@/usr/local/lib/modules-load.d/0.conf:1\nfrom_usr_a@/usr/lib/modules-load.d/a.conf:1\n" +
				"from_etc_b@/etc/modules-load.d/b.conf:1\nfrom_run_c@/run/modules-load.d/c.conf:1",
		},
		{
			name: "a link to /dev/null masks, an empty file too",
			files: map[string]string{
				"etc/modules-load.d/x.conf":     "->/dev/null",
				"usr/lib/modules-load.d/x.conf": "masked\n",
				"run/modules-load.d/y.conf":     "",
				"lib/modules-load.d/y.conf":     "masked_too\n",
				"lib/modules-load.d/z.conf":     "kept\n",
			},
			want: "kept@/lib/modules-load.d/z.conf:1",
		},
		{
			name: "only *.conf, hidden files skipped",
			files: map[string]string{
				"etc/modules-load.d/a.txt":     "no\n",
				"etc/modules-load.d/.h.conf":   "no\n",
				"etc/modules-load.d/conf":      "no\n",
				"etc/modules-load.d/ok.conf":   "yes\n",
				"etc/modules-load.d/ok.conf~":  "no\n",
				"etc/modules-load.d/b.conf.sw": "no\n",
			},
			want: "yes@/etc/modules-load.d/ok.conf:1",
		},
		{
			name: "a dangling link shadows and reads as nothing",
			files: map[string]string{
				"etc/modules-load.d/a.conf": "->/nonexistent/a.conf",
				"lib/modules-load.d/a.conf": "shadowed\n",
			},
			want: "",
		},
		{
			name: "hostile entries: a directory, a FIFO are problems; the rest applies",
			files: map[string]string{
				"etc/modules-load.d/d.conf": "/",
				"etc/modules-load.d/z.conf": "fine\n",
			},
			want:  "fine@/etc/modules-load.d/z.conf:1",
			probs: "/etc/modules-load.d/d.conf: cannot read: not a regular file (d---------)",
		},
		{
			name: "the command line first, then the files, then /etc/modules",
			files: map[string]string{
				"etc/modules":               "loop max_loop=8\nfuse\n",
				"etc/modules-load.d/a.conf": "overlay\nfuse\n",
			},
			opts: Options{Cmdline: "modules_load=br_netfilter"},
			want: "br_netfilter@kernel command line, word 1\noverlay@/etc/modules-load.d/a.conf:1\nfuse@/etc/modules-load.d/a.conf:2\n" +
				"loop {max_loop=8}@/etc/modules:1",
		},
		{
			name: "Debian's link to /etc/modules: read once, in its form, in the link's place",
			files: map[string]string{
				"etc/modules":                     "loop max_loop=8\n",
				"etc/modules-load.d/modules.conf": "->../modules",
				"etc/modules-load.d/z.conf":       "zram\n",
				"etc/modules-load.d/a.conf":       "fuse\n",
			},
			want: "fuse@/etc/modules-load.d/a.conf:1\nloop {max_loop=8}@/etc/modules-load.d/modules.conf:1\nzram@/etc/modules-load.d/z.conf:1",
		},
		{
			name: "Debian's link: /etc/modules is not read again after it, its problems told once",
			files: map[string]string{
				"etc/modules":                     "loop\n#modautoload:bogus\n",
				"etc/modules-load.d/modules.conf": "->../modules",
			},
			want:  "loop@/etc/modules-load.d/modules.conf:1",
			probs: `/etc/modules-load.d/modules.conf:2: unknown directive "#modautoload:bogus" (known: #modautoload:alone NAME...)`,
		},
		{
			name: "a directive marks the module spelled with - or _ in another file",
			files: map[string]string{
				"etc/modules-load.d/a.conf": "nvidia-drm\n",
				"etc/modules-load.d/b.conf": "#modautoload:alone nvidia_drm\n",
			},
			want: "nvidia-drm alone@/etc/modules-load.d/a.conf:1",
		},
		{
			name:  "a named file that is missing is a problem, by absolute path too",
			opts:  Options{Files: []string{"@ROOT@/nowhere.conf"}},
			want:  "",
			probs: "/nowhere.conf: cannot read: no such file or directory",
		},
		{
			name:  "NoEtcModules",
			files: map[string]string{"etc/modules": "loop\n"},
			opts:  Options{NoEtcModules: true},
			want:  "",
		},
		{
			name: "a directive in one file marks the module listed in another",
			files: map[string]string{
				"etc/modules-load.d/a.conf": "nvidia\n",
				"etc/modules-load.d/b.conf": "#modautoload:alone nvidia\n",
			},
			opts: Options{Cmdline: "modules_load=x"},
			want: "x@kernel command line, word 1\nnvidia alone@/etc/modules-load.d/a.conf:1",
		},
		{
			name: "named files: searched in the directories, or by absolute path; no command line, no /etc/modules",
			files: map[string]string{
				"etc/modules":                   "no\n",
				"usr/lib/modules-load.d/a.conf": "from_a\n",
				"elsewhere/b.list":              "from_b\n",
			},
			opts:  Options{Files: []string{"a.conf", "@ROOT@/elsewhere/b.list", "missing.conf", "@ROOT@/etc/modules"}, Cmdline: "modules_load=no"},
			want:  "from_a@/usr/lib/modules-load.d/a.conf:1\nfrom_b@/elsewhere/b.list:1\nno@/etc/modules:1",
			probs: "missing.conf: not found in /etc/modules-load.d, /run/modules-load.d, /usr/local/lib/modules-load.d, /usr/lib/modules-load.d, /lib/modules-load.d",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			testfs.WriteFiles(t, root, tt.files)
			o := tt.opts
			o.Root = root
			for i, f := range o.Files {
				o.Files[i] = strings.ReplaceAll(f, "@ROOT@", root)
			}
			l := Read(o)
			if got := strings.ReplaceAll(entries(l), root, ""); got != tt.want {
				t.Errorf("entries\n%s\nwant\n%s", got, tt.want)
			}
			if got := strings.ReplaceAll(problems(l), root, ""); got != tt.probs {
				t.Errorf("problems\n%q\nwant\n%q", got, tt.probs)
			}
		})
	}
}

// A file of bad lines keeps problemcap.PerFile problems and one that
// counts the rest, and its entries, even after the bad lines, still load.
// Another file's problems are counted on their own.
func TestReadBoundsProblemsPerFile(t *testing.T) {
	const bad = "#modautoload:bogus\n"
	const tail = "after_the_flood\n"
	n := (maxFile - len(tail)) / len(bad)
	root := t.TempDir()
	testfs.WriteFiles(t, root, map[string]string{
		"etc/modules-load.d/a.conf": strings.Repeat(bad, n) + tail,
		"etc/modules-load.d/b.conf": "#modautoload:x\nb\n#modautoload:alone\n",
	})
	l := Read(Options{Root: root, NoEtcModules: true})
	want := fmt.Sprintf("after_the_flood@/etc/modules-load.d/a.conf:%d\nb@/etc/modules-load.d/b.conf:2", n+1)
	if got := strings.ReplaceAll(entries(l), root, ""); got != want {
		t.Errorf("entries\n%s\nwant\n%s", got, want)
	}
	var where, wantWhere []string
	for _, p := range l.Problems {
		var pe *ParseError
		if !errors.As(p, &pe) {
			t.Fatalf("problem %v is %T", p, p)
		}
		where = append(where, fmt.Sprintf("%s:%d", filepath.Base(pe.File), pe.Line))
	}
	for i := range problemcap.PerFile + 1 {
		wantWhere = append(wantWhere, fmt.Sprintf("a.conf:%d", i+1))
	}
	wantWhere = append(wantWhere, "b.conf:1", "b.conf:3")
	if !slices.Equal(where, wantWhere) {
		t.Fatalf("%d problems at %q..., want %d at %q...", len(where), where[:min(len(where), 3)], len(wantWhere), wantWhere[:3])
	}
	want = fmt.Sprintf(": %d further problems from here on are not reported", n-problemcap.PerFile)
	if got := l.Problems[problemcap.PerFile].Error(); !strings.HasSuffix(got, want) {
		t.Errorf("last problem of a.conf %q, want it to end %q", got, want)
	}
}

// A line too long to read is reported even past the bound: it says why
// the rest of the file is missing.
func TestReadReportsALongLineAfterManyProblems(t *testing.T) {
	const bad = 2 * problemcap.PerFile
	r := &reader{list: &List{}, seen: map[string]bool{}, alone: map[string]bool{}}
	r.parse("f.conf", []byte(strings.Repeat("#modautoload:bogus\n", bad)+strings.Repeat("x", maxLine)+"\nlost\n"), FormModulesLoad)
	if len(r.list.Problems) != problemcap.PerFile+2 {
		t.Fatalf("%d problems, want %d", len(r.list.Problems), problemcap.PerFile+2)
	}
	if got, want := r.list.Problems[problemcap.PerFile].Error(), fmt.Sprintf("f.conf:%d: line of %d bytes or more", bad+1, maxLine); !strings.HasPrefix(got, want) {
		t.Errorf("problem %q, want it to start %q", got, want)
	}
	if len(r.list.Entries) != 0 {
		t.Errorf("entries after the long line: %v", r.list.Entries)
	}
}

// The command line is one file for the bound on problems.
func TestCmdlineBoundsProblems(t *testing.T) {
	const n = 3 * problemcap.PerFile
	l := Read(Options{Root: t.TempDir(), Cmdline: strings.Repeat("modules_load ", n) + "modules_load=ok"})
	if got, want := entries(l), fmt.Sprintf("ok@kernel command line, word %d", n+1); got != want {
		t.Errorf("entries %q, want %q", got, want)
	}
	if len(l.Problems) != problemcap.PerFile+1 {
		t.Fatalf("%d problems, want %d", len(l.Problems), problemcap.PerFile+1)
	}
	want := fmt.Sprintf("kernel command line: %d further problems from here on are not reported", n-problemcap.PerFile)
	if got := l.Problems[problemcap.PerFile].Error(); got != want {
		t.Errorf("last problem %q, want %q", got, want)
	}
}

func TestReadRefusesAFIFO(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "etc/modules-load.d")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := mkfifo(filepath.Join(dir, "f.conf")); err != nil {
		testtool.Missing(t, "mkfifo: %v", err)
	}
	l := Read(Options{Root: root})
	var pe *ParseError
	if len(l.Problems) != 1 || !errors.As(l.Problems[0], &pe) || !strings.HasSuffix(pe.File, "f.conf") ||
		!strings.Contains(pe.Msg, "not a regular file") {
		t.Errorf("problems %v", l.Problems)
	}
}

func TestInInitrd(t *testing.T) {
	root := t.TempDir()
	if InInitrd(root) {
		t.Error("initramfs without /etc/initrd-release")
	}
	testfs.WriteFiles(t, root, map[string]string{"etc/initrd-release": ""})
	if !InInitrd(root) {
		t.Error("not an initramfs with /etc/initrd-release")
	}
}

func FuzzParse(f *testing.F) {
	for _, tt := range parseCases {
		f.Add([]byte(tt.in), tt.form == FormEtcModules)
	}
	f.Fuzz(func(t *testing.T, data []byte, etc bool) {
		form := FormModulesLoad
		if etc {
			form = FormEtcModules
		}
		r := &reader{list: &List{}, seen: map[string]bool{}, alone: map[string]bool{}}
		r.parse("fuzz.conf", data, form)
		// Line numbers count line ends; none can exceed their number.
		lines := 1
		for i := 0; i < len(data); {
			_, next := nextLine(data, i)
			if next == i {
				t.Fatalf("nextLine does not advance at %d", i)
			}
			i = next
			lines++
		}
		for _, err := range r.list.Problems {
			var pe *ParseError
			if !errors.As(err, &pe) || pe.File != "fuzz.conf" || pe.Line < 1 || pe.Line > lines {
				t.Fatalf("problem %#v does not point into the file (%d lines)", err, lines)
			}
			if prefix := fmt.Sprintf("fuzz.conf:%d: ", pe.Line); !strings.HasPrefix(err.Error(), prefix) {
				t.Fatalf("problem %q lacks %q", err, prefix)
			}
		}
		seen := map[string]bool{}
		for _, e := range r.list.Entries {
			if e.Name == "" || strings.ContainsAny(e.Name, "\n\r\x00") || strings.ContainsAny(e.Params, "\n\r\x00") {
				t.Fatalf("entry %q {%q}: empty, or a line end inside", e.Name, e.Params)
			}
			if e.Name != strings.Trim(e.Name, " \t") || e.Name[0] == '#' || e.Name[0] == ';' || len(e.Name) > maxName {
				t.Fatalf("entry %q: blanks around, a comment, or too long", e.Name)
			}
			if e.Line < 1 || e.Line > lines {
				t.Fatalf("entry %q at line %d of %d", e.Name, e.Line, lines)
			}
			if seen[dedupKey(e.Name)] {
				t.Fatalf("entry %q twice", e.Name)
			}
			seen[dedupKey(e.Name)] = true
		}
	})
}

func FuzzCmdline(f *testing.F) {
	f.Add("modules_load=a,b rd.modules_load=c \"modules_load=d e\" modules_load", true)
	f.Add("modules-load='x,,y' module_blacklist=z", false)
	f.Fuzz(func(t *testing.T, cmdline string, initrd bool) {
		r := &reader{list: &List{}, seen: map[string]bool{}, alone: map[string]bool{}}
		r.cmdline(cmdline, initrd)
		for _, e := range r.list.Entries {
			if e.File != CmdlineFile || e.Name == "" || strings.Contains(e.Name, ",") || strings.IndexByte(e.Name, 0) >= 0 {
				t.Fatalf("entry %+v", e)
			}
		}
		for _, w := range cmdlineWords(cmdline) {
			if w == "" && !strings.ContainsAny(cmdline, `"'`) {
				t.Fatalf("empty word from %q", cmdline)
			}
		}
	})
}

func mkfifo(path string) error { return unix.Mkfifo(path, 0o644) }
