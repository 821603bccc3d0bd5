package daemon

import (
	"bytes"
	"os"
	"path/filepath"

	"github.com/modautoload/modautoload/internal/sysfsattr"
	"github.com/modautoload/modautoload/uevent"
)

// scanModules queues an "add" for every module in sysfs that a rule loads
// on, as udev's coldplug does (udevadm trigger --type=subsystems), so the
// rules apply to a module that went live before the daemon started, or
// whose event was lost (a resync). Without such rules it reads nothing.
func (d *Daemon) scanModules() (queued int, err error) {
	rs := d.cfg.Rules()
	if !rs.HasModuleEventRules() {
		return 0, nil
	}
	// What could be listed is used; the error is the caller's to log.
	dir := filepath.Join(d.cfg.Sysfs, "module")
	entries, err := os.ReadDir(dir)
	var buf [32]byte
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		// A module still coming (a load in flight, ours at coldplug
		// among them) gets its own add@/module event once live; a
		// module event means live to the rules. Built-in modules have
		// no initstate and count as live, as udev's coldplug has them.
		if state, rerr := sysfsattr.Read(filepath.Join(dir, e.Name(), "initstate"), buf[:]); rerr == nil && string(bytes.TrimSpace(state)) != "live" {
			continue
		}
		// Through Parse, so a name from sysfs gets the checks a name
		// from netlink gets.
		devpath := "/module/" + e.Name()
		ev, perr := uevent.Parse([]byte("add@" + devpath + "\x00ACTION=add\x00DEVPATH=" + devpath + "\x00SUBSYSTEM=module\x00"))
		if perr != nil || len(ev.Defects) > 0 || !rs.LoadsOnModuleEvent(&ev) {
			continue
		}
		d.enqueue(ev, true)
		queued++
	}
	return queued, err
}
