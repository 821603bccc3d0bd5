package fnmatch

import "strings"

// Match reports whether s matches the shell wildcard pattern exactly as
// glibc's fnmatch(pattern, s, 0) decides in the C locale, which is what
// libkmod uses for wildcard aliases: no FNM_PATHNAME or FNM_PERIOD,
// backslash escapes, '*', '?', and bracket expressions with '!' or '^'
// negation, ranges, character classes ([:alpha:]), equivalence classes
// ([=a=]) and collating symbols ([.a.]). Both strings end at their first NUL
// byte, as C sees them.
//
// glibc's quirks are kept on purpose, because a mismatch would load a
// different module than modprobe: an unterminated '[' matches a literal '[',
// a trailing backslash never matches, "[a-" never matches, and so on. '^'
// negates as it does when POSIXLY_CORRECT is unset.
//
// Like glibc, it commits each run of literals between two stars to its
// leftmost match, so a pattern with many stars runs in O(len(pattern) ×
// len(s)) time.
func Match(pattern, s string) bool {
	if i := strings.IndexByte(pattern, 0); i >= 0 {
		pattern = pattern[:i]
	}
	if i := strings.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	m := matcher{p: pattern, s: s}
	ok, _, _ := m.match(0, 0, false)
	return ok
}

// classNameMax is glibc's CHAR_CLASS_MAX_LENGTH (CHARCLASS_NAME_MAX): a
// bracket "[:name" running this long without ":]" makes the pattern fail.
const classNameMax = 2048

// matcher holds one pattern and one subject; indexes past the end of the
// pattern read as NUL, as the C code reads its terminator.
type matcher struct {
	p, s string
}

func (m *matcher) at(i int) byte {
	if i < len(m.p) {
		return m.p[i]
	}
	return 0
}

// match matches m.p[pi:] against m.s[si:]. When inner is set it is matching
// the literals after a star: it stops at the next star and reports where
// (star = true, with the pattern and subject positions), as glibc's
// recursive call does through its ends argument.
func (m *matcher) match(pi, si int, inner bool) (ok bool, starP, starS int) {
loop:
	for pi < len(m.p) {
		c := m.p[pi]
		pi++
		switch c {
		case '?':
			if si == len(m.s) {
				return false, -1, 0
			}
		case '\\':
			if pi == len(m.p) {
				return false, -1, 0 // a trailing backslash never matches
			}
			c = m.p[pi]
			pi++
			if si == len(m.s) || m.s[si] != c {
				return false, -1, 0
			}
		case '*':
			if inner {
				return true, pi - 1, si
			}
			// Swallow further stars and the characters that '?'s need.
			for {
				if pi == len(m.p) {
					return true, -1, 0
				}
				c = m.p[pi]
				if c != '*' && c != '?' {
					break
				}
				pi++
				if c == '?' {
					if si == len(m.s) {
						return false, -1, 0
					}
					si++
				}
			}
			// Try the rest at each position; the first position where the
			// literals up to the next star match is final.
			first := c
			if c == '\\' {
				first = m.at(pi + 1)
			}
			for ; si < len(m.s); si++ {
				if c != '[' && m.s[si] != first {
					continue
				}
				ok, sp, ss := m.match(pi, si, true)
				if !ok {
					continue
				}
				if sp < 0 {
					return true, -1, 0
				}
				pi, si = sp, ss
				continue loop
			}
			return false, -1, 0
		case '[':
			if si == len(m.s) {
				return false, -1, 0
			}
			np, r := m.bracket(pi, m.s[si])
			switch r {
			case bracketFail:
				return false, -1, 0
			case bracketLiteral:
				// An unterminated '[' is an ordinary character, and the
				// pattern goes on right after it.
				if m.s[si] != '[' {
					return false, -1, 0
				}
			default:
				pi = np
			}
		default:
			if si == len(m.s) || m.s[si] != c {
				return false, -1, 0
			}
		}
		si++
	}
	return si == len(m.s), -1, 0
}

type bracketResult int

const (
	bracketMatch   bracketResult = iota // ch is accepted; pattern goes on at the returned index
	bracketFail                         // ch is rejected, or the expression is ill-formed
	bracketLiteral                      // no closing ']': the '[' is an ordinary character
)

// bracket matches ch against the bracket expression whose body starts at
// m.p[pi] (just after '['). It follows glibc's loop step by step: the
// first element is never the closing ']', a '-' makes a range only between
// two elements and not before ']', and once ch matched, the rest of the
// expression is skipped with rules of its own.
func (m *matcher) bracket(pi int, ch byte) (int, bracketResult) {
	negate := false
	if c := m.at(pi); c == '!' || c == '^' {
		negate = true
		pi++
	}
	c := m.at(pi)
	pi++
	for {
		var lo byte // the element just read, when it may start a range
		switch {
		case c == '\\':
			if m.at(pi) == 0 {
				return 0, bracketFail
			}
			c = m.p[pi]
			pi++
			if m.single(&pi, c, ch) {
				return m.skipRest(pi, negate)
			}
			lo = c
		case c == '[' && m.at(pi) == ':':
			start := pi
			q := pi
			n := 0
			isClass := true
			for {
				if n == classNameMax {
					return 0, bracketFail
				}
				q++
				cc := m.at(q)
				if cc == ':' && m.at(q+1) == ']' {
					break
				}
				if cc < 'a' || cc >= 'z' {
					isClass = false // not a class name after all: '[' is a member
					break
				}
				n++
			}
			if !isClass {
				pi = start
				if m.single(&pi, '[', ch) {
					return m.skipRest(pi, negate)
				}
				lo = '['
				break
			}
			in, valid := inClass(m.p[start+1:start+1+n], ch)
			if !valid {
				return 0, bracketFail
			}
			pi = q + 2
			if in {
				return m.skipRest(pi, negate)
			}
			c = m.at(pi)
			pi++
			if c == ']' {
				return m.endBracket(pi, negate)
			}
			continue // a '-' after a class is an ordinary member
		case c == '[' && m.at(pi) == '=':
			start := pi
			eq := m.at(pi + 1)
			if eq == 0 || m.at(pi+2) != '=' || m.at(pi+3) != ']' {
				pi = start
				if m.single(&pi, '[', ch) {
					return m.skipRest(pi, negate)
				}
				lo = '['
				break
			}
			pi += 4
			if ch == eq {
				return m.skipRest(pi, negate)
			}
			c = m.at(pi)
			pi++
			if c == ']' {
				return m.endBracket(pi, negate)
			}
			continue
		case c == 0:
			return 0, bracketLiteral
		case c == '[' && m.at(pi) == '.':
			sym, next, ok := m.collatingSymbol(pi)
			if !ok {
				return 0, bracketFail
			}
			pi = next
			// Unlike a plain character, a symbol followed by "-]" counts
			// as a range start, so it cannot match by itself there.
			isRange := m.at(pi) == '-' && m.at(pi+1) != 0
			if !isRange && ch == sym {
				return m.skipRest(pi, negate)
			}
			lo = sym
		default:
			if m.single(&pi, c, ch) {
				return m.skipRest(pi, negate)
			}
			lo = c
		}
		// Element read; a '-' not followed by ']' makes it a range start.
		c = m.at(pi)
		pi++
		if c == '-' && m.at(pi) != ']' {
			hi := m.at(pi)
			pi++
			if hi == '[' && m.at(pi) == '.' {
				sym, next, ok := m.collatingSymbol(pi)
				if !ok {
					return 0, bracketFail
				}
				hi, pi = sym, next
			} else {
				if hi == '\\' {
					hi = m.at(pi)
					pi++
				}
				if hi == 0 {
					return 0, bracketFail
				}
			}
			if lo <= ch && ch <= hi {
				return m.skipRest(pi, negate)
			}
			c = m.at(pi)
			pi++
		}
		if c == ']' {
			return m.endBracket(pi, negate)
		}
	}
}

// single reports whether the plain element c, read just before m.p[*pi],
// matches ch. An element followed by a range dash does not match by itself.
func (m *matcher) single(pi *int, c, ch byte) bool {
	isRange := m.at(*pi) == '-' && m.at(*pi+1) != 0 && m.at(*pi+1) != ']'
	return !isRange && c == ch
}

// collatingSymbol reads "[.x.]" where m.p[pi] is the '.'; the C locale knows
// only one-character symbols.
func (m *matcher) collatingSymbol(pi int) (sym byte, next int, ok bool) {
	q := pi
	n := 0
	for {
		q++
		c := m.at(q)
		if c == '.' && m.at(q+1) == ']' {
			break
		}
		if c == 0 {
			return 0, 0, false
		}
		n++
	}
	if n != 1 {
		return 0, 0, false
	}
	return m.p[pi+1], q + 2, true
}

// endBracket finishes a bracket expression that did not accept its
// character: only a negated one matches then.
func (m *matcher) endBracket(pi int, negate bool) (int, bracketResult) {
	if negate {
		return pi, bracketMatch
	}
	return 0, bracketFail
}

// skipRest skips what is left of a bracket expression that accepted its
// character, the way glibc does (its rules differ from the matching loop's:
// a malformed [=..=] fails here, and an unterminated expression turns the
// '[' into an ordinary character).
func (m *matcher) skipRest(pi int, negate bool) (int, bracketResult) {
	for {
		c := m.at(pi)
		pi++
		if c == ']' {
			break
		}
		switch {
		case c == 0:
			return 0, bracketLiteral
		case c == '\\':
			if m.at(pi) == 0 {
				return 0, bracketFail
			}
			pi++
		case c == '[' && m.at(pi) == ':':
			start := pi
			n := 0
			for {
				pi++
				cc := m.at(pi)
				n++
				if n == classNameMax {
					return 0, bracketFail
				}
				if cc == ':' && m.at(pi+1) == ']' {
					pi += 2
					break
				}
				if cc < 'a' || cc >= 'z' {
					pi = start
					break
				}
			}
		case c == '[' && m.at(pi) == '=':
			if m.at(pi+1) == 0 || m.at(pi+2) != '=' || m.at(pi+3) != ']' {
				return 0, bracketFail
			}
			pi += 4
		case c == '[' && m.at(pi) == '.':
			for {
				pi++
				cc := m.at(pi)
				if cc == 0 {
					return 0, bracketFail
				}
				if cc == '.' && m.at(pi+1) == ']' {
					break
				}
			}
			pi += 2
		}
	}
	if negate {
		return 0, bracketFail
	}
	return pi, bracketMatch
}

// inClass reports whether ch is in the named POSIX class in the C locale,
// where only ASCII characters belong to any class, and whether the name is
// a class at all.
func inClass(name string, ch byte) (in, valid bool) {
	switch name {
	case "alnum":
		return isAlpha(ch) || isDigit(ch), true
	case "alpha":
		return isAlpha(ch), true
	case "blank":
		return ch == ' ' || ch == '\t', true
	case "cntrl":
		return ch < 0x20 || ch == 0x7f, true
	case "digit":
		return isDigit(ch), true
	case "graph":
		return ch > 0x20 && ch < 0x7f, true
	case "lower":
		return ch >= 'a' && ch <= 'z', true
	case "print":
		return ch >= 0x20 && ch < 0x7f, true
	case "punct":
		return ch > 0x20 && ch < 0x7f && !isAlpha(ch) && !isDigit(ch), true
	case "space":
		return ch == ' ' || (ch >= '\t' && ch <= '\r'), true
	case "upper":
		return ch >= 'A' && ch <= 'Z', true
	case "xdigit":
		return isDigit(ch) || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F'), true
	}
	return false, false
}

func isAlpha(c byte) bool { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// Underscores makes a module name or alias pattern canonical as libkmod
// does (its underscores() and alias_normalize()): "-" becomes "_" except
// inside a [...] bracket expression, so "snd-[a-c]" becomes "snd_[a-c]".
// A "]" with no "[" before it, or a "[" never closed, makes s invalid.
func Underscores(s string) (string, bool) {
	b := []byte(s)
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '-':
			b[i] = '_'
		case ']':
			return "", false
		case '[':
			j := strings.IndexByte(s[i:], ']')
			if j < 0 {
				return "", false
			}
			i += j
		}
	}
	return string(b), true
}
