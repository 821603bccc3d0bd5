//go:build cgo

package index

import "github.com/modautoload/modautoload/internal/cfnmatch"

// glibcMatch asks the C library's fnmatch(pattern, s, 0); ok is false when
// it cannot be asked (built without cgo).
func glibcMatch(pattern, s string) (match, ok bool) {
	return cfnmatch.Fnmatch(pattern, s, 0) == 0, true
}
