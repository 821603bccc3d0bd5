//go:build profile

package main

import (
	"os"
	"runtime"
	"runtime/pprof"

	"golang.org/x/sys/unix"
)

// A binary built with -tags profile writes a CPU profile of its run to
// $MODAUTOLOAD_CPUPROFILE and the live heap at exit to
// $MODAUTOLOAD_HEAPPROFILE: how the cost figures of the e2e guest are
// taken apart. The shipped binary carries none of this.
func init() {
	cpu, heap := os.Getenv("MODAUTOLOAD_CPUPROFILE"), os.Getenv("MODAUTOLOAD_HEAPPROFILE")
	if len(os.Args) > 1 && os.Args[1] == "daemon" {
		// The daemon executes itself again (execLean): profile that
		// process only. execve keeps the profiling interval timer, and a
		// SIGPROF before the new runtime has its handler kills it.
		if off, err := unix.PrctlRetInt(unix.PR_GET_THP_DISABLE, 0, 0, 0, 0); err == nil && off != 1 {
			return
		}
	}
	var stops []func()
	if cpu != "" {
		if f, err := os.Create(cpu); err == nil {
			if err := pprof.StartCPUProfile(f); err != nil {
				f.Close()
			} else {
				stops = append(stops, func() { pprof.StopCPUProfile(); f.Close() })
			}
		}
	}
	if heap != "" {
		// The daemon's heap is a few hundred KiB: sample finely.
		runtime.MemProfileRate = 256
		stops = append(stops, func() {
			f, err := os.Create(heap)
			if err != nil {
				return
			}
			defer f.Close()
			runtime.GC()
			pprof.Lookup("heap").WriteTo(f, 0)
		})
	}
	stopProfile = func() {
		for _, stop := range stops {
			stop()
		}
	}
}
