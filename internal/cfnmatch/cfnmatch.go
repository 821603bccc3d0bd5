//go:build cgo

package cfnmatch

/*
#include <fnmatch.h>
#include <stdlib.h>
*/
import "C"

import "unsafe"

const available = true

// Flags accepted by Fnmatch, as in <fnmatch.h>.
const (
	NoEscape = C.FNM_NOESCAPE
	Pathname = C.FNM_PATHNAME
	Period   = C.FNM_PERIOD
)

// Fnmatch calls the C library's fnmatch(pattern, s, flags) and returns its
// result: 0 for a match, FNM_NOMATCH (1) otherwise. Both strings end at
// their first NUL byte, as C sees them.
func Fnmatch(pattern, s string, flags int) int {
	p := C.CString(pattern)
	defer C.free(unsafe.Pointer(p))
	cs := C.CString(s)
	defer C.free(unsafe.Pointer(cs))
	return int(C.fnmatch(p, cs, C.int(flags)))
}
