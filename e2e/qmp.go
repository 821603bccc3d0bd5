package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"time"
)

// QMP is a minimal client of qemu's machine protocol, enough to hotplug and
// unplug devices in a running guest:
//
//	vm.QMP().Execute(ctx, "device_add", map[string]any{"driver": "virtio-rng-pci", "id": "rng0"})
//
// Asynchronous events (e.g. DEVICE_DELETED) are read and dropped.
type QMP struct {
	mu   sync.Mutex // one command at a time: replies are not tagged
	conn net.Conn
	dec  *json.Decoder
}

// dialQMP connects to qemu's QMP socket, retrying until qemu has created
// it (or has exited, closing exited), and completes the capabilities
// handshake.
func dialQMP(ctx context.Context, sock string, exited <-chan struct{}) (*QMP, error) {
	var d net.Dialer
	for {
		conn, err := d.DialContext(ctx, "unix", sock)
		if err == nil {
			q := &QMP{conn: conn, dec: json.NewDecoder(conn)}
			if err := q.handshake(ctx); err != nil {
				conn.Close()
				return nil, err
			}
			return q, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("qmp: connecting to %s: %w", sock, err)
		case <-exited:
			return nil, fmt.Errorf("qmp: qemu exited: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (q *QMP) handshake(ctx context.Context) error {
	defer q.watch(ctx)()
	var greeting struct {
		QMP json.RawMessage `json:"QMP"`
	}
	if err := q.dec.Decode(&greeting); err != nil {
		return fmt.Errorf("qmp: reading greeting: %w", err)
	}
	if greeting.QMP == nil {
		return fmt.Errorf("qmp: unexpected greeting")
	}
	_, err := q.Execute(ctx, "qmp_capabilities", nil)
	return err
}

// Execute runs a QMP command with optional arguments (anything that
// marshals to a JSON object, or nil) and returns its "return" value.
func (q *QMP) Execute(ctx context.Context, command string, args any) (json.RawMessage, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	defer q.watch(ctx)()
	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
	}{command, args}
	if err := json.NewEncoder(q.conn).Encode(req); err != nil {
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	for {
		var resp struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Class string `json:"class"`
				Desc  string `json:"desc"`
			} `json:"error"`
			Event string `json:"event"`
		}
		if err := q.dec.Decode(&resp); err != nil {
			return nil, fmt.Errorf("qmp %s: %w", command, err)
		}
		switch {
		case resp.Event != "":
			continue
		case resp.Error != nil:
			return nil, fmt.Errorf("qmp %s: %s: %s", command, resp.Error.Class, resp.Error.Desc)
		default:
			return resp.Return, nil
		}
	}
}

// watch makes ctx's end interrupt blocked socket I/O; call the returned
// function when the I/O is over.
func (q *QMP) watch(ctx context.Context) (stop func()) {
	q.conn.SetDeadline(time.Time{})
	cancel := context.AfterFunc(ctx, func() { q.conn.SetDeadline(time.Now()) })
	return func() { cancel() }
}

// Close closes the connection; qemu keeps running.
func (q *QMP) Close() error {
	return q.conn.Close()
}
