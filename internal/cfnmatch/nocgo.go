//go:build !cgo

package cfnmatch

const available = false

// Fnmatch cannot ask the C library without cgo: Require stops the test
// before it is called.
func Fnmatch(pattern, s string, flags int) int { panic("cfnmatch: built without cgo") }
