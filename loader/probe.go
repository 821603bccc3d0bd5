package loader

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// ErrNotFound is returned by Probe when nothing matches the name.
var ErrNotFound = errors.New("module not found")

// ProbeOptions are modprobe's choices for one probe.
type ProbeOptions struct {
	// UseBlacklist applies the blacklist to modules asked for by name too
	// (modprobe -b); modules reached through an alias are always checked.
	UseBlacklist bool
	// Params are extra options for the named module (modprobe NAME
	// PARAM=VALUE...).
	Params string
	// IgnoreInstall loads the module itself even if it has an install
	// command (modprobe -i).
	IgnoreInstall bool
	// Before, if set, is called before each step is carried out (modprobe
	// -v prints it).
	Before func(Step)
	// Parallel loads the steps of a plan as soon as the steps they come
	// After are done, rather than one by one (the daemon; modprobe keeps
	// kmod's order, which -v shows).
	Parallel bool
	// Allowed, if set, is asked about each module the name resolves to; a
	// module it refuses is not loaded (allow-list mode). Its dependencies
	// are implied by it and not asked about.
	Allowed func(module string) bool
}

// ProbeResult is the outcome for one module a probe resolved to.
type ProbeResult struct {
	Module      string
	Blacklisted bool
	Refused     bool  // not allowed by ProbeOptions.Allowed
	Err         error // the first failure of a required step
}

// Probe resolves name with r and loads each module it resolves to, each
// after its dependencies and between its soft dependencies, as modprobe
// does. A failed soft dependency is ignored; a failed dependency stops that
// module. Modules listed twice by the lookup are loaded once. The error is
// for the lookup (ErrNotFound, a bad name); load failures are in the
// results.
func (l *Loader) Probe(ctx context.Context, r *Resolver, name string, o ProbeOptions) ([]ProbeResult, error) {
	mods, err := r.Lookup(name)
	if err != nil {
		return nil, err
	}
	if len(mods) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	var results []ProbeResult
	seen := map[string]bool{}
	for _, m := range mods {
		if seen[m.Name] {
			continue
		}
		seen[m.Name] = true
		res := ProbeResult{Module: m.Name}
		if r.Blacklisted(m) && (m.Alias != "" || o.UseBlacklist) {
			res.Blacklisted = true
			results = append(results, res)
			continue
		}
		if o.Allowed != nil && !o.Allowed(m.Name) {
			res.Refused = true
			results = append(results, res)
			continue
		}
		steps, err := r.Plan(m, o.Params, o.IgnoreInstall)
		if err != nil {
			res.Err = err
			results = append(results, res)
			continue
		}
		if o.Parallel {
			res.Err = l.runParallel(ctx, steps)
		} else {
			res.Err = l.run(ctx, steps, o.Before)
		}
		results = append(results, res)
	}
	return results, nil
}

// run carries out a plan in order.
func (l *Loader) run(ctx context.Context, steps []Step, before func(Step)) error {
	for _, s := range steps {
		if before != nil {
			before(s)
		}
		if err := l.Ensure(ctx, s); err != nil && s.Required {
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
func (l *Loader) runParallel(ctx context.Context, steps []Step) error {
	done := make([]chan struct{}, len(steps))
	errs := make([]error, len(steps))
	for i := range steps {
		done[i] = make(chan struct{})
	}
	var wg sync.WaitGroup
	for i := range steps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(done[i])
			for _, j := range steps[i].After {
				select {
				case <-done[j]:
				case <-ctx.Done():
					errs[i] = ctx.Err()
					return
				}
				if errs[j] != nil && steps[j].Required {
					errs[i] = fmt.Errorf("%s not loaded: %w", steps[i].Name, errs[j])
					return
				}
			}
			errs[i] = l.Ensure(ctx, steps[i])
		}()
	}
	wg.Wait()
	for i, s := range steps {
		if errs[i] != nil && s.Required {
			return errs[i]
		}
	}
	return nil
}
