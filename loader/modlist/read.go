package modlist

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/modautoload/modautoload/internal/problemcap"
	"github.com/modautoload/modautoload/internal/regfile"
)

// DefaultDirs are the modules-load.d directories, highest precedence
// first: systemd's, with /lib/modules-load.d as split-/usr builds and
// Debian's kmod script read it.
func DefaultDirs() []string {
	return []string{
		"/etc/modules-load.d",
		"/run/modules-load.d",
		"/usr/local/lib/modules-load.d",
		"/usr/lib/modules-load.d",
		"/lib/modules-load.d",
	}
}

// EtcModules is Debian's and Alpine's list.
const EtcModules = "/etc/modules"

// CmdlineFile names the kernel command line where a file would be named.
const CmdlineFile = "kernel command line"

// Limits: systemd's LONG_LINE_MAX for a line, its MODULE_NAME_MAX_LEN for
// a name, and a bound on a whole file that no real list comes near.
const (
	maxLine = 1 << 20
	maxName = 4096
	maxFile = 16 << 20
)

// Form is how the lines of a list read.
type Form int

const (
	// FormModulesLoad is modules-load.d(5): each line, stripped of blanks,
	// names one module or alias; '#' and ';' start comment lines.
	FormModulesLoad Form = iota
	// FormEtcModules is /etc/modules: a module, then its parameters, as
	// Debian's kmod init script and Alpine's modules service pass them to
	// modprobe. A '#' at the start of a word begins a comment (Debian's
	// comment lines and Alpine's trailing comments), as does ';' at the
	// start of a line.
	FormEtcModules
)

// Entry is one module a list asks for.
type Entry struct {
	// Name is the module or alias as written.
	Name string
	// Params are module parameters ("max_loop=8"), from /etc/modules.
	Params string
	// File and Line say where it was asked for: a list file and its line
	// (from 1), or CmdlineFile and the 1-based word of the command line.
	File string
	Line int
	// Alone: nothing else of the lists loads while it does.
	Alone bool
}

// Where is "file:line", or "kernel command line, word N".
func (e Entry) Where() string {
	if e.File == CmdlineFile {
		return fmt.Sprintf("%s, word %d", CmdlineFile, e.Line)
	}
	return fmt.Sprintf("%s:%d", e.File, e.Line)
}

// List is what the lists ask for, each module once, in the order systemd
// loads them: the command line first, then the files by name.
type List struct {
	Entries []Entry
	// Files are the list files read, in order.
	Files []string
	// Problems are lines and files that could not be read; the rest
	// applies. systemd-modules-load fails for each of them. At most 100
	// are kept for one file or for the command line, then one that counts
	// the problems not reported.
	Problems []error
}

// ParseError is a problem with a list, at a line when Line > 0.
type ParseError struct {
	File string
	Line int
	Msg  string
}

func (e *ParseError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// Options say which lists to read.
type Options struct {
	// Root is prefixed to every standard path (DefaultDirs, /etc/modules,
	// /etc/initrd-release), so tests can stage a system; "" is /.
	Root string
	// Files, when set, are read instead of the standard lists, as
	// systemd-modules-load reads its arguments: an absolute path is read
	// as it is, another name is looked for in DefaultDirs. The command
	// line is not read then.
	Files []string
	// Cmdline is the content of /proc/cmdline.
	Cmdline string
	// Initrd: rd.modules_load= applies too (systemd's in_initrd()).
	Initrd bool
	// NoEtcModules skips /etc/modules unless a modules-load.d entry
	// links to it.
	NoEtcModules bool
}

// InInitrd says whether root is an initramfs by systemd's rule: it has
// /etc/initrd-release.
func InInitrd(root string) bool {
	_, err := os.Lstat(filepath.Join("/", root, "etc/initrd-release"))
	return err == nil
}

// Read reads the lists. Missing files and directories are normal; what
// cannot be read is a Problem and the rest still applies.
//
// modules-load.d is read as systemd-modules-load reads it: every
// "*.conf" in every directory (hidden files skipped) joins one list sorted
// by file name, a name in an earlier directory shadows the same name in a
// later one, and an entry that is a link to /dev/null (or is empty) masks.
// A line ends at "\n", "\r" or NUL, or a pair of different ones ("\r\n",
// "\n\r", each optionally followed by NUL); it is stripped of spaces and
// tabs at both ends; empty lines and those starting with '#' or ';' are
// skipped; what remains is one module name or alias, blanks and all. A
// line of 1 MiB or more ends the reading of its file, and a name longer
// than 4096 bytes is refused. The same module listed twice ('-' and '_'
// alike) loads once, first place counts.
//
// /etc/modules is read in its own form (FormEtcModules): after the
// modules-load.d files, or in the place of a modules-load.d entry that
// links to it (Debian's modules-load.d/modules.conf), and so only once.
func Read(o Options) *List {
	r := &reader{list: &List{}, seen: map[string]bool{}, alone: map[string]bool{}}
	etcModules := filepath.Join("/", o.Root, EtcModules)
	readEtc := !o.NoEtcModules
	if len(o.Files) > 0 {
		readEtc = false
		for _, name := range o.Files {
			r.readNamed(o.Root, name, etcModules)
		}
	} else {
		r.cmdline(o.Cmdline, o.Initrd)
		for _, f := range r.confFiles(o.Root) {
			if r.readConf(f, etcModules) {
				readEtc = false
			}
		}
	}
	if readEtc {
		r.readFile(etcModules, FormEtcModules, true)
	}
	for i := range r.list.Entries {
		r.list.Entries[i].Alone = r.alone[dedupKey(r.list.Entries[i].Name)]
	}
	return r.list
}

type reader struct {
	list  *List
	seen  map[string]bool // dedupKey of entries kept
	alone map[string]bool // dedupKey of modules asked to load alone
	// lineProblems counts the problems of the file or command line being
	// parsed.
	lineProblems problemcap.Counter
}

func (r *reader) problem(file string, line int, format string, args ...any) {
	r.list.Problems = append(r.list.Problems, &ParseError{File: file, Line: line, Msg: fmt.Sprintf(format, args...)})
}

// lineProblem records a problem with a line of the file being parsed, if
// it is among the first problemcap.PerFile; the message of the others is
// not even built.
func (r *reader) lineProblem(file string, line int, format string, args ...any) {
	if r.lineProblems.Keep(line) {
		r.problem(file, line, format, args...)
	}
}

// endOfFile adds the problem that counts those of file not kept, and
// starts the count again for the next file.
func (r *reader) endOfFile(file string) {
	if line, msg, ok := r.lineProblems.Rest(); ok {
		r.problem(file, line, "%s", msg)
	}
	r.lineProblems = problemcap.Counter{}
}

// dedupKey is the name with '-' as '_', as systemd compares them.
func dedupKey(name string) string { return strings.ReplaceAll(name, "-", "_") }

func (r *reader) add(e Entry) {
	if len(e.Name) > maxName {
		r.lineProblem(e.File, e.Line, "module name longer than %d bytes (%.32q...)", maxName, e.Name)
		return
	}
	k := dedupKey(e.Name)
	if r.seen[k] {
		return
	}
	r.seen[k] = true
	r.list.Entries = append(r.list.Entries, e)
}

// confFile is one modules-load.d entry: name is the sort and shadowing
// key, path what is read.
type confFile struct{ name, path string }

// confFiles lists the modules-load.d files in the order they are read.
func (r *reader) confFiles(root string) []confFile {
	byName := map[string]string{}
	for _, dir := range DefaultDirs() {
		dir = filepath.Join("/", root, dir)
		entries, err := os.ReadDir(dir)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
				r.problem(dir, 0, "cannot list: %v", err)
			}
			continue
		}
		for _, e := range entries {
			name := e.Name()
			if strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".conf") {
				continue
			}
			if _, ok := byName[name]; !ok {
				byName[name] = filepath.Join(dir, name)
			}
		}
	}
	files := make([]confFile, 0, len(byName))
	for name, path := range byName {
		files = append(files, confFile{name, path})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	return files
}

// readConf reads one modules-load.d entry; it reports whether the entry
// was /etc/modules (through a link), read in that file's form.
func (r *reader) readConf(f confFile, etcModules string) bool {
	if isEtcModules(f.path, etcModules) {
		r.readFile(f.path, FormEtcModules, true)
		return true
	}
	// A link whose target is gone shadows its name and reads as nothing,
	// as in systemd.
	r.readFile(f.path, FormModulesLoad, true)
	return false
}

// readNamed reads a file named as systemd-modules-load's argument.
func (r *reader) readNamed(root, name, etcModules string) {
	if name == "" || strings.IndexByte(name, 0) >= 0 {
		r.problem(fmt.Sprintf("%q", name), 0, "not a file name")
		return
	}
	path := name
	if !filepath.IsAbs(name) {
		path = ""
		for _, dir := range DefaultDirs() {
			p := filepath.Join("/", root, dir, name)
			if _, err := os.Stat(p); err == nil {
				path = p
				break
			}
		}
		if path == "" {
			r.problem(name, 0, "not found in %s", strings.Join(DefaultDirs(), ", "))
			return
		}
	}
	form := FormModulesLoad
	if isEtcModules(path, etcModules) {
		form = FormEtcModules
	}
	r.readFile(path, form, false)
}

// isEtcModules reports whether path is, or links to, /etc/modules.
func isEtcModules(path, etcModules string) bool {
	a, err := os.Stat(path)
	if err != nil {
		return false
	}
	b, err := os.Stat(etcModules)
	return err == nil && os.SameFile(a, b)
}

// readFile reads one list file. A missing file is nothing to read, unless
// it was named on the command line; a link to /dev/null masks.
func (r *reader) readFile(path string, form Form, missingOK bool) {
	if regfile.IsDevNull(path) {
		return
	}
	data, err := regfile.Read(path, maxFile)
	if err != nil {
		if missingOK && errors.Is(err, fs.ErrNotExist) {
			return
		}
		r.problem(path, 0, "cannot read: %v", unwrapPath(err))
		return
	}
	r.list.Files = append(r.list.Files, path)
	r.parse(path, data, form)
}

// unwrapPath drops the path an *fs.PathError repeats.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// directive introduces modautoload's own lines, which are comments to
// systemd, Debian and Alpine.
const directive = "#modautoload:"

// parse reads the lines of one list file.
func (r *reader) parse(file string, data []byte, form Form) {
	defer r.endOfFile(file)
	for n, pos := 1, 0; pos < len(data); n++ {
		line, next := nextLine(data, pos)
		pos = next
		if len(line) >= maxLine {
			// Once per file and never left out: it says why
			// the lines after are missing.
			r.problem(file, n, "line of %d bytes or more; the rest of the file is not read", maxLine)
			return
		}
		s := strings.Trim(string(line), " \t")
		switch {
		case strings.HasPrefix(s, directive):
			r.directive(file, n, s[len(directive):])
			continue
		case s == "" || s[0] == '#' || s[0] == ';':
			continue
		}
		if form == FormModulesLoad {
			r.add(Entry{Name: s, File: file, Line: n})
			continue
		}
		words := strings.Fields(s)
		if len(words) > 0 && words[0][0] == ';' {
			continue // a comment line, behind blanks Fields knows and Trim does not ("\f;")
		}
		for i, w := range words {
			if w[0] == '#' {
				words = words[:i]
				break
			}
		}
		if len(words) > 0 {
			r.add(Entry{Name: words[0], Params: strings.Join(words[1:], " "), File: file, Line: n})
		}
	}
}

// directive applies a "#modautoload:" line.
func (r *reader) directive(file string, line int, s string) {
	verb, rest, _ := strings.Cut(s, " ")
	switch verb {
	case "alone":
		names := strings.Fields(rest)
		if len(names) == 0 {
			r.lineProblem(file, line, "%salone names no module", directive)
		}
		for _, n := range names {
			r.alone[dedupKey(n)] = true
		}
	default:
		r.lineProblem(file, line, "unknown directive %.32q (known: %salone NAME...)", directive+verb, directive)
	}
}

// End-of-line markers, as systemd's read_line() knows them.
const (
	eolNUL = 1 << iota
	eolLF
	eolCR
)

func eolKind(c byte) int {
	switch c {
	case 0:
		return eolNUL
	case '\n':
		return eolLF
	case '\r':
		return eolCR
	}
	return 0
}

// nextLine returns the line starting at pos, without its end, and where
// the next one starts. A line ends at its first marker, and takes along
// the markers right after it of kinds not yet seen, until a NUL: "\r\n"
// and "\n\r\0" are one line end, "\n\n" and "\0\n" two.
func nextLine(data []byte, pos int) (line []byte, next int) {
	end := pos
	for end < len(data) && eolKind(data[end]) == 0 {
		end++
	}
	seen := 0
	next = end
	for next < len(data) && seen&eolNUL == 0 {
		k := eolKind(data[next])
		if k == 0 || seen&k != 0 {
			break
		}
		seen |= k
		next++
	}
	return data[pos:end], next
}
