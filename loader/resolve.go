package loader

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/modautoload/modautoload/internal/fnmatch"
	"github.com/modautoload/modautoload/loader/index"
	"github.com/modautoload/modautoload/loader/modprobed"
)

// ErrBadName is returned for a name or alias that cannot be looked up:
// unbalanced brackets, a NUL byte, or longer than PATH_MAX.
var ErrBadName = errors.New("invalid module name or alias")

// maxNameLen is PATH_MAX, libkmod's bound on names and aliases.
const maxNameLen = 4096

// Module is one module a lookup found.
type Module struct {
	Name string
	// Alias is what the module was found through: the modprobe.d alias
	// pattern or the looked-up string for index aliases, "" for a lookup by
	// module name. The blacklist applies to modules found by alias, and
	// options written for the alias pattern apply too.
	Alias string
	// Builtin is set when the lookup found the module in the builtin index.
	Builtin bool

	// install is the command the commands lookup step found for exactly
	// this name; it wins over pattern matches (kmod_lookup_alias_from_commands).
	install    string
	hasInstall bool
}

// key identifies a module the way libkmod's module pool does: the same
// module reached through an alias is a different object from the one
// reached by name.
func (m *Module) key() string { return m.Name + "\\" + m.Alias }

// Step is one action of a load plan.
type Step struct {
	Name    string
	Path    string // absolute path of the module file; "" when built in or unknown
	Builtin bool
	Options string // module parameters, as libkmod builds them
	// OptionsFrom says where Options came from ("FILE:LINE", "kernel
	// command line", the caller), so a refused parameter can be traced.
	OptionsFrom []string
	// Install is a modprobe.d install command to run with /bin/sh -c
	// instead of loading the module ($CMDLINE_OPTS not yet substituted).
	Install    string
	HasInstall bool
	// Required is false for soft dependencies, whose failure is ignored.
	Required bool
	// After lists the steps (indices into the plan) that must be done
	// first: the module's dependencies, its soft pre-dependencies, and for
	// a soft post-dependency the module it follows. Steps without such a
	// relation may load in parallel.
	After []int
	// Priority orders this load among those waiting for room in the
	// kernel (Loader.MaxInKernel): higher first, then first come.
	Priority int
}

// Resolver answers what libkmod would load for a name or alias, from one
// module database and one configuration. It holds no per-lookup state, so
// one Resolver serves concurrent lookups.
type Resolver struct {
	DB     *DB
	Config *modprobed.Config
}

// Lookup finds the modules for name (a module name, an alias such as a
// MODALIAS, or "symbol:NAME") in libkmod's order, first source that answers
// wins: modprobe.d aliases, module names in modules.dep, symbols, install
// and remove commands, modules.alias, modules.builtin, modules.builtin.alias.
// Blacklisted modules are included; see Blacklisted.
func (r *Resolver) Lookup(name string) ([]*Module, error) {
	norm, err := normalizeAlias(name)
	if err != nil {
		return nil, err
	}
	for _, step := range []func(string) ([]*Module, error){
		r.fromConfig, r.fromDep, r.fromSymbols, r.fromCommands, r.fromAliases, r.fromBuiltin, r.fromBuiltinAlias,
	} {
		mods, err := step(norm)
		if err != nil || len(mods) > 0 {
			return mods, err
		}
	}
	return nil, nil
}

func (r *Resolver) fromConfig(name string) ([]*Module, error) {
	var mods []*Module
	for _, a := range r.Config.MatchAliases(name) {
		mods = append(mods, &Module{Name: a.Module, Alias: a.Pattern})
	}
	return mods, nil
}

func (r *Resolver) fromDep(name string) ([]*Module, error) {
	// Module names never contain ':'; aliases mostly do.
	if strings.IndexByte(name, ':') >= 0 {
		return nil, nil
	}
	e, err := r.DB.lookupDep(name)
	if e == nil || err != nil {
		return nil, err
	}
	return []*Module{{Name: name}}, nil
}

func (r *Resolver) fromSymbols(name string) ([]*Module, error) {
	if !strings.HasPrefix(name, "symbol:") {
		return nil, nil
	}
	return r.fromIndex(name, r.DB.symbols)
}

func (r *Resolver) fromCommands(name string) ([]*Module, error) {
	if cmd, ok := r.Config.ExactInstall(name); ok {
		return []*Module{{Name: name, install: cmd, hasInstall: true}}, nil
	}
	if _, ok := r.Config.ExactRemove(name); ok {
		return []*Module{{Name: name}}, nil
	}
	return nil, nil
}

func (r *Resolver) fromAliases(name string) ([]*Module, error) {
	return r.fromIndex(name, r.DB.alias)
}

func (r *Resolver) fromBuiltin(name string) ([]*Module, error) {
	ok, err := r.DB.isBuiltin(name)
	if !ok || err != nil {
		return nil, err
	}
	return []*Module{{Name: name, Builtin: true}}, nil
}

func (r *Resolver) fromBuiltinAlias(name string) ([]*Module, error) {
	return r.fromIndex(name, r.DB.builtinAlias)
}

// fromIndex looks name up in an alias-like index; each module found keeps
// name as the alias it was reached through.
func (r *Resolver) fromIndex(name string, ix index.Index) ([]*Module, error) {
	names, err := wild(ix, name)
	if err != nil {
		return nil, err
	}
	mods := make([]*Module, len(names))
	for i, n := range names {
		mods[i] = &Module{Name: n, Alias: name}
	}
	return mods, nil
}

// Blacklisted reports whether modprobe.d or the kernel command line
// blacklists m.
func (r *Resolver) Blacklisted(m *Module) bool { return r.Config.Blacklisted(m.Name) }

// Plan returns what loading m takes, in order, as libkmod's probe list:
// for each dependency (deepest first) its soft pre-dependencies, itself and
// its soft post-dependencies, then the same for m. Soft dependencies are
// looked up like any name and planned recursively; each module object is
// planned once, which also ends dependency cycles. extra is appended to m's
// own options (modprobe's command-line parameters); ignoreInstall skips
// m's install command (modprobe -i).
// extraFrom names where extra came from; "" means the caller.
func (r *Resolver) Plan(m *Module, extra, extraFrom string, ignoreInstall bool) ([]Step, error) {
	p := planner{r: r, visited: map[string]bool{}, required: map[string]bool{}, ignoreCmd: map[string]bool{}, after: map[int][]int{}}
	if err := p.visit(m, true, ignoreInstall); err != nil {
		return nil, err
	}
	steps := make([]Step, 0, len(p.list))
	for i, x := range p.list {
		s, err := r.step(x, p.required[x.key()], p.ignoreCmd[x.key()])
		if err != nil {
			return nil, err
		}
		if x == m {
			s.Options = concatOptions(s.Options, extra)
			if extra != "" {
				s.OptionsFrom = append(s.OptionsFrom, cmp.Or(extraFrom, "the caller"))
			}
		}
		s.After = p.after[i]
		// A module waits for its own dependencies, wherever they stand
		// in the list (the last one before it: duplicates come later).
		deps, err := r.Dependencies(x)
		if err != nil {
			return nil, err
		}
		for _, d := range deps {
			for j := i - 1; j >= 0; j-- {
				if p.list[j].Name == d.Name {
					s.After = append(s.After, j)
					break
				}
			}
		}
		steps = append(steps, s)
	}
	return steps, nil
}

// concatOptions is libkmod's module_options_concat, quirks included: with
// configured options and no extra ones the result ends in a space.
func concatOptions(opts, extra string) string {
	if opts == "" {
		return extra
	}
	return opts + " " + extra
}

func (r *Resolver) step(m *Module, required, ignoreCmd bool) (Step, error) {
	s := Step{Name: m.Name, Required: required, Options: r.Config.OptionsVia(m.Name, m.Alias),
		OptionsFrom: r.Config.OptionSources(m.Name, m.Alias)}
	e, err := r.DB.lookupDep(m.Name)
	if err != nil {
		return s, err
	}
	if e != nil {
		s.Path = e.path
	} else if s.Builtin = m.Builtin; !s.Builtin {
		if s.Builtin, err = r.DB.isBuiltin(m.Name); err != nil {
			return s, err
		}
	}
	if !ignoreCmd {
		if m.hasInstall {
			s.Install, s.HasInstall = m.install, true
		} else {
			s.Install, s.HasInstall = r.Config.Install(m.Name)
		}
	}
	return s, nil
}

// planner builds one probe list; its maps are keyed by Module.key.
type planner struct {
	r         *Resolver
	visited   map[string]bool
	required  map[string]bool
	ignoreCmd map[string]bool
	list      []*Module
	after     map[int][]int // ordering other than modules.dep's, by list index
}

func (p *planner) visit(m *Module, required, ignoreCmd bool) error {
	if p.visited[m.key()] {
		return nil
	}
	p.visited[m.key()] = true
	deps, err := p.r.Dependencies(m)
	if err != nil {
		return err
	}
	if required {
		p.required[m.key()] = true
		for _, d := range deps {
			p.required[d.key()] = true
		}
	}
	for _, d := range deps {
		if err := p.withSoftdeps(d); err != nil {
			return err
		}
	}
	if ignoreCmd {
		p.list = append(p.list, m)
		p.ignoreCmd[m.key()] = true
		return nil
	}
	return p.withSoftdeps(m)
}

// withSoftdeps adds m between its soft pre- and post-dependencies. A module
// with soft dependencies does not run its install command: module-init-tools
// configurations used install lines to emulate softdeps.
func (p *planner) withSoftdeps(m *Module) error {
	preNames, postNames := p.r.Config.Softdep(m.Name)
	pre, err := p.r.lookupAll(preNames)
	if err != nil {
		return err
	}
	post, err := p.r.lookupAll(postNames)
	if err != nil {
		return err
	}
	start := len(p.list)
	for _, s := range pre {
		if err := p.visit(s, false, false); err != nil {
			return err
		}
	}
	idx := len(p.list)
	p.list = append(p.list, m)
	for j := start; j < idx; j++ {
		p.after[idx] = append(p.after[idx], j)
	}
	p.ignoreCmd[m.key()] = len(pre) > 0 || len(post) > 0
	postStart := len(p.list)
	for _, s := range post {
		if err := p.visit(s, false, false); err != nil {
			return err
		}
	}
	for j := postStart; j < len(p.list); j++ {
		p.after[j] = append(p.after[j], idx)
	}
	return nil
}

// lookupAll looks up soft dependency names; like libkmod, a name that
// cannot be looked up is skipped.
func (r *Resolver) lookupAll(names []string) ([]*Module, error) {
	var out []*Module
	for _, n := range names {
		mods, err := r.Lookup(n)
		if errors.Is(err, ErrBadName) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, mods...)
	}
	return out, nil
}

// Dependencies returns m's dependencies from modules.dep in load order,
// the last listed first: depmod lists the deepest dependencies last.
func (r *Resolver) Dependencies(m *Module) ([]*Module, error) {
	e, err := r.DB.lookupDep(m.Name)
	if e == nil || err != nil {
		return nil, err
	}
	out := make([]*Module, len(e.deps))
	for i, p := range e.deps {
		out[len(e.deps)-1-i] = &Module{Name: index.ModuleName(p)}
	}
	return out, nil
}

// normalizeAlias is libkmod's alias_normalize, with its bounds on the
// name: shorter than PATH_MAX and no NUL byte.
func normalizeAlias(s string) (string, error) {
	if len(s) >= maxNameLen || strings.IndexByte(s, 0) >= 0 {
		return "", fmt.Errorf("%w: %.64q", ErrBadName, s)
	}
	norm, ok := fnmatch.Underscores(s)
	if !ok {
		return "", fmt.Errorf("%w: unbalanced brackets in %.64q", ErrBadName, s)
	}
	return norm, nil
}

// WriteShowDepends prints load plans as modprobe --show-depends does, byte
// for byte (trailing blanks included), since scripts parse that output.
func WriteShowDepends(w io.Writer, steps []Step) error {
	var err error
	for _, s := range steps {
		switch {
		case s.HasInstall:
			_, err = fmt.Fprintf(w, "install %s %s\n", s.Install, s.Options)
		case s.Path != "":
			_, err = fmt.Fprintf(w, "insmod %s %s\n", s.Path, s.Options)
		case s.Builtin:
			_, err = fmt.Fprintf(w, "builtin %s\n", s.Name)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
