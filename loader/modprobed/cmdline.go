package modprobed

import (
	"strings"

	"github.com/modautoload/modautoload/internal/fnmatch"
)

// maxCmdline is how much of /proc/cmdline libkmod reads: KCMD_LINE_SIZE
// (4096) bytes less the terminating NUL.
const maxCmdline = 4095

// cmdlineFile names the kernel command line in problems.
const cmdlineFile = "kernel command line"

// Kernel command line scanner states (libkmod's kmod_config_parse_kcmdline).
const (
	wantModule = iota // reading MODULE before '.'
	wantParam         // reading param after '.', before '='
	wantValue         // reading value after '='
	skipWord          // malformed: ignore up to the next separator
)

// addCmdline applies the kernel command line after all configuration files,
// scanning it exactly as libkmod does:
//
//   - Words are separated by space, tab, newline, \v, \f or \r.
//   - "MOD.param=value" adds the option "param=value" to MOD, and "MOD.param"
//     (a kernel boolean) adds "param"; MOD is normalised ("-" to "_"), an
//     invalid MOD is reported and skipped. A word with no '.' before its
//     first '=' or with a second '.' before '=' is not for a module.
//   - A value may be double-quoted ("mod.p=\"a b\"") and then contains
//     separators; the quotes stay in the option, where the kernel's own
//     parameter parser expects them. A quote anywhere else before the '='
//     spoils the word, and an unclosed quote spoils the rest of the line.
//   - A quote before MOD ("\"mod.p=a b\"", as grub writes it) is moved to
//     after the '=', giving p="a b".
//   - "modprobe.blacklist=a,b" adds a and b to the blacklist, split at every
//     comma (empty names included) and, unlike every other name, not
//     normalised: kmod compares them as written, so a "-" never matches.
func (c *Config) addCmdline(s string) {
	if len(s) > maxCmdline {
		s = s[:maxCmdline]
	}
	if i := strings.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	problems := fileProblems{c: c, file: cmdlineFile}
	defer problems.close()
	state, quoted := wantModule, false
	mod, param, value, quote := 0, 0, 0, -1
	for i := 0; i <= len(s); i++ {
		ch := byte(0) // the terminating NUL ends the last word
		if i < len(s) {
			ch = s[i]
		}
		switch ch {
		case '"':
			quoted = !quoted
			if quoted && state == wantModule && i == mod {
				quote, mod = i, i+1
			} else if state != wantValue {
				state = skipWord
			}
		case '.':
			if state == wantModule {
				param, state = i+1, wantParam
			} else if state == wantParam {
				state = skipWord
			}
		case '=':
			if state == wantParam {
				value, state = i+1, wantValue
			} else if state == wantModule {
				state = skipWord
			}
		case 0, ' ', '\n', '\t', '\v', '\f', '\r':
			switch {
			case quoted && state == wantValue:
				// part of the value
			case quoted:
				state = skipWord // blanks are allowed only in the value
			default:
				if state == wantParam || state == wantValue {
					p := s[param:i]
					if quote >= 0 {
						// Only reachable in wantValue: libkmod
						// moves the quote to after the '='.
						p = s[param:value] + `"` + s[value:i]
					}
					c.cmdlineWord(s[mod:param-1], p, &problems)
				}
				mod, state, quote = i+1, wantModule, -1
			}
		}
	}
}

// cmdlineWord applies one MOD.param word (libkmod's kcmdline_parse_result).
func (c *Config) cmdlineWord(module, param string, problems *fileProblems) {
	if module == "modprobe" && strings.HasPrefix(param, "blacklist=") {
		c.Blacklist = append(c.Blacklist, strings.Split(param[len("blacklist="):], ",")...)
		return
	}
	m, ok := fnmatch.Underscores(module)
	if !ok {
		problems.add(0, "ignoring option for bad module name", module)
		return
	}
	c.ModuleOptions = append(c.ModuleOptions,
		Option{Module: m, Options: strings.ReplaceAll(param, "\t", " "), Source: cmdlineFile})
}
