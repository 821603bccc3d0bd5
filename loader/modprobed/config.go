package modprobed

import (
	"fmt"
	"slices"

	"github.com/modautoload/modautoload/internal/fnmatch"
)

// Alias is one "alias PATTERN MODULE" line.
type Alias struct {
	Pattern string // fnmatch pattern, "-" normalised to "_" outside [...]
	Module  string
}

// Option is one "options MODULE OPTS..." line, or one MODULE.param=value
// word of the kernel command line.
type Option struct {
	Module  string // a module name or an alias pattern, matched exactly
	Options string // the rest of the line as written, tabs turned into spaces
	// Source is where it was written, "FILE:LINE" or "kernel command
	// line", so a parameter the kernel refuses can be traced back.
	Source string
}

// Command is one "install" or "remove" line.
type Command struct {
	Module  string // matched as an fnmatch pattern by Install and Remove
	Command string // the rest of the line as written, for /bin/sh -c
}

// Softdep is one "softdep MODULE pre: ... post: ..." line.
type Softdep struct {
	Module string   // matched as an fnmatch pattern
	Pre    []string // names or aliases, not normalised, as libkmod keeps them
	Post   []string
}

// Weakdep is one "weakdep MODULE NAME..." line (kmod 33 and later). Weak
// dependencies are never loaded; they tell image builders what the module
// may request at run time.
type Weakdep struct {
	Module string // matched as an fnmatch pattern
	Deps   []string
}

// ParseError is a line, file or word of the configuration that was skipped.
// The rest of the configuration still applies.
type ParseError struct {
	File string // path of the file, or "kernel command line"
	Line int    // first physical line of the logical line; 0 if none
	Msg  string
}

func (e *ParseError) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

// Config is the effective modprobe.d configuration plus the kernel command
// line. Each list keeps libkmod's order: files sorted by name, lines in file
// order, kernel command line last. Duplicates are kept, as libkmod keeps them.
type Config struct {
	Files           []string // files read, in the order they were parsed
	Aliases         []Alias
	Blacklist       []string
	ModuleOptions   []Option
	InstallCommands []Command
	RemoveCommands  []Command
	Softdeps        []Softdep
	Weakdeps        []Weakdep
	// Problems are *ParseError values, in the order found: at most 100
	// for one file or for the kernel command line, then one that counts
	// the problems not reported.
	Problems []error
}

// MatchAliases returns the configured aliases whose pattern matches name, in
// configuration order, as libkmod's kmod_lookup_alias_from_config does: all
// of them, not the first. name must already be normalised ("-" to "_"
// outside [...]). Pass the matching Alias.Pattern to OptionsVia.
func (c *Config) MatchAliases(name string) []Alias {
	var out []Alias
	for _, a := range c.Aliases {
		if fnmatch.Match(a.Pattern, name) {
			out = append(out, a)
		}
	}
	return out
}

// Blacklisted reports whether a blacklist line (or modprobe.blacklist= on
// the kernel command line) names module exactly; libkmod compares with
// strcmp, not fnmatch.
func (c *Config) Blacklisted(module string) bool {
	for _, b := range c.Blacklist {
		if b == module {
			return true
		}
	}
	return false
}

// Options returns the options for module loaded by its own name.
func (c *Config) Options(module string) string {
	return c.OptionsVia(module, "")
}

// OptionsVia returns the options for module reached through the config
// alias pattern alias ("" for none): every options line naming either one
// exactly, in configuration order (so the kernel command line comes last),
// joined by single spaces, empty entries skipped. This is
// kmod_module_get_options.
func (c *Config) OptionsVia(module, alias string) string {
	var out []byte
	for _, o := range c.ModuleOptions {
		if o.Module != module && (alias == "" || o.Module != alias) {
			continue
		}
		if o.Options == "" {
			continue
		}
		if len(out) > 0 {
			out = append(out, ' ')
		}
		out = append(out, o.Options...)
	}
	return string(out)
}

// OptionSources returns where the options OptionsVia joins come from, in
// the same order; several words of the kernel command line are named once.
func (c *Config) OptionSources(module, alias string) []string {
	var out []string
	for _, o := range c.ModuleOptions {
		if o.Module != module && (alias == "" || o.Module != alias) || o.Options == "" {
			continue
		}
		if !slices.Contains(out, o.Source) {
			out = append(out, o.Source)
		}
	}
	return out
}

// Install returns the install command for module: the first install line
// whose pattern matches it. Later lines for the same module are ignored, as
// in module-init-tools and kmod_module_get_install_commands.
func (c *Config) Install(module string) (string, bool) {
	return c.firstMatch(c.InstallCommands, module)
}

// Remove returns the remove command for module, first match wins as for
// Install.
func (c *Config) Remove(module string) (string, bool) {
	return c.firstMatch(c.RemoveCommands, module)
}

// ExactInstall returns the first install line whose module is name itself.
// This is the "install commands" step of name lookup
// (kmod_lookup_alias_from_commands), which compares with strcmp; a module
// found that way runs this command even if an earlier pattern line would
// match it in Install.
func (c *Config) ExactInstall(name string) (string, bool) {
	return firstExact(c.InstallCommands, name)
}

// ExactRemove is ExactInstall for remove lines; lookup consults it only when
// no install line names the module.
func (c *Config) ExactRemove(name string) (string, bool) {
	return firstExact(c.RemoveCommands, name)
}

// Softdep returns the soft dependencies of module from the first softdep
// line whose pattern matches it. A matching line with empty lists still
// hides later lines, as in kmod_module_get_softdeps.
func (c *Config) Softdep(module string) (pre, post []string) {
	for _, s := range c.Softdeps {
		if fnmatch.Match(s.Module, module) {
			return s.Pre, s.Post
		}
	}
	return nil, nil
}

// Weakdep returns the weak dependencies of module from the first weakdep
// line whose pattern matches it (kmod_module_get_weakdeps).
func (c *Config) Weakdep(module string) []string {
	for _, w := range c.Weakdeps {
		if fnmatch.Match(w.Module, module) {
			return w.Deps
		}
	}
	return nil
}

func (c *Config) firstMatch(cmds []Command, module string) (string, bool) {
	for _, cmd := range cmds {
		if fnmatch.Match(cmd.Module, module) {
			return cmd.Command, true
		}
	}
	return "", false
}

func firstExact(cmds []Command, name string) (string, bool) {
	for _, cmd := range cmds {
		if cmd.Module == name {
			return cmd.Command, true
		}
	}
	return "", false
}
