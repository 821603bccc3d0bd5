// Package e2e is the real-kernel test rig: it boots a Debian kernel under
// qemu with an initramfs built from the kernel's own module tree, runs a
// busybox shell scenario as the guest's /init, and hands the scenario's
// output back to the test.
//
// A test calls [Require] first, then [Boot] (or [Start] when it must act on
// the running guest, e.g. hotplug over [QMP]). The guest reports to the host
// by printing lines of the form
//
//	E2E:<KEY> <value>
//
// on its console; [Result.Lines] and [Result.Value] return them by key.
//
// Everything expensive is cached across test processes in [CacheDir]: the
// kernel package (downloaded with apt-get and indexed with depmod) and a
// base initramfs holding busybox, the module tree and Debian's kmod as a
// reference implementation under /usr/lib/kmod-ref. Each boot only writes a
// small per-test archive after a copy of the base one.
//
// A Scenario with Arch set (ARM64, ARMHF) boots Debian's kernel of that
// architecture on qemu's virt board, whose devices a device tree
// describes, with busybox and kmod from Debian's packages of that
// architecture; BuildBinaryFor builds the guest's binaries for it.
package e2e
