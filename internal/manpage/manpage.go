// Package manpage writes manual pages in the man(7) macros from text the
// program already has (its -h output, a Go doc comment), so that a page
// is generated, never kept by hand beside its source.
package manpage

import (
	"bytes"
	"go/doc/comment"
	"strings"
)

// Writer builds one page. Text given to it is plain: it escapes what
// roff would read as requests or escapes, and fills paragraphs itself.
type Writer struct {
	buf bytes.Buffer
}

// Header starts the page: .TH with its name, section, the software it
// belongs to and the manual's title. No date: a regenerated page must
// equal the committed one.
func (w *Writer) Header(name, section, source, manual string) {
	w.line(".TH " + quote(strings.ToUpper(name)) + " " + quote(section) + ` "" ` + quote(source) + " " + quote(manual))
	// No hyphenation and a ragged right margin: option names and paths
	// must not be split or stretched.
	w.line(".nh")
	w.line(".ad l")
}

// Name writes the NAME section as whatis(1) and lexgrog(1) read it:
// "name \- what it is".
func (w *Writer) Name(name, what string) {
	w.Section("name")
	w.line(Escape(name) + ` \- ` + Escape(what))
}

// Section starts a section (.SH); titles are written upper case, as
// man-pages(7) asks.
func (w *Writer) Section(title string) { w.line(".SH " + quote(strings.ToUpper(title))) }

// Subsection starts a subsection (.SS).
func (w *Writer) Subsection(title string) { w.line(".SS " + quote(title)) }

// Paragraph writes text as one filled paragraph; its line breaks are
// spaces.
func (w *Writer) Paragraph(text string) {
	w.line(".PP")
	w.fill(text)
}

// Tagged writes an indented paragraph under a bold tag (.TP), the form of
// an option and its description.
func (w *Writer) Tagged(tag, text string) {
	w.line(".TP")
	w.line(`\fB` + Escape(tag) + `\fR`)
	w.fill(text)
}

// Literal writes lines as they are, indented and not filled: examples,
// grammar, code.
func (w *Writer) Literal(lines []string) {
	w.line(".PP")
	w.line(".RS 4")
	w.line(".nf")
	for _, l := range lines {
		w.line(escapeLine(l))
	}
	w.line(".fi")
	w.line(".RE")
}

// Doc writes a Go doc comment: its headings as sections, paragraphs,
// indented blocks as literal text, lists as bulleted or numbered
// paragraphs.
func (w *Writer) Doc(d *comment.Doc) {
	for _, b := range d.Content {
		w.block(b)
	}
}

func (w *Writer) block(b comment.Block) {
	switch b := b.(type) {
	case *comment.Heading:
		w.Section(inlineText(b.Text))
	case *comment.Paragraph:
		w.line(".PP")
		w.fillRaw(inline(b.Text))
	case *comment.Code:
		w.Literal(strings.Split(strings.TrimSuffix(b.Text, "\n"), "\n"))
	case *comment.List:
		for _, item := range b.Items {
			tag := `\(bu`
			if item.Number != "" {
				tag = Escape(item.Number + ".")
			}
			for j, c := range item.Content {
				p, ok := c.(*comment.Paragraph)
				if !ok {
					w.block(c)
					continue
				}
				if j == 0 {
					w.line(".IP " + tag + " 4")
				} else {
					w.line(".IP \"\" 4")
				}
				w.fillRaw(inline(p.Text))
			}
		}
		w.line(".PP")
	}
}

// Bytes is the page so far.
func (w *Writer) Bytes() []byte { return w.buf.Bytes() }

func (w *Writer) line(s string) {
	w.buf.WriteString(s)
	w.buf.WriteByte('\n')
}

// fill writes plain text as a paragraph's lines.
func (w *Writer) fill(text string) { w.fillRaw(Escape(text)) }

// fillRaw writes escaped text wrapped at about 78 columns, so the page
// source stays readable; roff fills the lines again for the terminal.
func (w *Writer) fillRaw(escaped string) {
	var cur strings.Builder
	for _, word := range strings.Fields(escaped) {
		if cur.Len() > 0 && cur.Len()+1+len(word) > 78 {
			w.line(lineStart(cur.String()))
			cur.Reset()
		}
		if cur.Len() > 0 {
			cur.WriteByte(' ')
		}
		cur.WriteString(word)
	}
	if cur.Len() > 0 {
		w.line(lineStart(cur.String()))
	}
}

// Escape makes plain text safe inside a roff text line: a backslash is
// printed as one, and '-' is the minus sign that options are typed with,
// not a hyphen that may be printed as another character.
func Escape(s string) string {
	return strings.NewReplacer(`\`, `\e`, "-", `\-`).Replace(s)
}

// escapeLine is Escape for a line written as it is: roff keeps a leading
// blank anyway, but a leading dot or apostrophe would start a request.
func escapeLine(s string) string { return lineStart(Escape(s)) }

// lineStart keeps a text line from being read as a request.
func lineStart(s string) string {
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		return `\&` + s
	}
	return s
}

// quote makes s one macro argument.
func quote(s string) string {
	return `"` + strings.ReplaceAll(Escape(s), `"`, `\(dq`) + `"`
}

// inline renders a doc comment's text: italics as italics, links as
// their text followed by the address.
func inline(texts []comment.Text) string {
	var b strings.Builder
	for _, t := range texts {
		switch t := t.(type) {
		case comment.Plain:
			b.WriteString(Escape(string(t)))
		case comment.Italic:
			b.WriteString(`\fI` + Escape(string(t)) + `\fR`)
		case *comment.Link:
			b.WriteString(inline(t.Text))
			if !t.Auto {
				b.WriteString(" <" + Escape(t.URL) + ">")
			}
		case *comment.DocLink:
			b.WriteString(inline(t.Text))
		}
	}
	return b.String()
}

// inlineText is the plain text of a doc comment's text, for headings.
func inlineText(texts []comment.Text) string {
	var b strings.Builder
	for _, t := range texts {
		switch t := t.(type) {
		case comment.Plain:
			b.WriteString(string(t))
		case comment.Italic:
			b.WriteString(string(t))
		case *comment.Link:
			b.WriteString(inlineText(t.Text))
		case *comment.DocLink:
			b.WriteString(inlineText(t.Text))
		}
	}
	return b.String()
}
