package e2e

import (
	"errors"
	"fmt"
	"os"
)

// Run gives a program (the demo, the benchmark) what go test gives a
// test: f gets a T whose Fatal ends f and becomes Run's error, and whose
// cleanups (qemu, temporary initramfs) run before Run returns.
func Run(f func(t T)) (err error) {
	t := &programT{}
	defer func() {
		for i := len(t.cleanups) - 1; i >= 0; i-- {
			t.cleanups[i]()
		}
	}()
	defer func() {
		if r := recover(); r != nil {
			msg, ok := r.(programFatal)
			if !ok {
				panic(r)
			}
			err = errors.New(string(msg))
		}
	}()
	f(t)
	return nil
}

type programT struct{ cleanups []func() }

type programFatal string

func (*programT) Helper()           {}
func (*programT) Fatal(args ...any) { panic(programFatal(fmt.Sprint(args...))) }
func (*programT) Fatalf(format string, args ...any) {
	panic(programFatal(fmt.Sprintf(format, args...)))
}
func (*programT) Logf(format string, args ...any) { fmt.Fprintf(os.Stderr, "  "+format+"\n", args...) }
func (t *programT) Cleanup(f func())              { t.cleanups = append(t.cleanups, f) }

func (t *programT) TempDir() string {
	dir, err := os.MkdirTemp("", "modautoload-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
