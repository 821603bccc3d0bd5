package modprobed

import (
	"fmt"
	"strings"
	"testing"

	"github.com/modautoload/modautoload/internal/problemcap"
	"github.com/modautoload/modautoload/internal/testfs"
)

// cmdlineCases are kernel command lines (without the kernel's trailing
// newline) and the dump they give. TestModprobeCmdline feeds each to kmod's
// modprobe -c as well.
var cmdlineCases = []struct {
	name     string
	in       string
	dump     string
	problems int
}{
	{"option", "quiet snd-hda-intel.model=auto", "options snd_hda_intel model=auto\n", 0},
	{"boolean", "m-1.p", "options m_1 p\n", 0},
	{"empty param", "m. m.p=", "options m \noptions m p=\n", 0},
	{"empty module", ".e=1", "options  e=1\n", 0},
	{"dots and equals in value", "m.p=a=b.c", "options m p=a=b.c\n", 0},
	{"equals right after dot", "a.=b", "options a =b\n", 0},
	{"second dot spoils", "x.y.z=1 ok.a=1", "options ok a=1\n", 0},
	{"equals before dot spoils", "root=/dev/sda1.2 =x.y", "", 0},
	{"quoted value", `foo.bar="a b" next.x=1`, "options foo bar=\"a b\"\noptions next x=1\n", 0},
	{"quoted value with tab", "m.p=\"a\tb\"", "options m p=\"a b\"\n", 0},
	{"quoted value with newline", "q.n=\"a\nb\"", "options q n=\"a\nb\"\n", 0},
	{"quotes inside value", `m.p="a"b"c d"`, "options m p=\"a\"b\"c d\"\n", 0},
	{"grub quoting", `"grub.p=x y" z.a=1`, "options grub p=\"x y\"\noptions z a=1\n", 0},
	{"grub quoting, text after", `"m.p=1"x n.q=2`, "options m p=\"1\"x\noptions n q=2\n", 0},
	{"quoted name and param", `"m.p"=1 n.q=2`, "options n q=2\n", 0},
	{"two leading quotes", `""m.p=1 n.q=2`, "options n q=2\n", 0},
	{"quote in name swallows the rest", `a"b.c=d tail.x=1`, "", 0},
	{"quote in param swallows the rest", `m.p"q=1 tail.x=1`, "", 0},
	{"unterminated value", `ok.a=1 m.p="unterminated`, "options ok a=1\n", 0},
	{"quoted non-module word", `dyndbg="file x +p" ok.a=1`, "options ok a=1\n", 0},
	{"blacklist", "modprobe.blacklist=a-b,,c modprobe.blacklist=d", "blacklist a-b\nblacklist \nblacklist c\nblacklist d\n", 0},
	{"blacklist quoted", `modprobe.blacklist="q,r" "modprobe.blacklist=s,t"`,
		"blacklist \"q\nblacklist r\"\nblacklist \"s\nblacklist t\"\n", 0},
	{"blacklist without value", "modprobe.blacklist", "options modprobe blacklist\n", 0},
	{"other modprobe option", "modprobe.foo=1", "options modprobe foo=1\n", 0},
	{"separators", "s1.a=1\vs2.b=2\fs3.c=3\rs4.d=4\ts5.e=5  s6.f=6",
		"options s1 a=1\noptions s2 b=2\noptions s3 c=3\noptions s4 d=4\noptions s5 e=5\noptions s6 f=6\n", 0},
	{"init arguments too", "ro -- --init-flag x.y=1", "options x y=1\n", 0},
	{"bad module name", "m[.p=1 ok.a=1 m]-x.q=2", "options ok a=1\n", 2},
	{"brackets in module name", "m[-]-x.p=1", "options m[-]_x p=1\n", 0},
	{"empty", "", "", 0},
}

func TestCmdline(t *testing.T) {
	for _, tt := range cmdlineCases {
		t.Run(tt.name, func(t *testing.T) {
			c := &Config{}
			c.addCmdline(tt.in + "\n")
			if got := dump(t, c); got != tt.dump {
				t.Errorf("dump of %q:\n got %q\nwant %q", tt.in, got, tt.dump)
			}
			if len(c.Problems) != tt.problems {
				t.Errorf("problems = %v, want %d", c.Problems, tt.problems)
			}
			for _, p := range c.Problems {
				if !strings.HasPrefix(p.Error(), "kernel command line: ") {
					t.Errorf("problem %q does not name the kernel command line", p)
				}
			}
		})
	}
}

func TestCmdlineLimits(t *testing.T) {
	// libkmod reads 4095 bytes of /proc/cmdline and stops at a NUL.
	c := &Config{}
	c.addCmdline(strings.Repeat("a", 4082) + " m.p=123456789 late.q=1")
	if got, want := dump(t, c), "options m p=12345678\n"; got != want {
		t.Errorf("long line: got %q, want %q", got, want)
	}
	c = &Config{}
	c.addCmdline("a.b=1 \x00 c.d=2")
	if got, want := dump(t, c), "options a b=1\n"; got != want {
		t.Errorf("NUL: got %q, want %q", got, want)
	}
}

func TestCmdlineAfterFiles(t *testing.T) {
	dir := t.TempDir()
	testfs.WriteFiles(t, dir, map[string]string{
		"a.conf": "options snd-foo a=1\nblacklist one\n",
		"b.conf": "options snd_foo b=2\n",
	})
	c := load(t, LoadOptions{
		Paths:   []string{dir},
		Cmdline: "snd-foo.c=3 modprobe.blacklist=two\n",
	})
	if got, want := c.Options("snd_foo"), "a=1 b=2 c=3"; got != want {
		t.Errorf("Options = %q, want %q", got, want)
	}
	for _, m := range []string{"one", "two"} {
		if !c.Blacklisted(m) {
			t.Errorf("%s not blacklisted", m)
		}
	}
}

// The kernel command line is one file for the bound on problems: a line
// full of bad module names keeps problemcap.PerFile of them and one that
// counts the rest, and a good word after them still applies.
func TestCmdlineBoundsProblems(t *testing.T) {
	const good = " ok.a=1"
	bad := (maxCmdline - len(good)) / len("m[.p ")
	c := &Config{}
	c.addCmdline(strings.Repeat("m[.p ", bad) + good)
	if got := c.Options("ok"); got != "a=1" {
		t.Errorf("options of ok: %q, want a=1", got)
	}
	if len(c.Problems) != problemcap.PerFile+1 {
		t.Fatalf("%d problems, want %d", len(c.Problems), problemcap.PerFile+1)
	}
	want := fmt.Sprintf("%s: %d further problems from here on are not reported", cmdlineFile, bad-problemcap.PerFile)
	if got := c.Problems[problemcap.PerFile].Error(); got != want {
		t.Errorf("last problem %q, want %q", got, want)
	}
}
