//go:build profile

package main

import (
	"os"
	"runtime/pprof"
)

// A binary built with -tags profile writes a CPU profile of its run to
// $MODAUTOLOAD_CPUPROFILE: how the cost figures of the e2e guest are taken
// apart. The shipped binary carries none of this.
func init() {
	path := os.Getenv("MODAUTOLOAD_CPUPROFILE")
	if path == "" {
		return
	}
	f, err := os.Create(path)
	if err != nil {
		return
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return
	}
	stopProfile = func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}
