package rules

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/modautoload/modautoload/internal/excerpt"
	"github.com/modautoload/modautoload/internal/problemcap"
	"github.com/modautoload/modautoload/internal/regfile"

	"github.com/modautoload/modautoload/internal/fnmatch"
	"github.com/modautoload/modautoload/uevent"
)

// Limits on event rule files. Content beyond them is reported in
// EventRules.Problems, never applied.
const (
	// MaxEventRuleLine bounds one logical line, continuation lines joined.
	MaxEventRuleLine = 64 << 10
	// MaxEventRulesPerFile bounds the rules and ALLOW lines kept from one
	// file; later ones in that file are ignored.
	MaxEventRulesPerFile = 10000
	// MaxEventRuleFileSize bounds one rule file; a larger file is not read.
	MaxEventRuleFileSize = 16 << 20
)

// DefaultEventRuleDirs returns the directories of event rule files read when
// no path is given, highest precedence first.
func DefaultEventRuleDirs() []string {
	return []string{
		"/etc/modautoload/rules.d",
		"/run/modautoload/rules.d",
		"/usr/lib/modautoload/rules.d",
	}
}

// EventRulesOptions says where the event rules come from.
type EventRulesOptions struct {
	// Paths replaces DefaultEventRuleDirs. Each path is a directory of
	// *.rules files or a single file of any name. A path that does not
	// exist is reported in Problems and otherwise ignored.
	Paths []string

	// Root is prefixed to DefaultEventRuleDirs, so tests can stage a whole
	// system under a temporary directory. It does not apply to Paths.
	Root string
}

// EventRules decides what a uevent may load: the event rules. They are
// read from *.rules files by LoadEventRules. A nil *EventRules is valid and
// behaves as a rule set with no rules: the defaults, no allow-list.
//
// An EventRules is read-only once loaded; its methods are safe for
// concurrent use.
type EventRules struct {
	Files    []string // files read, in the order they were parsed
	Allow    []string // ALLOW patterns, normalised; see AllowListed
	Problems []error  // *ParseError values, in the order found

	rules     []eventRule
	allowMode bool
	// moduleRules indexes the rules that may load on a module event: a
	// LOAD action and no SUBSYSTEM clause that rules out "module".
	moduleRules []int
}

// Decision is what the rules say about one event.
type Decision struct {
	// LoadModalias says to load the event's MODALIAS. It is never true for
	// an event with an empty MODALIAS.
	LoadModalias bool
	// Modules are the names from the LOAD actions of the matching rules,
	// modules or aliases, in order, each once.
	Modules []string
	// Rules locates each matching rule, "file:line", in order.
	Rules []string
}

// LoadEventRules reads the event rules. Missing default directories are
// normal; everything else that goes wrong (a missing path given in Paths, an
// unreadable file, a bad line) is recorded in EventRules.Problems and the
// rest still applies, with the fail-safe behaviour described on EventRules.
// The error is non-nil only for unusable options.
func LoadEventRules(opts EventRulesOptions) (*EventRules, error) {
	r := &EventRules{}
	for _, f := range r.ruleFiles(opts) {
		if f.mask {
			r.Files = append(r.Files, f.path)
			continue
		}
		if f.problem != "" {
			r.problem(f.path, 0, f.problem)
			continue
		}
		data, err := readRuleFile(f.path)
		if err != nil {
			r.problem(f.path, 0, err.Error())
			continue
		}
		r.Files = append(r.Files, f.path)
		r.parseFile(f.path, data)
	}
	return r, nil
}

// Decide returns what the rules say about ev. A nil r gives the default:
// load the MODALIAS of an "add" event. Decide does not apply the
// allow-list: the caller asks Allowed about each module a name resolves to.
func (r *EventRules) Decide(ev *uevent.Event) Decision {
	var d Decision
	if ev == nil {
		return d
	}
	d.LoadModalias = ev.Action == "add" && ev.Modalias != ""
	if r == nil {
		return d
	}
	var seen map[string]bool
	for i := range r.rules {
		rule := &r.rules[i]
		if !r.matches(rule, ev) {
			continue
		}
		d.Rules = append(d.Rules, rule.where)
		for _, a := range rule.actions {
			switch a.kind {
			case actionLoad:
				if seen == nil {
					seen = map[string]bool{}
				}
				for _, m := range a.modules {
					if !seen[m] {
						seen[m] = true
						d.Modules = append(d.Modules, m)
					}
				}
			case actionSkip:
				d.LoadModalias = false
			case actionLoadModalias:
				d.LoadModalias = ev.Modalias != ""
			}
		}
	}
	return d
}

// moduleSubsystem is the SUBSYSTEM of the kernel's module events,
// ACTION@/module/NAME, sent when a module goes live (add) or is removed.
const moduleSubsystem = "module"

// HasModuleEventRules reports whether some rule may load on a module
// event, so a caller can skip looking for module events when none does.
func (r *EventRules) HasModuleEventRules() bool {
	return r != nil && len(r.moduleRules) > 0
}

// LoadsOnModuleEvent reports whether Decide would load something for ev,
// a module event. It tries only the rules that can match SUBSYSTEM
// "module" and load (usually none or one), so the daemon's reader can ask
// it for every module event and queue only those that have work to do.
func (r *EventRules) LoadsOnModuleEvent(ev *uevent.Event) bool {
	if r == nil || ev == nil {
		return false
	}
	for _, i := range r.moduleRules {
		if r.matches(&r.rules[i], ev) {
			return true
		}
	}
	return false
}

// AllowListed reports whether allow-list mode is on: some ALLOW line was
// read, or something that may have been one was skipped (see EventRules).
// Allow may then be empty, and nothing is allowed.
func (r *EventRules) AllowListed() bool {
	return r != nil && r.allowMode
}

// Allowed reports whether module may load: always outside allow-list mode,
// else when its name, '-' read as '_', matches an ALLOW pattern.
func (r *EventRules) Allowed(module string) bool {
	if !r.AllowListed() {
		return true
	}
	name := strings.ReplaceAll(module, "-", "_")
	if name == "" {
		return false
	}
	for _, p := range r.Allow {
		if fnmatch.Match(p, name) {
			return true
		}
	}
	return false
}

// matchField is the event field a match clause reads.
type matchField uint8

const (
	fieldAction matchField = iota
	fieldSubsystem
	fieldDevPath
	fieldKernel
	fieldDriver
	fieldModalias
	fieldEnv
)

type actionKind uint8

const (
	actionLoad actionKind = iota
	actionSkip
	actionLoadModalias
)

type eventMatch struct {
	field   matchField
	env     string // property name for fieldEnv
	negate  bool   // "!="
	pattern string
}

type eventAction struct {
	kind    actionKind
	modules []string // for actionLoad
}

type eventRule struct {
	where   string // "file:line"
	matches []eventMatch
	actions []eventAction
}

func (r *EventRules) matches(rule *eventRule, ev *uevent.Event) bool {
	for i := range rule.matches {
		m := &rule.matches[i]
		var v string
		switch m.field {
		case fieldAction:
			v = ev.Action
		case fieldSubsystem:
			v = ev.Subsystem
		case fieldDevPath:
			v = ev.DevPath
		case fieldKernel:
			v = kernelName(ev.DevPath)
		case fieldDriver:
			v = ev.Driver
		case fieldModalias:
			v = ev.Modalias
		case fieldEnv:
			v, _ = ev.Get(m.env)
		}
		if fnmatch.Match(m.pattern, v) == m.negate {
			return false
		}
	}
	return true
}

// kernelName is udev's KERNEL, the device's sysname: the last component
// of the devpath, '!' read as '/' (block devices such as cciss!c0d0).
func kernelName(devpath string) string {
	return strings.ReplaceAll(devpath[strings.LastIndexByte(devpath, '/')+1:], "!", "/")
}

// mayLoadOnModuleEvent reports whether the rule loads something and none
// of its SUBSYSTEM clauses rules out a module event; the other clauses are
// left to LoadsOnModuleEvent.
func (rule *eventRule) mayLoadOnModuleEvent() bool {
	loads := false
	for _, a := range rule.actions {
		loads = loads || a.kind == actionLoad
	}
	if !loads {
		return false
	}
	for _, m := range rule.matches {
		if m.field == fieldSubsystem && fnmatch.Match(m.pattern, moduleSubsystem) == m.negate {
			return false
		}
	}
	return true
}

// ruleFile is one entry of the list of files to read: name is the sort and
// shadowing key, path what is opened.
type ruleFile struct {
	name, path string
	mask       bool   // a symlink to /dev/null: shadows, reads nothing
	problem    string // cannot be read: reported, still shadows
}

// ruleFiles lists the files to parse in order: every file of every path in
// one list sorted by name, a name seen in an earlier path shadowing the
// later file.
func (r *EventRules) ruleFiles(opts EventRulesOptions) []ruleFile {
	var list []ruleFile
	insert := func(f ruleFile) {
		i := sort.Search(len(list), func(i int) bool { return list[i].name >= f.name })
		if i < len(list) && list[i].name == f.name {
			return
		}
		list = append(list, ruleFile{})
		copy(list[i+1:], list[i:])
		list[i] = f
	}
	devNull, _ := os.Stat(os.DevNull)
	// classify stats one file, following symlinks.
	classify := func(name, path string) ruleFile {
		f := ruleFile{name: name, path: path}
		st, err := os.Stat(path)
		switch {
		case err != nil:
			f.problem = "cannot stat: " + err.Error()
		case devNull != nil && os.SameFile(st, devNull):
			f.mask = true
		case !st.Mode().IsRegular():
			f.problem = "not a regular file (" + st.Mode().Type().String() + ")"
		case st.Size() > MaxEventRuleFileSize:
			f.problem = fmt.Sprintf("larger than %d bytes, not read", MaxEventRuleFileSize)
		}
		return f
	}

	paths, explicit := opts.Paths, len(opts.Paths) > 0
	if !explicit {
		for _, d := range DefaultEventRuleDirs() {
			paths = append(paths, filepath.Join(opts.Root, d))
		}
	}
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			switch {
			case !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR):
				// It may exist and hold rules: say so loudly.
				r.problem(p, 0, err.Error())
			case explicit:
				r.problem(p, 0, err.Error())
			}
			continue
		}
		if !st.IsDir() {
			insert(classify(filepath.Base(p), p))
			continue
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			// What could be read is used; the rest is reported.
			r.problem(p, 0, err.Error())
		}
		for _, e := range entries {
			name := e.Name()
			if strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".rules") {
				continue
			}
			insert(classify(name, filepath.Join(p, name)))
		}
	}
	return list
}

// readRuleFile reads a whole regular file, refusing one that was replaced by
// something else or grew beyond MaxEventRuleFileSize since it was listed.
// O_NONBLOCK keeps a FIFO swapped in from blocking the open.
func readRuleFile(path string) ([]byte, error) {
	return regfile.Read(path, MaxEventRuleFileSize)
}

// ParseError is a rule line or file that was skipped; the other rules
// still apply.
type ParseError struct {
	File string
	Line int // 0 for the whole file
	Msg  string
}

func (e *ParseError) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

func (r *EventRules) problem(file string, line int, msg string) {
	r.Problems = append(r.Problems, &ParseError{File: file, Line: line, Msg: msg})
}

// fileParser holds the per-file state of parsing.
type fileParser struct {
	r        *EventRules
	file     string
	entries  int // rules and ALLOW lines kept
	problems problemcap.Counter
}

// parseFile adds the rules and ALLOW lines of one file.
func (r *EventRules) parseFile(file string, data []byte) {
	p := &fileParser{r: r, file: file}
	forEachRuleLine(data, func(line string, num int, problem string) {
		if problem != "" {
			p.skip(line, num, problem)
			return
		}
		if p.entries >= MaxEventRulesPerFile {
			if p.entries == MaxEventRulesPerFile {
				p.entries++ // report once
				p.report(num, fmt.Sprintf("more than %d rules; this and later lines of the file are ignored", MaxEventRulesPerFile), false)
			}
			if namesAllow(line) {
				p.report(num, "ALLOW line beyond the rule limit ignored", true)
			}
			return
		}
		p.line(line, num)
	})
	if num, msg, ok := p.problems.Rest(); ok {
		r.problem(file, num, msg)
	}
}

// line parses one logical line.
func (p *fileParser) line(line string, num int) {
	clauses, msg := splitClauses(line)
	if msg != "" {
		p.skip(line, num, msg)
		return
	}
	if len(clauses) == 1 && clauses[0].key == "ALLOW" {
		patterns, msg := allowClause(clauses[0])
		if msg != "" {
			p.skip(line, num, msg)
			return
		}
		p.r.allowMode = true
		p.r.Allow = append(p.r.Allow, patterns...)
		p.entries++
		return
	}
	rule := eventRule{where: p.file + ":" + strconv.Itoa(num)}
	for _, c := range clauses {
		if msg := rule.add(c); msg != "" {
			p.skip(line, num, msg)
			return
		}
	}
	if len(rule.actions) == 0 {
		p.skip(line, num, "rule has no action (LOAD, SKIP or LOAD_MODALIAS)")
		return
	}
	if rule.mayLoadOnModuleEvent() {
		p.r.moduleRules = append(p.r.moduleRules, len(p.r.rules))
	}
	p.r.rules = append(p.r.rules, rule)
	p.entries++
}

// skip reports a line that is not applied, failing closed if it names ALLOW.
func (p *fileParser) skip(line string, num int, msg string) {
	p.report(num, msg, namesAllow(line))
}

func (p *fileParser) report(num int, msg string, closed bool) {
	if closed {
		p.r.allowMode = true
		msg += " (allow-list mode on)"
	}
	if p.problems.Keep(num) {
		p.r.problem(p.file, num, msg)
	}
}

// forEachRuleLine calls fn with each logical line of data, the number of its
// first physical line, and a problem that makes it unusable ("" if none).
// Blank and comment lines are not passed.
func forEachRuleLine(data []byte, fn func(line string, num int, problem string)) {
	var buf []byte
	num, first := 0, 0
	cont, long := false, false
	for len(data) > 0 {
		var phys []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			phys, data = data[:i], data[i+1:]
		} else {
			phys, data = data, nil
		}
		num++
		if n := len(phys); n > 0 && phys[n-1] == '\r' {
			phys = phys[:n-1]
		}
		for len(phys) > 0 && (phys[0] == ' ' || phys[0] == '\t') {
			phys = phys[1:]
		}
		if len(phys) > 0 && phys[0] == '#' {
			continue
		}
		if !cont {
			buf, first, long = buf[:0], num, false
		}
		cont = len(phys) > 0 && phys[len(phys)-1] == '\\'
		if cont {
			phys = phys[:len(phys)-1]
		}
		if !long {
			if room := MaxEventRuleLine - len(buf); len(phys) > room {
				// Keep a prefix, enough to tell an ALLOW line.
				buf, long = append(buf, phys[:room]...), true
			} else {
				buf = append(buf, phys...)
			}
		}
		switch {
		case cont:
		case long:
			fn(string(buf), first, fmt.Sprintf("line longer than %d bytes", MaxEventRuleLine))
		case len(buf) > 0:
			fn(string(buf), first, "")
		}
	}
	if cont {
		fn(string(buf), first, "backslash at the end of the file continues no line")
	}
}

// clause is one comma-separated part of a rule, as written.
type clause struct {
	key     string
	name    string // inside {...}
	hasName bool
	op      string // "" for a bare word
	value   string // inside "...", when op != ""
}

// splitClauses splits a logical line into clauses, or says why it cannot.
func splitClauses(line string) ([]clause, string) {
	var out []clause
	i := 0
	for {
		i = skipBlanks(line, i)
		if i == len(line) {
			return nil, "empty clause after ','"
		}
		var c clause
		j := i
		for j < len(line) && isKeyByte(line[j]) {
			j++
		}
		if j == i {
			if line[i] == ',' {
				return nil, "empty clause"
			}
			return nil, fmt.Sprintf("unexpected %q where a key should be", line[i])
		}
		c.key, i = line[i:j], j
		if i < len(line) && line[i] == '{' {
			k := strings.IndexByte(line[i:], '}')
			if k < 0 {
				return nil, excerpt.Of(c.key) + "{ without }"
			}
			c.name, c.hasName, i = line[i+1:i+k], true, i+k+1
		}
		i = skipBlanks(line, i)
		j = i
		for j < len(line) && strings.IndexByte("=!+-:<>~", line[j]) >= 0 {
			j++
		}
		c.op, i = line[i:j], j
		if c.op != "" {
			i = skipBlanks(line, i)
			if i == len(line) || line[i] != '"' {
				return nil, fmt.Sprintf("%s%s: the value must be in double quotes", excerpt.Of(c.key), excerpt.Of(c.op))
			}
			k := strings.IndexByte(line[i+1:], '"')
			if k < 0 {
				return nil, fmt.Sprintf("%s%s: unterminated quote", excerpt.Of(c.key), excerpt.Of(c.op))
			}
			c.value, i = line[i+1:i+1+k], i+k+2
			if b, ok := controlByte(c.value); ok {
				return nil, fmt.Sprintf("%s%s: control character %q in the value", excerpt.Of(c.key), excerpt.Of(c.op), b)
			}
		}
		out = append(out, c)
		i = skipBlanks(line, i)
		if i == len(line) {
			return out, ""
		}
		if line[i] != ',' {
			return nil, fmt.Sprintf("unexpected %q after %s; clauses are separated by ','", line[i], excerpt.Of(c.key))
		}
		i++
	}
}

// add checks one clause and adds it to the rule, or says what is wrong.
func (rule *eventRule) add(c clause) string {
	field, isMatch := matchFields[c.key]
	switch {
	case isMatch:
		m := eventMatch{field: field, pattern: c.value}
		if field == fieldEnv {
			if !c.hasName {
				return "ENV needs {NAME}"
			}
			if !uevent.ValidKey(c.name) {
				return fmt.Sprintf("ENV{%s}: bad property name", excerpt.Of(c.name))
			}
			m.env = c.name
		} else if c.hasName {
			return c.key + " takes no {NAME}"
		}
		switch c.op {
		case "==":
		case "!=":
			m.negate = true
		case "":
			return c.key + ": want ==\"glob\" or !=\"glob\""
		case "=":
			return c.key + "=: use == to match or != to exclude"
		default:
			return fmt.Sprintf("%s: operator %q not supported (use == or !=)", c.key, excerpt.Of(c.op))
		}
		rule.matches = append(rule.matches, m)
		return ""
	case c.hasName:
		if !knownKey(c.key) {
			return unknownKey(c.key)
		}
		return c.key + " takes no {NAME}"
	}
	switch c.key {
	case "LOAD":
		if c.op != "=" {
			if c.op == "" {
				return "LOAD: want LOAD=\"NAME ...\""
			}
			return fmt.Sprintf("LOAD: operator %q not supported (use =)", excerpt.Of(c.op))
		}
		mods := strings.Fields(c.value)
		if len(mods) == 0 {
			return "LOAD with no module"
		}
		rule.actions = append(rule.actions, eventAction{kind: actionLoad, modules: mods})
	case "SKIP", "LOAD_MODALIAS":
		if c.op != "" {
			return c.key + " takes no value"
		}
		kind := actionSkip
		if c.key == "LOAD_MODALIAS" {
			kind = actionLoadModalias
		}
		rule.actions = append(rule.actions, eventAction{kind: kind})
	case "ALLOW":
		return "ALLOW must be on a line of its own"
	default:
		return unknownKey(c.key)
	}
	return ""
}

// allowClause checks a standalone ALLOW clause and returns its patterns,
// normalised.
func allowClause(c clause) ([]string, string) {
	switch {
	case c.hasName:
		return nil, "ALLOW takes no {NAME}"
	case c.op == "":
		return nil, "ALLOW: want ALLOW=\"pattern ...\""
	case c.op != "=":
		return nil, fmt.Sprintf("ALLOW: operator %q not supported (use =)", excerpt.Of(c.op))
	}
	words := strings.Fields(c.value)
	if len(words) == 0 {
		return nil, "ALLOW with an empty list"
	}
	for i, w := range words {
		n, ok := fnmatch.Underscores(w)
		if !ok {
			return nil, fmt.Sprintf("ALLOW: unbalanced [ ] in %q", excerpt.Of(w))
		}
		words[i] = n
	}
	return words, ""
}

var matchFields = map[string]matchField{
	"ACTION":    fieldAction,
	"SUBSYSTEM": fieldSubsystem,
	"DEVPATH":   fieldDevPath,
	"KERNEL":    fieldKernel,
	"DRIVER":    fieldDriver,
	"MODALIAS":  fieldModalias,
	"ENV":       fieldEnv,
}

func knownKey(k string) bool {
	_, ok := matchFields[k]
	return ok || k == "LOAD" || k == "SKIP" || k == "LOAD_MODALIAS" || k == "ALLOW"
}

func unknownKey(k string) string {
	msg := fmt.Sprintf("unknown key %q", excerpt.Of(k))
	if k != strings.ToUpper(k) && knownKey(strings.ToUpper(k)) {
		msg += " (keys are upper case)"
	}
	return msg
}

// namesAllow reports whether a line that is skipped may have been meant as
// an ALLOW line; the rule is spelled out on EventRules. It errs towards yes.
func namesAllow(line string) bool {
	const word = "allow"
	line = strings.TrimLeft(line, " \t")
	if len(line) >= len(word) && strings.EqualFold(line[:len(word)], word) {
		return true
	}
	for i := 1; i+len(word) <= len(line); i++ {
		if !strings.EqualFold(line[i:i+len(word)], word) {
			continue
		}
		if b := line[i-1]; isKeyByte(b) || b == '{' || b == '$' {
			continue
		}
		k := i
		for k > 0 && (line[k-1] == ' ' || line[k-1] == '\t') {
			k--
		}
		if k > 0 && line[k-1] == ',' {
			return true
		}
		j := i + len(word)
		for j < len(line) && isKeyByte(line[j]) {
			j++
		}
		j = skipBlanks(line, j)
		if j == len(line) || strings.IndexByte("=!+-:<>~,", line[j]) >= 0 {
			return true
		}
	}
	return false
}

func skipBlanks(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	return i
}

func isKeyByte(b byte) bool {
	return b >= 'A' && b <= 'Z' || b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '_'
}

// controlByte returns the first control character of s other than tab.
func controlByte(s string) (byte, bool) {
	for i := 0; i < len(s); i++ {
		if b := s[i]; (b < 0x20 && b != '\t') || b == 0x7f {
			return b, true
		}
	}
	return 0, false
}
