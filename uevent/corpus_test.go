package uevent

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
)

// kernelCorpus is a set of real uevents captured from a Debian kernel under
// qemu by the e2e suite (go test ./e2e -run TestMonitor -update-corpus):
// one Go-quoted raw message per line.
const kernelCorpus = "testdata/kernel-uevents.txt"

func loadCorpus(tb testing.TB) [][]byte {
	tb.Helper()
	f, err := os.Open(kernelCorpus)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var msgs [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for line := 1; sc.Scan(); line++ {
		s, err := strconv.Unquote(sc.Text())
		if err != nil {
			tb.Fatalf("%s:%d: %v", kernelCorpus, line, err)
		}
		msgs = append(msgs, []byte(s))
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	if len(msgs) < 10 {
		tb.Fatalf("%s: only %d messages", kernelCorpus, len(msgs))
	}
	return msgs
}

// Every captured kernel message parses without a defect.
func TestParseKernelCorpus(t *testing.T) {
	modaliases := 0
	for i, m := range loadCorpus(t) {
		ev, err := Parse(m)
		if err != nil || ev.Defects != nil {
			t.Errorf("message %d %q: %v %v", i+1, m, err, ev.Defects)
			continue
		}
		if ev.Seqnum == 0 || ev.Subsystem == "" {
			t.Errorf("message %d lacks seqnum or subsystem: %+v", i+1, ev)
		}
		if ev.Modalias != "" {
			modaliases++
		}
	}
	if modaliases == 0 {
		t.Error("corpus has no MODALIAS event")
	}
}

func FuzzParse(f *testing.F) {
	for _, m := range loadCorpus(f) {
		f.Add(m)
	}
	f.Add([]byte("libudev\x00"))
	f.Add([]byte("add@/devices/a@b\x00K=v=w\x00NOEQ\x00=x\x00SEQNUM=zz"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		ev, err := Parse(msg)
		if err != nil {
			return
		}
		if !validAction(ev.Action) || !strings.HasPrefix(ev.DevPath, "/") {
			t.Fatalf("accepted a bad header: %q@%q", ev.Action, ev.DevPath)
		}
		// What was kept is well-formed: encoding it again and parsing
		// gives the same properties and no field defects.
		var b strings.Builder
		b.WriteString(ev.Action + "@" + ev.DevPath + "\x00")
		for _, p := range ev.Props {
			if !ValidKey(p.Key) || strings.IndexByte(p.Value, 0) >= 0 {
				t.Fatalf("kept a bad property %q=%q", p.Key, p.Value)
			}
			b.WriteString(p.Key + "=" + p.Value + "\x00")
		}
		if b.Len() > MaxMessageSize {
			return
		}
		again, err := Parse([]byte(b.String()))
		if err != nil {
			t.Fatalf("re-encoded event rejected: %v", err)
		}
		if len(again.Props) != len(ev.Props) {
			t.Fatalf("re-parse kept %d of %d properties", len(again.Props), len(ev.Props))
		}
		for i := range ev.Props {
			if again.Props[i] != ev.Props[i] {
				t.Fatalf("property %d changed: %v -> %v", i, ev.Props[i], again.Props[i])
			}
		}
		for _, d := range again.Defects {
			if !strings.Contains(d.Reason, "disagrees with header") && !strings.Contains(d.Reason, "bad SEQNUM") {
				t.Fatalf("re-encoded event has defect %v", d)
			}
		}
	})
}

func BenchmarkParse(b *testing.B) {
	msgs := loadCorpus(b)
	total := 0
	for _, m := range msgs {
		total += len(m)
	}
	b.SetBytes(int64(total / len(msgs)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := Parse(msgs[i%len(msgs)]); err != nil {
			b.Fatal(err)
		}
	}
}
