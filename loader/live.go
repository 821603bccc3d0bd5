package loader

import (
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Live keeps a Resolver current for a long-running process: when depmod
// rewrites the indexes (a kernel package installed, dkms) or modprobe.d
// changes, the next use after Interval reopens them. A stale index once
// kept nvme from loading until udevd restarted (systemd #6723).
type Live struct {
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

	mu      sync.RWMutex
	cur     *Resolver
	stamp   string
	checked time.Time
}

// Use runs fn with the current resolver, reopening it first if the
// watched files changed. Uses may run concurrently; a reload waits for
// them to finish before closing the old database.
func (l *Live) Use(fn func(*Resolver) error) error {
	if err := l.refresh(false); err != nil {
		return err
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	return fn(l.cur)
}

// Reload reopens now, whatever the files say (SIGHUP). On failure the
// previous resolver stays.
func (l *Live) Reload() error { return l.refresh(true) }

// Close releases the current resolver.
func (l *Live) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur == nil {
		return nil
	}
	err := l.cur.DB.Close()
	l.cur = nil
	return err
}

func (l *Live) refresh(force bool) error {
	l.mu.RLock()
	fresh := l.cur != nil && !force && time.Since(l.checked) < l.Interval
	l.mu.RUnlock()
	if fresh {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur != nil && !force && time.Since(l.checked) < l.Interval {
		return nil // another caller checked meanwhile
	}
	l.checked = time.Now()
	stamp := fingerprint(l.Watch)
	if l.cur != nil && !force && stamp == l.stamp {
		return nil
	}
	r, err := l.Open()
	if err != nil {
		if l.Reloaded != nil {
			l.Reloaded(err)
		}
		if l.cur != nil {
			return nil // keep serving from the previous good state
		}
		return err
	}
	if l.cur != nil {
		l.cur.DB.Close()
		if l.Reloaded != nil {
			l.Reloaded(nil)
		}
	}
	l.cur, l.stamp = r, stamp
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
