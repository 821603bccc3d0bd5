// Package modlist reads the static module lists, the modules a machine
// loads at boot whether or not a device asks for them, and loads them in
// parallel through a loader.Loader:
//
//   - modules-load.d(5), read exactly as systemd-modules-load reads it
//     (see Read);
//   - /etc/modules, Debian's and Alpine's list: a module and its
//     parameters per line;
//   - modules_load= on the kernel command line, and rd.modules_load= in
//     an initramfs.
//
// It is a package of its own, not part of modprobed: modprobed is
// libkmod's policy for how a name loads, these lists only say which names
// load, and the resolver never needs them.
//
// A list may ask for a module to load alone with a comment every other
// reader skips:
//
//	#modautoload:alone nvidia nvidia_drm
//
// Such a module waits for every list entry before it to finish, and the
// entries after it wait for it (see Loading).
package modlist
