package main

import (
	"strings"
	"testing"

	"github.com/modautoload/modautoload/e2e"
)

// A round counts only when the tool exited 0 and every listed module was
// live after it.
func TestParseStaticSampleRejects(t *testing.T) {
	for _, tt := range []struct {
		markers []e2e.Marker
		want    string
	}{
		{[]e2e.Marker{{Key: "RC", Value: "0"}, {Key: "NOT_LIVE", Value: "btrfs"}, {Key: "AGENT_LOG", Value: "Failed to insert 'btrfs'"}},
			"not live after the tool exited: btrfs (its log: Failed to insert 'btrfs')"},
		{[]e2e.Marker{{Key: "RC", Value: "1"}}, `the tool exited "1"`},
		{[]e2e.Marker{{Key: "RC", Value: "0"}, {Key: "TRACE_OVERRUN", Value: "3"}}, "lost events"},
	} {
		_, err := parseStaticSample(&e2e.Result{Markers: tt.markers})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: %v, want %q", tt.markers, err, tt.want)
		}
	}
}

func TestStaticMarkdown(t *testing.T) {
	mods := make([]string, 71)
	results := []*result{
		{approach: approach{id: "static-kmod-a", name: "kmod modprobe -a"}, samples: []*sample{
			{coldplug: 5, done: 5.1, modules: mods, finit: 82, failed: map[string]int{"ENODEV": 11}, hostOther: 0.1, hostLoad: 1},
		}},
		{approach: approach{id: "static-systemd", name: "systemd-modules-load"}, samples: []*sample{
			{coldplug: 4, done: 4.1, modules: mods, finit: 82, failed: map[string]int{"ENODEV": 11}, hostOther: 0.1, hostLoad: 1},
			{coldplug: 3, done: 3.1, modules: mods, finit: 82, failed: map[string]int{"ENODEV": 11}, hostOther: 0.1, hostLoad: 1},
		}},
		{approach: approach{id: "static-modautoload", name: "modautoload load-static"}, samples: []*sample{
			{coldplug: 1.75, done: 1.8, modules: mods, finit: 72, failed: map[string]int{"ENODEV": 1}, hostOther: 0.1, hostLoad: 1},
		}, errs: []string{"round 2: the tool exited \"1\""}},
	}
	md := staticMarkdown(env{rounds: 2, cores: 2, systemd: "systemd 252", kmod: "kmod version 30"}, results)
	for _, want := range []string{
		"| kmod modprobe -a | 71 | 82 | 11: ENODEV 11 | 5.00 | 1.43× | 5.10 |\n",
		"| systemd-modules-load | 71 | 82 | 11: ENODEV 11 | 3.50 (3.00–4.00) | 1.00× | 3.60 (3.10–4.10) |\n",
		"| modautoload load-static (1 of 2 rounds) | 71 | 72 | 1: ENODEV 1 | 1.75 | 0.50× | 1.80 |\n",
		"modautoload load-static: round 2: the tool exited",
		"systemd-modules-load is Debian's (systemd 252)",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}
