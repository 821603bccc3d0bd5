package e2e

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var updateCorpus = flag.Bool("update-corpus", false,
	"rewrite uevent/testdata/kernel-uevents.txt from the events the guest's monitor prints")

// monitorDevices gives the guest devices whose events carry MODALIAS
// values of several buses (pci, virtio, usb, hid, acpi, cpu, serio).
var monitorDevices = []string{
	"e1000,netdev=n0", "virtio-rng-pci", "virtio-balloon-pci",
	"qemu-xhci", "usb-kbd", "usb-tablet", "intel-hda", "hda-duplex,audiodev=snd0",
}

var monitorQEMUArgs = []string{"-netdev", "user,id=n0,restrict=on", "-audiodev", "none,id=snd0"}

// startMonitor is the guest shell that starts `monitor --json` in the
// background and waits until its socket is bound, so no event is missed.
const startMonitor = `
modautoload monitor --json --log-format json >/tmp/mon.json 2>/tmp/mon.log &
MON=$!
for i in $(seq 100); do grep -q "listening for kernel uevents" /tmp/mon.log && break; sleep 0.05; done
`

// stopMonitor ends the monitor with SIGTERM and prints what it wrote.
const stopMonitor = `
kill -TERM $MON
wait $MON
echo "E2E:MONRC $?"
while read -r line; do echo "E2E:EVENT $line"; done </tmp/mon.json
while read -r line; do echo "E2E:LOG $line"; done </tmp/mon.log
`

type monitorEvent struct {
	Action     string            `json:"action"`
	DevPath    string            `json:"devpath"`
	Subsystem  string            `json:"subsystem"`
	Seqnum     uint64            `json:"seqnum"`
	Properties map[string]string `json:"properties"`
	Defects    []string          `json:"defects"`
}

func decodeEvents(t *testing.T, res *Result) []monitorEvent {
	t.Helper()
	var evs []monitorEvent
	for _, line := range res.Lines("EVENT") {
		var ev monitorEvent
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("monitor printed a line that is not JSON: %q: %v", line, err)
		}
		evs = append(evs, ev)
	}
	return evs
}

// totals returns the counters of monitor's closing "uevent totals" log line.
func totals(t *testing.T, res *Result) map[string]float64 {
	t.Helper()
	for _, line := range res.Lines("LOG") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil || m["message"] != "uevent totals" {
			continue
		}
		out := map[string]float64{}
		for k, v := range m {
			if f, ok := v.(float64); ok {
				out[k] = f
			}
		}
		return out
	}
	t.Fatalf("monitor logged no totals; log: %q", res.Lines("LOG"))
	return nil
}

// TestMonitorSeesModuleAdd: monitor in the guest reports the kernel's
// add@/module/raid6_pq when busybox insmod loads it, with the right action,
// devpath and a seqnum inside the window the kernel's counter moved
// through. Then every device is re-announced with "add", and each MODALIAS
// in sysfs must show up in an event.
func TestMonitorSeesModuleAdd(t *testing.T) {
	Require(t)
	bin := BuildBinary(t, "./cmd/modautoload")
	res := Boot(t.Context(), t, Scenario{
		Files:    []File{{Guest: "/bin/modautoload", Host: bin, Mode: 0o755}},
		Devices:  monitorDevices,
		QEMUArgs: monitorQEMUArgs,
		Script: startMonitor + `
echo "E2E:SEQ_BEFORE $(cat /sys/kernel/uevent_seqnum)"
insmod "$(modinfo -F filename raid6_pq 2>/dev/null || find /lib/modules -name raid6_pq.ko)"
echo "E2E:INSMOD_RC $?"
echo "E2E:SEQ_AFTER $(cat /sys/kernel/uevent_seqnum)"
find /sys/devices -name uevent | while read -r f; do echo add >"$f" 2>/dev/null; done
find /sys/devices -name modalias | while read -r f; do echo "E2E:MODALIAS $(cat "$f")"; done
# The triggered events are in flight; the last seqnum tells when all are read.
last=$(cat /sys/kernel/uevent_seqnum)
for i in $(seq 200); do grep -q "\"seqnum\":$last," /tmp/mon.json && break; sleep 0.05; done
` + stopMonitor,
	})
	if res.ExitCode != 0 || res.Value("MONRC") != "0" || res.Value("INSMOD_RC") != "0" {
		t.Fatalf("scenario exit %d, monitor exit %q, insmod exit %q", res.ExitCode, res.Value("MONRC"), res.Value("INSMOD_RC"))
	}
	before, _ := strconv.ParseUint(res.Value("SEQ_BEFORE"), 10, 64)
	after, _ := strconv.ParseUint(res.Value("SEQ_AFTER"), 10, 64)

	evs := decodeEvents(t, res)
	var found bool
	seen := map[string]bool{}
	for _, ev := range evs {
		if len(ev.Defects) > 0 {
			t.Errorf("kernel event with defects: %+v", ev)
		}
		// The kernel ends a CPU's MODALIAS with the newline of its sysfs
		// attribute; the shell's $(cat) drops it.
		if m := strings.TrimRight(ev.Modalias(), "\n"); m != "" {
			seen[m] = true
		}
		if ev.DevPath != "/module/raid6_pq" || ev.Action != "add" {
			continue
		}
		found = true
		if ev.Subsystem != "module" || ev.Properties["ACTION"] != "add" || ev.Properties["DEVPATH"] != "/module/raid6_pq" {
			t.Errorf("module event fields: %+v", ev)
		}
		if ev.Seqnum <= before || ev.Seqnum > after {
			t.Errorf("seqnum %d outside the kernel's window (%d, %d]", ev.Seqnum, before, after)
		}
		if ev.Properties["SEQNUM"] != strconv.FormatUint(ev.Seqnum, 10) {
			t.Errorf("seqnum %d disagrees with SEQNUM=%q", ev.Seqnum, ev.Properties["SEQNUM"])
		}
	}
	if !found {
		t.Fatalf("no add@/module/raid6_pq among %d events", len(evs))
	}
	modaliases := res.Lines("MODALIAS")
	if len(modaliases) < 10 {
		t.Fatalf("only %d modalias files in the guest's sysfs", len(modaliases))
	}
	for _, m := range modaliases {
		if !seen[m] {
			t.Errorf("MODALIAS %q in sysfs never seen in an event after the trigger", m)
		}
	}
	tot := totals(t, res)
	if tot["received"] != float64(len(evs)) || tot["rejected"] != 0 || tot["malformed"] != 0 || tot["overruns"] != 0 {
		t.Errorf("totals %v for %d printed events", tot, len(evs))
	}
	if *updateCorpus {
		writeCorpus(t, res)
	}
}

func (ev monitorEvent) Modalias() string { return ev.Properties["MODALIAS"] }

// TestMonitorIgnoresForgedEvent: a root process in the guest sends a fake
// uevent carrying a MODALIAS to the kernel's multicast group. monitor must
// not print it and must count it as rejected; the genuine event sent right
// after it still comes through.
func TestMonitorIgnoresForgedEvent(t *testing.T) {
	Require(t)
	bin := BuildBinary(t, "./cmd/modautoload")
	forge := BuildBinary(t, "./e2e/guest/forge")
	res := Boot(t.Context(), t, Scenario{
		Files: []File{
			{Guest: "/bin/modautoload", Host: bin, Mode: 0o755},
			{Guest: "/bin/forge", Host: forge, Mode: 0o755},
		},
		Script: startMonitor + `
# A second monitor logs to /dev/kmsg, as in an initramfs without syslog.
modautoload monitor --log-target kmsg >/dev/null 2>/tmp/kmsg-mon.err &
KMON=$!
for i in $(seq 100); do dmesg | grep -q "modautoload.*listening for kernel uevents" && break; sleep 0.05; done
forge --devpath /devices/virtual/forged/forged0 --modalias pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00 --count 3
echo "E2E:FORGE_RC $?"
insmod "$(find /lib/modules -name raid6_pq.ko)"
for i in $(seq 100); do grep -q '"devpath":"/module/raid6_pq"' /tmp/mon.json && break; sleep 0.05; done
kill -TERM $KMON; wait $KMON
echo "E2E:KMONRC $?"
dmesg -r | grep modautoload | while read -r line; do echo "E2E:KMSG $line"; done
` + stopMonitor,
	})
	if res.Value("FORGE_RC") != "0" || res.Value("FORGED") != "3" {
		t.Fatalf("forge did not send: rc %q, sent %q", res.Value("FORGE_RC"), res.Value("FORGED"))
	}
	if res.Value("MONRC") != "0" {
		t.Fatalf("monitor exit %q", res.Value("MONRC"))
	}
	var genuine bool
	for _, ev := range decodeEvents(t, res) {
		if strings.Contains(ev.DevPath, "forged") || ev.Subsystem == "forged" {
			t.Errorf("forged event printed: %+v", ev)
		}
		genuine = genuine || ev.DevPath == "/module/raid6_pq"
	}
	if !genuine {
		t.Error("the genuine event after the forged ones was not printed")
	}
	if tot := totals(t, res); tot["rejected"] != 3 {
		t.Errorf("rejected %v, want 3 (totals %v)", tot["rejected"], tot)
	}
	drops := 0
	for _, line := range res.Lines("LOG") {
		if strings.Contains(line, `"message":"uevent dropped"`) && strings.Contains(line, `"reason":"sender is not the kernel"`) {
			drops++
		}
	}
	if drops != 3 {
		t.Errorf("%d drop warnings logged, want 3", drops)
	}

	// The kmsg logger: one record per event, warnings at priority
	// daemon.warning (<28>), the totals at daemon.info (<30>).
	var kmsgDrops, kmsgTotals int
	for _, line := range res.Lines("KMSG") {
		switch {
		case strings.HasPrefix(line, "<28>") && strings.Contains(line, "uevent dropped") && strings.Contains(line, "reason=\"sender is not the kernel\""):
			kmsgDrops++
		case strings.HasPrefix(line, "<30>") && strings.Contains(line, "uevent totals") && strings.Contains(line, "rejected=3"):
			kmsgTotals++
		}
	}
	if res.Value("KMONRC") != "0" || kmsgDrops != 3 || kmsgTotals != 1 {
		t.Errorf("kmsg monitor exit %q, %d drop records (want 3), %d totals records (want 1); kmsg: %q",
			res.Value("KMONRC"), kmsgDrops, kmsgTotals, res.Lines("KMSG"))
	}
}

// writeCorpus rebuilds the raw kernel messages from monitor's JSON, whose
// properties keep the kernel's order, and stores them as the parser's
// fuzz seeds and benchmark input.
func writeCorpus(t *testing.T, res *Result) {
	var out bytes.Buffer
	for _, line := range res.Lines("EVENT") {
		raw, err := rawFromMonitorJSON([]byte(line))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintln(&out, strconv.Quote(string(raw)))
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(root, "uevent", "testdata", "kernel-uevents.txt")
	if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %d kernel messages to %s", len(res.Lines("EVENT")), path)
}

// rawFromMonitorJSON turns one monitor --json line back into the message
// the kernel sent: "ACTION@DEVPATH\0" and the properties in order.
func rawFromMonitorJSON(line []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	var action, devpath string
	var props [][2]string
	if _, err := dec.Token(); err != nil { // {
		return nil, err
	}
	for dec.More() {
		keyTok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		switch keyTok {
		case "action":
			err = dec.Decode(&action)
		case "devpath":
			err = dec.Decode(&devpath)
		case "properties":
			props, err = orderedStrings(dec)
		default:
			var skip json.RawMessage
			err = dec.Decode(&skip)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", keyTok, err)
		}
	}
	var b bytes.Buffer
	b.WriteString(action + "@" + devpath + "\x00")
	for _, p := range props {
		b.WriteString(p[0] + "=" + p[1] + "\x00")
	}
	return b.Bytes(), nil
}

func orderedStrings(dec *json.Decoder) ([][2]string, error) {
	if _, err := dec.Token(); err != nil { // {
		return nil, err
	}
	var out [][2]string
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return nil, err
		}
		var v string
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		out = append(out, [2]string{k.(string), v})
	}
	_, err := dec.Token() // }
	return out, err
}
