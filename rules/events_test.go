package rules

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/modautoload/modautoload/internal/excerpt"
	"github.com/modautoload/modautoload/internal/problemcap"
	"github.com/modautoload/modautoload/internal/testfs"
	"github.com/modautoload/modautoload/internal/testtool"

	"github.com/modautoload/modautoload/uevent"
)

// uev builds an event the way the kernel sends it: header is
// "ACTION@DEVPATH", props are KEY=VALUE.
func uev(t testing.TB, header string, props ...string) *uevent.Event {
	t.Helper()
	action, devpath, _ := strings.Cut(header, "@")
	msg := header + "\x00ACTION=" + action + "\x00DEVPATH=" + devpath + "\x00"
	for _, p := range props {
		msg += p + "\x00"
	}
	ev, err := uevent.Parse([]byte(msg))
	if err != nil || len(ev.Defects) > 0 {
		t.Fatalf("bad test event %q: %v %v", msg, err, ev.Defects)
	}
	return &ev
}

// evRules parses content as one file named t.rules.
func evRules(content string) *EventRules {
	r := &EventRules{}
	r.parseFile("t.rules", []byte(content))
	return r
}

func loadEv(t *testing.T, opts EventRulesOptions) *EventRules {
	t.Helper()
	r, err := LoadEventRules(opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func evProblemLines(t *testing.T, r *EventRules) []string {
	t.Helper()
	var lines []string
	for _, p := range r.Problems {
		var pe *ParseError
		if !errors.As(p, &pe) {
			t.Fatalf("problem %v is not a *ParseError", p)
		}
		where := filepath.Base(pe.File)
		if pe.Line > 0 {
			where += ":" + strconv.Itoa(pe.Line)
		}
		lines = append(lines, where)
	}
	return lines
}

func sameDecision(got, want Decision) bool {
	return got.LoadModalias == want.LoadModalias && slices.Equal(got.Modules, want.Modules)
}

// Events used across the tests.
func testEvents(t testing.TB) map[string]*uevent.Event {
	return map[string]*uevent.Event{
		"usb": uev(t, "add@/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0",
			"SUBSYSTEM=usb", "DEVTYPE=usb_interface",
			"MODALIAS=usb:v046Dp0825d0010dcEFdsc02dp01ic01isc01ip00in00", "SEQNUM=10"),
		"usb-bound": uev(t, "add@/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.1",
			"SUBSYSTEM=usb", "DRIVER=snd-usb-audio", "MODALIAS=usb:v046Dp0825d0010dcEFdsc02dp01ic01isc02ip00in02"),
		"usb-remove": uev(t, "remove@/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0",
			"SUBSYSTEM=usb", "MODALIAS=usb:v046Dp0825d0010dcEFdsc02dp01ic01isc01ip00in00"),
		"usb-change": uev(t, "change@/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0",
			"SUBSYSTEM=usb", "MODALIAS=usb:v046Dp0825d0010dcEFdsc02dp01ic01isc01ip00in00"),
		"memstick": uev(t, "add@/devices/pci0000:00/0000:00:1e.0/memstick0", "SUBSYSTEM=memstick"),
		"cpu":      uev(t, "add@/devices/system/cpu/cpu0", "SUBSYSTEM=cpu", "MODALIAS=cpu:type:x86,ven0000fam0006mod003A:feature:,0000\n"),
		"module":   uev(t, "add@/module/parport_pc", "SUBSYSTEM=module", "SEQNUM=11"),
		"cciss":    uev(t, "add@/devices/pci0000:00/0000:00:03.0/cciss0/block/cciss!c0d0", "SUBSYSTEM=block"),
		"slashes":  uev(t, "add@/devices/virtual/misc/a!b!c", "SUBSYSTEM=misc"),
	}
}

func TestEventRulesGrammar(t *testing.T) {
	tests := []struct {
		name, rules, event string
		want               Decision
	}{
		{"no rules", "", "usb", Decision{LoadModalias: true}},
		{"SUBSYSTEM ==", `SUBSYSTEM=="usb", SKIP`, "usb", Decision{}},
		{"SUBSYSTEM == no match", `SUBSYSTEM=="pci", SKIP`, "usb", Decision{LoadModalias: true}},
		{"SUBSYSTEM !=", `SUBSYSTEM!="usb", SKIP`, "usb", Decision{LoadModalias: true}},
		{"SUBSYSTEM != match", `SUBSYSTEM!="pci", SKIP`, "usb", Decision{}},
		{"ACTION", `ACTION=="add", LOAD="a"`, "usb", Decision{LoadModalias: true, Modules: []string{"a"}}},
		{"ACTION no match", `ACTION=="remove", LOAD="a"`, "usb", Decision{LoadModalias: true}},
		{"DEVPATH glob", `DEVPATH=="/devices/pci*/usb1/*", LOAD="a b"`, "usb", Decision{LoadModalias: true, Modules: []string{"a", "b"}}},
		{"DEVPATH glob no match", `DEVPATH=="/devices/platform/*", LOAD="a"`, "usb", Decision{LoadModalias: true}},
		{"DRIVER", `DRIVER=="snd-usb-*", SKIP`, "usb-bound", Decision{}},
		{"DRIVER missing is empty", `DRIVER=="", LOAD="nodriver"`, "usb", Decision{LoadModalias: true, Modules: []string{"nodriver"}}},
		{"DRIVER missing is not ?*", `DRIVER=="?*", LOAD="x"`, "usb", Decision{LoadModalias: true}},
		{"DRIVER missing != ?*", `DRIVER!="?*", LOAD="x"`, "usb", Decision{LoadModalias: true, Modules: []string{"x"}}},
		{"MODALIAS glob", `MODALIAS=="usb:v046Dp0825*", SKIP`, "usb", Decision{}},
		{"MODALIAS bracket", `MODALIAS=="usb:v[0-9]46D*", SKIP`, "usb", Decision{}},
		{"MODALIAS question mark", `MODALIAS=="usb:v046?p0825*", SKIP`, "usb", Decision{}},
		{"MODALIAS trimmed", `MODALIAS=="cpu:*,0000", LOAD="trimmed"`, "cpu", Decision{LoadModalias: true, Modules: []string{"trimmed"}}},
		{"ENV{MODALIAS} raw", `ENV{MODALIAS}=="cpu:*,0000", LOAD="raw"`, "cpu", Decision{LoadModalias: true}},
		{"ENV{MODALIAS} raw glob", `ENV{MODALIAS}=="cpu:*,0000?", LOAD="raw"`, "cpu", Decision{LoadModalias: true, Modules: []string{"raw"}}},
		{"ENV", `ENV{DEVTYPE}=="usb_interface", LOAD="x"`, "usb", Decision{LoadModalias: true, Modules: []string{"x"}}},
		{"ENV !=", `ENV{DEVTYPE}!="usb_device", LOAD="x"`, "usb", Decision{LoadModalias: true, Modules: []string{"x"}}},
		{"ENV SEQNUM", `ENV{SEQNUM}=="10", SKIP`, "usb", Decision{}},
		{"ENV missing ==\"\"", `ENV{NOPE}=="", LOAD="x"`, "usb", Decision{LoadModalias: true, Modules: []string{"x"}}},
		{"ENV missing ==?*", `ENV{NOPE}=="?*", LOAD="x"`, "usb", Decision{LoadModalias: true}},
		{"ENV missing !=?*", `ENV{NOPE}!="?*", LOAD="x"`, "usb", Decision{LoadModalias: true, Modules: []string{"x"}}},
		{"ENV present ==?*", `ENV{DEVTYPE}=="?*", LOAD="x"`, "usb", Decision{LoadModalias: true, Modules: []string{"x"}}},
		{"ENV present !=?*", `ENV{DEVTYPE}!="?*", LOAD="x"`, "usb", Decision{LoadModalias: true}},
		{"all clauses must match", `SUBSYSTEM=="usb", ENV{DEVTYPE}=="usb_device", SKIP`, "usb", Decision{LoadModalias: true}},
		{"same key twice", `SUBSYSTEM=="u*", SUBSYSTEM!="usb_*", SKIP`, "usb", Decision{}},
		{"pipe is literal", `SUBSYSTEM=="usb|pci", SKIP`, "usb", Decision{LoadModalias: true}},
		{"no match clause", `SKIP`, "usb", Decision{}},
		{"blanks everywhere", " \t SUBSYSTEM == \"usb\" ,LOAD= \"a\"\t, SKIP ", "usb", Decision{Modules: []string{"a"}}},
		{"tabs in LOAD", "LOAD=\"a\tb  c\"", "usb", Decision{LoadModalias: true, Modules: []string{"a", "b", "c"}}},
		{"value with comma and glob chars", `ENV{DEVTYPE}!="a,b=c", LOAD="x"`, "usb", Decision{LoadModalias: true, Modules: []string{"x"}}},
		{"continuation", "SUBSYSTEM==\"usb\", \\\n   LOAD=\"a \\\n\t b\"", "usb", Decision{LoadModalias: true, Modules: []string{"a", "b"}}},
		{"continuation joins without blank", "SUBSYSTEM==\"us\\\nb\", SKIP", "usb", Decision{}},
		{"comment inside continuation", "SUBSYSTEM==\"usb\", \\\n# a comment \\\n  LOAD=\"a\"", "usb", Decision{LoadModalias: true, Modules: []string{"a"}}},
		{"blank line ends continuation", "SUBSYSTEM==\"usb\", SKIP \\\n\nLOAD=\"b\"", "usb", Decision{Modules: []string{"b"}}},
		{"comments and blanks", "# SKIP\n   # SKIP\n\n \t \nLOAD=\"a\"\n#LOAD=\"b\"\n", "usb", Decision{LoadModalias: true, Modules: []string{"a"}}},
		{"CRLF", "SUBSYSTEM==\"usb\", LOAD=\"a\"\r\nSKIP \\\r\n, LOAD=\"b\"\r\n", "usb", Decision{Modules: []string{"a", "b"}}},
		{"LOAD without MODALIAS", `SUBSYSTEM=="memstick", LOAD="ms_block mspro_block"`, "memstick", Decision{Modules: []string{"ms_block", "mspro_block"}}},
		{"LOAD_MODALIAS without MODALIAS", `LOAD_MODALIAS`, "memstick", Decision{}},
		{"LOAD_MODALIAS on change", `ACTION=="change", LOAD_MODALIAS`, "usb-change", Decision{LoadModalias: true}},
		{"LOAD_MODALIAS on remove", `LOAD_MODALIAS`, "usb-remove", Decision{LoadModalias: true}},
		{"remove does nothing by default", "", "usb-remove", Decision{}},
		{"change does nothing by default", "", "usb-change", Decision{}},
		{"LOAD on remove", `ACTION=="remove", LOAD="a"`, "usb-remove", Decision{Modules: []string{"a"}}},
		{"accumulate in order, each once", "LOAD=\"a b\"\nLOAD=\"c b\"\nSUBSYSTEM==\"usb\", LOAD=\"a d\", LOAD=\"e\"", "usb",
			Decision{LoadModalias: true, Modules: []string{"a", "b", "c", "d", "e"}}},
		{"last SKIP wins", "LOAD_MODALIAS\nSKIP", "usb", Decision{}},
		{"last LOAD_MODALIAS wins", "SKIP\nSUBSYSTEM==\"usb\", LOAD_MODALIAS", "usb", Decision{LoadModalias: true}},
		{"later non-matching rule changes nothing", "SKIP\nSUBSYSTEM==\"pci\", LOAD_MODALIAS", "usb", Decision{}},
		{"within a rule, in order", "SKIP, LOAD_MODALIAS", "usb", Decision{LoadModalias: true}},
		{"within a rule, reversed", "LOAD_MODALIAS, SKIP", "usb", Decision{}},
		{"ALLOW does not change decisions", "ALLOW=\"nothing\"", "usb", Decision{LoadModalias: true}},
		{"KERNEL is the devpath's last component", `KERNEL=="1-1:1.?", LOAD="x"`, "usb", Decision{LoadModalias: true, Modules: []string{"x"}}},
		{"KERNEL no match", `KERNEL=="1-1", LOAD="x"`, "usb", Decision{LoadModalias: true}},
		{"KERNEL reads ! as /", `KERNEL=="cciss/c0d0", LOAD="x"`, "cciss", Decision{Modules: []string{"x"}}},
		{"KERNEL reads every ! as /", `KERNEL=="a/b/c", LOAD="x"`, "slashes", Decision{Modules: []string{"x"}}},
		{"KERNEL of a module event", `ACTION=="add", SUBSYSTEM=="module", KERNEL=="parport_pc", LOAD="ppdev"`, "module", Decision{Modules: []string{"ppdev"}}},
		{"KERNEL of another module", `SUBSYSTEM=="module", KERNEL=="parport_serial", LOAD="ppdev"`, "module", Decision{}},
		{"DEVPATH of a module event", `SUBSYSTEM=="module", DEVPATH=="/module/parport_*", LOAD="ppdev"`, "module", Decision{Modules: []string{"ppdev"}}},
		{"a rule without SUBSYSTEM sees module events", `ACTION=="add", LOAD="x"`, "module", Decision{Modules: []string{"x"}}},
		{"a module event has no MODALIAS to load", `LOAD_MODALIAS`, "module", Decision{}},
	}
	events := testEvents(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := evRules(tt.rules)
			if len(r.Problems) > 0 {
				t.Fatalf("problems: %v", r.Problems)
			}
			if got := r.Decide(events[tt.event]); !sameDecision(got, tt.want) {
				t.Errorf("%s\non %s: got %+v, want %+v", tt.rules, tt.event, got, tt.want)
			}
		})
	}
}

// LoadsOnModuleEvent is Decide's answer, "loads something", for every
// rule set that can load on a module event, while trying only those rules.
func TestEventRulesLoadsOnModuleEvent(t *testing.T) {
	events := testEvents(t)
	removed := uev(t, "remove@/module/parport_pc", "SUBSYSTEM=module")
	other := uev(t, "add@/module/snd", "SUBSYSTEM=module")
	tests := []struct {
		rules      string
		candidates int    // rules tried on a module event
		loads      string // the events that load: p for add@/module/parport_pc, r for its remove, s for add@/module/snd
	}{
		{"", 0, ""},
		{`ACTION=="add", SUBSYSTEM=="module", KERNEL=="parport_pc", LOAD="ppdev"`, 1, "p"},
		{`SUBSYSTEM=="mod*", DEVPATH=="/module/parport_pc", LOAD="ppdev"`, 1, "pr"},
		{`ACTION=="remove", SUBSYSTEM=="module", LOAD="x"`, 1, "r"},
		{`SUBSYSTEM!="pci", KERNEL=="snd", LOAD="x"`, 1, "s"},
		{`ACTION=="add", LOAD="x"`, 1, "ps"},
		{`ENV{SUBSYSTEM}=="pci", LOAD="x"`, 1, ""},
		// Never tried: they cannot load on a module event.
		{`SUBSYSTEM=="module", SKIP`, 0, ""},
		{`SUBSYSTEM=="module", LOAD_MODALIAS`, 0, ""},
		{`SUBSYSTEM=="pci", LOAD="x"`, 0, ""},
		{`SUBSYSTEM!="module", LOAD="x"`, 0, ""},
		{`SUBSYSTEM=="module", SUBSYSTEM!="m*", LOAD="x"`, 0, ""},
		{"SUBSYSTEM==\"memstick\", LOAD=\"a\"\nSUBSYSTEM==\"module\", KERNEL==\"snd\", LOAD=\"b\"\nSKIP", 1, "s"},
	}
	for _, tt := range tests {
		r := evRules(tt.rules)
		if len(r.Problems) > 0 {
			t.Fatalf("%s: %v", tt.rules, r.Problems)
		}
		if len(r.moduleRules) != tt.candidates || r.HasModuleEventRules() != (tt.candidates > 0) {
			t.Errorf("%s: %d rules tried on module events (HasModuleEventRules %v), want %d",
				tt.rules, len(r.moduleRules), r.HasModuleEventRules(), tt.candidates)
		}
		for i, ev := range []*uevent.Event{events["module"], removed, other} {
			want := strings.IndexByte(tt.loads, "prs"[i]) >= 0
			if got := r.LoadsOnModuleEvent(ev); got != want {
				t.Errorf("%s\non %s@%s: LoadsOnModuleEvent %v, want %v", tt.rules, ev.Action, ev.DevPath, got, want)
			}
			if d := r.Decide(ev); (len(d.Modules) > 0) != want {
				t.Errorf("%s\non %s@%s: Decide %+v disagrees", tt.rules, ev.Action, ev.DevPath, d)
			}
		}
	}
	var none *EventRules
	if none.LoadsOnModuleEvent(events["module"]) || none.HasModuleEventRules() || evRules(`LOAD="x"`).LoadsOnModuleEvent(nil) {
		t.Error("nil rules or a nil event load something")
	}
}

func TestEventRulesDecideRules(t *testing.T) {
	r := evRules("SKIP\n\nSUBSYSTEM==\"pci\", LOAD=\"x\"\nSUBSYSTEM==\"usb\", \\\n LOAD=\"y\"\n")
	got := r.Decide(testEvents(t)["usb"])
	if want := []string{"t.rules:1", "t.rules:4"}; !slices.Equal(got.Rules, want) {
		t.Errorf("rules %q, want %q", got.Rules, want)
	}
}

func TestEventRulesNilAndEmpty(t *testing.T) {
	events := testEvents(t)
	for name, r := range map[string]*EventRules{"nil": nil, "empty": evRules("")} {
		for _, tt := range []struct {
			event string
			want  bool
		}{{"usb", true}, {"cpu", true}, {"memstick", false}, {"usb-remove", false}, {"usb-change", false}} {
			if got := r.Decide(events[tt.event]); got.LoadModalias != tt.want || got.Modules != nil || got.Rules != nil {
				t.Errorf("%s rules, %s: %+v", name, tt.event, got)
			}
		}
		if r.AllowListed() || !r.Allowed("anything") || !r.Allowed("") {
			t.Errorf("%s rules restrict modules", name)
		}
		if d := r.Decide(nil); d.LoadModalias || d.Modules != nil {
			t.Errorf("%s rules, nil event: %+v", name, d)
		}
	}
}

func TestEventRulesErrors(t *testing.T) {
	tests := []struct{ line, msg string }{
		{`FOO=="x", SKIP`, `unknown key "FOO"`},
		{`ATTR{idVendor}=="046d", SKIP`, `unknown key "ATTR"`},
		{`subsystem=="usb", SKIP`, `unknown key "subsystem" (keys are upper case)`},
		{`SUBSYSTEM=="usb", REBOOT`, `unknown key "REBOOT"`},
		{`SUBSYSTEM=="usb", skip`, `unknown key "skip" (keys are upper case)`},
		{`SUBSYSTEM=="usb", RUN+="/bin/sh"`, `unknown key "RUN"`},
		{`SUBSYSTEM="usb", SKIP`, `SUBSYSTEM=: use == to match or != to exclude`},
		{`SUBSYSTEM+="usb", SKIP`, `SUBSYSTEM: operator "+=" not supported`},
		{`SUBSYSTEM:="usb", SKIP`, `operator ":=" not supported`},
		{`SUBSYSTEM==="usb", SKIP`, `operator "===" not supported`},
		{`SUBSYSTEM, SKIP`, `SUBSYSTEM: want =="glob" or !="glob"`},
		{`LOAD+="a"`, `LOAD: operator "+=" not supported (use =)`},
		{`LOAD=="a"`, `LOAD: operator "==" not supported (use =)`},
		{`LOAD`, `LOAD: want LOAD="NAME ..."`},
		{`LOAD=""`, `LOAD with no module`},
		{"LOAD=\" \t \"", `LOAD with no module`},
		{`SKIP="yes"`, `SKIP takes no value`},
		{`LOAD_MODALIAS=="x"`, `LOAD_MODALIAS takes no value`},
		{`SUBSYSTEM=="usb, SKIP`, `SUBSYSTEM==: unterminated quote`},
		{`LOAD="a`, `LOAD=: unterminated quote`},
		{`SUBSYSTEM==usb, SKIP`, `SUBSYSTEM==: the value must be in double quotes`},
		{`SUBSYSTEM=='usb', SKIP`, `the value must be in double quotes`},
		{`SUBSYSTEM==`, `the value must be in double quotes`},
		{`SUBSYSTEM=="usb"`, `rule has no action`},
		{`ENV{X}=="1", ACTION=="add"`, `rule has no action`},
		{`SUBSYSTEM=="usb",`, `empty clause after ','`},
		{`SUBSYSTEM=="usb", , SKIP`, `empty clause`},
		{`, SKIP`, `empty clause`},
		{`SUBSYSTEM=="usb" SKIP`, `unexpected 'S' after SUBSYSTEM; clauses are separated by ','`},
		{`SUBSYSTEM=="usb", SKIP # no trailing comments`, `unexpected '#' after SKIP`},
		{`SUBSYSTEM=="usb"; SKIP`, `unexpected ';'`},
		{`=="usb", SKIP`, `unexpected '=' where a key should be`},
		{`"usb", SKIP`, `unexpected '"' where a key should be`},
		{`ENV{DEVTYPE=="x", SKIP`, `ENV{ without }`},
		{`ENV{DEVTYPE`, `ENV{ without }`},
		{`ENV=="x", SKIP`, `ENV needs {NAME}`},
		{`ENV{}=="x", SKIP`, `ENV{}: bad property name`},
		{`ENV{A-B}=="x", SKIP`, `ENV{A-B}: bad property name`},
		{`ENV{A B}=="x", SKIP`, `bad property name`},
		{`SUBSYSTEM{x}=="usb", SKIP`, `SUBSYSTEM takes no {NAME}`},
		{`SKIP{x}`, `SKIP takes no {NAME}`},
		{`FOO{x}=="y", SKIP`, `unknown key "FOO"`},
		{"SUBSYSTEM==\"u\x01sb\", SKIP", `control character '\x01' in the value`},
		{"SUBSYSTEM==\"u\x00sb\", SKIP", `control character '\x00' in the value`},
		{"SUBSYSTEM==\"u\x7fsb\", SKIP", `control character '\x7f' in the value`},
		{"SUBSYSTEM==\"usb\"\x00, SKIP", `unexpected '\x00'`},
		{"SUBSYSTEM==\"usb\",\rSKIP", `unexpected '\r'`},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			// The bad line sits between two good ones, after a
			// comment, so its number is 3.
			r := evRules("LOAD=\"before\"\n# comment\n" + tt.line + "\nLOAD=\"after\"\n")
			if len(r.Problems) != 1 {
				t.Fatalf("problems: %v", r.Problems)
			}
			var pe *ParseError
			if !errors.As(r.Problems[0], &pe) || pe.File != "t.rules" || pe.Line != 3 {
				t.Fatalf("problem %#v is not at t.rules:3", r.Problems[0])
			}
			if msg := pe.Error(); !strings.HasPrefix(msg, "t.rules:3: ") || !strings.Contains(msg, tt.msg) {
				t.Errorf("got %q, want %q", msg, tt.msg)
			}
			got := r.Decide(testEvents(t)["usb"])
			if !sameDecision(got, Decision{LoadModalias: true, Modules: []string{"before", "after"}}) {
				t.Errorf("the rest of the file does not apply: %+v", got)
			}
			if r.AllowListed() {
				t.Error("a bad rule that does not name ALLOW turned allow-list mode on")
			}
		})
	}
}

func TestEventRulesErrorLines(t *testing.T) {
	r := evRules(strings.Join([]string{
		`LOAD="ok"`,               // 1
		`SUBSYSTEM=="usb", \`,     // 2: continued, bad
		`  BAD`,                   // 3
		`# comment`,               // 4
		`ACTION=="add", \`,        // 5: continued over a comment, bad
		`# comment \`,             // 6
		`  LOAD=""`,               // 7
		``,                        // 8
		`ACTION=="add", LOAD="b"`, // 9
		`NOPE`,                    // 10
		`LOAD="c" \`,              // 11: continues no line
	}, "\n"))
	want := []string{"t.rules:2", "t.rules:5", "t.rules:10", "t.rules:11"}
	if got := evProblemLines(t, r); !slices.Equal(got, want) {
		t.Errorf("problems at %q, want %q: %v", got, want, r.Problems)
	}
	if !strings.Contains(r.Problems[3].Error(), "backslash at the end of the file") {
		t.Errorf("got %v", r.Problems[3])
	}
	if got := r.Decide(testEvents(t)["usb"]); !slices.Equal(got.Modules, []string{"ok", "b"}) {
		t.Errorf("modules %q", got.Modules)
	}
}

func TestEventRulesAllowList(t *testing.T) {
	r := evRules("ALLOW=\"snd-* e1000e\"\nLOAD=\"x\"\n  ALLOW = \"usb_storage \\\n   x-[a-c]\"\n")
	if len(r.Problems) > 0 {
		t.Fatal(r.Problems)
	}
	if !r.AllowListed() {
		t.Fatal("not allow-listed")
	}
	if want := []string{"snd_*", "e1000e", "usb_storage", "x_[a-c]"}; !slices.Equal(r.Allow, want) {
		t.Errorf("Allow %q, want %q", r.Allow, want)
	}
	for m, want := range map[string]bool{
		"snd_hda_intel": true, "snd-hda-intel": true, "snd": false, "e1000e": true, "e1000": false,
		"usb_storage": true, "usb-storage": true, "usbstorage": false, "x_b": true, "x-c": true, "x_d": false,
		"floppy": false, "": false, "x": false,
	} {
		if got := r.Allowed(m); got != want {
			t.Errorf("Allowed(%q) = %v, want %v", m, got, want)
		}
	}
	// An empty name is no module, whatever the patterns.
	if all := evRules(`ALLOW="*"`); !all.Allowed("snd") || all.Allowed("") {
		t.Errorf(`ALLOW="*": Allowed("snd") %v, Allowed("") %v; want true, false`, all.Allowed("snd"), all.Allowed(""))
	}
}

func TestEventRulesAllowListFailsClosed(t *testing.T) {
	// Each of these is skipped with a problem, turns allow-list mode on,
	// and allows nothing by itself.
	bad := []string{
		`ALLOW=""`,
		`ALLOW="   "`,
		`ALLOW="good bad-[x"`,
		`ALLOW="good bad]"`,
		`ALLOW+="good"`,
		`ALLOW=="good"`,
		`ALLOW:="good"`,
		`ALLOW="good`,
		`ALLOW=good`,
		`ALLOW good`,
		`ALLOW`,
		`ALLOW{x}="good"`,
		`allow="good"`,
		`Allow = "good"`,
		`ALLOWED="good"`,
		`ALLOW_LIST="good"`,
		`ALLOW="good", SKIP`,
		`SUBSYSTEM=="usb", ALLOW="good"`,
		`SUBSYSTEM=="usb" ALLOW="good"`,
		`SUBSYSTEM=="usb",  ALLOW "good"`,
		`LOAD="x" allow="good"`,
		"ALLOW=\"good\x01\"",
		"ALLOW=\"good\"\x00",
		"ALLOW=\"good\" \\", // continues no line
		"ALLOW=\"good \\\n" + strings.Repeat("m ", MaxEventRuleLine) + "\"",
	}
	for _, line := range bad {
		t.Run(excerpt.Of(line), func(t *testing.T) {
			r := evRules(line)
			if len(r.Problems) != 1 || !strings.HasSuffix(r.Problems[0].Error(), "(allow-list mode on)") {
				t.Errorf("problems: %v", r.Problems)
			}
			if !r.AllowListed() || r.Allowed("good") || r.Allowed("m") || len(r.Allow) != 0 {
				t.Errorf("allow-list mode %v, Allow %q", r.AllowListed(), r.Allow)
			}
			// Beside a valid ALLOW line, it adds nothing.
			r = evRules("ALLOW=\"other\"\n" + line)
			if !r.AllowListed() || r.Allowed("good") || !r.Allowed("other") {
				t.Errorf("with a valid line: Allow %q", r.Allow)
			}
		})
	}
}

func TestEventRulesAllowListNotNamed(t *testing.T) {
	// Bad lines that do not name ALLOW leave allow-list mode off.
	for _, line := range []string{
		`SUBSYSTEM=="usb", SKIP # we allow nothing here`,
		`DEVPATH=="*/allow*", LAOD="x"`,
		`DEVPATH=="*/shallow", LAOD="x"`,
		`ENV{ALLOW}=="1", LAOD="x"`,
		`ENV{X}=="$allow", LAOD="x"`,
		`LAOD="$allow=x"`,
		`SUBSYSTEM=="usb", LOAD="a" disallow`,
		`LOAD="allowance" x`,
	} {
		r := evRules(line)
		if len(r.Problems) != 1 {
			t.Errorf("%s: problems %v", line, r.Problems)
		}
		if r.AllowListed() {
			t.Errorf("%s: allow-list mode on", line)
		}
	}
}

func TestEventRulesFiles(t *testing.T) {
	root := t.TempDir()
	const d = "modautoload/rules.d/"
	testfs.WriteFiles(t, root, map[string]string{
		"usr/lib/" + d + "50-x.rules":      `LOAD="from_usr_lib"`,
		"etc/" + d + "50-x.rules":          `LOAD="from_etc"`,
		"run/" + d + "50-x.rules":          `LOAD="from_run"`,
		"run/" + d + "10-run.rules":        `LOAD="run"`,
		"usr/lib/" + d + "90-masked.rules": `LOAD="masked"`,
		"etc/" + d + "90-masked.rules":     "->/dev/null",
		"usr/lib/" + d + "20-empty.rules":  `LOAD="shadowed_by_empty"`,
		"run/" + d + "20-empty.rules":      "",
		"usr/lib/" + d + "30-usr.rules":    `LOAD="usr_lib"`,
		"etc/" + d + ".hidden.rules":       `LOAD="hidden"`,
		"etc/" + d + "60-x.rules.bak":      `LOAD="bak"`,
		"etc/" + d + "README":              "not rules",
		"etc/" + d + ".rules":              `LOAD="dotrules"`,
		"etc/modprobe.d/x.rules":           `LOAD="elsewhere"`,
	})
	r := loadEv(t, EventRulesOptions{Root: root})
	if len(r.Problems) > 0 {
		t.Fatal(r.Problems)
	}
	got := r.Decide(testEvents(t)["memstick"])
	if want := []string{"run", "usr_lib", "from_etc"}; !slices.Equal(got.Modules, want) {
		t.Errorf("modules %q, want %q", got.Modules, want)
	}
	var files []string
	for _, f := range r.Files {
		rel, _ := filepath.Rel(root, f)
		files = append(files, rel)
	}
	wantFiles := []string{
		"run/" + d + "10-run.rules",
		"run/" + d + "20-empty.rules",
		"usr/lib/" + d + "30-usr.rules",
		"etc/" + d + "50-x.rules",
		"etc/" + d + "90-masked.rules",
	}
	if !slices.Equal(files, wantFiles) {
		t.Errorf("files %q, want %q", files, wantFiles)
	}
}

func TestEventRulesDefaultDirs(t *testing.T) {
	want := []string{"/etc/modautoload/rules.d", "/run/modautoload/rules.d", "/usr/lib/modautoload/rules.d"}
	if got := DefaultEventRuleDirs(); !slices.Equal(got, want) {
		t.Errorf("got %q", got)
	}
	// No directory at all, or a file where a directory would be: the
	// defaults, no problem.
	root := t.TempDir()
	testfs.WriteFiles(t, root, map[string]string{"run/modautoload": "a file"})
	r := loadEv(t, EventRulesOptions{Root: root})
	if len(r.Problems) > 0 || len(r.Files) > 0 || r.AllowListed() {
		t.Errorf("%+v", r)
	}
	if d := r.Decide(testEvents(t)["usb"]); !d.LoadModalias {
		t.Error("default decision lost")
	}
}

func TestEventRulesPaths(t *testing.T) {
	top := t.TempDir()
	testfs.WriteFiles(t, top, map[string]string{
		"a/10-a.rules":       `LOAD="a"`,
		"a/30-b.rules":       `LOAD="shadows_single"`,
		"single/30-b.rules":  `LOAD="single_shadowed"`,
		"single/40-any.name": `LOAD="any_name"`,
		"single/05-bad.txt":  "BAD\nLOAD=\"after_bad\"\n",
	})
	r := loadEv(t, EventRulesOptions{
		Root: "/nonexistent", // does not apply to Paths
		Paths: []string{
			filepath.Join(top, "a"),
			filepath.Join(top, "single/30-b.rules"),
			filepath.Join(top, "single/40-any.name"),
			filepath.Join(top, "single/05-bad.txt"),
			filepath.Join(top, "missing"),
			os.DevNull,
		},
	})
	got := r.Decide(testEvents(t)["memstick"])
	if want := []string{"after_bad", "a", "shadows_single", "any_name"}; !slices.Equal(got.Modules, want) {
		t.Errorf("modules %q, want %q", got.Modules, want)
	}
	// A missing path is reported; it changes nothing else.
	if got, want := evProblemLines(t, r), []string{"missing", "05-bad.txt:1"}; !slices.Equal(got, want) {
		t.Errorf("problems at %q, want %q: %v", got, want, r.Problems)
	}
	if r.AllowListed() {
		t.Error("allow-list mode on")
	}
}

// An unreadable rule file is reported and shadows its namesake, but does
// not stop the defaults: the issue's "a bad rule file never stops the
// daemon from loading what the defaults allow".
func TestEventRulesUnreadableIsReported(t *testing.T) {
	// Each case puts something unreadable at a/40-x.rules, which shadows
	// b/40-x.rules.
	tests := []struct {
		name string
		make func(t *testing.T, path string) error
		msg  string
	}{
		{"dangling symlink", func(t *testing.T, p string) error { return os.Symlink("nowhere", p) }, "cannot stat"},
		{"symlink loop", func(t *testing.T, p string) error { return os.Symlink(p, p) }, "cannot stat"},
		{"directory", func(t *testing.T, p string) error { return os.Mkdir(p, 0o755) }, "not a regular file"},
		{"fifo", func(t *testing.T, p string) error {
			if err := syscall.Mkfifo(p, 0o644); err != nil {
				testtool.Missing(t, "mkfifo: %v", err)
			}
			return nil
		}, "not a regular file"},
		{"too large", func(t *testing.T, p string) error {
			if err := os.WriteFile(p, nil, 0o644); err != nil {
				return err
			}
			return os.Truncate(p, MaxEventRuleFileSize+1) // sparse
		}, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			top := t.TempDir()
			testfs.WriteFiles(t, top, map[string]string{
				"a/10-ok.rules": "LOAD=\"ok\"\n",
				"b/40-x.rules":  "ALLOW=\"*\"\n",
			})
			if err := tt.make(t, filepath.Join(top, "a/40-x.rules")); err != nil {
				t.Fatal(err)
			}
			r := loadEv(t, EventRulesOptions{Paths: []string{filepath.Join(top, "a"), filepath.Join(top, "b")}})
			if len(r.Problems) != 1 || !strings.Contains(r.Problems[0].Error(), tt.msg) ||
				strings.HasSuffix(r.Problems[0].Error(), "(allow-list mode on)") {
				t.Fatalf("problems: %v", r.Problems)
			}
			// b/40-x.rules (ALLOW="*") stays shadowed: not read.
			if r.AllowListed() {
				t.Errorf("an unreadable file turned allow-list mode on: Allow %q", r.Allow)
			}
			if d := r.Decide(testEvents(t)["usb"]); !sameDecision(d, Decision{LoadModalias: true, Modules: []string{"ok"}}) {
				t.Errorf("decision %+v", d)
			}
		})
	}
}

func TestEventRulesLongLine(t *testing.T) {
	long := `LOAD="` + strings.Repeat("m ", MaxEventRuleLine/2) + `"`
	r := evRules("LOAD=\"a\"\n" + long + "\nLOAD=\"b\"\n")
	if got := evProblemLines(t, r); !slices.Equal(got, []string{"t.rules:2"}) {
		t.Fatalf("problems %v", r.Problems)
	}
	if !strings.Contains(r.Problems[0].Error(), "line longer than") || r.AllowListed() {
		t.Errorf("%v, allow-listed %v", r.Problems[0], r.AllowListed())
	}
	if d := r.Decide(testEvents(t)["memstick"]); !slices.Equal(d.Modules, []string{"a", "b"}) {
		t.Errorf("modules %q", d.Modules)
	}
	// Long through continuations, counted from the first line.
	half := `LOAD="` + strings.Repeat("m", MaxEventRuleLine/2) + " \\\n"
	r = evRules("\n" + half + half + `x"` + "\nLOAD=\"b\"")
	if got := evProblemLines(t, r); !slices.Equal(got, []string{"t.rules:2"}) {
		t.Errorf("problems %v", r.Problems)
	}
	// Exactly at the limit is fine.
	exact := `LOAD="` + strings.Repeat("m", MaxEventRuleLine-7) + `"`
	if r := evRules(exact); len(exact) != MaxEventRuleLine || len(r.Problems) != 0 {
		t.Errorf("len %d: %v", len(exact), r.Problems)
	}
}

func TestEventRulesRuleLimit(t *testing.T) {
	var b strings.Builder
	for range MaxEventRulesPerFile {
		b.WriteString("LOAD=\"m\"\n")
	}
	b.WriteString("SKIP\nBAD\nALLOW=\"late\"\nLOAD=\"n\"\n")
	r := evRules(b.String())
	if len(r.rules) != MaxEventRulesPerFile {
		t.Errorf("%d rules kept", len(r.rules))
	}
	n := MaxEventRulesPerFile
	want := []string{fmt.Sprintf("t.rules:%d", n+1), fmt.Sprintf("t.rules:%d", n+3)}
	if got := evProblemLines(t, r); !slices.Equal(got, want) {
		t.Errorf("problems at %q, want %q: %v", got, want, r.Problems)
	}
	if !r.AllowListed() || r.Allowed("late") {
		t.Errorf("ALLOW beyond the limit: allow-listed %v, Allow %q", r.AllowListed(), r.Allow)
	}
	if d := r.Decide(testEvents(t)["usb"]); !d.LoadModalias || !slices.Equal(d.Modules, []string{"m"}) {
		t.Errorf("decision %+v", d)
	}

	// ALLOW lines count towards the limit like rules.
	b.Reset()
	for range MaxEventRulesPerFile - 1 {
		b.WriteString("LOAD=\"m\"\n")
	}
	b.WriteString("ALLOW=\"m\"\nLOAD=\"n\"\n")
	r = evRules(b.String())
	if got, want := evProblemLines(t, r), []string{fmt.Sprintf("t.rules:%d", n+1)}; !slices.Equal(got, want) {
		t.Errorf("with an ALLOW line: problems at %q, want %q: %v", got, want, r.Problems)
	}
	if d := r.Decide(testEvents(t)["usb"]); !slices.Equal(d.Modules, []string{"m"}) {
		t.Errorf("with an ALLOW line: modules %q, want the rule past the limit ignored", d.Modules)
	}
}

func TestEventRulesProblemLimit(t *testing.T) {
	r := evRules(strings.Repeat("BAD\n", 1000) + "ALLOW=\"\"\nLOAD=\"ok\"\n")
	if len(r.Problems) != problemcap.PerFile+1 {
		t.Fatalf("%d problems, want %d", len(r.Problems), problemcap.PerFile+1)
	}
	// The ALLOW line is the 1001st problem.
	want := fmt.Sprintf("t.rules:%d: %d further problems from here on are not reported", problemcap.PerFile+1, 1001-problemcap.PerFile)
	if got := r.Problems[problemcap.PerFile].Error(); got != want {
		t.Errorf("last problem %q, want %q", got, want)
	}
	// Unreported problems still fail closed.
	if !r.AllowListed() {
		t.Error("a bad ALLOW line past the problem limit was ignored")
	}
	if d := r.Decide(testEvents(t)["memstick"]); !slices.Equal(d.Modules, []string{"ok"}) {
		t.Errorf("modules %q", d.Modules)
	}
}

// The examples in testdata/events: udev's 80-drivers.rules and a lockdown.
func TestEventRulesTestdata(t *testing.T) {
	r := loadEv(t, EventRulesOptions{Paths: []string{"testdata/events"}})
	if len(r.Problems) > 0 {
		t.Fatal(r.Problems)
	}
	tests := []struct {
		ev   *uevent.Event
		want Decision
	}{
		{uev(t, "add@/devices/pci0000:00/0000:00:1e.0/tifm0/tifm0:0", "SUBSYSTEM=tifm", "TIFM_CARD_TYPE=SD"),
			Decision{Modules: []string{"tifm_sd"}}},
		{uev(t, "add@/devices/pci0000:00/0000:00:1e.0/memstick0", "SUBSYSTEM=memstick"),
			Decision{Modules: []string{"ms_block", "mspro_block"}}},
		{uev(t, "add@/module/parport_pc", "SUBSYSTEM=module"), Decision{Modules: []string{"ppdev"}}},
		{uev(t, "add@/devices/virtual/mtd/mtd0/mtd0ro", "SUBSYSTEM=mtd", "MTD_FTL=smartmedia"),
			Decision{Modules: []string{"sm_ftl"}}},
		{uev(t, "remove@/devices/pci0000:00/0000:00:1e.0/memstick0", "SUBSYSTEM=memstick"), Decision{}},
		{uev(t, "add@/devices/pci0000:00/0000:00:1f.3", "SUBSYSTEM=pci", "MODALIAS=pci:v00008086d0000A0C8sv00001028sd00000A2Abc04sc03i00"),
			Decision{}},
		{uev(t, "add@/devices/pci0000:00/0000:00:1f.6", "SUBSYSTEM=pci", "MODALIAS=pci:v00008086d000015D7sv000017AAsd0000225Abc02sc00i00"),
			Decision{LoadModalias: true}},
		{uev(t, "change@/devices/pci0000:00/0000:00:1c.0/0000:02:00.0", "SUBSYSTEM=pci", "PCI_SLOT_NAME=0000:02:00.0", "MODALIAS=pci:v000010ECd00008168sv0sd0bc02sc00i00"),
			Decision{LoadModalias: true}},
	}
	for _, tt := range tests {
		if got := r.Decide(tt.ev); !sameDecision(got, tt.want) {
			t.Errorf("%s@%s: got %+v, want %+v", tt.ev.Action, tt.ev.DevPath, got, tt.want)
		}
	}
	for m, want := range map[string]bool{"usbhid": true, "hid_generic": true, "usb_storage": true, "snd_hda_intel": true, "r8169": false, "ppdev": false} {
		if r.Allowed(m) != want {
			t.Errorf("Allowed(%q) != %v", m, want)
		}
	}
}

func TestEventRulesConcurrent(t *testing.T) {
	r := evRules("ALLOW=\"snd_*\"\nSUBSYSTEM==\"usb\", LOAD=\"a b\"\nENV{DEVTYPE}==\"?*\", SKIP\n")
	events := testEvents(t)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				if d := r.Decide(events["usb"]); d.LoadModalias || !slices.Equal(d.Modules, []string{"a", "b"}) {
					t.Errorf("decision %+v", d)
					return
				}
				if !r.Allowed("snd_x") || r.Allowed("e1000e") {
					t.Error("Allowed")
					return
				}
			}
		}()
	}
	wg.Wait()
}

func FuzzEventRules(f *testing.F) {
	f.Add([]byte(""), "")
	f.Add([]byte("SUBSYSTEM==\"usb\", ENV{DEVTYPE}!=\"?*\", LOAD=\"a b\", SKIP\n# c\nLOAD_MODALIAS\n"), `a b"`)
	f.Add([]byte("ALLOW=\"snd-[a-c]* e1000e\"\nACTION==\"add\", \\\n  DEVPATH==\"/devices/*\", LOAD=\"x\"\r\n"), `snd_*`)
	f.Add([]byte("ENV{X=\"\",,SKIP \\"), `"`)
	f.Add([]byte("LOAD=\"x\" \\\nALLOW\x00=\"y\""), "good bad-[")
	for _, tt := range []string{"SUBSYSTEM==\"usb\" SKIP", "allow=\"x\"", "DRIVER!=\"*\", LOAD_MODALIAS, LOAD=\"q\""} {
		f.Add([]byte(tt), "")
	}
	events := testEvents(f)
	f.Fuzz(func(t *testing.T, data []byte, extra string) {
		r := &EventRules{}
		r.parseFile("fuzz.rules", data)

		lines := bytes.Count(data, []byte("\n")) + 1
		for _, err := range r.Problems {
			var pe *ParseError
			if !errors.As(err, &pe) || pe.File != "fuzz.rules" || pe.Line < 1 || pe.Line > lines {
				t.Fatalf("problem %#v does not point into the file (%d lines)", err, lines)
			}
			if prefix := fmt.Sprintf("fuzz.rules:%d: ", pe.Line); !strings.HasPrefix(err.Error(), prefix) {
				t.Fatalf("problem %q lacks %q", err, prefix)
			}
		}
		if r.AllowListed() && !bytes.Contains(bytes.ToLower(data), []byte("allow")) {
			t.Fatalf("allow-list mode on without any ALLOW")
		}
		for _, ev := range events {
			d := r.Decide(ev)
			if d.LoadModalias && ev.Modalias == "" {
				t.Fatalf("LoadModalias without a MODALIAS: %+v", d)
			}
			if ev.Subsystem == "module" && r.LoadsOnModuleEvent(ev) != (len(d.Modules) > 0) {
				t.Fatalf("LoadsOnModuleEvent disagrees with Decide %+v", d)
			}
			seen := map[string]bool{}
			for _, m := range d.Modules {
				if m == "" || seen[m] || strings.ContainsAny(m, " \t\"") {
					t.Fatalf("bad module list %q", d.Modules)
				}
				seen[m] = true
			}
		}

		// Whatever the file holds, an ALLOW line after it, valid or
		// not, turns allow-list mode on and allows no more than the
		// two parts allow on their own.
		extra = strings.ReplaceAll(extra, "\n", "")
		line := `ALLOW="` + extra
		both := &EventRules{}
		both.parseFile("fuzz.rules", append(slices.Clip(data), "\n\n"+line...))
		alone := evRules(line)
		if !both.AllowListed() || !alone.AllowListed() {
			t.Fatalf("ALLOW line %q did not turn allow-list mode on", line)
		}
		names := append(strings.Fields(extra), "snd_hda_intel", "e1000e", "x", "a", "")
		for _, m := range names {
			if both.Allowed(m) && !(r.AllowListed() && r.Allowed(m)) && !alone.Allowed(m) {
				t.Fatalf("%q allowed only by the combination", m)
			}
		}
	})
}

func ExampleLoadEventRules() {
	// testdata/events holds udev's 80-drivers.rules as event rules and an
	// embedded board's lockdown with ALLOW.
	r, err := LoadEventRules(EventRulesOptions{
		Paths: []string{"testdata/events"}, // nil: DefaultEventRuleDirs
		// A real caller passes a glibc-exact fnmatch (loader/fnmatch.Match).

	})
	if err != nil {
		panic(err)
	}
	for _, p := range r.Problems {
		fmt.Println("skipped:", p)
	}
	for _, msg := range []string{
		"add@/devices/pci0000:00/0000:00:1e.0/memstick0\x00SUBSYSTEM=memstick\x00",
		"add@/devices/pci0000:00/0000:00:1f.3\x00SUBSYSTEM=pci\x00MODALIAS=pci:v00008086d0000A0C8sv00001028sd00000A2Abc04sc03i00\x00",
		"add@/devices/pci0000:00/0000:00:1f.6\x00SUBSYSTEM=pci\x00MODALIAS=pci:v00008086d000015D7sv000017AAsd0000225Abc02sc00i00\x00",
		"remove@/devices/pci0000:00/0000:00:1f.6\x00SUBSYSTEM=pci\x00MODALIAS=pci:v00008086d000015D7sv000017AAsd0000225Abc02sc00i00\x00",
	} {
		ev, _ := uevent.Parse([]byte(msg))
		d := r.Decide(&ev)
		fmt.Printf("%s %s: modalias %v, modules %q\n", ev.Action, ev.DevPath, d.LoadModalias, d.Modules)
	}
	fmt.Println("allow-list:", r.AllowListed())
	for _, m := range []string{"snd-hda-intel", "r8169"} {
		fmt.Printf("%s allowed: %v\n", m, r.Allowed(m))
	}
	// Output:
	// add /devices/pci0000:00/0000:00:1e.0/memstick0: modalias false, modules ["ms_block" "mspro_block"]
	// add /devices/pci0000:00/0000:00:1f.3: modalias false, modules []
	// add /devices/pci0000:00/0000:00:1f.6: modalias true, modules []
	// remove /devices/pci0000:00/0000:00:1f.6: modalias false, modules []
	// allow-list: true
	// snd-hda-intel allowed: true
	// r8169 allowed: false
}
