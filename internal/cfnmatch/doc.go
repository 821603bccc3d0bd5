// Package cfnmatch exists only so tests can compare with glibc's fnmatch.
// It is empty when built without cgo.
package cfnmatch
