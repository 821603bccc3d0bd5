package manpage

import (
	"go/doc/comment"
	"strings"
	"testing"
)

// Text that roff would take for requests, escapes or hyphens comes out
// as the text itself.
func TestEscaping(t *testing.T) {
	var w Writer
	w.Header(`a"b`, "8", "src", "Manual")
	w.Paragraph(".starts with a dot\n'and a quote \\fB not bold -x --long")
	w.Tagged("-j, --jobs N", "back\\slash")
	w.Literal([]string{".TH not a request", "  'indented", `C:\path`})
	got := string(w.Bytes())
	for _, want := range []string{
		`.TH "A\(dqB" "8" "" "src" "Manual"`,
		"\\&.starts with a dot 'and a quote \\efB not bold \\-x \\-\\-long\n",
		".TP\n\\fB\\-j, \\-\\-jobs N\\fR\nback\\eslash\n",
		"\\&.TH not a request\n  'indented\nC:\\epath\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("page lacks %q:\n%s", want, got)
		}
	}
	for i, line := range strings.Split(got, "\n") {
		if strings.HasPrefix(line, "'") {
			t.Errorf("line %d starts with a quote, a control character: %q", i+1, line)
		}
	}
}

// Long paragraphs are wrapped for the page's source, and no wrapped line
// starts with a dot.
func TestFillWrapsWithoutRequests(t *testing.T) {
	var w Writer
	w.Paragraph(strings.Repeat("word ", 30) + ".dotted " + strings.Repeat("x", 90))
	for i, line := range strings.Split(strings.TrimSpace(string(w.Bytes())), "\n")[1:] {
		if strings.HasPrefix(line, ".") {
			t.Errorf("line %d is a request: %q", i+2, line)
		}
		if len(line) > 80 && strings.Contains(line, " ") {
			t.Errorf("line %d not wrapped: %d bytes", i+2, len(line))
		}
	}
}

// A doc comment's headings, code blocks and lists become sections,
// literal blocks and indented paragraphs.
func TestDoc(t *testing.T) {
	var p comment.Parser
	d := p.Parse("Intro text.\n\n# Some heading\n\nA paragraph.\n\n\tKEY==\"glob\"  code\n\nA list:\n  - first item\n  - second item\n\nNumbered:\n 1. one\n 2. two\n")
	var w Writer
	w.Doc(d)
	got := string(w.Bytes())
	for _, want := range []string{
		".PP\nIntro text.\n",
		`.SH "SOME HEADING"`,
		".nf\nKEY==\"glob\"  code\n.fi\n",
		".IP \\(bu 4\nfirst item\n",
		".IP 1. 4\none\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("page lacks %q:\n%s", want, got)
		}
	}
}
