package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/modautoload/modautoload/loader"
)

const resolveHelp = `resolve [--json] [--stdin] [-b] [-d DIR] [-S VERSION] [-C PATH] ALIAS...

Prints what loading each ALIAS (a MODALIAS, a module name, an alias from
modprobe.d, or symbol:NAME) would do, in order, without loading anything.
The text form is modprobe --show-depends's: "insmod PATH OPTIONS",
"install COMMAND OPTIONS" and "builtin NAME" lines. --json prints one object
per ALIAS:
  {"alias": IN, "modules": [{"name": N, "builtin": B, "load": [DEP..., N]}]}
with modules in match order and load the whole load order: dependencies
deepest first, soft pre-dependencies before and post-dependencies after the
module. A module that the blacklist keeps out has "blacklisted": true and an
empty load. Exit status 1 if some ALIAS matches no module.`

func runResolve(_ context.Context, env *cliEnv, args []string) int {
	var (
		s            optSet
		logOpts      logOptions
		mods         moduleOptions
		jsonOut      bool
		fromStdin    bool
		useBlacklist bool
	)
	s.boolVar(&jsonOut, 0, "json", "one JSON object per ALIAS")
	s.boolVar(&fromStdin, 0, "stdin", "read ALIASes from standard input, one per line, after those given")
	s.boolVar(&useBlacklist, 'b', "use-blacklist", "apply the blacklist to module names too, not only to aliases")
	mods.register(&s)
	logOpts.register(&s)
	aliases, code := parseArgs(env, "resolve", resolveHelp, &s, args)
	if code >= 0 {
		return code
	}
	log, closeLog, err := logOpts.logger(env.stderr)
	if err != nil {
		fmt.Fprintf(env.stderr, "modautoload resolve: %v\n", err)
		return 2
	}
	defer closeLog.Close()
	if len(aliases) == 0 && !fromStdin {
		fmt.Fprintln(env.stderr, "modautoload resolve: no ALIAS given")
		return 2
	}
	r, err := mods.openResolver(log)
	if err != nil {
		log.Error().Err(err).Msg("cannot start")
		return 1
	}
	defer r.DB.Close()

	w := bufio.NewWriter(env.stdout)
	defer w.Flush()
	status := 0
	resolveOne := func(alias string) {
		res := resolve(r, alias, useBlacklist)
		if res.err != nil {
			log.Error().Str("alias", alias).Err(res.err).Msg("lookup failed")
		}
		if len(res.Modules) == 0 {
			status = 1
		}
		if jsonOut {
			writeResolutionJSON(w, res)
		} else {
			for _, m := range res.Modules {
				loader.WriteShowDepends(w, m.steps)
			}
		}
	}
	for _, a := range aliases {
		resolveOne(a)
	}
	if fromStdin {
		sc := bufio.NewScanner(os.Stdin)
		sc.Buffer(make([]byte, 64<<10), 64<<10)
		for sc.Scan() {
			resolveOne(sc.Text())
			// Answer each line at once: callers may pipe one alias at a time.
			w.Flush()
		}
		if err := sc.Err(); err != nil {
			log.Error().Err(err).Msg("reading standard input")
			return 1
		}
	}
	return status
}

// resolution is the answer for one alias, shaped for --json.
type resolution struct {
	Alias   string           `json:"alias"`
	Modules []resolvedModule `json:"modules"`
	Error   string           `json:"error,omitempty"`
	err     error
}

type resolvedModule struct {
	Name        string   `json:"name"`
	Builtin     bool     `json:"builtin"`
	Blacklisted bool     `json:"blacklisted,omitempty"`
	Load        []string `json:"load"`
	steps       []loader.Step
}

// resolve answers one alias in the shape of --json.
func resolve(r *loader.Resolver, alias string, useBlacklist bool) resolution {
	res := resolution{Alias: alias, Modules: []resolvedModule{}}
	planned, err := r.Resolve(alias, loader.ResolveOptions{UseBlacklist: useBlacklist})
	if errors.Is(err, loader.ErrNotFound) {
		return res
	}
	if err != nil {
		res.err, res.Error = err, err.Error()
		return res
	}
	for _, p := range planned {
		if p.Err != nil {
			res.err, res.Error = p.Err, p.Err.Error()
			return res
		}
		rm := resolvedModule{Name: p.Name, Blacklisted: p.Blacklisted, Load: []string{}, steps: p.Steps}
		for _, s := range p.Steps {
			if s.Name == p.Name {
				rm.Builtin = s.Builtin
			}
			if s.Path != "" || s.HasInstall {
				rm.Load = append(rm.Load, s.Name)
			}
		}
		res.Modules = append(res.Modules, rm)
	}
	return res
}

func writeResolutionJSON(w io.Writer, res resolution) {
	b, err := json.Marshal(res)
	if err != nil {
		panic(err) // only strings, bools and slices of them
	}
	w.Write(append(b, '\n'))
}
