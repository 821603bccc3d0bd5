package loader

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/modautoload/modautoload/loader/loadertest"
)

// A soft dependency's failure is ignored, in order and in parallel: the
// module between its soft pre- and post-dependencies still loads, after
// the pre one was tried, and its result is success.
func TestLoadSoftdepFailureIgnored(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"presoft", "top", "postsoft"})
	r := newResolver(t, dir, "softdep top pre: presoft post: postsoft\n")
	for _, parallel := range []bool{false, true} {
		k := loadertest.NewKernel(t, map[string]loadertest.Module{
			"presoft": {Fail: unix.ENODEV}, "postsoft": {Fail: unix.EINVAL},
		})
		var mu sync.Mutex
		var before []string
		res, err := probe(newTestLoader(t, k), r, "top", ResolveOptions{}, LoadOptions{
			Parallel: parallel,
			Before: func(s Step) {
				mu.Lock()
				before = append(before, s.Name)
				mu.Unlock()
			},
		})
		if err != nil || len(res) != 1 || res[0].Err != nil {
			t.Errorf("parallel %v: %+v, %v; want success despite the soft dependencies' failures", parallel, res, err)
		}
		calls := strings.Join(k.Calls(), " ")
		if !strings.HasPrefix(calls, "presoft top") || k.CallsOf("postsoft") != 1 {
			t.Errorf("parallel %v: calls %q, want presoft, then top, and postsoft tried", parallel, calls)
		}
		// modprobe -v prints each step before it is carried out.
		if !parallel && strings.Join(before, " ") != "presoft top postsoft" {
			t.Errorf("Before told of %q, want each step in order", before)
		}
	}
}

// A module whose plan failed (here a dependency's modules.dep entry points
// outside the module directory) reports the planning error, and nothing of
// its plan reaches the kernel.
func TestLoadReportsPlanningError(t *testing.T) {
	dir := t.TempDir()
	dep := "kernel/top.ko: kernel/dep.ko\nkernel/dep.ko: ../outside.ko\n"
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644); err != nil {
		t.Fatal(err)
	}
	r := newResolver(t, dir, "")
	plans, err := r.Resolve("top", ResolveOptions{})
	if err != nil || len(plans) != 1 || plans[0].Err == nil {
		t.Fatalf("plans %+v, %v; want one plan carrying an error", plans, err)
	}
	for _, parallel := range []bool{false, true} {
		k := loadertest.NewKernel(t, nil)
		res := newTestLoader(t, k).Load(context.Background(), plans, LoadOptions{Parallel: parallel})
		if len(res) != 1 || res[0].Err == nil || !strings.Contains(res[0].Err.Error(), "is not inside") {
			t.Errorf("parallel %v: %+v, want the planning error", parallel, res)
		}
		if calls := k.Calls(); len(calls) != 0 {
			t.Errorf("parallel %v: calls %v for a plan that failed", parallel, calls)
		}
	}
}

// A step whose wait for the steps before it ends with the caller's
// context has failed: a module whose soft pre-dependency was still loading
// is not reported loaded, in parallel as in order.
func TestLoadCancelledWaitIsNoSuccess(t *testing.T) {
	release := make(chan struct{})
	held := map[string]loadertest.Module{"slowpre": {During: func() { <-release }}}
	kernels := []*loadertest.Kernel{loadertest.NewKernel(t, held), loadertest.NewKernel(t, held)}
	loaders := []*Loader{newTestLoader(t, kernels[0]), newTestLoader(t, kernels[1])}
	t.Cleanup(func() { close(release) }) // before the loaders', which wait for slowpre's init
	for i, parallel := range []bool{false, true} {
		// A tree each: the held load keeps its module file locked.
		dir := loadertest.ModuleTree(t, nil, []string{"slowpre", "top"})
		plans, err := newResolver(t, dir, "softdep top pre: slowpre\n").Resolve("top", ResolveOptions{})
		if err != nil {
			t.Fatal(err)
		}
		k := kernels[i]
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan []Result, 1)
		go func() { done <- loaders[i].Load(ctx, plans, LoadOptions{Parallel: parallel}) }()
		eventually(t, "slowpre initializing", func() bool {
			st, _ := readInitstate(k.Sysfs, "slowpre")
			return st == stateComing
		})
		cancel()
		res := <-done
		if len(res) != 1 || !errors.Is(res[0].Err, context.Canceled) {
			t.Errorf("parallel %v: %+v, want top failed with the context's end", parallel, res)
		}
		if k.CallsOf("top") != 0 {
			t.Errorf("parallel %v: top handed to the kernel after the context ended", parallel)
		}
	}
}
