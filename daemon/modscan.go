package daemon

import (
	"os"
	"path/filepath"

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
	entries, err := os.ReadDir(filepath.Join(d.cfg.Sysfs, "module"))
	for _, e := range entries {
		if !e.IsDir() {
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
