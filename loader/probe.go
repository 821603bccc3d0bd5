package loader

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// ErrNotFound is returned by Resolve when nothing matches the name.
var ErrNotFound = errors.New("module not found")

// ResolveOptions are modprobe's choices for what a name resolves to.
type ResolveOptions struct {
	// UseBlacklist applies the blacklist to modules asked for by name too
	// (modprobe -b, udev); modules reached through an alias are always
	// checked.
	UseBlacklist bool
	// Params are extra options for the named module (modprobe NAME
	// PARAM=VALUE...).
	Params string
	// ParamsFrom names where Params came from, for error messages
	// ("FILE:LINE" of a static list); "" means the caller.
	ParamsFrom string
	// IgnoreInstall plans the module itself even if it has an install
	// command (modprobe -i).
	IgnoreInstall bool
	// Allowed, if set, is asked about each module the name resolves to; a
	// module it refuses is not planned (allow-list mode). Its dependencies
	// are implied by it and not asked about.
	Allowed func(module string) bool
}

// Planned is one module a lookup found, with what loading it takes.
type Planned struct {
	*Module
	// Blacklisted is set when the blacklist keeps the module out, Refused
	// when ResolveOptions.Allowed does, Err when it could not be planned;
	// Steps is empty then.
	Blacklisted bool
	Refused     bool
	Err         error
	Steps       []Step
}

// Resolve looks name up and plans each module found, as modprobe does:
// every decision about what loads (lookup, blacklist, allow-list,
// dependencies, options, install commands) is made here, against this one
// immutable resolver, and none is left for the load. A module the lookup
// lists twice (two alias patterns match) is listed twice, as libkmod's
// modprobe --show-depends shows it; Load loads it once. The error is for
// the lookup (ErrNotFound, a bad name); a module that cannot be planned
// carries its own Err.
func (r *Resolver) Resolve(name string, o ResolveOptions) ([]Planned, error) {
	mods, err := r.Lookup(name)
	if err != nil {
		return nil, err
	}
	if len(mods) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	out := make([]Planned, 0, len(mods))
	for _, m := range mods {
		p := Planned{Module: m}
		switch {
		case r.Blacklisted(m) && (m.Alias != "" || o.UseBlacklist):
			p.Blacklisted = true
		case o.Allowed != nil && !o.Allowed(m.Name):
			p.Refused = true
		default:
			p.Steps, p.Err = r.Plan(m, o.Params, o.ParamsFrom, o.IgnoreInstall)
		}
		out = append(out, p)
	}
	return out, nil
}

// LoadOptions are the choices for carrying plans out.
type LoadOptions struct {
	// Before, if set, is called before each step is carried out (modprobe
	// -v prints it).
	Before func(Step)
	// Parallel loads the steps of a plan as soon as the steps they come
	// After are done, rather than one by one (the daemon; modprobe keeps
	// kmod's order, which -v shows).
	Parallel bool
	// Retry asks the kernel again for a module that failed earlier in
	// this burst: the request is explicit (a command line, the kernel's
	// helper), not one more event of a storm.
	Retry bool
	// Asker says who asked, for the timeline's records (Timeline).
	Asker Asker
}

// Result is the outcome for one planned module.
type Result struct {
	Module      string
	Blacklisted bool
	Refused     bool
	Err         error // the planning error, or the first failure of a required step
}

// Load carries out plans: each module after its dependencies and between
// its soft dependencies. A failed soft dependency is ignored; a failed
// dependency stops that module. A module planned twice is loaded and
// reported once. It needs no resolver: plans hold every decision, so no
// lock a reload or another request could want is held while the kernel
// works.
func (l *Loader) Load(ctx context.Context, plans []Planned, o LoadOptions) []Result {
	results := make([]Result, 0, len(plans))
	seen := map[string]bool{}
	req := &request{asker: o.Asker}
	for _, p := range plans {
		if seen[p.Name] {
			continue
		}
		seen[p.Name] = true
		res := Result{Module: p.Name, Blacklisted: p.Blacklisted, Refused: p.Refused, Err: p.Err}
		if !p.Blacklisted && !p.Refused && p.Err == nil {
			run := newPlanRun(req, p.Name, p.Steps, o.Parallel)
			if o.Parallel {
				res.Err = l.runParallel(ctx, run, o.Retry)
			} else {
				res.Err = l.run(ctx, run, o)
			}
		}
		results = append(results, res)
	}
	return results
}

// run carries out a plan in order.
func (l *Loader) run(ctx context.Context, p *planRun, o LoadOptions) error {
	for i, s := range p.steps {
		if o.Before != nil {
			o.Before(s)
		}
		err := l.ensureStep(ctx, s, o.Retry, p, i)
		p.state[i].err = err
		if err != nil && s.Required {
			return err
		}
	}
	return nil
}

// runParallel carries out a plan with each step starting as soon as the
// steps it comes after are done: independent dependencies (kvm and ccp
// for kvm_amd) load at once. A step whose required predecessor failed is
// not tried; as with run, the first failure of a required step is the
// result.
func (l *Loader) runParallel(ctx context.Context, p *planRun, retry bool) error {
	steps, state := p.steps, p.state
	var wg sync.WaitGroup
	for i := range steps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(state[i].done)
			for _, j := range steps[i].After {
				select {
				case <-state[j].done:
				case <-ctx.Done():
					state[i].err = ctx.Err()
					return
				}
				if state[j].err != nil && steps[j].Required {
					state[i].err = fmt.Errorf("%s not loaded: %w", steps[i].Name, state[j].err)
					return
				}
			}
			state[i].err = l.ensureStep(ctx, steps[i], retry, p, i)
		}()
	}
	wg.Wait()
	for i, s := range steps {
		if state[i].err != nil && s.Required {
			return state[i].err
		}
	}
	return nil
}
