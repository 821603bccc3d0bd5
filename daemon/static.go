package daemon

import (
	"context"
	"time"

	"github.com/rs/zerolog"

	"github.com/modautoload/modautoload/loader"
	"github.com/modautoload/modautoload/loader/modlist"
)

// StaticStatus is the progress of the static lists (daemon --static).
type StaticStatus struct {
	modlist.Summary
	// Listed is how many entries the lists hold; Entries, how many are done.
	Listed int  `json:"listed"`
	Done   bool `json:"done"`
}

// loadStatic loads the static lists beside coldplug, through the same
// Loader as events, so a module both ask for is handed to the kernel once.
// The daemon is not idle (nor settled) until it is done.
func (d *Daemon) loadStatic(ctx context.Context) {
	start := time.Now()
	defer func() {
		d.dropIndexPages()
		d.mu.Lock()
		d.static.Done = true
		d.trimDue = true
		d.workEndedLocked()
		sum := d.static
		d.changed.Broadcast()
		d.mu.Unlock()
		d.cfg.Log.Info().Int("entries", sum.Entries).Int("live", sum.Live).Int("skipped", sum.Skipped).
			Int("missing", sum.Missing).Int("failed", sum.Failed).Dur("took_ms", time.Since(start)).Msg("static lists loaded")
	}()
	if d.cfg.DryRun {
		for _, e := range d.cfg.Static {
			d.cfg.Log.Info().Str("name", e.Name).Str("params", e.Params).Str("list", e.Where()).Bool("alone", e.Alone).Msg("would load")
		}
		return
	}
	c := modlist.Loading{
		Resolve: func(name string, o loader.ResolveOptions) ([]loader.Planned, error) { return d.plan(name, o) },
		Loader:  d.cfg.Loader,
		Allowed: d.cfg.Rules().Allowed,
		// The kernel's own refusals are expected, as in load-static.
		KernelBlacklist: d.cfg.StaticKernelBlacklist,
		Done: func(o modlist.Outcome) {
			LogOutcome(d.cfg.Log, o)
			d.mu.Lock()
			d.static.Add(o)
			d.mu.Unlock()
		},
	}
	c.Run(ctx, d.cfg.Static)
}

// LogOutcome logs one list entry's outcome at the level systemd-modules-load
// would: live at debug, skipped at info, missing at warn, failed at error.
func LogOutcome(log zerolog.Logger, o modlist.Outcome) {
	var ev *zerolog.Event
	switch o.Class() {
	case modlist.Live:
		ev = log.Debug()
	case modlist.Skipped:
		ev = log.Info()
	case modlist.Missing:
		ev = log.Warn()
	default:
		ev = log.Error()
	}
	ev = ev.Str("name", o.Entry.Name).Str("list", o.Entry.Where())
	if o.Entry.Params != "" {
		ev = ev.Str("params", o.Entry.Params)
	}
	if o.Err != nil {
		ev.Err(o.Err).Msg("list entry " + string(o.Class()))
		return
	}
	arr := zerolog.Arr()
	for _, m := range o.Modules {
		d := zerolog.Dict().Str("module", m.Module)
		switch {
		case m.Refused:
			d.Str("result", "refused: not in the allow-list")
		case m.Blacklisted:
			d.Str("result", "blacklisted")
		case m.Err != nil:
			d.Str("result", m.Err.Error())
		default:
			d.Str("result", "live")
		}
		arr.Dict(d)
	}
	ev.Array("modules", arr).Msg("list entry " + string(o.Class()))
}
