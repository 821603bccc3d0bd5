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
			{coldplug: 6, returned: 6.5, modules: mods(), finit: 100, failed: map[string]int{"EEXIST": 30, "ENODEV": 5}, rssKiB: 4096, hotplugMS: 300,
				calls: []call{{module: "e1000", load: 1, live: 1.5, exit: 2}, {module: "virtio_pci", load: 1, live: 1.2, exit: 1.2}, {module: "e1000", load: 3, live: 3.1, exit: 3.1}}},
			{coldplug: 7, returned: 7.5, modules: mods(), finit: 102, failed: map[string]int{"EEXIST": 32, "ENODEV": 5, "EBUSY": 2}, rssKiB: 4096, hotplugMS: 320,
				calls: []call{{module: "e1000", load: 1, live: 1.3, exit: 1.3}, {module: "virtio_pci", load: 1, live: 1.8, exit: 1.8}, {module: "ccp", load: 1, exit: 9, ret: -19}}},
		}},
		{approach: approach{id: "kmod", name: "kmod loop", settles: true}, samples: []*sample{
			{coldplug: 13, modules: mods("kvm"), finit: 70, hotplugMS: -1, rounds: 5},
		}, errs: []string{"round 2: guest timed out"}},
		{approach: approach{id: "modautoload", name: "modautoload <daemon>", skip: "no daemon command yet"}},
	}
}

func TestMarkdown(t *testing.T) {
	md := markdown(env{rounds: 2}, testResults())
	for _, want := range []string{
		"| systemd-udevd 252 | 2 | 101 (100–102) | 37 (35–39): EEXIST 31, ENODEV 5, EBUSY 1 | 6.50 (6.00–7.00) | 1.00× | 7.00 (6.50–7.50) |",
		"| kmod loop (1 of 2 rounds) | 3 | 70 | 0 | 13.00 | 2.00× |",
		"| modautoload <daemon> | skipped: no daemon command yet ||||||||||\n",
		"kmod loop: also kvm.",
		"kmod loop: round 2: guest timed out",
		// ccp's failed init counts in neither.
		"longest inits, from module_load to live (each module's longest per round, median over rounds): virtio_pci 0.50 s, e1000 0.40 s",
		"longest waits in finit_module after the module was live (async_synchronize_full): e1000 0.25 s, virtio_pci 0.00 s",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
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
}
