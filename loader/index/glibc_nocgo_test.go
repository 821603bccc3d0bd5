//go:build !cgo

package index

// glibcMatch cannot ask glibc without cgo; see requireGlibc.
func glibcMatch(pattern, s string) (match, ok bool) { return false, false }
