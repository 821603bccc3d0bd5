package index_test

import (
	"fmt"
	"path/filepath"

	"github.com/modautoload/modautoload/loader/index"
)

func ExampleTrie_SearchWild() {
	aliases, err := index.OpenTrie(filepath.Join("testdata", "mini", "modules.alias.bin"))
	if err != nil {
		panic(err)
	}
	defer aliases.Close()
	matches, err := aliases.SearchWild("acpi:ACPI0007:")
	if err != nil {
		panic(err)
	}
	for _, m := range matches {
		fmt.Println(m.Priority, m.Value)
	}
	// Output:
	// 32 acpi_cpufreq
	// 33 pcc_cpufreq
}

func ExampleOpen() {
	// Open takes modules.dep.bin, or builds the same index from modules.dep.
	deps, bad, err := index.Open(filepath.Join("testdata", "mini"), index.KindDep)
	if err != nil {
		panic(err)
	}
	defer deps.Close()
	for _, e := range bad {
		fmt.Println("skipped:", e) // file:line: reason
	}
	v, err := deps.Search("virtio_net")
	if err != nil {
		panic(err)
	}
	fmt.Println(v[0].Value)
	// Output:
	// kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
}
