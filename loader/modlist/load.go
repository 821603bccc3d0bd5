package modlist

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/modautoload/modautoload/loader"
)

// Loading carries out the entries of lists, side by side: each entry is
// resolved and handed to the Loader with parallel plans, so its
// dependencies load as soon as theirs are live, and modules shared by
// several entries (nf_conntrack, libcrc32c) are handed to the kernel once
// (the Loader's per-module serialization). An entry marked Alone starts
// once every entry before it is done, and the entries after it start once
// it is done.
type Loading struct {
	// Resolve plans one name: a Resolver's Resolve, or the daemon's
	// current one.
	Resolve func(name string, o loader.ResolveOptions) ([]loader.Planned, error)
	Loader  *loader.Loader
	// Allowed is the event rules' allow-list, if any.
	Allowed func(module string) bool
	// Jobs bounds the entries in progress at once; 0 means DefaultJobs.
	Jobs int
	// KernelBlacklist are the names of module_blacklist= (see
	// KernelBlacklist): their EPERM is expected.
	KernelBlacklist []string
	// Done, if set, is told of each entry as it is done, from the
	// goroutine that loaded it.
	Done func(Outcome)
}

// DefaultJobs bounds the entries in progress at once. An entry in
// progress mostly waits (for a dependency another entry is loading, for a
// slow init such as raid6_pq's benchmark), so the bound is not the CPUs:
// with a CPU's worth of entries, three entries waiting for btrfs's
// raid6_pq held back the other 37 of a 40-module list for 2 s. It only
// keeps a list of thousands from starting thousands of loads at once.
const DefaultJobs = 64

// Outcome is what became of one entry.
type Outcome struct {
	Entry Entry
	// Err is the lookup's error (loader.ErrNotFound, a bad name) or the
	// end of the context before the entry started.
	Err error
	// Modules are the modules the name resolved to, with their results.
	Modules []loader.Result
	// kernelBlacklisted lists which of Modules module_blacklist= refuses.
	kernelBlacklisted []bool
}

// Class is the verdict on an outcome, by systemd-modules-load's rules.
type Class string

const (
	// Live: every module the name resolved to is live or built in.
	Live Class = "live"
	// Skipped: a module was left out on purpose and none failed: the
	// blacklist, module_blacklist= (EPERM), or an init that found no
	// hardware (ENODEV).
	Skipped Class = "skipped"
	// Missing: nothing has that name, or a module lacks a symbol or
	// file (ENOENT). A warning, not a failure.
	Missing Class = "missing"
	// Failed: anything else. load-static exits 1.
	Failed Class = "failed"
)

// Class classifies the outcome.
func (o Outcome) Class() Class {
	switch {
	case errors.Is(o.Err, loader.ErrNotFound):
		return Missing
	case o.Err != nil:
		return Failed
	}
	class := Live
	for i, m := range o.Modules {
		c := o.moduleClass(i, m)
		if classRank[c] > classRank[class] {
			class = c
		}
	}
	return class
}

// classRank orders classes from best to worst.
var classRank = map[Class]int{Live: 0, Skipped: 1, Missing: 2, Failed: 3}

func (o Outcome) moduleClass(i int, m loader.Result) Class {
	switch {
	case m.Refused:
		return Failed
	case m.Blacklisted:
		return Skipped
	case m.Err == nil:
		return Live
	case errors.Is(m.Err, unix.ENODEV):
		return Skipped
	case errors.Is(m.Err, unix.EPERM) && i < len(o.kernelBlacklisted) && o.kernelBlacklisted[i]:
		return Skipped
	case errors.Is(m.Err, unix.ENOENT):
		return Missing
	}
	return Failed
}

// Run loads entries and returns their outcomes, in the entries' order.
// Every entry is resolved first, so that when the Loader bounds the loads
// in the kernel, the modules more work waits on go first: a step's
// Priority is the size of the plans of all entries that need its module,
// in KiB, plus one per entry. libcrc32c, which a dozen netfilter and
// filesystem entries need, then goes before a leaf one entry needs, and
// btrfs's chain before a small crypto module's, so that the big modules
// do not load last, alone. When ctx ends, entries not yet started are
// not started (their Err is the context's) and those in progress stop
// waiting.
func (c *Loading) Run(ctx context.Context, entries []Entry) []Outcome {
	jobs := c.Jobs
	if jobs <= 0 {
		jobs = DefaultJobs
	}
	plans, errs := c.resolveAll(entries)
	out := make([]Outcome, len(entries))
	slots := make(chan struct{}, jobs)
	var wg sync.WaitGroup
	for i, e := range entries {
		if e.Alone {
			wg.Wait()
		}
		if err := ctx.Err(); err != nil {
			out[i] = c.finish(Outcome{Entry: e, Err: err})
			continue
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			out[i] = c.finish(Outcome{Entry: e, Err: ctx.Err()})
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			out[i] = c.finish(c.load(ctx, e, plans[i], errs[i]))
		}()
		if e.Alone {
			wg.Wait()
		}
	}
	wg.Wait()
	return out
}

// resolveAll plans every entry as systemd-modules-load does (the
// blacklist applies to the name itself too: KMOD_PROBE_APPLY_BLACKLIST)
// and gives each step its priority (see Run).
func (c *Loading) resolveAll(entries []Entry) ([][]loader.Planned, []error) {
	plans := make([][]loader.Planned, len(entries))
	errs := make([]error, len(entries))
	weight := map[string]int{}
	for i, e := range entries {
		plans[i], errs[i] = c.Resolve(e.Name, loader.ResolveOptions{UseBlacklist: true, Params: e.Params,
			ParamsFrom: fmt.Sprintf("%s:%d", e.File, e.Line), Allowed: c.Allowed})
		steps := map[string]string{} // the plan's modules and their files
		for _, p := range plans[i] {
			for _, s := range p.Steps {
				steps[s.Name] = s.Path
			}
		}
		var kib int64
		for _, path := range steps {
			if st, err := os.Stat(path); path != "" && err == nil {
				kib += st.Size() >> 10
			}
		}
		for m := range steps {
			weight[m] += int(kib) + 1
		}
	}
	for _, ps := range plans {
		for _, p := range ps {
			for j := range p.Steps {
				p.Steps[j].Priority = weight[p.Steps[j].Name]
			}
		}
	}
	return plans, errs
}

func (c *Loading) finish(o Outcome) Outcome {
	if c.Done != nil {
		c.Done(o)
	}
	return o
}

// load carries out one entry's plans.
func (c *Loading) load(ctx context.Context, e Entry, plans []loader.Planned, err error) Outcome {
	if err != nil {
		return Outcome{Entry: e, Err: err}
	}
	asker := loader.Asker{Kind: loader.AskedByStatic, Name: e.Name, File: e.File, Line: e.Line}
	o := Outcome{Entry: e, Modules: c.Loader.Load(ctx, plans, loader.LoadOptions{Parallel: true, Asker: asker})}
	for _, m := range o.Modules {
		o.kernelBlacklisted = append(o.kernelBlacklisted, slices.Contains(c.KernelBlacklist, m.Module))
	}
	return o
}

// Summary counts outcomes by class.
type Summary struct {
	Entries int `json:"entries"`
	Live    int `json:"live"`
	Skipped int `json:"skipped"`
	Missing int `json:"missing"`
	Failed  int `json:"failed"`
}

// Add counts one outcome.
func (s *Summary) Add(o Outcome) {
	s.Entries++
	switch o.Class() {
	case Live:
		s.Live++
	case Skipped:
		s.Skipped++
	case Missing:
		s.Missing++
	default:
		s.Failed++
	}
}
