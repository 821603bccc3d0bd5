package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/modautoload/modautoload/loader"
	"github.com/modautoload/modautoload/loader/loadertest"
)

const ms = int64(time.Millisecond)

// bootTimeline is a coldplug as the rig's virtio devices make it: the
// scan asks for virtio_pci and e1000; virtio_pci's probe creates virtio1,
// whose event asks for virtio_net, which needs net_failover, which needs
// failover; a static list's crc32c waits for failover too, in flight for
// virtio_net's request; a hotplug comes long after.
func bootTimeline() *Timeline {
	pci := &loader.Asker{Kind: loader.AskedByColdplug, DevPath: "/devices/pci0000:00/0000:00:04.0", Name: "pci:v00001AF4d00001000"}
	e1000 := &loader.Asker{Kind: loader.AskedByColdplug, DevPath: "/devices/pci0000:00/0000:00:03.0", Name: "pci:v00008086d0000100E"}
	virtio1 := &loader.Asker{Kind: loader.AskedByUevent, Action: "add", DevPath: "/devices/pci0000:00/0000:00:04.0/virtio1", Seqnum: 812, Name: "virtio:d00000001v00001AF4"}
	static := &loader.Asker{Kind: loader.AskedByStatic, File: "/etc/modules-load.d/x.conf", Line: 3, Name: "crc32c"}
	hot := &loader.Asker{Kind: loader.AskedByUevent, Action: "add", DevPath: "/devices/pci0000:00/0000:00:07.0", Seqnum: 900, Name: "pci:v00001AF4d00001052"}
	return &Timeline{NowNS: 9000 * ms, Size: loader.DefaultTimelineSize, Records: []LoadRecord{
		{ID: 1, Module: "virtio_pci", Asker: pci, RequestedNS: 1000 * ms, StartedNS: 1010 * ms, DoneNS: 1300 * ms, ReturnedNS: 1300 * ms, Op: loader.OpLoad, Result: ResultLive},
		{ID: 2, Module: "e1000", Asker: e1000, RequestedNS: 1000 * ms, StartedNS: 1005 * ms, DoneNS: 1500 * ms, ReturnedNS: 1700 * ms, Op: loader.OpLoad, Result: ResultLive},
		{ID: 3, Module: "failover", For: "virtio_net", Asker: virtio1, RequestedNS: 1200 * ms, StartedNS: 1210 * ms, DoneNS: 1400 * ms, ReturnedNS: 1400 * ms, Op: loader.OpLoad, Result: ResultLive},
		{ID: 4, Module: "net_failover", For: "virtio_net", Asker: virtio1, RequestedNS: 1200 * ms, StartedNS: 1410 * ms, DoneNS: 1600 * ms, ReturnedNS: 1600 * ms, Op: loader.OpLoad, Result: ResultLive,
			Waits: []loader.Wait{{Module: "failover", ID: 3, End: 1400 * ms}}},
		{ID: 5, Module: "virtio_net", Asker: virtio1, RequestedNS: 1200 * ms, StartedNS: 1610 * ms, DoneNS: 1900 * ms, ReturnedNS: 1900 * ms, Op: loader.OpLoad, Result: ResultLive,
			Waits: []loader.Wait{{Module: "failover", ID: 3, End: 1400 * ms}, {Module: "net_failover", ID: 4, End: 1600 * ms}}},
		{ID: 6, Module: "crc32c", Asker: static, RequestedNS: 1250 * ms, StartedNS: 1420 * ms, DoneNS: 1450 * ms, ReturnedNS: 1450 * ms, Op: loader.OpLoad, Result: ResultLive,
			Waits: []loader.Wait{{Module: "failover", ID: 3, End: 1400 * ms, Shared: true}}},
		{ID: 7, Module: "virtio_input", Asker: hot, RequestedNS: 5000 * ms, StartedNS: 5001 * ms, DoneNS: 5100 * ms, ReturnedNS: 5100 * ms, Op: loader.OpLoad, Result: ResultFailed,
			Errno: "ENODEV", Error: "finit_module virtio_input: no such device (ENODEV)"},
	}}
}

func pathText(p []PathStep) string {
	var s []string
	for _, st := range p {
		if st.HeldBy != "" {
			s = append(s, "-"+st.HeldBy+"->")
		}
		s = append(s, st.Module)
	}
	return strings.Join(s, " ")
}

// The critical path of the boot: the chain that ended with virtio_net,
// through its dependencies and the device virtio_pci created; e1000,
// which took longer alone, and the later hotplug are not on it.
func TestCriticalPath(t *testing.T) {
	tl := bootTimeline()
	b := FindBurst(tl.Records, 990*ms, tl.NowNS)
	if b.Loads != 6 || b.EndNS != 1900*ms || b.Open {
		t.Errorf("burst %+v, want the 6 loads up to 1.9 s", b)
	}
	want := "virtio_pci -device-> failover -dependency-> net_failover -dependency-> virtio_net"
	if got := pathText(b.CriticalPath); got != want {
		t.Errorf("critical path %s\nwant          %s", got, want)
	}
	if b.CriticalPath[0].ID != 1 || b.CriticalPath[3].ID != 5 {
		t.Errorf("path IDs %+v", b.CriticalPath)
	}

	// A shared dependency is named as such: crc32c, once the last.
	recs := bootTimeline().Records
	recs[5].DoneNS = 2500 * ms
	b = FindBurst(recs, 990*ms, tl.NowNS)
	if got := pathText(b.CriticalPath); got != "virtio_pci -device-> failover -shared dependency-> crc32c" {
		t.Errorf("critical path %s", got)
	}

	// A load still in flight ends the burst now.
	recs = bootTimeline().Records
	recs[4].DoneNS, recs[4].Result = 0, ResultLoading
	b = FindBurst(recs, 990*ms, tl.NowNS)
	if !b.Open || b.EndNS != tl.NowNS || b.CriticalPath[len(b.CriticalPath)-1].Module != "virtio_net" {
		t.Errorf("burst %+v", b)
	}

	// A dependency no longer recorded ends the path by name.
	recs = bootTimeline().Records[1:]
	b = FindBurst(recs, 990*ms, tl.NowNS)
	if got := pathText(b.CriticalPath); got != "failover -dependency-> net_failover -dependency-> virtio_net" {
		t.Errorf("without virtio_pci's record: %s", got)
	}
	recs = append(bootTimeline().Records[:2:2], bootTimeline().Records[3:5]...)
	b = FindBurst(recs, 990*ms, tl.NowNS)
	if got := pathText(b.CriticalPath); got != "failover -dependency-> net_failover -dependency-> virtio_net" || b.CriticalPath[0].ID != 0 {
		t.Errorf("without failover's record: %s %+v", got, b.CriticalPath)
	}

	// Nothing recorded since the start: an empty burst, no path.
	if b := FindBurst(tl.Records, 6000*ms, tl.NowNS); b.Loads != 0 || len(b.CriticalPath) != 0 {
		t.Errorf("burst after every load: %+v", b)
	}
}

func TestExplain(t *testing.T) {
	tl := bootTimeline()
	tl.Coldplug = FindBurst(tl.Records, 990*ms, tl.NowNS)
	why := tl.Explain("failover")
	if len(why.Loads) != 1 {
		t.Fatalf("%+v", why)
	}
	l := why.Loads[0]
	if strings.Join(l.NeededBy, " ") != "net_failover virtio_net" || strings.Join(l.AlsoNeededBy, " ") != "crc32c" ||
		l.DeviceOf == nil || l.DeviceOf.Module != "virtio_pci" || !l.Critical {
		t.Errorf("why failover: %+v (device %+v)", l, l.DeviceOf)
	}
	if w := tl.Explain("virtio-net"); len(w.Loads) != 1 || w.Loads[0].ID != 5 || len(w.Loads[0].NeededBy) != 0 {
		t.Errorf("why virtio-net: %+v", w)
	}
	if w := tl.Explain("e1000"); len(w.Loads) != 1 || w.Loads[0].Critical || w.Loads[0].DeviceOf != nil {
		t.Errorf("why e1000: %+v", w)
	}
	if w := tl.Explain("nothing"); len(w.Loads) != 0 {
		t.Errorf("why nothing: %+v", w)
	}

	var out bytes.Buffer
	if err := WriteWhy(&out, tl, tl.Explain("failover")); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"failover: live (load #3)", "uevent add /devices/pci0000:00/0000:00:04.0/virtio1, seqnum 812",
		"failover ← net_failover ← virtio_net", "crc32c", "virtio_pci drives (load #1", "critical path", "requested 1.200, handed to the kernel 1.210"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("why failover does not say %q:\n%s", want, out.String())
		}
	}
}

func TestTimelineJSONRoundTrip(t *testing.T) {
	tl := bootTimeline()
	tl.Coldplug = FindBurst(tl.Records, 990*ms, tl.NowNS)
	b, err := json.Marshal(tl)
	if err != nil {
		t.Fatal(err)
	}
	var back Timeline
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&back, tl) {
		t.Errorf("round trip changed the timeline:\n%s", b)
	}
	for _, key := range []string{`"requested_ns":1200000000`, `"asker":{"kind":"uevent","action":"add","devpath":"/devices/pci0000:00/0000:00:04.0/virtio1","seqnum":812`,
		`"waits":[{"module":"failover","id":3,"end_ns":1400000000,"shared":true}]`, `"critical_path":[{"id":1,"module":"virtio_pci"},{"id":3,"module":"failover","held_by":"device"}`,
		`"errno":"ENODEV"`} {
		if !bytes.Contains(b, []byte(key)) {
			t.Errorf("JSON lacks %s:\n%s", key, b)
		}
	}
}

func TestWriteTimeline(t *testing.T) {
	tl := bootTimeline()
	tl.Coldplug = FindBurst(tl.Records, 990*ms, tl.NowNS)
	var out bytes.Buffer
	if err := WriteTimeline(&out, tl); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	lines := strings.Split(strings.TrimSpace(text), "\n")
	// A header, a line per record, the burst, the path's title and steps.
	if len(lines) != 2+len(tl.Records)+2+4 {
		t.Errorf("%d lines:\n%s", len(lines), text)
	}
	for _, want := range []string{"failed ENODEV", "coldplug   6 loads from 0.990 to 1.900 s", "critical path",
		"1.200 →     1.900  virtio_net", "its device appeared below one virtio_pci drives, asked for while it loaded", "for virtio_net: uevent add"} {
		if !strings.Contains(text, want) {
			t.Errorf("timeline does not say %q:\n%s", want, text)
		}
	}
}

// The chart is well-formed XML with one bar group per record, the
// critical path's outlined, whatever the records' strings hold.
func TestTimelineSVG(t *testing.T) {
	tl := bootTimeline()
	tl.Records[6].Asker = &loader.Asker{Kind: loader.AskedByUevent, Action: "add", DevPath: "/devices/<evil>&\"'\x01\xff", Name: "]]>"}
	tl.Records[6].Module = "a<b>&c"
	tl.Coldplug = FindBurst(tl.Records, 990*ms, tl.NowNS)
	var out bytes.Buffer
	if err := WriteTimelineSVG(&out, tl); err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(&out)
	groups, critical, rects := 0, 0, 0
	var labels []string
	inGroup := false
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v", err)
		}
		switch el := tok.(type) {
		case xml.StartElement:
			switch el.Name.Local {
			case "g":
				for _, a := range el.Attr {
					if a.Name.Local == "class" && strings.HasPrefix(a.Value, "load") {
						groups++
						inGroup = true
						if strings.Contains(a.Value, "critical") {
							critical++
						}
					}
				}
			case "rect":
				if inGroup {
					rects++
				}
			case "text":
				if inGroup {
					var s string
					if err := dec.DecodeElement(&s, &el); err != nil {
						t.Fatal(err)
					}
					labels = append(labels, s)
				}
			}
		case xml.EndElement:
			if el.Name.Local == "g" {
				inGroup = false
			}
		}
	}
	if groups != len(tl.Records) || critical != 4 || rects < len(tl.Records) {
		t.Errorf("%d bars (%d critical, %d rects) for %d records", groups, critical, rects, len(tl.Records))
	}
	if !strings.Contains(strings.Join(labels, "|"), "a<b>&c (99 ms) ENODEV") {
		t.Errorf("labels %q", labels)
	}
}

// In the daemon: the coldplug asks for outer, whose init runs while the
// event for a device below outer's arrives and asks for slow; the
// timeline names both askers, the kernel's helper request with its pid,
// and the critical path through the device.
func TestDaemonTimeline(t *testing.T) {
	r := newRig(t, "", func(c *Config, k *loadertest.Kernel) {
		c.Coldplug = true
		k.SetModule("outer", loadertest.Module{Init: 300 * time.Millisecond})
		device(k, "pci0/dev1", "dev:outer1")
	})
	time.Sleep(100 * time.Millisecond)
	r.send("add", "/devices/pci0/dev1/child", "dev:slow1")
	r.settle()
	// outer drives the device above slow's, as sysfs shows it.
	bindDriver(t, r.kernel.Sysfs, "/devices/pci0/dev1", "test", "outer-drv", "outer")
	path, _ := serving(t, r, func(ln *net.UnixListener) acceptor { return ln }, responseWriteBound)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// The helper's request comes after the boot's burst (burstGap).
	time.Sleep(burstGap + 100*time.Millisecond)
	if resp, err := Ask(ctx, path, Request{Op: "load", Name: "dev:b1", Asker: &loader.Asker{Kind: loader.AskedByKernel, PID: 4242}}, Waits{}); err != nil || !resp.OK {
		t.Fatalf("load: %+v %v", resp, err)
	}
	resp, err := Ask(ctx, path, Request{Op: "timeline"}, Waits{})
	if err != nil || !resp.OK || resp.Timeline == nil {
		t.Fatalf("timeline: %+v %v", resp, err)
	}
	tl := resp.Timeline
	byName := map[string]LoadRecord{}
	for _, rec := range tl.Records {
		byName[rec.Module] = rec
	}
	outer, slow := byName["outer"], byName["slow"]
	if outer.Asker == nil || outer.Asker.Kind != loader.AskedByColdplug || outer.Asker.Seqnum != 0 || outer.Asker.DevPath != "/devices/pci0/dev1" ||
		slow.Asker == nil || slow.Asker.Kind != loader.AskedByUevent || slow.Asker.Seqnum != 1 || slow.Asker.Name != "dev:slow1" {
		t.Errorf("askers %+v, %+v", outer.Asker, slow.Asker)
	}
	for _, rec := range []LoadRecord{outer, slow} {
		if rec.Result != ResultLive || !(rec.RequestedNS <= rec.StartedNS && rec.StartedNS <= rec.DoneNS && rec.StartedNS <= rec.ReturnedNS) {
			t.Errorf("%s: %+v", rec.Module, rec)
		}
	}
	if a := byName["a"].Asker; a == nil || a.Kind != loader.AskedByKernel || a.PID != 4242 || byName["a"].For != "b" {
		t.Errorf("a asked by %+v for %q", a, byName["a"].For)
	}
	if strings.Join(slow.ParentDrivers, " ") != "outer" {
		t.Errorf("slow's device is below devices driven by %v, want outer", slow.ParentDrivers)
	}
	if tl.Coldplug == nil {
		t.Fatal("no coldplug burst")
	}
	if got := pathText(tl.Coldplug.CriticalPath); got != "outer -device-> slow" {
		t.Errorf("critical path %s (burst %+v)", got, tl.Coldplug)
	}
}

// bindDriver makes sysfs show the device at devpath bound to driver of
// bus, provided by module: DEVICE/driver and the driver's module link, as
// the kernel links them.
func bindDriver(t *testing.T, sysfs, devpath, bus, driver, module string) {
	t.Helper()
	drv := filepath.Join(sysfs, "bus", bus, "drivers", driver)
	if err := os.MkdirAll(drv, 0o755); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(sysfs, "module", module), 0o755)
	os.MkdirAll(filepath.Join(sysfs, devpath), 0o755)
	rel := func(from, to string) string {
		r, err := filepath.Rel(filepath.Dir(from), to)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	link := filepath.Join(sysfs, devpath, "driver")
	if err := os.Symlink(rel(link, drv), link); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(drv, "module")); err == nil {
		return
	}
	if err := os.Symlink(rel(filepath.Join(drv, "module"), filepath.Join(sysfs, "module", module)), filepath.Join(drv, "module")); err != nil {
		t.Fatal(err)
	}
}

// The modules driving the devices above a USB interface, from sysfs;
// the cause of the interface is the one of them that loaded last.
func TestParentDrivers(t *testing.T) {
	sysfs := t.TempDir()
	ctrl := "/devices/pci0000:00/0000:00:05.0"
	bindDriver(t, sysfs, ctrl, "pci", "xhci_hcd", "xhci_pci")
	bindDriver(t, sysfs, ctrl+"/usb1", "usb", "usb", "usbcore")
	bindDriver(t, sysfs, ctrl+"/usb1/1-1", "usb", "usb", "usbcore")
	iface := ctrl + "/usb1/1-1/1-1:1.0"
	os.MkdirAll(filepath.Join(sysfs, iface), 0o755)
	if got := strings.Join(parentDrivers(sysfs, iface), " "); got != "usbcore xhci_pci" {
		t.Errorf("drivers above the interface: %q, want usbcore xhci_pci", got)
	}
	for _, bad := range []string{"/devices/../module", "devices/pci0000:00", "/sys/../devices/x", "/devices/./x/y", "/devices"} {
		if got := parentDrivers(sysfs, bad); got != nil {
			t.Errorf("%q: %v", bad, got)
		}
	}

	hid := &loader.Asker{Kind: loader.AskedByUevent, Action: "add", DevPath: iface, Seqnum: 9, Name: "usb:v0627p0001"}
	pci := &loader.Asker{Kind: loader.AskedByColdplug, DevPath: ctrl, Name: "pci:v00001B36d0000000D"}
	recs := []LoadRecord{
		{ID: 1, Module: "usbcore", For: "xhci_pci", Asker: pci, RequestedNS: 1000 * ms, StartedNS: 1000 * ms, DoneNS: 1100 * ms},
		{ID: 2, Module: "xhci_pci", Asker: pci, RequestedNS: 1000 * ms, StartedNS: 1100 * ms, DoneNS: 1200 * ms},
		{ID: 3, Module: "usbhid", Asker: hid, RequestedNS: 1600 * ms, StartedNS: 1600 * ms, DoneNS: 1700 * ms, ParentDrivers: []string{"usbcore", "xhci_pci"}},
	}
	b := FindBurst(recs, 900*ms, 2000*ms)
	if got := pathText(b.CriticalPath); got != "xhci_pci -device-> usbhid" {
		t.Errorf("critical path %s", got)
	}
}

// A timeline with no loads, or with absurd times (a daemon's answer is
// input like any other), still makes a well-formed chart, and quickly.
func TestTimelineSVGOddTimelines(t *testing.T) {
	odd := bootTimeline()
	odd.Records[0].RequestedNS = 1
	odd.Records[1].DoneNS = 1<<63 - 1
	odd.Records[2].StartedNS = -5
	for name, tl := range map[string]*Timeline{"empty": {NowNS: 5}, "absurd": odd} {
		var out bytes.Buffer
		if err := WriteTimelineSVG(&out, tl); err != nil {
			t.Fatal(err)
		}
		dec := xml.NewDecoder(&out)
		for {
			_, err := dec.Token()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: not well-formed: %v", name, err)
			}
		}
	}
}

// What asked is shown on a terminal: a name chosen by whoever called
// request_module (crypto-, fs- and net-pf- names carry user text) must not
// carry escape sequences to it.
func TestDescribeAskerPrintable(t *testing.T) {
	got := DescribeAsker(&loader.Asker{Kind: loader.AskedByKernel, Name: "crypto-\x1b[2J\x07evil\xff", PID: 7})
	if strings.ContainsAny(got, "\x1b\x07") || !utf8.ValidString(got) || !strings.Contains(got, "evil") {
		t.Errorf("DescribeAsker = %q", got)
	}
}
