package loader

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/modautoload/modautoload/internal/sysfsattr"

	"golang.org/x/sys/unix"
)

// Kernel is the system-call seam of the loader: the two ways to hand a
// module to the kernel. SystemKernel is the real one; tests use fakes.
type Kernel interface {
	// FinitModule loads the module in f (finit_module(2)).
	FinitModule(f *os.File, params string, flags int) error
	// InitModule loads a module image from memory (init_module(2)), for
	// files the kernel cannot decompress itself.
	InitModule(image []byte, params string) error
	// DeleteModule unloads a module (delete_module(2)).
	DeleteModule(name string, flags int) error
}

// MODULE_INIT_COMPRESSED_FILE: the kernel decompresses the file itself.
const initCompressedFile = 4

// SystemKernel makes the real system calls.
type SystemKernel struct{}

func (SystemKernel) FinitModule(f *os.File, params string, flags int) error {
	return unix.FinitModule(int(f.Fd()), params, flags)
}

func (SystemKernel) InitModule(image []byte, params string) error {
	return unix.InitModule(image, params)
}

func (SystemKernel) DeleteModule(name string, flags int) error {
	return unix.DeleteModule(name, flags)
}

// initstate is what sysfs says of a module.
type initstate string

const (
	stateAbsent initstate = ""       // no /sys/module/NAME: not loaded
	stateComing initstate = "coming" // loading: initstate says so, or the directory exists without it
	stateLive   initstate = "live"
	stateGoing  initstate = "going" // its init failed, or it is being removed
)

// readInitstate reads /sys/module/NAME/initstate under sysfs. A directory
// without initstate is "coming", never "built in": sysfs creates the
// directory before the attribute, and kmod-18 returning early in that
// window is the bug this project exists for. Built-in modules are known
// from the builtin index only, before sysfs is asked.
func readInitstate(sysfs, name string) (initstate, error) {
	dir := filepath.Join(sysfs, "module", name)
	var buf [32]byte
	data, err := sysfsattr.Read(filepath.Join(dir, "initstate"), buf[:])
	if err == nil {
		switch s := string(bytes.TrimSpace(data)); s {
		case string(stateLive), string(stateComing), string(stateGoing):
			return initstate(s), nil
		default:
			return "", fmt.Errorf("%s/initstate: unknown state %.32q", dir, s)
		}
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	if _, err := os.Stat(dir); err == nil {
		return stateComing, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	return stateAbsent, nil
}

// checkModuleName refuses names that could not be a kernel module's and
// would be dangerous in a sysfs path: empty, with '/' or NUL, starting with
// '.', or longer than the kernel's MODULE_NAME_LEN allows.
func checkModuleName(name string) error {
	if name == "" || len(name) > 55 || name[0] == '.' || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("%w: %.64q", ErrBadName, name)
	}
	return nil
}
