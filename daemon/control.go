package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/modautoload/modautoload/loader"
	"github.com/modautoload/modautoload/uevent"
)

// DefaultControl is where the daemon listens for settle, status and the
// modprobe helper's load requests.
const DefaultControl = "/run/modautoload/control"

// maxSettle bounds a settle request: an hour, for a client that names no
// bound or an absurd one.
const maxSettle = time.Hour

// maxRequest bounds one control request line.
const maxRequest = 64 << 10

// Request is one control request: a JSON object on one line.
type Request struct {
	Op string `json:"op"` // settle, status, timeline, load
	// settle
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
	// load, as modprobe was asked
	Name          string `json:"name,omitempty"`
	Params        string `json:"params,omitempty"`
	UseBlacklist  bool   `json:"use_blacklist,omitempty"`
	IgnoreInstall bool   `json:"ignore_install,omitempty"`
	// Asker says who asked: the kernel (the helper run by
	// request_module) or a command line, for the timeline.
	Asker *loader.Asker `json:"asker,omitempty"`
}

// Response answers a Request. The daemon first sends one with Accepted
// set, as soon as it has read the request, then the answer.
type Response struct {
	Accepted bool `json:"accepted,omitempty"`
	// AnswerWithinMS, in the acknowledgement of a load, is how long the
	// daemon's own bounds let the answer take, so that the helper waits
	// as long as a daemon with longer bounds needs and no longer.
	AnswerWithinMS int64         `json:"answer_within_ms,omitempty"`
	OK             bool          `json:"ok"`
	Error          string        `json:"error,omitempty"`
	Status         *Status       `json:"status,omitempty"`
	Results        []LoadOutcome `json:"results,omitempty"`
	Timeline       *Timeline     `json:"timeline,omitempty"`
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
	Version      string                        `json:"version,omitempty"`
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
	Static       *StaticStatus                 `json:"static,omitempty"`
	Loads        loader.Stats                  `json:"loads"`
	Modules      map[string]loader.ModuleState `json:"modules"`
	Memory       Memory                        `json:"memory"`
}

// Status returns the counters and per-module states now.
func (d *Daemon) Status() Status {
	d.mu.Lock()
	st := Status{
		Queue: d.queue.queued, QueueBytes: d.queue.bytes, Busy: d.queue.busy, Requests: d.requests,
		LastSeqnum: d.lastSeq, ColdplugDone: d.coldDone, Version: d.cfg.Version,
	}
	if d.static.Listed > 0 {
		static := d.static
		st.Static = &static
	}
	d.mu.Unlock()
	st.Events = d.cfg.Source.Stats()
	st.Handled, st.Skipped, st.Refused = d.handled.Load(), d.skipped.Load(), d.refused.Load()
	st.Resyncs, st.Dropped, st.LoadErrors = d.resyncs.Load(), d.dropped.Load(), d.loadErrors.Load()
	st.KernelSeqnum = ReadSeqnum(d.cfg.Sysfs)
	st.Loads = d.cfg.Loader.Stats()
	st.Modules = d.cfg.Loader.States()
	st.Memory = readMemory()
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
		d.trimDue = true
		d.workEndedLocked()
		d.changed.Broadcast()
		d.mu.Unlock()
	}()
	rs := d.cfg.Rules()
	plans, err := d.plan(req.Name, loader.ResolveOptions{
		UseBlacklist: req.UseBlacklist, Params: req.Params, IgnoreInstall: req.IgnoreInstall, Allowed: rs.Allowed,
	})
	// An explicit request asks the kernel again for a module that failed
	// in this burst: the command line or the kernel has a reason to.
	results := d.cfg.Loader.Load(ctx, plans, loader.LoadOptions{Parallel: true, Retry: true, Asker: requestAsker(req)})
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

// Bounds of the control server. Each connection is served by its own
// goroutine; these keep one client from holding it, and through it
// shutdown, for longer.
const (
	// requestReadBound is how long a client has to send its request.
	requestReadBound = 10 * time.Second
	// responseWriteBound is how long a client has to take each line
	// written to it; one that does not read is dropped.
	responseWriteBound = 10 * time.Second
	// drainBound is how long Serve waits, once it stops, for connections
	// still being answered (their work ends with the context); past it
	// they are logged and left to the process's exit.
	drainBound = 5 * time.Second
	// acceptBackoffMin and acceptBackoffMax bound the pause after a failed
	// accept (EMFILE, ENFILE, ENOBUFS, ENOMEM): doubled at each failure in
	// a row, so a lack of descriptors neither spins nor stops the server.
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// acceptor is what Serve needs of its listener; tests give it failures.
type acceptor interface {
	AcceptUnix() (*net.UnixConn, error)
	Close() error
}

// Serve answers control connections on ln until ctx ends, each in its own
// goroutine. Only root may talk to the daemon: a load request is a
// privileged act. A failed accept is retried after a pause; Serve returns
// an error only if ln is closed under it. When it returns, its connections
// have been closed and their goroutines have ended, or drainBound passed.
func (d *Daemon) Serve(ctx context.Context, ln *net.UnixListener) error {
	return d.serve(ctx, ln, responseWriteBound)
}

func (d *Daemon) serve(ctx context.Context, ln acceptor, writeBound time.Duration) error {
	var conns sync.WaitGroup
	var open atomic.Int64
	defer func() {
		if !waitBounded(&conns, drainBound) {
			d.cfg.Log.Warn().Int64("connections", open.Load()).Dur("waited", drainBound).
				Msg("control connections still busy at shutdown; leaving them")
		}
	}()
	// Whatever ends Serve ends its connections too.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	backoff := acceptBackoffMin
	failures := 0
	var since time.Time
	for {
		conn, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			if failures == 0 {
				since = time.Now()
				d.cfg.Log.Error().Err(err).Msg("control socket: cannot accept connections; retrying")
			}
			failures++
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return nil
			}
			backoff = min(backoff*2, acceptBackoffMax)
			continue
		}
		if failures > 0 {
			d.cfg.Log.Info().Int("failures", failures).Dur("after", time.Since(since)).
				Msg("control socket: accepting connections again")
			failures, backoff = 0, acceptBackoffMin
		}
		conns.Add(1)
		open.Add(1)
		go func() {
			defer conns.Done()
			defer open.Add(-1)
			d.serveConn(ctx, conn, writeBound)
		}()
	}
}

// waitBounded waits for wg, at most bound; it reports whether wg is done.
func waitBounded(wg *sync.WaitGroup, bound time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(bound):
		return false
	}
}

// serveConn answers one request: it acknowledges the request as soon as
// it has read it (the helper waits for that only briefly, and loads by
// itself when no acknowledgement comes), then works and answers.
func (d *Daemon) serveConn(ctx context.Context, conn *net.UnixConn, writeBound time.Duration) {
	defer d.workDone() // a query maps the binary's data too (status: 1.5 MiB)
	defer conn.Close()
	// Shutdown ends the connection, whatever it waits for.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	send := func(resp Response) bool {
		conn.SetWriteDeadline(time.Now().Add(writeBound))
		err := json.NewEncoder(conn).Encode(resp)
		if err != nil && ctx.Err() == nil {
			d.cfg.Log.Warn().Err(err).Dur("bound", writeBound).Msg("control client did not take its answer; dropped")
		}
		return err == nil
	}
	uid, err := peerUID(conn)
	if err != nil || uid != 0 {
		d.cfg.Log.Warn().Int("uid", uid).AnErr("peercred", err).Msg("control connection refused: not root")
		send(Response{Error: "permission denied: root only"})
		return
	}
	conn.SetReadDeadline(time.Now().Add(requestReadBound))
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 4096), maxRequest)
	if !sc.Scan() {
		return
	}
	conn.SetReadDeadline(time.Time{})
	var req Request
	if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
		send(Response{Error: "bad request: " + err.Error()})
		return
	}
	ack := Response{Accepted: true}
	if req.Op == "load" {
		ack.AnswerWithinMS = d.cfg.Loader.Bound().Milliseconds()
	}
	if !send(ack) {
		return
	}
	send(d.answer(ctx, req))
	if req.Op == "load" {
		d.dropIndexPages() // after the answer: the kernel's helper waits for it
	}
}

func (d *Daemon) answer(ctx context.Context, req Request) Response {
	switch req.Op {
	case "status":
		st := d.Status()
		return Response{OK: true, Status: &st}
	case "timeline":
		tl := d.Timeline()
		return Response{OK: true, Timeline: &tl}
	case "settle":
		// A client that names no bound gets maxSettle, so no
		// request holds a goroutine here for good.
		timeout := time.Duration(req.TimeoutMS) * time.Millisecond
		if timeout <= 0 || timeout > maxSettle {
			timeout = maxSettle
		}
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
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

// peerUID is the uid of the process at the other end of conn: the client
// for the server, and for a client the process that created the listening
// socket.
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
// live daemon answers on. The directory holding it is created (0755) if
// missing; an existing one must be root's and writable by nobody else, or
// another user could put its own socket in the daemon's place.
func Listen(path string) (*net.UnixListener, error) {
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
	}
	if err := checkRootDir(dir); err != nil {
		return nil, err
	}
	if c, err := dialUnix(path); err == nil {
		c.Close()
		return nil, fmt.Errorf("%s: another daemon is listening", path)
	} else if errors.Is(err, syscall.ECONNREFUSED) {
		// Only a socket is stale; any other file there is not ours.
		if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() == fs.ModeSocket {
			os.Remove(path)
		}
	}
	old := syscall.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, err
	}
	return ln, nil
}

// checkRootDir fails unless dir is a directory owned by root that group
// and others cannot write to.
func checkRootDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return fmt.Errorf("%s: not a directory", dir)
	case !ok:
		return fmt.Errorf("%s: cannot read its owner", dir)
	case st.Uid != 0:
		return fmt.Errorf("%s: owned by uid %d, not root: refusing to use it for the control socket", dir, st.Uid)
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("%s: mode %04o lets group or others write to it: refusing to use it for the control socket", dir, fi.Mode().Perm())
	}
	return nil
}

// Waits bound how long Ask waits for the daemon; zero means until the
// context ends.
type Waits struct {
	// Accept bounds the wait, from the dial, for the daemon to acknowledge
	// the request, which it does before it starts working on it.
	Accept time.Duration
	// Answer bounds the wait for the answer once the request is
	// acknowledged, beyond what the daemon says its answer may take
	// (Response.AnswerWithinMS).
	Answer time.Duration
}

// Errors from Ask that say how far the request got.
var (
	// ErrNoDaemon: nothing listens on the control socket.
	ErrNoDaemon = errors.New("no daemon on the control socket")
	// ErrNotAccepted: the daemon did not acknowledge the request in time
	// (it is stopped or stuck), or the socket is not root's. It has not
	// started on the request.
	ErrNotAccepted = errors.New("the daemon did not accept the request")
	// ErrNoAnswer: the daemon accepted the request but did not answer
	// within Waits.Answer. It may still be working on it.
	ErrNoAnswer = errors.New("the daemon accepted the request but did not answer in time")
	// ErrHungUp: the daemon accepted the request, then closed the
	// connection without answering (it stopped). Its work on the request
	// ended with it.
	ErrHungUp = errors.New("the daemon accepted the request, then hung up without answering")
)

// Ask sends one request to the daemon at path and returns its answer. It
// fails fast (ErrNoDaemon) when no daemon listens, so the modprobe helper
// can load by itself; see Waits and the errors above for the rest. The
// daemon must run as root: a socket another user bound at the path is not
// talked to.
func Ask(ctx context.Context, path string, req Request, w Waits) (Response, error) {
	return ask(ctx, path, req, w, peerUID)
}

// ask is Ask with the peer's credentials from serverUID, so tests can
// play a server run by another user.
func ask(ctx context.Context, path string, req Request, w Waits, serverUID func(*net.UnixConn) (int, error)) (Response, error) {
	acceptBy := deadlineWithin(w.Accept)
	conn, err := dialUnix(path)
	switch {
	case errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED):
		return Response{}, fmt.Errorf("%w: %v", ErrNoDaemon, err)
	case errors.Is(err, syscall.EAGAIN):
		// Its listen backlog is full: nobody accepts.
		return Response{}, fmt.Errorf("%w: %v", ErrNotAccepted, err)
	case err != nil:
		return Response{}, err
	}
	defer conn.Close()
	if ctx.Err() != nil {
		return Response{}, ctx.Err()
	}
	if uid, err := serverUID(conn); err != nil {
		return Response{}, fmt.Errorf("%w: %s: cannot tell who serves it: %v", ErrNotAccepted, path, err)
	} else if uid != 0 {
		return Response{}, fmt.Errorf("%w: %s is served by uid %d, not root: not talking to it", ErrNotAccepted, path, uid)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	conn.SetDeadline(acceptBy)
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return Response{}, failedAsk(ctx, ErrNotAccepted, err)
	}
	dec := json.NewDecoder(bufio.NewReader(conn))
	var resp Response
	if err := dec.Decode(&resp); err != nil {
		return Response{}, failedAsk(ctx, ErrNotAccepted, err)
	}
	if !resp.Accepted {
		return resp, nil // refused before any work: bad request, not root
	}
	if w.Answer > 0 {
		conn.SetDeadline(deadlineWithin(w.Answer + time.Duration(resp.AnswerWithinMS)*time.Millisecond))
	} else {
		conn.SetDeadline(time.Time{})
	}
	resp = Response{}
	if err := dec.Decode(&resp); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return Response{}, failedAsk(ctx, ErrNoAnswer, err)
		}
		return Response{}, failedAsk(ctx, ErrHungUp, err)
	}
	return resp, nil
}

// deadlineWithin is the deadline bound from now; none for a zero bound.
func deadlineWithin(bound time.Duration) time.Time {
	if bound <= 0 {
		return time.Time{}
	}
	return time.Now().Add(bound)
}

// failedAsk reports an I/O error of Ask as kind, or as the context's end
// if that is what closed the connection.
func failedAsk(ctx context.Context, kind, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("%w: %v", kind, err)
}

// dialUnix connects to a control socket. A Unix stream connect never
// waits: a full listen backlog is EAGAIN at once. Dialling by network
// name instead (net.Dial) would link Go's DNS resolver into the binary.
func dialUnix(path string) (*net.UnixConn, error) {
	return net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
}
