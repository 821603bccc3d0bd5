package main

import (
	"os"
	"runtime"
	"slices"
	"testing"
)

// The daemon executed again gets GOMAXPROCS capped, with the marker that
// lets it take the variable out again, only where the runtime chose more
// and the caller set nothing.
func TestLeanEnv(t *testing.T) {
	base := []string{"PATH=/bin", "HOME=/"}
	for _, c := range []struct {
		env   []string
		procs int
		want  []string
	}{
		{base, 8, append(slices.Clone(base), "GOMAXPROCS=2", procsMarker+"=1")},
		{base, 3, append(slices.Clone(base), "GOMAXPROCS=2", procsMarker+"=1")},
		{base, 2, base},
		{base, 1, base},
		{[]string{"GOMAXPROCS=6", "PATH=/bin"}, 6, []string{"GOMAXPROCS=6", "PATH=/bin"}},
		{[]string{"PATH=/bin", "GOMAXPROCS="}, 8, []string{"PATH=/bin", "GOMAXPROCS="}},
	} {
		env := slices.Clip(slices.Clone(c.env))
		if got := leanEnv(env, c.procs); !slices.Equal(got, c.want) {
			t.Errorf("leanEnv(%q, %d) = %q, want %q", c.env, c.procs, got, c.want)
		}
		if !slices.Equal(env, c.env) {
			t.Errorf("leanEnv changed its argument: %q", env)
		}
	}
}

func TestLimitProcs(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))

	// Executed again by execLean: the runtime started capped; the
	// variable and the marker go, the count stays.
	t.Setenv("GOMAXPROCS", "2")
	t.Setenv(procsMarker, "1")
	runtime.GOMAXPROCS(3)
	limitProcs()
	for _, k := range []string{"GOMAXPROCS", procsMarker} {
		if v, ok := os.LookupEnv(k); ok {
			t.Errorf("%s=%q left in the environment", k, v)
		}
	}
	if n := runtime.GOMAXPROCS(0); n != 3 {
		t.Errorf("GOMAXPROCS %d after the marker's clean-up, want 3 (left as is)", n)
	}

	// Not executed again: capped now.
	limitProcs()
	if n := runtime.GOMAXPROCS(0); n != daemonProcs {
		t.Errorf("GOMAXPROCS %d, want %d", n, daemonProcs)
	}

	// The caller's setting stands.
	t.Setenv("GOMAXPROCS", "4")
	runtime.GOMAXPROCS(4)
	limitProcs()
	if n := runtime.GOMAXPROCS(0); n != 4 {
		t.Errorf("GOMAXPROCS %d with the caller's GOMAXPROCS=4, want 4", n)
	}
}
