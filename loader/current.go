package loader

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// CurrentResolver hands out the current Resolver of a long-running
// process and keeps it current: when depmod rewrites the indexes (a kernel
// package installed, dkms) or modprobe.d changes, a use after Interval
// opens them again. A stale index once kept nvme from loading until udevd
// restarted (systemd #6723).
//
// Each Resolver is an immutable snapshot. A reload opens a new one and
// swaps it in; the old one is closed when its last user is done. No use
// ever waits for a reload, and a reload never waits for uses, so a module
// whose init takes minutes holds back nothing but its own callers.
type CurrentResolver struct {
	// Open builds a fresh resolver from disk.
	Open func() (*Resolver, error)
	// Watch lists the files and directories whose change means reopen:
	// the module directory's indexes and the modprobe.d paths.
	Watch []string
	// Interval bounds how often the files are checked.
	Interval time.Duration
	// Reloaded, if set, is told of each reload and each failed one; a
	// failed reload keeps the previous resolver.
	Reloaded func(err error)

	cur     atomic.Pointer[snapshot]
	checked atomic.Int64 // UnixNano of the last look at the files
	// reload admits one opener at a time. Use only ever tries it: a
	// caller that finds another one checking goes on with the current
	// snapshot.
	reload sync.Mutex
}

// snapshot is one opened Resolver with its users counted: one reference
// for being current, one per Use in progress.
type snapshot struct {
	r     *Resolver
	stamp string
	refs  atomic.Int64
}

func (s *snapshot) release() {
	if s.refs.Add(-1) == 0 {
		s.r.DB.Close()
	}
}

// acquire returns the current snapshot with a reference taken, or nil
// before the first successful open and after Close.
func (c *CurrentResolver) acquire() *snapshot {
	for {
		s := c.cur.Load()
		if s == nil {
			return nil
		}
		// A snapshot whose count reached zero is closed for good; the
		// pointer has moved on by then.
		if n := s.refs.Load(); n > 0 && s.refs.CompareAndSwap(n, n+1) {
			return s
		}
	}
}

// ErrNoResolver is returned by Use when no module database could be
// opened yet, or after Close.
var ErrNoResolver = errors.New("no module database open")

// Use runs fn with the current resolver, opening it first if none is open
// and looking for changed files when Interval has passed. fn must not keep
// the resolver: it is closed once fn has returned and a newer one is
// current.
func (c *CurrentResolver) Use(fn func(*Resolver) error) error {
	s := c.acquire()
	if s == nil {
		// Nothing to serve from: this caller must wait for the open.
		if err := c.refresh(true, true); err != nil {
			return err
		}
		if s = c.acquire(); s == nil {
			return ErrNoResolver
		}
	} else if time.Duration(time.Now().UnixNano()-c.checked.Load()) >= c.Interval {
		s.release()
		c.refresh(false, false)
		if s = c.acquire(); s == nil {
			return ErrNoResolver
		}
	}
	defer s.release()
	return fn(s.r)
}

// DropPages takes the current indexes out of the process's resident
// memory until the next lookup (see [index.Index]); nothing without a
// current resolver.
func (c *CurrentResolver) DropPages() error {
	s := c.acquire()
	if s == nil {
		return nil
	}
	defer s.release()
	return s.r.DB.DropPages()
}

// Reload reopens now, whatever the files say (SIGHUP). On failure the
// previous resolver stays.
func (c *CurrentResolver) Reload() error { return c.refresh(true, true) }

// Close retires the current resolver; it is closed once uses in progress
// are done.
func (c *CurrentResolver) Close() error {
	c.reload.Lock()
	defer c.reload.Unlock()
	if old := c.cur.Swap(nil); old != nil {
		old.release()
	}
	return nil
}

// refresh opens the files again if they changed, or always with force.
// With wait false it gives up at once when another caller is at it.
func (c *CurrentResolver) refresh(force, wait bool) error {
	if wait {
		c.reload.Lock()
	} else if !c.reload.TryLock() {
		return nil
	}
	defer c.reload.Unlock()
	old := c.cur.Load()
	if old != nil && !force && time.Duration(time.Now().UnixNano()-c.checked.Load()) < c.Interval {
		return nil // another caller checked meanwhile
	}
	c.checked.Store(time.Now().UnixNano())
	stamp := fingerprint(c.Watch)
	if old != nil && !force && stamp == old.stamp {
		return nil
	}
	r, err := c.Open()
	if err != nil {
		if c.Reloaded != nil {
			c.Reloaded(err)
		}
		if old != nil {
			return nil // keep serving from the previous good state
		}
		return err
	}
	s := &snapshot{r: r, stamp: stamp}
	s.refs.Store(1)
	c.cur.Store(s)
	if old != nil {
		old.release()
		if c.Reloaded != nil {
			c.Reloaded(nil)
		}
	}
	return nil
}

// fingerprint summarises identity and modification time of each path and,
// for directories, of the entries in them: depmod replaces files by rename
// (new inode), an editor may rewrite in place (new mtime).
func fingerprint(paths []string) string {
	var b []byte
	add := func(p string, fi os.FileInfo) {
		b = append(b, p...)
		b = append(b, 0)
		if fi != nil {
			b = fi.ModTime().AppendFormat(b, time.RFC3339Nano)
			b = append(b, byte(fi.Size()), byte(fi.Size()>>8), byte(fi.Size()>>16))
			if ino, ok := inode(fi); ok {
				b = append(b, byte(ino), byte(ino>>8), byte(ino>>16), byte(ino>>24))
			}
		}
		b = append(b, '\n')
	}
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			add(p, nil)
			continue
		}
		add(p, fi)
		if !fi.IsDir() {
			continue
		}
		entries, _ := os.ReadDir(p)
		for _, e := range entries {
			if info, err := os.Stat(filepath.Join(p, e.Name())); err == nil {
				add(filepath.Join(p, e.Name()), info)
			}
		}
	}
	return string(b)
}

func inode(fi os.FileInfo) (uint64, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Ino, true
}
