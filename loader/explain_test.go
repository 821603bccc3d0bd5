package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/modautoload/modautoload/loader/loadertest"
	"github.com/modautoload/modautoload/loader/modprobed"

	"golang.org/x/sys/unix"
)

// Each errno of a failed load comes with its cause in words, the errno
// named once, and errors.Is still sees the errno.
func TestLoadErrorExplainsErrno(t *testing.T) {
	for _, tc := range []struct {
		errno syscall.Errno
		cause string
	}{
		{unix.ENOEXEC, "built for another kernel"},
		{unix.EKEYREJECTED, "signature was rejected"},
		{unix.ENOKEY, "signature was rejected"},
		{unix.EBADMSG, "signature was rejected"},
		{unix.EPERM, "modules_disabled"},
		{unix.EPERM, "lockdown"},
		{unix.ENODEV, "no hardware"},
		{unix.ENXIO, "no hardware"},
		{unix.EINVAL, "refused the module"},
		{unix.ENOENT, "unknown symbol"},
		{unix.EEXIST, "already there"},
		{unix.ENOMEM, "out of memory"},
		{unix.EBUSY, "in use"},
		{unix.ETXTBSY, "open for writing"},
	} {
		for _, op := range []string{"finit_module", "init_module"} {
			err := error(&LoadError{Module: "m", Path: "/m.ko", Op: op, Err: tc.errno})
			msg := err.Error()
			name := unix.ErrnoName(tc.errno)
			if !strings.Contains(msg, tc.cause) {
				t.Errorf("%s %s: %q does not say %q", op, name, msg, tc.cause)
			}
			if n := strings.Count(msg, name); n != 1 {
				t.Errorf("%s %s: %q names the errno %d times, want 1", op, name, msg, n)
			}
			if !errors.Is(err, tc.errno) {
				t.Errorf("%s %s: errors.Is lost the errno", op, name)
			}
		}
	}
}

// The explanation is for the kernel's answer to a load, not for other
// steps that fail with the same errno.
func TestLoadErrorExplainsOnlyLoads(t *testing.T) {
	err := &LoadError{Module: "m", Path: "/m.ko", Op: "read", Err: unix.ENOENT}
	if got, want := err.Error(), "read m (/m.ko): no such file or directory (ENOENT)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	wrapped := &LoadError{Module: "m", Op: "finit_module", Err: errors.New("not an errno")}
	if got, want := wrapped.Error(), "finit_module m: not an errno"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// EINVAL with parameters names them and says where each came from:
// modprobe.d file:line, the kernel command line, the caller.
func TestLoadErrorNamesRefusedOptions(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"m"})
	confDir := t.TempDir()
	conf := filepath.Join(confDir, "m.conf")
	if err := os.WriteFile(conf, []byte("# comment\noptions m debug=7\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := modprobed.Load(modprobed.LoadOptions{Paths: []string{confDir}, ModuleDir: dir, Cmdline: "m.mode=bad"})
	if err != nil || len(cfg.Problems) > 0 {
		t.Fatal(err, cfg.Problems)
	}
	db, err := OpenDB(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	r := &Resolver{DB: db, Config: cfg}
	k := loadertest.NewKernel(t, map[string]loadertest.Module{"m": {Fail: unix.EINVAL}})
	l := newTestLoader(t, k)
	res, err := probe(l, r, "m", ResolveOptions{Params: "extra=1"}, LoadOptions{})
	if err != nil || len(res) != 1 {
		t.Fatalf("%+v, %v", res, err)
	}
	if !errors.Is(res[0].Err, unix.EINVAL) {
		t.Fatalf("err = %v, want EINVAL", res[0].Err)
	}
	msg := res[0].Err.Error()
	for _, want := range []string{`"debug=7 mode=bad extra=1"`, conf + ":2", "kernel command line", "the caller"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q does not name %s", msg, want)
		}
	}

	// A source given by the caller (a static list's file:line) replaces
	// "the caller".
	r.Config = &modprobed.Config{}
	l.NewBurst()
	res, err = probe(l, r, "m", ResolveOptions{Params: "extra=1", ParamsFrom: "/etc/modules:3"}, LoadOptions{})
	if err != nil || len(res) != 1 {
		t.Fatalf("%+v, %v", res, err)
	}
	if msg := res[0].Err.Error(); !strings.Contains(msg, "given by /etc/modules:3") || strings.Contains(msg, "the caller") {
		t.Errorf("%q does not name /etc/modules:3 alone", msg)
	}
}

// Without a known source, EINVAL says where options can come from.
func TestLoadErrorOptionsOfUnknownSource(t *testing.T) {
	err := &LoadError{Module: "m", Op: "finit_module", Err: unix.EINVAL, Options: "x=1"}
	msg := err.Error()
	for _, want := range []string{`"x=1"`, "modprobe.d options lines, the kernel command line, the caller"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q does not say %s", msg, want)
		}
	}
}

// The errors a load really returns carry the explanation, the module's
// own EEXIST (reported once the module is seen gone) included.
func TestLoadExplainsKernelAnswer(t *testing.T) {
	for _, tc := range []struct {
		errno syscall.Errno
		cause string
	}{
		{unix.ENOEXEC, "built for another kernel"},
		{unix.EEXIST, "conflicts with a module or driver loaded before"},
	} {
		dir := loadertest.ModuleTree(t, nil, []string{"m"})
		k := loadertest.NewKernel(t, map[string]loadertest.Module{"m": {Fail: tc.errno}})
		l := newTestLoader(t, k)
		err := l.ensure(t.Context(), step(dir, "m"), false)
		if !errors.Is(err, tc.errno) || !strings.Contains(fmt.Sprint(err), tc.cause) {
			t.Errorf("%s: got %v, want the errno and %q", unix.ErrnoName(tc.errno), err, tc.cause)
		}
	}
}

// A module file modules.dep names but the tree lacks (a dependency's
// file removed) says so and what to do.
func TestLoadExplainsMissingFile(t *testing.T) {
	dir := loadertest.ModuleTree(t, nil, []string{"m"})
	s := step(dir, "m")
	if err := os.Remove(s.Path); err != nil {
		t.Fatal(err)
	}
	l := newTestLoader(t, loadertest.NewKernel(t, map[string]loadertest.Module{"m": {}}))
	err := l.ensure(t.Context(), s, false)
	if !errors.Is(err, unix.ENOENT) || !strings.Contains(fmt.Sprint(err), "modules.dep names is missing") ||
		!strings.Contains(fmt.Sprint(err), s.Path) {
		t.Errorf("got %v, want ENOENT naming the file and the cause", err)
	}
}
