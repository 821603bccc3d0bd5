package daemon

import (
	"bufio"
	"bytes"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
)

// Memory accounts for the daemon's resident memory: what the kernel
// counts beside what the Go runtime says it holds, so a figure in a
// report can be taken apart.
type Memory struct {
	// In KiB, from /proc/self/smaps_rollup, a walk of the page tables.
	// /proc/self/status's counters lag behind a threaded process before
	// Linux 6.2 (each thread keeps up to 64 page faults' counts to
	// itself): they said 3.4 MiB where the page tables held 7.5. They
	// are the fallback where smaps_rollup is missing (before 4.14).
	RSSKiB   int64 `json:"rss_kib"`
	AnonKiB  int64 `json:"anon_kib"`
	FileKiB  int64 `json:"file_kib"`  // mapped files: the binary's pages and the indexes
	ShmemKiB int64 `json:"shmem_kib"` // of those, the proportional share in tmpfs or an initramfs
	// From /proc/self/status: the kernel's high-water mark, which lags
	// as above (a lower bound before 6.2; never below RSSKiB here), and
	// the thread count.
	PeakRSSKiB int64 `json:"peak_rss_kib"`
	Threads    int64 `json:"threads"`
	// GOMAXPROCS: how many of the threads run Go code at once; the
	// runtime keeps memory per processor.
	Procs int64 `json:"procs"`
	// From the Go runtime, in bytes.
	HeapObjects  uint64 `json:"heap_objects"`
	HeapUnused   uint64 `json:"heap_unused"`   // the free room in pages that hold objects
	HeapFree     uint64 `json:"heap_free"`     // free pages, not yet returned to the system
	HeapReleased uint64 `json:"heap_released"` // returned to the system
	Stacks       uint64 `json:"stacks"`        // goroutine and thread stacks
	RuntimeOther uint64 `json:"runtime_other"` // GC metadata, buffers and the like
	GCCycles     uint64 `json:"gc_cycles"`
	// CPU time the collector has used, all threads (an estimate the
	// runtime keeps, not the kernel's count), in seconds: what a memory
	// setting costs.
	GCCPUSeconds float64 `json:"gc_cpu_seconds"`
}

var memoryMetrics = []string{
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/released:bytes",
	"/memory/classes/heap/stacks:bytes",
	"/memory/classes/os-stacks:bytes",
	"/memory/classes/metadata/other:bytes",
	"/memory/classes/metadata/mspan/inuse:bytes",
	"/memory/classes/metadata/mcache/inuse:bytes",
	"/memory/classes/other:bytes",
	"/memory/classes/profiling/buckets:bytes",
	"/gc/cycles/total:gc-cycles",
	"/cpu/classes/gc/total:cpu-seconds",
}

func readMemory() Memory {
	samples := make([]metrics.Sample, len(memoryMetrics))
	for i, name := range memoryMetrics {
		samples[i].Name = name
	}
	metrics.Read(samples)
	v := func(i int) uint64 {
		if samples[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return samples[i].Value.Uint64()
	}
	m := Memory{
		HeapObjects: v(0), HeapFree: v(1), HeapUnused: v(2), HeapReleased: v(3),
		Stacks:       v(4) + v(5),
		RuntimeOther: v(6) + v(7) + v(8) + v(9) + v(10),
		GCCycles:     v(11),
		Procs:        int64(runtime.GOMAXPROCS(0)),
	}
	if samples[12].Value.Kind() == metrics.KindFloat64 {
		m.GCCPUSeconds = samples[12].Value.Float64()
	}
	readKiB("/proc/self/status", map[string]*int64{
		"VmRSS": &m.RSSKiB, "VmHWM": &m.PeakRSSKiB, "RssAnon": &m.AnonKiB, "RssFile": &m.FileKiB,
		"RssShmem": &m.ShmemKiB, "Threads": &m.Threads,
	})
	var rss, anon, shmem int64 = -1, -1, -1
	readKiB("/proc/self/smaps_rollup", map[string]*int64{"Rss": &rss, "Anonymous": &anon, "Pss_Shmem": &shmem})
	if rss >= 0 && anon >= 0 {
		m.RSSKiB, m.AnonKiB, m.FileKiB = rss, anon, rss-anon
		if shmem >= 0 { // Pss_Shmem: since Linux 5.9
			m.ShmemKiB = shmem
		}
	}
	// The lagging high-water mark can be below what the page tables
	// hold now.
	m.PeakRSSKiB = max(m.PeakRSSKiB, m.RSSKiB)
	return m
}

// readKiB sets each field's value from a "Key: value ..." file of /proc;
// a file it cannot read leaves them as they are.
func readKiB(path string, fields map[string]*int64) {
	data, err := os.ReadFile(path)
	if err != nil {
		return
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		key, rest, ok := bytes.Cut(sc.Bytes(), []byte(":"))
		if p := fields[string(key)]; ok && p != nil {
			f := bytes.Fields(rest)
			if len(f) > 0 {
				if n, err := strconv.ParseInt(string(f[0]), 10, 64); err == nil {
					*p = n
				}
			}
		}
	}
}
