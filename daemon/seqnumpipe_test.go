package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// seqnumPipe replaces the fake sysfs's kernel/uevent_seqnum with a FIFO,
// so a test sees each read of the kernel's seqnum (the start of a scan, a
// settle's target and its last look) and says what it reads: the reader
// waits in open until the test answers. Nothing else in the daemon reads
// that file; a test using the pipe must not call Status, which does.
// Each read gets a FIFO of its own, so a reader that has its answer but
// has not yet closed is never taken for the next one.
type seqnumPipe struct {
	path, dir string
	mu        sync.Mutex
	made      int    // FIFOs made so far
	cur       string // the FIFO at path now, by a name of its own
	endOnce   sync.Once
	ended     atomic.Bool
}

func newSeqnumPipe(t *testing.T, sysfs string) *seqnumPipe {
	t.Helper()
	p := &seqnumPipe{path: filepath.Join(sysfs, "kernel", "uevent_seqnum"), dir: t.TempDir()}
	p.mu.Lock()
	err := p.install()
	p.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	// Before the rig's own cleanup (they run last first): a daemon
	// stopped with a scan waiting here would wait for good.
	t.Cleanup(func() { p.end(t, 0) })
	return p
}

// install puts a new FIFO at path, in the place of what was there; p.mu
// is held.
func (p *seqnumPipe) install() error {
	p.made++
	name := filepath.Join(p.dir, fmt.Sprintf("seqnum%d", p.made))
	if err := unix.Mkfifo(name, 0o600); err != nil {
		return err
	}
	if err := os.Link(name, p.path+".new"); err != nil {
		return err
	}
	if err := os.Rename(p.path+".new", p.path); err != nil {
		return err
	}
	p.cur = name
	return nil
}

// await waits, at most 10 s, until a reader waits for the seqnum, and
// returns the write end it waits for: the reader goes on once write has
// written to it. Later readers wait for the next await.
func (p *seqnumPipe) await(t *testing.T) int {
	t.Helper()
	fd, err := p.reader()
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

// reader is await for any goroutine: it fails after 10 s, or once the
// pipe has ended.
func (p *seqnumPipe) reader() (int, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		fd, err := p.take()
		switch {
		case err == nil:
			return fd, nil
		case !errors.Is(err, unix.ENXIO):
			return -1, err
		case p.ended.Load():
			return -1, errors.New("the seqnum pipe has ended")
		case time.Now().After(deadline):
			return -1, errors.New("no reader of the kernel's seqnum within 10 s")
		}
		time.Sleep(time.Millisecond)
	}
}

// take opens the FIFO at path for writing, if a reader waits on it, and
// puts the next one in its place.
func (p *seqnumPipe) take() (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	// Without a reader a non-blocking open fails with ENXIO.
	fd, err := unix.Open(p.cur, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := p.install(); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// write gives the reader waiting on fd (await) seq, and closes fd.
func (p *seqnumPipe) write(t *testing.T, fd int, seq uint64) {
	t.Helper()
	defer unix.Close(fd)
	if _, err := unix.Write(fd, fmt.Appendf(nil, "%d\n", seq)); err != nil {
		t.Fatal(err)
	}
}

// end puts a plain file holding seq in the FIFO's place, so later reads
// read seq at once, and lets go a reader still waiting (it reads 0).
func (p *seqnumPipe) end(t *testing.T, seq uint64) {
	p.endOnce.Do(func() {
		defer p.ended.Store(true)
		tmp := p.path + ".new"
		if err := os.WriteFile(tmp, fmt.Appendf(nil, "%d\n", seq), 0o644); err != nil {
			t.Error(err)
			return
		}
		if err := os.Rename(tmp, p.path); err != nil {
			t.Error(err)
			return
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if fd, err := unix.Open(p.cur, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err == nil {
			unix.Close(fd)
		}
	})
}
