package uevent

import (
	"errors"
	"strings"
	"testing"
)

// msg joins fields with NULs and ends with one, as the kernel does.
func msg(fields ...string) []byte { return []byte(strings.Join(fields, "\x00") + "\x00") }

func TestParseKernelEvent(t *testing.T) {
	ev, err := Parse(msg(
		"add@/devices/pci0000:00/0000:00:03.0",
		"ACTION=add",
		"DEVPATH=/devices/pci0000:00/0000:00:03.0",
		"SUBSYSTEM=pci",
		"DRIVER=e1000",
		"PCI_CLASS=20000",
		"MODALIAS=pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00",
		"SEQNUM=1234",
	))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Defects != nil {
		t.Fatalf("defects on a well-formed event: %v", ev.Defects)
	}
	want := Event{
		Action: "add", DevPath: "/devices/pci0000:00/0000:00:03.0", Subsystem: "pci", Seqnum: 1234,
		Modalias: "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00", Driver: "e1000",
	}
	if ev.Action != want.Action || ev.DevPath != want.DevPath || ev.Subsystem != want.Subsystem ||
		ev.Seqnum != want.Seqnum || ev.Modalias != want.Modalias || ev.Driver != want.Driver {
		t.Errorf("got %+v\nwant %+v", ev, want)
	}
	if len(ev.Props) != 7 || ev.Props[0] != (Property{"ACTION", "add"}) || ev.Props[6] != (Property{"SEQNUM", "1234"}) {
		t.Errorf("props not kept in order: %v", ev.Props)
	}
	if v, ok := ev.Get("PCI_CLASS"); !ok || v != "20000" {
		t.Errorf("Get(PCI_CLASS) = %q, %v", v, ok)
	}
	if _, ok := ev.Get("NOPE"); ok {
		t.Error("Get of an absent key succeeded")
	}
}

// A key the message has twice reads as its last value everywhere: in the
// event's fields and through Get (which ENV{KEY} rules read), as udev's
// properties do.
func TestParseRepeatedKeyLastWins(t *testing.T) {
	ev, err := Parse(msg("add@/devices/x", "ACTION=add", "DEVPATH=/devices/x", "MODALIAS=usb:v1", "DRIVER=a", "MODALIAS=usb:v2", "DRIVER=b", "SEQNUM=9"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []struct{ field, key, want string }{{ev.Modalias, "MODALIAS", "usb:v2"}, {ev.Driver, "DRIVER", "b"}} {
		if got, _ := ev.Get(k.key); got != k.want || k.field != k.want {
			t.Errorf("%s: field %q, Get %q; want %q for both", k.key, k.field, got, k.want)
		}
	}
}

func TestParseDevpathWithAtAndValueWithEquals(t *testing.T) {
	ev, err := Parse(msg(
		"change@/devices/virtual/misc/foo@bar",
		"ACTION=change",
		"DEVPATH=/devices/virtual/misc/foo@bar",
		"SUBSYSTEM=misc",
		"PARAMS=a=b=c",
		"SEQNUM=7",
	))
	if err != nil {
		t.Fatal(err)
	}
	if ev.DevPath != "/devices/virtual/misc/foo@bar" || ev.Action != "change" {
		t.Errorf("header: action %q devpath %q", ev.Action, ev.DevPath)
	}
	if v, _ := ev.Get("PARAMS"); v != "a=b=c" {
		t.Errorf("PARAMS = %q, want a=b=c", v)
	}
	if ev.Defects != nil {
		t.Errorf("unexpected defects %v", ev.Defects)
	}
}

// Each malformed field is skipped and reported; the event and its other
// fields survive.
func TestParseKeepsValidFields(t *testing.T) {
	cases := []struct {
		name   string
		fields []string
		raw    []byte // used instead of fields when set
		defect string
	}{
		{name: "no equals", fields: []string{"JUSTAKEY"}, defect: "has no '='"},
		{name: "empty key", fields: []string{"=value"}, defect: "bad key"},
		{name: "key with space", fields: []string{"BAD KEY=v"}, defect: "bad key"},
		{name: "key with control byte", fields: []string{"BAD\x01=v"}, defect: "bad key"},
		{name: "empty field", fields: []string{""}, defect: "empty field"},
		{name: "bad seqnum", fields: []string{"SEQNUM=12x"}, defect: "bad SEQNUM"},
		// ParseUint returns its maximum with the range error: a bogus
		// seqnum that large would stand for every later event.
		{name: "seqnum overflow", fields: []string{"SEQNUM=18446744073709551616"}, defect: "bad SEQNUM"},
		{name: "key too long", fields: []string{strings.Repeat("K", 129) + "=v"}, defect: "bad key"},
		{name: "action mismatch", fields: []string{"ACTION=remove"}, defect: "disagrees with header"},
		{name: "devpath mismatch", fields: []string{"DEVPATH=/devices/other"}, defect: "disagrees with header"},
		{
			name:   "missing trailing NUL",
			raw:    []byte("add@/devices/x\x00SUBSYSTEM=usb\x00MODALIAS=usb:v1234p5678"),
			defect: "missing trailing NUL",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := tc.raw
			if raw == nil {
				fields := append([]string{"add@/devices/x", "SUBSYSTEM=usb"}, tc.fields...)
				fields = append(fields, "MODALIAS=usb:v1234p5678")
				raw = msg(fields...)
			}
			ev, err := Parse(raw)
			if err != nil {
				t.Fatalf("event dropped: %v", err)
			}
			if ev.Modalias != "usb:v1234p5678" || ev.Subsystem != "usb" {
				t.Errorf("valid fields lost: modalias %q subsystem %q", ev.Modalias, ev.Subsystem)
			}
			if len(ev.Defects) != 1 || !strings.Contains(ev.Defects[0].Reason, tc.defect) {
				t.Errorf("defects = %v, want one containing %q", ev.Defects, tc.defect)
			}
			// The header wins over disagreeing ACTION and DEVPATH
			// properties, and a bad SEQNUM reads as absent.
			if ev.Action != "add" || ev.DevPath != "/devices/x" || ev.Seqnum != 0 {
				t.Errorf("header or seqnum taken from a bad field: action %q devpath %q seqnum %d", ev.Action, ev.DevPath, ev.Seqnum)
			}
		})
	}
}

func TestParseRejectsUnusable(t *testing.T) {
	cases := []struct {
		name string
		raw  []byte
		want error
	}{
		{"empty", nil, ErrNoHeader},
		{"libudev", append([]byte("libudev\x00\xfe\xed\xca\xfe"), make([]byte, 32)...), ErrNotKernel},
		{"no at", msg("add/devices/x", "A=b"), ErrNoHeader},
		{"relative devpath", msg("add@devices/x", "A=b"), ErrNoHeader},
		{"empty action", msg("@/devices/x", "A=b"), ErrNoHeader},
		{"upper-case action", msg("ADD@/devices/x"), ErrNoHeader},
		{"action too long", msg(strings.Repeat("a", 17) + "@/devices/x"), ErrNoHeader},
		{"leading NUL", []byte("\x00add@/devices/x\x00"), ErrNoHeader},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.raw)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestParseOversized(t *testing.T) {
	fields := []string{"add@/devices/x", "SUBSYSTEM=usb", "MODALIAS=usb:v1"}
	for len(strings.Join(fields, "\x00")) < MaxMessageSize+100 {
		fields = append(fields, "PAD="+strings.Repeat("x", 100))
	}
	ev, err := Parse(msg(fields...))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Modalias != "usb:v1" {
		t.Errorf("modalias lost: %q", ev.Modalias)
	}
	var cut, dropped bool
	for _, d := range ev.Defects {
		cut = cut || strings.Contains(d.Reason, "longer than")
		dropped = dropped || strings.Contains(d.Reason, "cut at the size limit")
	}
	if !cut || !dropped {
		t.Errorf("defects %v: want the size cut and the partial last field reported", ev.Defects)
	}
	for _, p := range ev.Props {
		if p.Key == "PAD" && len(p.Value) != 100 {
			t.Errorf("a partial field was kept: PAD of %d bytes", len(p.Value))
		}
	}
}

// A message of exactly MaxMessageSize bytes is whole; one byte more is cut.
func TestParseSizeLimitBoundary(t *testing.T) {
	build := func(size int) []byte {
		head := "add@/devices/x\x00MODALIAS=usb:v1\x00LAST="
		return []byte(head + strings.Repeat("z", size-len(head)-1) + "\x00")
	}
	ev, err := Parse(build(MaxMessageSize))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ev.Get("LAST"); !ok || ev.Defects != nil {
		t.Errorf("a message of exactly %d bytes lost its last field: defects %v", MaxMessageSize, ev.Defects)
	}
	ev, err = Parse(build(MaxMessageSize + 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ev.Get("LAST"); ok || ev.Modalias != "usb:v1" || len(ev.Defects) != 2 {
		t.Errorf("a message of %d bytes: LAST kept %v, modalias %q, defects %v", MaxMessageSize+1, ok, ev.Modalias, ev.Defects)
	}
}

func TestParseDoesNotAliasInput(t *testing.T) {
	raw := msg("add@/devices/x", "MODALIAS=usb:v1")
	ev, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	for i := range raw {
		raw[i] = 'Z'
	}
	if ev.Modalias != "usb:v1" || ev.DevPath != "/devices/x" {
		t.Errorf("event changed with its input buffer: %+v", ev)
	}
}

func TestParseModaliasTrailingNewline(t *testing.T) {
	ev, err := Parse(msg("add@/devices/system/cpu/cpu0", "SUBSYSTEM=cpu", "MODALIAS=cpu:type:x86,ven0002:feature:,0000\n", "SEQNUM=5"))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Modalias != "cpu:type:x86,ven0002:feature:,0000" {
		t.Errorf("Modalias %q, want the newline trimmed", ev.Modalias)
	}
	if v, _ := ev.Get("MODALIAS"); v != "cpu:type:x86,ven0002:feature:,0000\n" {
		t.Errorf("raw property %q, want it as the kernel sent it", v)
	}
}
