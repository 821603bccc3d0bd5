package modprobed

import (
	"bufio"
	"io"
	"strings"
)

// Dump writes the configuration in the format of the configuration part of
// modprobe -c (kmod's show_config): all blacklist lines, then install,
// remove, alias, options, softdep and weakdep lines, each kind in
// configuration order. modprobe -c goes on to dump the module indexes; Dump
// stops before that.
//
// Softdep lines print "pre: A B post: C". kmod 30 and current upstream print no blank
// before "post:" when both lists are present ("pre: A Bpost: C"), and kmod 30
// prints post names that sit between pre names on the line inside the pre
// list; neither changes what loads, and Dump prints what libkmod looks up.
func (c *Config) Dump(w io.Writer) error {
	bw := bufio.NewWriter(w)
	line := func(words ...string) {
		bw.WriteString(strings.Join(words, " "))
		bw.WriteByte('\n')
	}
	for _, b := range c.Blacklist {
		line("blacklist", b)
	}
	for _, cmd := range c.InstallCommands {
		line("install", cmd.Module, cmd.Command)
	}
	for _, cmd := range c.RemoveCommands {
		line("remove", cmd.Module, cmd.Command)
	}
	for _, a := range c.Aliases {
		line("alias", a.Pattern, a.Module)
	}
	for _, o := range c.ModuleOptions {
		line("options", o.Module, o.Options)
	}
	for _, s := range c.Softdeps {
		var parts []string
		if len(s.Pre) > 0 {
			parts = append(parts, "pre: "+strings.Join(s.Pre, " "))
		}
		if len(s.Post) > 0 {
			parts = append(parts, "post: "+strings.Join(s.Post, " "))
		}
		line("softdep", s.Module, strings.Join(parts, " "))
	}
	for _, d := range c.Weakdeps {
		line("weakdep", d.Module, strings.Join(d.Deps, " "))
	}
	return bw.Flush()
}
