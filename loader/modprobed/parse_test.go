package modprobed

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/modautoload/modautoload/internal/problemcap"
	"github.com/modautoload/modautoload/internal/testfs"
)

// parseCases are single files with the dump and problem lines they give.
// TestModprobeParseCases runs each through kmod's modprobe -c as well.
var parseCases = []struct {
	name     string
	in       string
	dump     string
	problems []string
}{
	{"alias", "alias pci:v*d* snd-hda-intel\n", "alias pci:v*d* snd_hda_intel\n", nil},
	{"alias dashes kept in brackets", "alias a-[0-9]-b[-x]-c m-1\n", "alias a_[0-9]_b[-x]_c m_1\n", nil},
	{"alias module brackets", "alias ok m[-]x\n", "alias ok m[-]x\n", nil},
	{"alias extra words ignored", "alias  \t a-b\t  mod-x  trailing junk\n", "alias a_b mod_x\n", nil},
	{"alias stray ]", "alias x]y m\n", "", []string{"t.conf:1"}},
	{"alias open [", "alias [a- m\n", "", []string{"t.conf:1"}},
	{"alias bad module", "alias a m]\n", "", []string{"t.conf:1"}},
	{"alias one word", "alias onlyone\n", "", []string{"t.conf:1"}},
	{"blacklist", "blacklist bad-mod extra\n", "blacklist bad_mod\n", nil},
	{"blacklist brackets", "blacklist [a-b]-c\n", "blacklist [a-b]_c\n", nil},
	{"blacklist bad", "blacklist foo]\nblacklist\n", "", []string{"t.conf:1", "t.conf:2"}},
	{"options raw rest", "options m   a=1\tb=2  \n", "options m   a=1 b=2  \n", nil},
	{"options normalised name only", "options snd-pcsp index=-2 x-y=a-b\n", "options snd_pcsp index=-2 x-y=a-b\n", nil},
	{"options missing", "options n\noptions n \n", "", []string{"t.conf:1", "t.conf:2"}},
	{"options one blank", "options n  \n", "options n  \n", nil},
	{"install", "install i-x /bin/true  x\n", "install i_x /bin/true  x\n", nil},
	{"install keeps tabs", "install m\tcmd\targ\n", "install m cmd\targ\n", nil},
	{"install pattern", "install snd-* /bin/true\n", "install snd_* /bin/true\n", nil},
	{"install missing", "install m\n", "", []string{"t.conf:1"}},
	{"remove", "remove r-m /bin/false\n", "remove r_m /bin/false\n", nil},
	{"softdep", "softdep a pre: x y post: z\n", "softdep a pre: x y post: z\n", nil},
	{"softdep names kept", "softdep a-b pre: c-d post: e-f\n", "softdep a_b pre: c-d post: e-f\n", nil},
	{"softdep interleaved", "softdep b pre: p1 post: q1 pre: p2\n", "softdep b pre: p1 p2 post: q1\n", nil},
	{"softdep words before pre dropped", "softdep e foo pre: a\n", "softdep e pre: a\n", nil},
	{"softdep no list", "softdep e foo\nsoftdep s2 pre:\n", "softdep e \nsoftdep s2 \n", nil},
	{"softdep two blanks hide pre:", "softdep d  pre: x\nsoftdep c\t pre: x\n", "softdep d \nsoftdep c \n", nil},
	{"softdep three blanks fine", "softdep d   pre: x\n", "softdep d pre: x\n", nil},
	{"softdep glued", "softdep a pre:x\n", "softdep a \n", nil},
	{"softdep isspace", "softdep a pre:\vx\fy\rz\n", "softdep a pre: x y z\n", nil},
	{"softdep missing", "softdep s\n", "", []string{"t.conf:1"}},
	{"weakdep", "weakdep w-x a-b c\n", "weakdep w_x a-b c\n", nil},
	{"weakdep two blanks", "weakdep w  a b\n", "weakdep w  a b\n", nil},
	{"weakdep missing", "weakdep w\n", "", []string{"t.conf:1"}},
	{"include and config", "include /etc/x\nconfig y\n", "", []string{"t.conf:1", "t.conf:2"}},
	{"unknown", "foo bar\nAlias a b\n", "", []string{"t.conf:1", "t.conf:2"}},
	{"comments and blanks", "#c\n# c\n\n   \n\t\nblacklist x\n", "blacklist x\n", nil},
	{"indented comment is a bad line", "  # comment\n", "", []string{"t.conf:1"}},
	{"continuation", "options m1 a=1 \\\n  b=2\n", "options m1 a=1   b=2\n", nil},
	{"problem on first line of logical line", "blacklist a\nbad1 \\\nline\nbad2\n", "blacklist a\n", []string{"t.conf:2", "t.conf:4"}},
	{"comment continues", "# c \\\nblacklist x\nblacklist y\n", "blacklist y\n", nil},
	{"backslash escapes next byte", "options m2 x\\y\\\\z\n", "options m2 xy\\z\n", nil},
	{"backslash at EOF dropped", "options m3 eof\\", "options m3 eof\n", nil},
	{"lone backslash at EOF", "blacklist a\n\\", "blacklist a\n", nil},
	{"no final newline", "blacklist a", "blacklist a\n", nil},
	{"CR is part of words", "blacklist crlf\r\n", "blacklist crlf\r\n", nil},
	{"CR-only line", "\r\n", "", []string{"t.conf:1"}},
	{"NUL ends the line", "blacklist nul\x00after\n\x00garbage\n", "blacklist nul\n", nil},
	{"duplicates kept", "blacklist a\nblacklist a\n", "blacklist a\nblacklist a\n", nil},
}

// Expected dumps are what kmod 30's modprobe -c prints for the same line.
func TestParseDirectives(t *testing.T) {
	for _, tt := range parseCases {
		t.Run(tt.name, func(t *testing.T) {
			c := parsed(tt.in)
			if got := dump(t, c); got != tt.dump {
				t.Errorf("dump:\n got %q\nwant %q", got, tt.dump)
			}
			if got := problemLines(t, c); !slices.Equal(got, tt.problems) {
				t.Errorf("problems at %q, want %q (%v)", got, tt.problems, c.Problems)
			}
		})
	}
}

func TestParseErrorNamesFileLineAndDirective(t *testing.T) {
	c := parsed("blacklist a\n\nfrobnicate x\n")
	if len(c.Problems) != 1 {
		t.Fatalf("problems = %v", c.Problems)
	}
	if got, want := c.Problems[0].Error(), `t.conf:3: unknown directive "frobnicate"`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestDumpOrder(t *testing.T) {
	// modprobe -c prints by kind, not by line: blacklist, install, remove,
	// alias, options, softdep, weakdep.
	in := strings.Join([]string{
		"weakdep w a", "softdep s pre: a", "options o x=1", "alias al m",
		"remove r cmd", "install i cmd", "blacklist b",
	}, "\n")
	want := "blacklist b\ninstall i cmd\nremove r cmd\nalias al m\noptions o x=1\nsoftdep s pre: a\nweakdep w a\n"
	if got := dump(t, parsed(in)); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// A file of bad lines keeps problemcap.PerFile problems and one that
// counts the rest, and its good lines, even after the bad ones, still
// apply. Another file's problems are counted on their own.
func TestLoadBoundsProblemsPerFile(t *testing.T) {
	dir := t.TempDir()
	const tail = "blacklist after_the_flood\n"
	bad := (maxConfigFile - len(tail)) / 2
	flood := strings.Repeat("x\n", bad) + tail
	testfs.WriteFiles(t, dir, map[string]string{
		"a.conf": flood,
		"b.conf": "y\nblacklist b\nz\n",
	})
	c := load(t, LoadOptions{Paths: []string{dir}})
	if !c.Blacklisted("after_the_flood") || !c.Blacklisted("b") {
		t.Errorf("good lines not applied: blacklist %q", c.Blacklist)
	}
	want := make([]string, 0, problemcap.PerFile+3)
	for i := range problemcap.PerFile {
		want = append(want, "a.conf:"+strconv.Itoa(i+1))
	}
	want = append(want, "a.conf:"+strconv.Itoa(problemcap.PerFile+1), "b.conf:1", "b.conf:3")
	if got := problemLines(t, c); !slices.Equal(got, want) {
		t.Fatalf("%d problems at %q..., want %d at %q...", len(got), got[:min(len(got), 3)], len(want), want[:3])
	}
	last := c.Problems[problemcap.PerFile].Error()
	if wantMsg := fmt.Sprintf(": %d further problems from here on are not reported", bad-problemcap.PerFile); !strings.HasSuffix(last, wantMsg) {
		t.Errorf("last problem of a.conf is %q, want it to end %q", last, wantMsg)
	}
}

// A problem quotes at most a clipped piece of a long word.
func TestProblemQuotesAreClipped(t *testing.T) {
	long := strings.Repeat("w", 1<<20)
	c := parsed(long + "\nalias " + long + "[ m\nblacklist ok\n")
	if !c.Blacklisted("ok") {
		t.Error("the line after the long ones is not applied")
	}
	if len(c.Problems) != 2 {
		t.Fatalf("problems: %d, want 2", len(c.Problems))
	}
	for _, p := range c.Problems {
		if msg := p.Error(); len(msg) > 200 || !strings.Contains(msg, `www..."`) {
			t.Errorf("problem of %d bytes, want a clipped quote: %.200q", len(msg), msg)
		}
	}
}
