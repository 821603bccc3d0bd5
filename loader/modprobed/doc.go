// Package modprobed reads the loader's configuration as libkmod does: the
// modprobe.d files and the kernel command line.
//
// The modprobe.d part reproduces libkmod (kmod 30 and current upstream)
// wherever it decides what loads: which files are read and in which order,
// how lines are split into words, where "-" becomes "_", which of several
// matching lines wins, and how the kernel command line adds to the result.
// Where kmod releases differ, or kmod reads memory it never wrote, the
// comments say which behaviour is kept. modprobe -c is the oracle: Config.Dump prints the
// same configuration lines, and the tests compare the two.
//
// A Config is built once by Load and is read-only afterwards; its methods
// are safe for concurrent use.
package modprobed
