package uevent

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/modautoload/modautoload/internal/testtool"
)

// fakeSysfs lays out a small device tree the way sysfs does: uevent files,
// subsystem symlinks, a modalias file, and a symlink loop to prove the walk
// does not follow links.
func fakeSysfs(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	mk := func(rel, content string) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, rel string) {
		if err := os.Symlink(target, filepath.Join(root, rel)); err != nil {
			t.Fatal(err)
		}
	}
	mk("bus/pci/.keep", "")
	mk("bus/virtio/.keep", "")
	mk("devices/pci0000:00/uevent", "")
	mk("devices/pci0000:00/0000:00:03.0/uevent",
		"DRIVER=e1000\nPCI_CLASS=20000\nMODALIAS=pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00\n")
	// PCI has both; the uevent's MODALIAS is the one kept.
	mk("devices/pci0000:00/0000:00:03.0/modalias", "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00\n")
	link("../../../bus/pci", "devices/pci0000:00/0000:00:03.0/subsystem")
	link("../../../../devices/pci0000:00", "devices/pci0000:00/0000:00:03.0/loop")
	// virtio puts MODALIAS in a separate file only.
	mk("devices/pci0000:00/0000:00:04.0/virtio0/uevent", "DRIVER=virtio_rng\n")
	mk("devices/pci0000:00/0000:00:04.0/virtio0/modalias", "virtio:d00000004v00001AF4\n")
	link("../../../../bus/virtio", "devices/pci0000:00/0000:00:04.0/virtio0/subsystem")
	mk("devices/pci0000:00/0000:00:04.0/virtio0/name@odd/uevent", "KEY=a=b\n")
	mk("devices/system/cpu/cpu0/nouevent-here/x", "")
	return root
}

func TestWalkReadsDevices(t *testing.T) {
	root := fakeSysfs(t)
	w := Walker{Root: root}
	got := map[string]Event{}
	var order []string
	if err := w.Walk(func(ev Event) error {
		got[ev.DevPath] = ev
		order = append(order, ev.DevPath)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if w.Skipped != 0 {
		t.Errorf("skipped %d: %v", w.Skipped, w.Errors)
	}
	wantOrder := []string{
		"/devices/pci0000:00",
		"/devices/pci0000:00/0000:00:03.0",
		"/devices/pci0000:00/0000:00:04.0/virtio0",
		"/devices/pci0000:00/0000:00:04.0/virtio0/name@odd",
	}
	if strings.Join(order, " ") != strings.Join(wantOrder, " ") {
		t.Errorf("order %v, want %v", order, wantOrder)
	}
	e1000 := got["/devices/pci0000:00/0000:00:03.0"]
	if e1000.Action != "add" || e1000.Subsystem != "pci" || e1000.Driver != "e1000" ||
		e1000.Modalias != "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00" {
		t.Errorf("pci device: %+v", e1000)
	}
	modaliases := 0
	for _, p := range e1000.Props {
		if p.Key == "MODALIAS" {
			modaliases++
		}
	}
	if modaliases != 1 {
		t.Errorf("pci device has %d MODALIAS properties, want the uevent's alone: %v", modaliases, e1000.Props)
	}
	rng := got["/devices/pci0000:00/0000:00:04.0/virtio0"]
	if rng.Modalias != "virtio:d00000004v00001AF4" || rng.Subsystem != "virtio" {
		t.Errorf("virtio device: %+v", rng)
	}
	odd := got["/devices/pci0000:00/0000:00:04.0/virtio0/name@odd"]
	if v, _ := odd.Get("KEY"); v != "a=b" {
		t.Errorf("value with '=' in an '@' devpath: %q", v)
	}
}

func TestWalkSkipsUnreadableWithinBudget(t *testing.T) {
	// Root reads through permission bits, so unreadable entries are
	// uevent directories: the open works, the read fails (EISDIR).
	root := fakeSysfs(t)
	for i := 0; i < 3; i++ {
		dir := filepath.Join(root, "devices", "broken", string(rune('a'+i)))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(filepath.Join(dir, "uevent"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Exactly at the budget is within it.
	w := Walker{Root: root, ErrorBudget: 3}
	n := 0
	if err := w.Walk(func(Event) error { n++; return nil }); err != nil {
		t.Fatalf("walk failed within budget: %v", err)
	}
	if w.Skipped != 3 || n != 4 {
		t.Errorf("skipped %d, delivered %d; want 3 and 4", w.Skipped, n)
	}

	w = Walker{Root: root, ErrorBudget: 2}
	if err := w.Walk(func(Event) error { return nil }); !errors.Is(err, ErrBudgetExceeded) {
		t.Errorf("err = %v, want ErrBudgetExceeded", err)
	}
}

// The callback's error ends the walk and is returned; fs.SkipAll ends it
// without error.
func TestWalkCallbackEndsWalk(t *testing.T) {
	root := fakeSysfs(t)
	stop := errors.New("stop")
	for _, tc := range []struct {
		ret  error
		want error
	}{{stop, stop}, {fs.SkipAll, nil}} {
		w := Walker{Root: root}
		var seen []string
		err := w.Walk(func(ev Event) error {
			seen = append(seen, ev.DevPath)
			if len(seen) == 2 {
				return tc.ret
			}
			return nil
		})
		if !errors.Is(err, tc.want) || len(seen) != 2 {
			t.Errorf("callback returned %v: Walk %v after %q, want %v after two devices", tc.ret, err, seen, tc.want)
		}
	}
}

// A device removed while the walk runs is not an unreadable entry: it is
// neither delivered nor counted, and the walk goes on. The callback for a
// parent runs between the listing of its directory and the opening of
// its children, the window in which a hot-unplug removes one; a dangling
// uevent link stands for a uevent file gone between listing and reading.
func TestWalkDeviceRemovedMidWalk(t *testing.T) {
	root := fakeSysfs(t)
	if err := os.MkdirAll(filepath.Join(root, "devices/gone"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("removed", filepath.Join(root, "devices/gone/uevent")); err != nil {
		t.Fatal(err)
	}
	w := Walker{Root: root, ErrorBudget: 1}
	var seen []string
	err := w.Walk(func(ev Event) error {
		seen = append(seen, ev.DevPath)
		if ev.DevPath == "/devices/pci0000:00" {
			return os.RemoveAll(filepath.Join(root, "devices/pci0000:00/0000:00:03.0"))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"/devices/pci0000:00",
		"/devices/pci0000:00/0000:00:04.0/virtio0",
		"/devices/pci0000:00/0000:00:04.0/virtio0/name@odd",
	}
	if !slices.Equal(seen, want) || w.Skipped != 0 {
		t.Errorf("delivered %q, skipped %d (%v); want %q and none skipped", seen, w.Skipped, w.Errors, want)
	}
}

// A device directory replaced by a symlink between the listing and the
// opening (the same window as above) is not followed: the walk never
// leaves the devices tree. The replacement is counted as unreadable.
func TestWalkNeverFollowsSwappedSymlink(t *testing.T) {
	root := fakeSysfs(t)
	outside := filepath.Join(root, "outside")
	if err := os.MkdirAll(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "uevent"), []byte("MODALIAS=outside:x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	swapped := filepath.Join(root, "devices/pci0000:00/0000:00:04.0")
	w := Walker{Root: root}
	var seen []string
	err := w.Walk(func(ev Event) error {
		seen = append(seen, ev.DevPath)
		if ev.Modalias == "outside:x" {
			t.Errorf("followed the swapped link to %s", outside)
		}
		if ev.DevPath == "/devices/pci0000:00" {
			if err := os.RemoveAll(swapped); err != nil {
				return err
			}
			return os.Symlink(outside, swapped)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/devices/pci0000:00", "/devices/pci0000:00/0000:00:03.0"}
	if !slices.Equal(seen, want) || w.Skipped != 1 {
		t.Errorf("delivered %q, skipped %d (%v); want %q and the link skipped", seen, w.Skipped, w.Errors, want)
	}
}

// A tree deeper than any device path is read to the bound, the rest
// counted as skipped: each level holds a directory open.
func TestWalkDepthBounded(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "devices")
	for range maxWalkDepth + 10 {
		dir = filepath.Join(dir, "d")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "uevent"), []byte("DRIVER=x\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	w := Walker{Root: root}
	n := 0
	if err := w.Walk(func(Event) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != maxWalkDepth || w.Skipped != 1 || !strings.Contains(w.Errors[0].Error(), "deeper than") {
		t.Errorf("%d devices, %d skipped (%v); want %d and 1", n, w.Skipped, w.Errors, maxWalkDepth)
	}
}

func TestWalkMissingRoot(t *testing.T) {
	w := Walker{Root: filepath.Join(t.TempDir(), "nope")}
	if err := w.Walk(func(Event) error { return nil }); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("err = %v, want not-exist", err)
	}
}

// The walker must read a real sysfs without tripping over its symlinks,
// write-only or unreadable attributes, and devices with odd names.
func TestWalkRealSysfs(t *testing.T) {
	if _, err := os.Stat("/sys/devices"); err != nil {
		testtool.Missing(t, "no sysfs mounted: %v", err)
	}
	w := Walker{}
	var devices, withModalias int
	if err := w.Walk(func(ev Event) error {
		devices++
		if ev.Defects != nil {
			t.Errorf("%s: defects %v", ev.DevPath, ev.Defects)
		}
		if ev.Modalias != "" {
			withModalias++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if devices == 0 {
		t.Fatal("no device found in /sys/devices")
	}
	t.Logf("%d devices, %d with MODALIAS, %d skipped", devices, withModalias, w.Skipped)
}

// BenchmarkWalkRealSysfs: the coldplug walk of the host's sysfs, the
// allocations per walk being what the daemon's collector pays at boot.
func BenchmarkWalkRealSysfs(b *testing.B) {
	if _, err := os.Stat("/sys/devices"); err != nil {
		b.Skip("no sysfs mounted")
	}
	devices := 0
	for b.Loop() {
		w := Walker{}
		devices = 0
		if err := w.Walk(func(Event) error { devices++; return nil }); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(devices), "devices")
}
