package main

import (
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
)

func testResults() []*result {
	mods := func(extra ...string) []string { return append([]string{"e1000", "virtio_pci"}, extra...) }
	return []*result{
		{approach: approach{id: "udevd", name: "systemd-udevd 252", settles: true, hotplug: true}, samples: []*sample{
			{coldplug: 6, returned: 6.5, modules: mods(), finit: 100, failed: map[string]int{"EEXIST": 30, "ENODEV": 5}, rssKiB: 4096,
				rssAfter: 4000, rssIdle: 3072, agentUser: 1.0, agentSys: 4, agentProc: 16, hostOther: 0.1, hostLoad: 1,
				second:   secondPass{user: 0.9, sys: 4, done: 5.5, modules: mods()},
				hotplugs: []hotplug{{probe: 0.2, reaction: 0.010, load: 0.08}, {probe: 0.1, reaction: 0.006, load: 0.07}},
				calls:    []call{{module: "e1000", load: 1, live: 1.5, exit: 2}, {module: "virtio_pci", load: 1, live: 1.2, exit: 1.2}, {module: "e1000", load: 3, live: 3.1, exit: 3.1}}},
			{coldplug: 7, returned: 7.5, modules: mods(), finit: 102, failed: map[string]int{"EEXIST": 32, "ENODEV": 5, "EBUSY": 2}, rssKiB: 4096,
				rssAfter: 4100, rssIdle: 4096, agentUser: 1.2, agentSys: 5, agentProc: 16, hostOther: 0.6, hostLoad: 3,
				second:   secondPass{user: 1.1, sys: 5, done: 6, left: []string{"floppy"}, modules: mods()},
				hotplugs: []hotplug{{probe: 0.15, reaction: 0.008, load: 0.075}},
				calls:    []call{{module: "e1000", load: 1, live: 1.3, exit: 1.3}, {module: "virtio_pci", load: 1, live: 1.8, exit: 1.8}, {module: "ccp", load: 1, exit: 9, ret: -19}}},
		}},
		{approach: approach{id: "kmod", name: "kmod loop", settles: true}, samples: []*sample{
			{coldplug: 13, modules: mods("kvm"), finit: 70, rounds: 5, agentUser: 0.55, agentSys: 6, hostOther: -1, hostLoad: -1,
				second: secondPass{user: 0.5, sys: 5, done: 12, modules: mods("kvm")}},
		}, errs: []string{"round 2: guest timed out"}},
		{approach: approach{id: "mdev", name: "busybox mdev -d", hotplug: true}, samples: []*sample{
			{coldplug: 14, modules: mods(), finit: 77, rssKiB: 1800, rssAfter: 1700, rssIdle: 1536, agentUser: 3.3, agentSys: 6, agentProc: 1, hostOther: 0.2, hostLoad: 2,
				hotplugs: []hotplug{{probe: 0.14, reaction: 0.066, load: 0.08}},
				second:   secondPass{user: 3.0, sys: 6, modules: mods("kvm")}},
		}},
		{approach: approach{id: "modautoload", name: "modautoload <daemon>", hotplug: true, skip: "no daemon command yet"}},
	}
}

func TestMarkdown(t *testing.T) {
	md := markdown(env{rounds: 2, cores: 2}, testResults())
	for _, want := range []string{
		// Coldplug: udevd is the anchor of the ratios; RSS after coldplug,
		// idle at the end and at the peak; the agent's CPU.
		"| systemd-udevd 252 | 2 | 101 (100–102) | 37 (35–39): EEXIST 31, ENODEV 5, EBUSY 1 | 6.50 (6.00–7.00) | 1.00× | 7.00 (6.50–7.50) |",
		"| 4.0 (3.9–4.0) MiB | 3.5 (3.0–4.0) MiB | 4.0 MiB | 1.10 (1.00–1.20) | 4.50 (4.00–5.00) | 1.00× |\n",
		"| kmod loop (1 of 2 rounds) | 3 | 70 | 0 | 13.00 | 2.00× |",
		"| n/a (a process per call) | n/a (a process per call) | n/a (a process per call) | 0.55 | 6.00 | 0.50× |\n",
		"| busybox mdev -d | 2 | 77 | 0 | 14.00 | 2.15× | 0.00 | n/a (no settle) | 1.7 MiB | 1.5 MiB | 1.8 MiB | 3.30 | 6.00 | 3.00× |\n",
		"| modautoload <daemon> | skipped: no daemon command yet |  |  |  |  |  |  |  |  |  |  |  |  |\n",
		// The second coldplug's user time against the first's, each
		// compared with udevd's.
		"| systemd-udevd 252 | 1.10 (1.00–1.20) | 1.00× | 1.00 (0.90–1.10) | 1.00× | 4.50 (4.00–5.00) | 5.75 (5.50–6.00) |\n",
		"| kmod loop (1 of 2 rounds) | 0.55 | 0.50× | 0.50 | 0.50× | 5.00 | 12.00 |\n",
		"| busybox mdev -d | 3.30 | 3.00× | 3.00 | 3.00× | 6.00 | n/a (no settle) |\n",
		"| modautoload <daemon> | skipped: no daemon command yet |  |  |  |  |  |\n",
		"systemd-udevd 252: modules that would not unload before the second coldplug: round 2: floppy\n",
		"busybox mdev -d: the second coldplug's module set differed from the first's: round 1: also kvm\n",
		// Hotplug: over every hotplug of every round, in ms; no kmod row.
		"| systemd-udevd 252 | 3 | 233 (176–290) | 1.00× | 150 (100–200) | 8.0 (6.0–10.0) | 1.00× | 75 (70–80) |\n",
		"| busybox mdev -d | 1 | 286 | 1.23× | 140 | 66.0 | 8.25× | 80 |\n",
		"| modautoload <daemon> | skipped: no daemon command yet |  |  |  |  |  |  |\n",
		"used 0.20 cores of 2 (median over rounds; 0.10–0.60;",
		"**1 of 3 rounds ran while other processes used more than 0.5 of a core**",
		"load average after a round was 2.0 (1.0–3.0)",
		"kmod loop: also kvm.",
		"kmod loop: round 2: guest timed out",
		"systemd-udevd 252: hotplugs in order, agent reaction / total ms, per round: 10.0/290 6.0/176; 8.0/233\n",
		"systemd-udevd 252: its CPU time sums 16 processes",
		// ccp's failed init counts in neither.
		"longest inits, from module_load to live (each module's longest per round, median over rounds): virtio_pci 0.50 s, e1000 0.40 s",
		"longest waits in finit_module after the module was live (async_synchronize_full): e1000 0.25 s, virtio_pci 0.00 s",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	_, hot, found := strings.Cut(md, "## Hotplug")
	hot, _, found2 := strings.Cut(hot, "## Module sets")
	if !found || !found2 || !strings.Contains(hot, "| systemd-udevd 252 |") {
		t.Errorf("no hotplug section between its heading and the module sets':\n%s", md)
	}
	if strings.Contains(hot, "| kmod loop") {
		t.Errorf("kmod's loop, with no listener, has a hotplug row:\n%s", md)
	}
	if strings.Contains(md, "systemd-udevd 252: the second coldplug's module set differed") || strings.Contains(md, "kmod loop: the second coldplug's module set differed") {
		t.Errorf("an unchanged second module set is noted as a difference:\n%s", md)
	}
	if strings.Contains(md, "busybox mdev -d: its CPU time sums") {
		t.Errorf("a single process's CPU is noted as a sum:\n%s", md)
	}
}

func TestChartIsXML(t *testing.T) {
	svg := chart(testResults())
	d := xml.NewDecoder(strings.NewReader(svg))
	for {
		_, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("chart is not well-formed XML: %v\n%s", err, svg)
		}
	}
	if !strings.Contains(svg, "modautoload &lt;daemon&gt;") || !strings.Contains(svg, ">skipped<") {
		t.Errorf("chart lacks the escaped skipped row:\n%s", svg)
	}
	// The hotplug panel: udevd's and mdev's reaction medians (ms); kmod's
	// loop does not listen.
	if !strings.Contains(svg, ">8.0 ms reaction<") || !strings.Contains(svg, ">66.0 ms reaction<") || strings.Count(svg, "kmod loop") != 1 {
		t.Errorf("chart lacks the hotplug panel, or has kmod in it:\n%s", svg)
	}
}

func TestHelperSection(t *testing.T) {
	r := &helperResult{perCall: map[string][]float64{}}
	for i, c := range helperCells {
		r.perCall[c.id] = []float64{float64(10 + i), float64(12 + i), float64(11 + i)}
	}
	got := helperSection(r)
	for _, want := range []string{"| kmod's modprobe | 13.0 (12.0–14.0) | 1.00× |", "handing off", "`/bin/true` takes 11.0 (10.0–12.0) ms", "does nothing, built as modautoload is, 12.0 (11.0–13.0) ms"} {
		if !strings.Contains(got, want) {
			t.Errorf("helper section lacks %q:\n%s", want, got)
		}
	}
	if id, ms, err := parseCalls("kmod-live 10.50 12.50"); err != nil || id != "kmod-live" || ms != 50 {
		t.Errorf("parseCalls: %q %v %v", id, ms, err)
	}
	if _, _, err := parseCalls("kmod-live 12.50 10.50"); err == nil {
		t.Error("parseCalls took an end before the start")
	}
	if !strings.Contains(helperSection(&helperResult{err: "boom"}), "Failed: boom") {
		t.Error("a failed run is not reported")
	}
}
