package loader

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// explainLoad says in words what an errno from finit_module or
// init_module means and what probably caused it, or "" for one without a
// known meaning. kmod's modprobe shows only the errno; what to do about it
// (rebuild, sign, check a parameter) is what the user needs.
func explainLoad(e *LoadError) string {
	if e.Op == "open" && errors.Is(e.Err, fs.ErrNotExist) {
		return "the file modules.dep names is missing: the module tree changed after depmod ran " +
			"(a package half installed or removed); reinstall the kernel's modules or run depmod"
	}
	if e.Op != "finit_module" && e.Op != "init_module" {
		return ""
	}
	var errno syscall.Errno
	if !errors.As(e.Err, &errno) {
		return ""
	}
	switch errno {
	case unix.ENOEXEC:
		return "the kernel does not accept this file as a module (bad format or vermagic mismatch): " +
			"it was probably built for another kernel; install the build for the running kernel or rebuild it (dkms)"
	case unix.EKEYREJECTED, unix.ENOKEY, unix.EBADMSG:
		return "the module's signature was rejected: it does not match the file (altered after signing: refused " +
			"even where signatures are optional), or the kernel takes only signed modules (Secure Boot, lockdown " +
			"or module.sig_enforce) and this one is unsigned or signed with a key it does not trust; " +
			"reinstall it, sign it with an enrolled key (MOK) or use a signed build"
	case unix.EPERM:
		return "loading modules is not allowed: kernel lockdown, /proc/sys/kernel/modules_disabled set to 1 " +
			"(it stays so until reboot), or no CAP_SYS_MODULE"
	case unix.ENODEV, unix.ENXIO:
		return "the module found no hardware it drives: not an error when every device's module is tried at coldplug"
	case unix.EINVAL:
		return explainParams(e.Options, e.OptionsFrom)
	case unix.ENOENT:
		return "unknown symbol: a module it needs is missing or was built for another kernel " +
			"(the kernel log names the symbol); check modules.dep (depmod) and the module's build"
	case unix.EEXIST:
		return "what it provides is already there: it conflicts with a module or driver loaded before " +
			"(kvm_intel beside kvm_amd, a device another driver has claimed)"
	case unix.ENOMEM:
		return "the kernel ran out of memory (or module address space) for the module"
	case unix.EBUSY:
		return "the module's init found something it needs in use (a device or port another driver holds), " +
			"or the module was being removed at the same time"
	case unix.ETXTBSY:
		return "the module file is open for writing (a package manager or dkms is installing it); try again when it is done"
	}
	return ""
}

// explainParams explains EINVAL: the kernel refused a parameter, or, with
// none given, the module image itself.
func explainParams(options string, from []string) string {
	options = strings.TrimSpace(options)
	if options == "" {
		return "the kernel refused the module (a malformed image, or a parameter it requires is missing)"
	}
	where := "check the options given to the module (modprobe.d options lines, the kernel command line, the caller)"
	if len(from) > 0 {
		where = "given by " + strings.Join(from, ", ")
	}
	return fmt.Sprintf("the kernel refused a parameter of %q (unknown, or a bad value; modinfo -p lists them): %s", options, where)
}
