package daemon

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/modautoload/modautoload/loader/loadertest"
	"github.com/modautoload/modautoload/loader/modlist"
)

// imageCanary lives in the executable's writable data segment: a drop
// that threw that segment's private copies away would bring back 1.
var imageCanary = [4]uint64{1, 2, 3, 4}

// imageSink keeps a test's read of a mapped page from being optimised away.
var imageSink byte

func TestDropImagePagesKeepsPrivateCopies(t *testing.T) {
	imageCanary[0] = 42
	kib, err := dropImagePages()
	if err != nil {
		t.Fatal(err)
	}
	if kib <= 0 {
		t.Fatalf("dropped %d KiB of the test binary; its read-only data was surely mapped", kib)
	}
	if imageCanary[0] != 42 || imageCanary[3] != 4 {
		t.Fatalf("data segment after the drop: %v, want [42 2 3 4]", imageCanary)
	}
	// The code runs on, faulting back what it needs.
	if got := strings.Repeat("ab", 3); got != "ababab" {
		t.Fatal(got)
	}
}

// What droppable relies on, checked against this kernel: a read-only
// private mapping that was written before mprotect (as ld.so leaves a PIE
// build's relocated data) shows its private copies as Anonymous; one
// never written shows none.
func TestSmapsShowsPrivateCopies(t *testing.T) {
	page := os.Getpagesize()
	f, err := os.CreateTemp(t.TempDir(), "image")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(bytes.Repeat([]byte{7}, 2*page)); err != nil {
		t.Fatal(err)
	}
	written, err := unix.Mmap(int(f.Fd()), 0, 2*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(written)
	written[0] = 9
	if err := unix.Mprotect(written, unix.PROT_READ); err != nil {
		t.Fatal(err)
	}
	clean, err := unix.Mmap(int(f.Fd()), 0, 2*page, unix.PROT_READ, unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(clean)
	imageSink = clean[page] // resident now, from the page cache
	sm, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	maps, err := readMappings(sm)
	sm.Close()
	if err != nil {
		t.Fatal(err)
	}
	at := func(b []byte) mapping {
		m, ok := mappingAt(maps, uint64(uintptr(unsafe.Pointer(&b[0]))))
		if !ok {
			t.Fatalf("no mapping at %p", &b[0])
		}
		return m
	}
	if m := at(written); m.perms != "r--p" || m.anonKiB <= 0 || m.droppable() {
		t.Errorf("written, then read-only: %+v, droppable %v; want r--p with Anonymous > 0, kept", m, m.droppable())
	}
	if m := at(clean); m.perms != "r--p" || m.anonKiB != 0 || m.swapKiB != 0 || !m.droppable() {
		t.Errorf("never written: %+v, droppable %v; want r--p, no private copy, droppable", m, m.droppable())
	}
	if w, c := at(written), at(clean); !w.sameFile(c) {
		t.Errorf("two mappings of one file: %+v and %+v are not the same file", w, c)
	}
}

func TestReadMappingsKeepsWhatItCannotTell(t *testing.T) {
	smaps := `00400000-005bb000 r-xp 00000000 00:02 4952                               /bin/modautoload
Rss:                1768 kB
Anonymous:             0 kB
Swap:                  0 kB
005bb000-007bb000 r--p 001bb000 00:02 4952                               /bin/modautoload
Rss:                2044 kB
Anonymous:             0 kB
Swap:                  0 kB
007bb000-007d0000 r--p 003bb000 00:02 4952                               /bin/modautoload
Rss:                  84 kB
Anonymous:             4 kB
Swap:                  0 kB
007d0000-007d8000 r--p 003d0000 00:02 4952                               /bin/modautoload
Rss:                  16 kB
Anonymous:             0 kB
Swap:                  8 kB
007d8000-007e0000 r--p 003d8000 00:02 4952                               /bin/modautoload
Rss:                  16 kB
Swap:                  0 kB
007e0000-007f5000 rw-p 003e0000 00:02 4952                               /bin/modautoload
Rss:                  84 kB
Anonymous:             0 kB
Swap:                  0 kB
7ff23ace4000-7ff23ace5000 r--p 00000000 00:02 4942                       /lib/modules/6.1.0-57-amd64/modules.builtin.alias.bin
Rss:                   4 kB
Anonymous:             0 kB
Swap:                  0 kB
`
	maps, err := readMappings(strings.NewReader(smaps))
	if err != nil {
		t.Fatal(err)
	}
	self, ok := mappingAt(maps, 0x400100)
	if !ok || len(maps) != 7 {
		t.Fatalf("%d mappings, the code's found %v", len(maps), ok)
	}
	var drop []uint64
	for _, m := range maps {
		if m.sameFile(self) && m.droppable() {
			drop = append(drop, m.start)
		}
	}
	// Only the rodata: not the code, a private copy in memory or in swap,
	// a mapping without its counts, the data segment, another file.
	if len(drop) != 1 || drop[0] != 0x5bb000 {
		t.Fatalf("would drop the mappings at %#x, want only 0x5bb000", drop)
	}
}

func TestParseMappingLine(t *testing.T) {
	m, ok := parseMappingLine([]byte("00400000-005bb000 r-xp 00000000 fd:01 4952                               /bin/modautoload"))
	if !ok || m.start != 0x400000 || m.end != 0x5bb000 || m.perms != "r-xp" || m.major != 0xfd || m.minor != 1 || m.inode != 4952 {
		t.Fatalf("got %+v, %v", m, ok)
	}
	for _, line := range []string{
		"Rss:                 764 kB",
		"00400000-005bb000 r-xp 00000000 fd:01",             // no inode
		"005bb000-00400000 r-xp 00000000 fd:01 4952",        // ends before it starts
		"00400000-005bb000 r-x 00000000 fd:01 4952",         // perms
		"zz400000-005bb000 r-xp 00000000 fd:01 4952",        // address
		"00400000-005bb000 r-xp 00000000 fd01 4952",         // device
		"00400000-005bb000 r-xp 00000000 fd:01 -4952 /x",    // inode
		"VmFlags: rd ex mr mw me dw sd",                     // a smaps key
		"00400000-005bb000-00600000 r-xp 00000000 fd:01 49", // address
	} {
		if m, ok := parseMappingLine([]byte(line)); ok {
			t.Errorf("%q parsed as %+v", line, m)
		}
	}
}

// dropped is a drop of the executable's pages, seen by a test.
type dropped struct {
	at       time.Time
	inKernel int64 // finit_module calls in the kernel then
}

// dropRig is a rig whose drops of the executable's pages are recorded,
// and its memory trims counted, where module a's finit_module lingers in
// the kernel after a is live.
func dropRig(t *testing.T, linger time.Duration, coldplug bool, static ...modlist.Entry) (*rig, chan dropped, *atomic.Int64) {
	return dropRigWaiting(t, linger, 0, coldplug, static...)
}

// dropRigWaiting is dropRig whose daemon waits at most wait for the
// kernel before it gives memory back (0: the daemon's default).
func dropRigWaiting(t *testing.T, linger, wait time.Duration, coldplug bool, static ...modlist.Entry) (*rig, chan dropped, *atomic.Int64) {
	drops := make(chan dropped, 16)
	var trims atomic.Int64
	r := newRig(t, "", func(c *Config, k *loadertest.Kernel) {
		ld := c.Loader
		c.dropImage = func() (int64, error) {
			drops <- dropped{time.Now(), ld.Stats().InKernel}
			return 1, nil
		}
		c.trimMemory = func() { trims.Add(1) }
		c.dropWait = wait
		c.Coldplug = coldplug
		c.Static = static
		k.SetModule("a", loadertest.Module{Linger: linger})
		device(k, "/devices/a0", "dev:a0")
	})
	return r, drops, &trims
}

func collectDrops(drops chan dropped, d time.Duration) []dropped {
	var got []dropped
	for timeout := time.After(d); ; {
		select {
		case x := <-drops:
			got = append(got, x)
		case <-timeout:
			return got
		}
	}
}

const dropTestLinger = 2 * time.Second

// The executable's pages are dropped once the work is over and no more
// came for dropQuiet, and again when its calls have left the kernel (a
// finit_module lingering after the module went live); not once per
// piece of work that comes in quick succession.
func TestImageDroppedAfterWorkAndAgainAfterTheKernel(t *testing.T) {
	r, drops, trims := dropRig(t, dropTestLinger, false)
	// Started without coldplug, the daemon is idle at once: one drop of
	// what its start mapped, no trim.
	if got := collectDrops(drops, 5*dropQuiet); len(got) != 1 || got[0].inKernel != 0 || trims.Load() != 0 {
		t.Fatalf("drops %+v and %d trims at start, want 1 drop", got, trims.Load())
	}
	start := time.Now()
	r.send("add", "/devices/a0", "dev:a0")
	for !r.live("a") { // not settle, which waits a quiet spell of its own
		if time.Since(start) > dropTestLinger/2 {
			t.Fatal("a is not live")
		}
		time.Sleep(time.Millisecond)
	}
	for range 3 {
		r.send("change", "/devices/a0", "dev:a0")
	}
	lastWork := time.Now() // the last event's handling ends later
	got := collectDrops(drops, dropTestLinger+10*dropQuiet)
	if len(got) != 2 || got[0].inKernel != 1 || got[1].inKernel != 0 {
		t.Fatalf("drops %+v, want 2: one after the work, with a's call in the kernel, one after it returned", got)
	}
	if quiet := got[0].at.Sub(lastWork); quiet < dropQuiet {
		t.Errorf("first drop %v after the last work, want at least %v", quiet, dropQuiet)
	}
	if n := trims.Load(); n != 1 {
		t.Errorf("%d memory trims, want 1: once the call was out of the kernel", n)
	}
}

// A call that stays in the kernel (a hung init) keeps the work's memory
// for the daemon's bounded wait, not for good: it is given back then,
// with the call still there, once; later work's is not held for another
// wait on the same call.
func TestMemoryGivenBackWhileACallHangs(t *testing.T) {
	const wait = 3 * trimQuiet / 2 // past trimQuiet, which alone would trim earlier
	r, drops, trims := dropRigWaiting(t, 3*wait, wait, false)
	collectDrops(drops, 5*dropQuiet) // the start's
	r.send("add", "/devices/a0", "dev:a0")
	start := time.Now()
	for !r.live("a") {
		if time.Since(start) > wait {
			t.Fatal("a is not live")
		}
		time.Sleep(time.Millisecond)
	}
	got := collectDrops(drops, 3*dropQuiet)
	if len(got) != 1 || got[0].inKernel != 1 || trims.Load() != 0 {
		t.Fatalf("drops %+v and %d trims after the work, want 1 drop with a's call in the kernel, no trim", got, trims.Load())
	}
	first := got[0].at
	got = collectDrops(drops, wait+3*dropQuiet)
	if len(got) != 1 || got[0].inKernel != 1 {
		t.Fatalf("drops %+v after waiting for the kernel, want 1, with a's call still there", got)
	}
	if waited := got[0].at.Sub(first); waited < wait {
		t.Errorf("memory given back %v after the first drop, want at least the wait, %v", waited, wait)
	}
	if n := trims.Swap(0); n != 1 {
		t.Errorf("%d memory trims with a's call hanging, want 1", n)
	}

	r.send("change", "/devices/a0", "dev:a0")
	sent := time.Now()
	got = collectDrops(drops, trimQuiet+3*dropQuiet)
	if len(got) != 2 || got[1].inKernel != 1 || trims.Load() != 1 {
		t.Fatalf("drops %+v and %d trims after later work, want 2 drops and a trim within %v, a's call still there",
			got, trims.Load(), trimQuiet+3*dropQuiet)
	}
	if after := got[1].at.Sub(sent); after < trimQuiet {
		t.Errorf("later work's memory given back %v after it, want at least %v", after, trimQuiet)
	}
}

// Coldplug's work is followed by the drops too, however quickly its
// events are handled, and its heap is given back at once; the rest when
// its call has left the kernel, not again for a query meanwhile. Later
// work is followed by a drop, and trimQuiet later by a trim and a drop;
// a query by a drop alone.
func TestImageDroppedAfterColdplug(t *testing.T) {
	r, drops, trims := dropRig(t, dropTestLinger, true)
	path, ctx := r.serveControl()
	query := func(op string) {
		t.Helper()
		if _, err := Ask(ctx, path, Request{Op: op}, Waits{}); err != nil {
			t.Fatalf("%s: %v", op, err)
		}
	}

	got := collectDrops(drops, 3*dropQuiet)
	if len(got) != 1 || got[0].inKernel != 1 || trims.Load() != 1 {
		t.Fatalf("drops %+v and %d trims after coldplug's work, want 1 of each, with a's call in the kernel", got, trims.Load())
	}
	query("status")
	got = collectDrops(drops, dropTestLinger+10*dropQuiet)
	if len(got) != 2 || got[0].inKernel != 1 || got[1].inKernel != 0 {
		t.Fatalf("drops %+v after a query and a's return, want 2: with a's call in the kernel, and after it returned", got)
	}
	if n := trims.Swap(0); n != 2 {
		t.Errorf("%d memory trims for coldplug, want 2: its heap, then the rest once a's call returned", n)
	}
	if !r.live("a") {
		t.Fatal("coldplug did not load a")
	}

	r.send("change", "/devices/a0", "dev:a0")
	sent := time.Now()
	got = collectDrops(drops, trimQuiet+5*dropQuiet)
	if len(got) != 2 || got[1].at.Sub(sent) < trimQuiet {
		t.Fatalf("drops %+v after an event at %v, want 2, the second with the trim %v later", got, sent, trimQuiet)
	}
	if n := trims.Swap(0); n != 1 {
		t.Errorf("%d memory trims after an event, want 1", n)
	}

	query("status")
	query("no such op") // a bad request is a query too
	if got := collectDrops(drops, trimQuiet+5*dropQuiet); len(got) != 1 {
		t.Fatalf("drops %+v after two queries, want 1", got)
	}
	if n := trims.Load(); n != 0 {
		t.Errorf("%d memory trims after queries, want none", n)
	}
}

// Every kind of work that loads is followed by one collection: the
// static lists, a helper's load; a resync by two, as a coldplug (its
// heap at once, the rest at the last look).
func TestMemoryGivenBackAfterEveryKindOfWork(t *testing.T) {
	r, drops, trims := dropRig(t, 0, false, modlist.Entry{Name: "b", File: "/etc/modules-load.d/x.conf", Line: 1})
	settled := func(what string, want int64) {
		t.Helper()
		collectDrops(drops, trimQuiet+5*dropQuiet)
		if n := trims.Swap(0); n != want {
			t.Errorf("%d memory trims after %s, want %d", n, what, want)
		}
	}
	settled("the static lists", 1)
	if !r.live("b") {
		t.Fatal("the static list did not load b")
	}

	path, ctx := r.serveControl()
	if resp, err := Ask(ctx, path, Request{Op: "load", Name: "dev:a0"}, Waits{}); err != nil || !resp.OK {
		t.Fatalf("load: %+v, %v", resp, err)
	}
	settled("a helper's load", 1)

	r.device("pci0/lost", "dev:slow-lost")
	os.WriteFile(filepath.Join(r.kernel.Sysfs, "kernel", "uevent_seqnum"), []byte("5\n"), 0o644)
	r.src.Overrun()
	r.settle()
	if !r.live("slow") {
		t.Fatal("the resync did not load slow")
	}
	settled("a resync", 2)
}
