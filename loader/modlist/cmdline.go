package modlist

import "strings"

// cmdlineWords splits a kernel command line into words as systemd does
// (extract_first_word with EXTRACT_UNQUOTE|EXTRACT_RELAX|
// EXTRACT_RETAIN_ESCAPE): blanks separate words; single or double quotes
// group anything, blanks included, up to the same quote, and are removed;
// an unclosed quote runs to the end; a backslash is an ordinary character.
func cmdlineWords(s string) []string {
	if i := strings.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	var words []string
	var w strings.Builder
	in, quote := false, byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else {
				w.WriteByte(c)
			}
		case c == '\'' || c == '"':
			quote, in = c, true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if in {
				words = append(words, w.String())
				w.Reset()
				in = false
			}
		default:
			w.WriteByte(c)
			in = true
		}
	}
	if in {
		words = append(words, w.String())
	}
	return words
}

// keyEqual compares command line keys as systemd does: '-' and '_' alike.
func keyEqual(a, b string) bool {
	return len(a) == len(b) && dedupKey(a) == dedupKey(b)
}

// cmdlineValues returns, for every word whose key is key, its value and
// its 1-based word number, in order. Words starting with "rd." count, with
// the prefix removed, only in an initramfs (systemd's
// PROC_CMDLINE_STRIP_RD_PREFIX); elsewhere they are skipped. A key
// without "=" has no value: missing is told of its word number.
func cmdlineValues(cmdline, key string, initrd bool, missing func(word int)) (values []string, words []int) {
	for i, w := range cmdlineWords(cmdline) {
		if rest, ok := strings.CutPrefix(w, "rd."); ok {
			if !initrd {
				continue
			}
			w = rest
		}
		k, v, hasValue := strings.Cut(w, "=")
		if !keyEqual(k, key) {
			continue
		}
		if !hasValue {
			if missing != nil {
				missing(i + 1)
			}
			continue
		}
		values = append(values, v)
		words = append(words, i+1)
	}
	return values, words
}

// cmdline adds the modules of modules_load= (and, in an initramfs,
// rd.modules_load=): comma-separated, empty items skipped, every
// occurrence counts.
func (r *reader) cmdline(s string, initrd bool) {
	defer r.endOfFile(CmdlineFile)
	values, words := cmdlineValues(s, "modules_load", initrd, func(word int) {
		r.lineProblem(CmdlineFile, 0, "word %d: modules_load without a value, ignored", word)
	})
	for i, v := range values {
		for _, name := range strings.Split(v, ",") {
			if name != "" {
				r.add(Entry{Name: name, File: CmdlineFile, Line: words[i]})
			}
		}
	}
}

// KernelBlacklist returns the modules the kernel's module_blacklist=
// refuses (finit_module fails with EPERM for them): systemd-modules-load
// counts that refusal as no failure.
func KernelBlacklist(cmdline string) []string {
	values, _ := cmdlineValues(cmdline, "module_blacklist", false, nil)
	var out []string
	for _, v := range values {
		for _, name := range strings.Split(v, ",") {
			if name != "" {
				out = append(out, name)
			}
		}
	}
	return out
}
