// Package uevent receives kernel object events (uevents) from the kernel's
// NETLINK_KOBJECT_UEVENT socket, parses them, and reads the same events back
// from sysfs for coldplug.
//
// Every message is treated as hostile: only the kernel may speak (sender port
// 0, credentials uid 0), and a message with a bad field keeps its good fields
// rather than being dropped whole (systemd #43061 lost a MODALIAS that way).
package uevent

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/modautoload/modautoload/internal/excerpt"
)

// MaxMessageSize bounds one uevent. The kernel builds a message from
// "ACTION@DEVPATH" (DEVPATH below PATH_MAX) and an environment of at most
// UEVENT_BUFFER_SIZE (2048) bytes, so anything larger is not from the kernel.
const MaxMessageSize = 8192

// Errors for messages that carry no usable event.
var (
	// ErrNotKernel marks a message in libudev's format: it comes from a udev
	// daemon, never from the kernel.
	ErrNotKernel = errors.New("libudev message, not a kernel uevent")
	// ErrNoHeader marks a message without an "ACTION@/DEVPATH" header.
	ErrNoHeader = errors.New("no ACTION@DEVPATH header")
)

// libudevMagic starts every message that udevd forwards to its listeners.
const libudevMagic = "libudev\x00"

// Property is one KEY=VALUE pair of an event, in the order the kernel sent it.
type Property struct {
	Key, Value string
}

// Defect describes a field of a message that was skipped or repaired.
type Defect struct {
	Offset int    // byte offset of the field in the message
	Reason string // what was wrong with it
}

func (d Defect) String() string { return fmt.Sprintf("offset %d: %s", d.Offset, d.Reason) }

// Event is one parsed uevent. All strings share one copy of the message.
type Event struct {
	Action    string // add, remove, change, move, online, offline, bind, unbind
	DevPath   string // path below /sys, starting with "/"
	Subsystem string
	Seqnum    uint64 // 0 when absent (sysfs) or malformed
	Modalias  string // trailing newlines removed; Props has the raw value
	Driver    string

	// Props holds every well-formed property in message order, including
	// ACTION, DEVPATH, SUBSYSTEM and SEQNUM.
	Props []Property

	// Defects lists the fields that were skipped or repaired; nil for a
	// well-formed message.
	Defects []Defect
}

// Get returns the value of the property named key; of the last, if the
// message has it twice, as the fields above and udev's properties do.
func (e *Event) Get(key string) (string, bool) {
	for i := len(e.Props) - 1; i >= 0; i-- {
		if e.Props[i].Key == key {
			return e.Props[i].Value, true
		}
	}
	return "", false
}

func (e *Event) defect(off int, format string, args ...any) {
	e.Defects = append(e.Defects, Defect{Offset: off, Reason: fmt.Sprintf(format, args...)})
}

// Parse parses one kernel uevent: "ACTION@DEVPATH\0KEY=VALUE\0...".
//
// It returns an error only when the message carries no event at all (empty,
// a libudev message, no header). Bad fields (no "=", an empty or non-printable
// key, a bad SEQNUM, a missing trailing NUL, bytes beyond MaxMessageSize) are
// skipped or repaired and recorded in Event.Defects; the rest of the event is
// kept. A DEVPATH may contain "@" and a value may contain "=".
func Parse(msg []byte) (Event, error) {
	var ev Event
	if len(msg) == 0 {
		return ev, ErrNoHeader
	}
	if len(msg) >= len(libudevMagic) && string(msg[:len(libudevMagic)]) == libudevMagic {
		return ev, ErrNotKernel
	}
	truncated := false
	if len(msg) > MaxMessageSize {
		msg, truncated = msg[:MaxMessageSize], true
	}
	// One copy of the message; every field is a substring of it.
	s := string(msg)

	end := strings.IndexByte(s, 0)
	if end < 0 {
		end = len(s)
	}
	action, devpath, ok := strings.Cut(s[:end], "@")
	if !ok || !validAction(action) || !strings.HasPrefix(devpath, "/") {
		return ev, fmt.Errorf("%w: %q", ErrNoHeader, excerpt.Of(s[:end]))
	}
	ev.Action, ev.DevPath = action, devpath
	if truncated {
		ev.defect(MaxMessageSize, "message longer than %d bytes, rest dropped", MaxMessageSize)
	}

	// Count fields first so Props is allocated once.
	n := strings.Count(s[end:], "\x00") + 1
	ev.Props = make([]Property, 0, n)
	for off := end + 1; off < len(s); {
		field := s[off:]
		next := len(s)
		if i := strings.IndexByte(field, 0); i >= 0 {
			field, next = field[:i], off+i+1
		} else if truncated {
			ev.defect(off, "field cut at the size limit, dropped")
			break
		} else {
			ev.defect(off, "missing trailing NUL")
		}
		ev.addField(off, field)
		off = next
	}
	ev.checkHeader()
	return ev, nil
}

// addField records one KEY=VALUE field, or a defect if it is malformed.
func (ev *Event) addField(off int, field string) {
	if field == "" {
		ev.defect(off, "empty field")
		return
	}
	key, value, ok := strings.Cut(field, "=")
	switch {
	case !ok:
		ev.defect(off, "field %q has no '='", excerpt.Of(field))
		return
	case !ValidKey(key):
		ev.defect(off, "bad key %q", excerpt.Of(key))
		return
	}
	ev.Props = append(ev.Props, Property{Key: key, Value: value})
	switch key {
	case "SUBSYSTEM":
		ev.Subsystem = value
	case "MODALIAS":
		// A CPU's MODALIAS ends with the newline of its sysfs attribute;
		// the sysfs walker cannot see it, and no alias ends in one.
		ev.Modalias = strings.TrimRight(value, "\n")
	case "DRIVER":
		ev.Driver = value
	case "SEQNUM":
		seq, err := strconv.ParseUint(value, 10, 64)
		if err != nil {
			ev.defect(off, "bad SEQNUM %q", excerpt.Of(value))
			return
		}
		ev.Seqnum = seq
	}
}

// checkHeader cross-checks the header against the ACTION and DEVPATH
// properties. The header wins: it is what the kernel's own netlink filter
// and every peer (udev, mdev) read.
func (ev *Event) checkHeader() {
	for _, p := range ev.Props {
		switch {
		case p.Key == "ACTION" && p.Value != ev.Action:
			ev.defect(0, "ACTION=%q disagrees with header %q", excerpt.Of(p.Value), ev.Action)
		case p.Key == "DEVPATH" && p.Value != ev.DevPath:
			ev.defect(0, "DEVPATH=%q disagrees with header %q", excerpt.Of(p.Value), excerpt.Of(ev.DevPath))
		}
	}
}

// validAction accepts the kernel's lower-case action words.
func validAction(a string) bool {
	if a == "" || len(a) > 16 {
		return false
	}
	for i := 0; i < len(a); i++ {
		if a[i] < 'a' || a[i] > 'z' {
			return false
		}
	}
	return true
}

// ValidKey accepts what the kernel and drivers put in uevent keys: ASCII
// letters, digits and '_'. Anything else would break `KEY=VALUE` shell
// consumers downstream.
func ValidKey(k string) bool {
	if k == "" || len(k) > 128 {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}
