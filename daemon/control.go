package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/modautoload/modautoload/loader"
	"github.com/modautoload/modautoload/uevent"
)

// DefaultControl is where the daemon listens for settle, status and the
// modprobe helper's load requests.
const DefaultControl = "/run/modautoload/control"

// maxRequest bounds one control request line.
const maxRequest = 64 << 10

// Request is one control request: a JSON object on one line.
type Request struct {
	Op string `json:"op"` // settle, status, load
	// settle
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
	// load, as modprobe was asked
	Name          string `json:"name,omitempty"`
	Params        string `json:"params,omitempty"`
	UseBlacklist  bool   `json:"use_blacklist,omitempty"`
	IgnoreInstall bool   `json:"ignore_install,omitempty"`
}

// Response answers a Request.
type Response struct {
	OK      bool          `json:"ok"`
	Error   string        `json:"error,omitempty"`
	Status  *Status       `json:"status,omitempty"`
	Results []LoadOutcome `json:"results,omitempty"`
}

// LoadOutcome is what became of one module of a load request.
type LoadOutcome struct {
	Module      string `json:"module"`
	Blacklisted bool   `json:"blacklisted,omitempty"`
	Refused     bool   `json:"refused,omitempty"`
	Error       string `json:"error,omitempty"`
}

// Status is what modautoload status shows.
type Status struct {
	Events       uevent.Stats                  `json:"events"`
	Handled      uint64                        `json:"handled"`
	Skipped      uint64                        `json:"skipped"`
	Refused      uint64                        `json:"refused"`
	Resyncs      uint64                        `json:"resyncs"`
	Dropped      uint64                        `json:"dropped"`
	LoadErrors   uint64                        `json:"load_errors"`
	Queue        int                           `json:"queue"`
	QueueBytes   int64                         `json:"queue_bytes"`
	Busy         int                           `json:"busy"`
	Requests     int                           `json:"requests_in_progress"`
	LastSeqnum   uint64                        `json:"last_seqnum"`
	KernelSeqnum uint64                        `json:"kernel_seqnum"`
	ColdplugDone bool                          `json:"coldplug_done"`
	Loads        loader.Stats                  `json:"loads"`
	Modules      map[string]loader.ModuleState `json:"modules"`
}

// Status returns the counters and per-module states now.
func (d *Daemon) Status() Status {
	d.mu.Lock()
	st := Status{
		Queue: d.queue.queued, QueueBytes: d.queue.bytes, Busy: d.queue.busy, Requests: d.requests,
		LastSeqnum: d.lastSeq, ColdplugDone: d.coldDone,
	}
	d.mu.Unlock()
	st.Events = d.cfg.Source.Stats()
	st.Handled, st.Skipped, st.Refused = d.handled.Load(), d.skipped.Load(), d.refused.Load()
	st.Resyncs, st.Dropped, st.LoadErrors = d.resyncs.Load(), d.dropped.Load(), d.loadErrors.Load()
	st.KernelSeqnum = ReadSeqnum(d.cfg.Sysfs)
	st.Loads = d.cfg.Loader.Stats()
	st.Modules = d.cfg.Loader.States()
	return st
}

// settleQuiet is how long the daemon must stay idle, with no new uevent
// from the kernel, before settle returns. Loads cause more devices (USB
// enumeration runs in a kernel thread after xhci_pci's probe returns), and
// their events come a little after the load is done.
const settleQuiet = 200 * time.Millisecond

// Settle waits until every uevent the kernel had issued when it was
// called has been handled and no load is in flight, and then until the
// daemon has stayed so, with no newer uevent, for settleQuiet: a cascade
// that a load set off is waited for too.
func (d *Daemon) Settle(ctx context.Context) error {
	for {
		target := ReadSeqnum(d.cfg.Sysfs)
		if err := d.idleAt(ctx, target); err != nil {
			return err
		}
		select {
		case <-time.After(settleQuiet):
		case <-ctx.Done():
			return fmt.Errorf("not settled: %w", ctx.Err())
		}
		if ReadSeqnum(d.cfg.Sysfs) == target && d.idle() {
			return nil
		}
	}
}

// idleAt waits until the events up to seqnum target are handled and
// nothing is queued or loading.
func (d *Daemon) idleAt(ctx context.Context, target uint64) error {
	// Loads can finish without touching d.mu: look again now and then.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			case <-ctx.Done():
			}
			d.mu.Lock()
			d.changed.Broadcast()
			d.mu.Unlock()
			if ctx.Err() != nil {
				return
			}
		}
	}()
	d.mu.Lock()
	defer d.mu.Unlock()
	for !(d.lastSeq >= target && d.idleLocked() && d.requests == 0) {
		switch {
		case ctx.Err() != nil:
			return fmt.Errorf("not settled (seqnum %d of %d, %d queued, %d busy): %w", d.lastSeq, target, d.queue.queued, d.queue.busy, ctx.Err())
		case d.stopping:
			return errors.New("daemon is stopping")
		}
		d.changed.Wait()
	}
	return nil
}

// Load serves a modprobe helper's request, so kernel requests share the
// daemon's per-module serialization and its allow-list.
func (d *Daemon) Load(ctx context.Context, req Request) Response {
	d.mu.Lock()
	d.requests++
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.requests--
		d.changed.Broadcast()
		d.mu.Unlock()
	}()
	rs := d.cfg.Rules()
	plans, err := d.plan(req.Name, loader.ResolveOptions{
		UseBlacklist: req.UseBlacklist, Params: req.Params, IgnoreInstall: req.IgnoreInstall, Allowed: rs.Allowed,
	})
	// An explicit request asks the kernel again for a module that failed
	// in this burst: the command line or the kernel has a reason to.
	results := d.cfg.Loader.Load(ctx, plans, loader.LoadOptions{Parallel: true, Retry: true})
	d.count(results, d.cfg.Log.With().Str("name", req.Name).Logger())
	resp := Response{OK: err == nil}
	if err != nil {
		resp.Error = err.Error()
	}
	for _, res := range results {
		o := LoadOutcome{Module: res.Module, Blacklisted: res.Blacklisted, Refused: res.Refused}
		if res.Err != nil {
			o.Error = res.Err.Error()
			resp.OK = false
		}
		resp.Results = append(resp.Results, o)
	}
	return resp
}

// Serve answers control connections on ln until ctx ends. Only root may
// talk to the daemon: a load request is a privileged act.
func (d *Daemon) Serve(ctx context.Context, ln *net.UnixListener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		conn, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			d.serveConn(ctx, conn)
		}()
	}
}

func (d *Daemon) serveConn(ctx context.Context, conn *net.UnixConn) {
	enc := json.NewEncoder(conn)
	uid, err := peerUID(conn)
	if err != nil || uid != 0 {
		d.cfg.Log.Warn().Int("uid", uid).AnErr("peercred", err).Msg("control connection refused: not root")
		enc.Encode(Response{Error: "permission denied: root only"})
		return
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 4096), maxRequest)
	if !sc.Scan() {
		return
	}
	conn.SetReadDeadline(time.Time{})
	var req Request
	if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
		enc.Encode(Response{Error: "bad request: " + err.Error()})
		return
	}
	enc.Encode(d.answer(ctx, req))
}

func (d *Daemon) answer(ctx context.Context, req Request) Response {
	switch req.Op {
	case "status":
		st := d.Status()
		return Response{OK: true, Status: &st}
	case "settle":
		if req.TimeoutMS > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, time.Duration(req.TimeoutMS)*time.Millisecond)
			defer cancel()
		}
		if err := d.Settle(ctx); err != nil {
			return Response{Error: err.Error()}
		}
		return Response{OK: true}
	case "load":
		if req.Name == "" {
			return Response{Error: "load: no name"}
		}
		return d.Load(ctx, req)
	}
	return Response{Error: fmt.Sprintf("unknown op %q", req.Op)}
}

func peerUID(conn *net.UnixConn) (int, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return -1, err
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return -1, err
	}
	if serr != nil {
		return -1, serr
	}
	return int(cred.Uid), nil
}

// Listen creates the control socket at path, root-only (0600), replacing
// a stale socket left by a daemon that died but refusing to steal one a
// live daemon answers on.
func Listen(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("%s: another daemon is listening", path)
	} else if errors.Is(err, syscall.ECONNREFUSED) {
		os.Remove(path)
	}
	old := syscall.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, err
	}
	return ln, nil
}

// Ask sends one request to the daemon at path and returns its answer. It
// fails fast (ErrNoDaemon) when no daemon listens, so the modprobe helper
// can load by itself.
func Ask(ctx context.Context, path string, req Request) (Response, error) {
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "unix", path)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return Response{}, fmt.Errorf("%w: %v", ErrNoDaemon, err)
		}
		return Response{}, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return Response{}, err
	}
	var resp Response
	if err := json.NewDecoder(bufio.NewReader(conn)).Decode(&resp); err != nil {
		return Response{}, fmt.Errorf("reading the daemon's answer: %w", err)
	}
	return resp, nil
}

// ErrNoDaemon: nothing listens on the control socket.
var ErrNoDaemon = errors.New("no daemon on the control socket")
