package modprobed

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/modautoload/modautoload/internal/excerpt"
	"github.com/modautoload/modautoload/internal/fnmatch"
	"github.com/modautoload/modautoload/internal/problemcap"
)

// parse adds the directives of one configuration file, as libkmod's
// kmod_config_parse reads it.
func (c *Config) parse(file string, data []byte) {
	problems := fileProblems{c: c, file: file}
	defer problems.close()
	forEachLine(data, func(line string, num int) {
		// Only a '#' in the very first column starts a comment: kmod
		// rejects "  # text" as a line starting with the word "#".
		if line == "" || line[0] == '#' {
			return
		}
		cmd, rest := field(line)
		if cmd == "" {
			return
		}
		if what, quoted := c.directive(cmd, rest, file, num); what != "" {
			problems.add(num, what, quoted...)
		}
	})
}

// fileProblems keeps the first problems of one file, or of the kernel
// command line, and counts the rest, which close reports as one more.
type fileProblems struct {
	c     *Config
	file  string
	count problemcap.Counter
}

// add records the problem "what", followed by the words it quotes; the
// message is built only when it is kept.
func (p *fileProblems) add(line int, what string, quoted ...string) {
	if !p.count.Keep(line) {
		return
	}
	if len(quoted) > 0 {
		what += " " + quoteWords(quoted...)
	}
	p.c.problem(p.file, line, what)
}

func (p *fileProblems) close() {
	if line, msg, ok := p.count.Rest(); ok {
		p.c.problem(p.file, line, msg)
	}
}

// directive applies one line and returns what was wrong with it, or "",
// and the words the problem quotes. Extra words after "alias PATTERN
// MODULE" and "blacklist MODULE" are ignored, as by libkmod. file and num
// are kept with options lines.
func (c *Config) directive(cmd, rest, file string, num int) (what string, quoted []string) {
	switch cmd {
	case "alias":
		pattern, rest := field(rest)
		module, _ := field(rest)
		if pattern == "" || module == "" {
			return "alias: want PATTERN MODULE", nil
		}
		p, ok1 := fnmatch.Underscores(pattern)
		m, ok2 := fnmatch.Underscores(module)
		if !ok1 || !ok2 {
			return "alias: unbalanced [ ] in", []string{pattern, module}
		}
		c.Aliases = append(c.Aliases, Alias{Pattern: p, Module: m})
	case "blacklist":
		module, _ := field(rest)
		if module == "" {
			return "blacklist: want MODULE", nil
		}
		m, ok := fnmatch.Underscores(module)
		if !ok {
			return "blacklist: unbalanced [ ] in", []string{module}
		}
		c.Blacklist = append(c.Blacklist, m)
	case "options", "install", "remove", "softdep", "weakdep":
		module, args := field(rest)
		if module == "" || args == "" {
			return cmd + ": want MODULE and at least one more word", nil
		}
		m, ok := fnmatch.Underscores(module)
		if !ok {
			return cmd + ": unbalanced [ ] in", []string{module}
		}
		c.add(cmd, m, args, file, num)
	case "include", "config":
		// module-init-tools directives that kmod refuses to parse.
		return cmd + ": no longer supported, line ignored", nil
	default:
		return "unknown directive", []string{cmd}
	}
	return "", nil
}

// add stores one directive that takes the rest of the line. args is the raw
// rest after the single separator that ended the module name: extra leading
// blanks stay part of it, as libkmod's strtok_r(NULL, "") leaves them.
func (c *Config) add(cmd, module, args, file string, num int) {
	switch cmd {
	case "options":
		c.ModuleOptions = append(c.ModuleOptions,
			Option{Module: module, Options: strings.ReplaceAll(args, "\t", " "), Source: fmt.Sprintf("%s:%d", file, num)})
	case "install":
		c.InstallCommands = append(c.InstallCommands, Command{Module: module, Command: args})
	case "remove":
		c.RemoveCommands = append(c.RemoveCommands, Command{Module: module, Command: args})
	case "softdep":
		s := Softdep{Module: module}
		var list *[]string // nil until "pre:" or "post:": earlier words are dropped
		for _, w := range depWords(args) {
			switch w {
			case "pre:":
				list = &s.Pre
			case "post:":
				list = &s.Post
			default:
				if list != nil {
					*list = append(*list, w)
				}
			}
		}
		c.Softdeps = append(c.Softdeps, s)
	case "weakdep":
		c.Weakdeps = append(c.Weakdeps, Weakdep{Module: module, Deps: depWords(args)})
	}
}

// forEachLine calls fn with each logical line of data and the number of its
// first physical line, joining lines the way libkmod's freadline_wrapped
// does: a backslash before a newline joins the next line, a backslash before
// any other byte is dropped and keeps that byte (so "\\" is one backslash),
// and a logical line ends at the first NUL, since kmod handles it as a C
// string. A backslash at the very end of the file is dropped (kmod 30 stored
// the EOF marker as a 0xff byte instead; later releases drop it too).
func forEachLine(data []byte, fn func(line string, num int)) {
	var buf []byte
	num, first := 1, 1
	emit := func() {
		line := buf
		if i := bytes.IndexByte(line, 0); i >= 0 {
			line = line[:i]
		}
		fn(string(line), first)
		buf = buf[:0]
	}
	for i := 0; i < len(data); i++ {
		switch ch := data[i]; ch {
		case '\n':
			emit()
			num++
			first = num
		case '\\':
			if i+1 == len(data) {
				continue
			}
			i++
			if data[i] == '\n' {
				num++
				continue
			}
			buf = append(buf, data[i])
		default:
			buf = append(buf, ch)
		}
	}
	if len(buf) > 0 {
		emit()
	}
}

// field splits off the first word the way strtok_r(s, "\t ") does: leading
// blanks are skipped, and rest starts after the one blank that ended the
// word. Only space and tab separate words; "\r" is part of a word.
func field(s string) (word, rest string) {
	s = strings.TrimLeft(s, " \t")
	if i := strings.IndexAny(s, " \t"); i >= 0 {
		return s[:i], s[i+1:]
	}
	return s, ""
}

// depWords splits the argument of softdep and weakdep as libkmod does, with
// isspace() separators. It keeps libkmod's quirk: when s starts with exactly
// one blank (the line had two blanks after the module name), that blank
// stays glued to the first word, so "softdep m  pre: a" has no "pre:" word
// and no dependencies. Matching kmod here matters: kmod ignores such a line.
func depWords(s string) []string {
	var words []string
	start, wasSpace := 0, false
	for i := 0; i <= len(s); i++ {
		if i < len(s) {
			if !isSpace(s[i]) {
				wasSpace = false
				continue
			}
			if wasSpace {
				start = i + 1
				continue
			}
			wasSpace = true
			if start >= i {
				continue
			}
		} else if wasSpace {
			break
		}
		words = append(words, s[start:i])
		start = i + 1
	}
	return words
}

// isSpace is C isspace() in the C locale.
func isSpace(b byte) bool {
	return b == ' ' || b == '\t' || b == '\n' || b == '\v' || b == '\f' || b == '\r'
}

// quoteWords quotes words for a problem message, each clipped: a word
// may be most of a 16 MiB file.
func quoteWords(words ...string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = fmt.Sprintf("%q", excerpt.Of(w))
	}
	return strings.Join(q, " ")
}
