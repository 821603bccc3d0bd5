package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path"
	"strings"
)

// cpioWriter writes a "newc" (SVR4, magic 070701) cpio archive, the format
// the kernel unpacks as an initramfs. Every header and every file body is
// padded to 4 bytes, so the archive's length is a multiple of 4 and another
// archive can be appended to it: the kernel only looks for the next archive's
// magic at 4-aligned offsets (init/initramfs.c, unpack_to_rootfs).
//
// Missing parent directories are added automatically, because the kernel
// creates each entry with a plain open/mkdir and does not make parents.
type cpioWriter struct {
	w    *bufio.Writer
	n    int64           // bytes written, for padding
	ino  uint32          // last inode number handed out
	dirs map[string]bool // directories already in the archive
}

func newCPIOWriter(w io.Writer) *cpioWriter {
	return &cpioWriter{w: bufio.NewWriterSize(w, 1<<20), dirs: map[string]bool{}}
}

// Mode bits of the cpio header (from <sys/stat.h>).
const (
	cpioDir     = 0o040000
	cpioRegular = 0o100000
	cpioSymlink = 0o120000
)

// Dir adds a directory (and its missing parents).
func (c *cpioWriter) Dir(name string, perm fs.FileMode) error {
	name = cpioName(name)
	if name == "" || c.dirs[name] {
		return nil
	}
	if err := c.parents(name); err != nil {
		return err
	}
	c.dirs[name] = true
	return c.header(name, cpioDir|uint32(perm.Perm()), 2, 0)
}

// File adds a regular file with the given content.
func (c *cpioWriter) File(name string, perm fs.FileMode, data []byte) error {
	if err := c.entry(name, cpioRegular|uint32(perm.Perm()), int64(len(data))); err != nil {
		return err
	}
	return c.body(bytes.NewReader(data), int64(len(data)))
}

// CopyFile adds a regular file with the content of the host file src,
// following symlinks. A zero perm takes the host file's permissions.
func (c *cpioWriter) CopyFile(name string, perm fs.FileMode, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("cpio: %s is not a regular file", src)
	}
	if perm == 0 {
		perm = st.Mode().Perm()
	}
	if err := c.entry(name, cpioRegular|uint32(perm.Perm()), st.Size()); err != nil {
		return err
	}
	return c.body(f, st.Size())
}

// Symlink adds a symbolic link name pointing at target.
func (c *cpioWriter) Symlink(name, target string) error {
	if err := c.entry(name, cpioSymlink|0o777, int64(len(target))); err != nil {
		return err
	}
	return c.body(strings.NewReader(target), int64(len(target)))
}

// Close writes the trailer and flushes; it does not close the underlying
// writer.
func (c *cpioWriter) Close() error {
	if err := c.header("TRAILER!!!", 0, 1, 0); err != nil {
		return err
	}
	return c.w.Flush()
}

// entry writes the header of a non-directory entry after its parents.
func (c *cpioWriter) entry(name string, mode uint32, size int64) error {
	name = cpioName(name)
	if name == "" {
		return fmt.Errorf("cpio: empty entry name")
	}
	if size > math.MaxUint32 {
		return fmt.Errorf("cpio: %s is too large for newc (%d bytes)", name, size)
	}
	if err := c.parents(name); err != nil {
		return err
	}
	return c.header(name, mode, 1, uint32(size))
}

func (c *cpioWriter) parents(name string) error {
	if dir := path.Dir(name); dir != "." {
		return c.Dir(dir, 0o755)
	}
	return nil
}

// header writes one newc header and the NUL-terminated name, padded. Times
// and owners are zero so that archives are reproducible and owned by root.
func (c *cpioWriter) header(name string, mode, nlink, size uint32) error {
	c.ino++
	_, err := fmt.Fprintf(c.w, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%s\x00",
		c.ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, len(name)+1, 0, name)
	if err != nil {
		return err
	}
	c.n += 110 + int64(len(name)) + 1
	return c.pad()
}

func (c *cpioWriter) body(r io.Reader, size int64) error {
	n, err := io.CopyN(c.w, r, size)
	c.n += n
	if err != nil {
		return fmt.Errorf("cpio: file changed while archiving: %w", err)
	}
	return c.pad()
}

func (c *cpioWriter) pad() error {
	var zeros [3]byte
	k := (4 - c.n%4) % 4
	_, err := c.w.Write(zeros[:k])
	c.n += k
	return err
}

// cpioName turns a guest path into an archive name: relative, cleaned, as
// the kernel's own gen_init_cpio writes them.
func cpioName(name string) string {
	return strings.TrimLeft(path.Clean("/"+name), "/")
}
