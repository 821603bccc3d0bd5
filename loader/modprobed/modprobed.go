package modprobed

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/modautoload/modautoload/internal/regfile"
)

// DefaultDirs returns the modprobe.d directories libkmod reads when no
// config path is given, highest precedence first. kmod 30 (Debian 12) lacks
// /usr/lib/modprobe.d; later releases read it (their DISTCONFDIR). On
// merged-/usr systems the last two are one directory, and shadowing by name
// reads each file once.
func DefaultDirs() []string {
	return []string{
		"/etc/modprobe.d",
		"/run/modprobe.d",
		"/usr/local/lib/modprobe.d",
		"/usr/lib/modprobe.d",
		"/lib/modprobe.d",
	}
}

// maxConfigFile bounds one configuration file: Debian's whole modprobe.d
// is a few KiB.
const maxConfigFile = 16 << 20

// LoadOptions says where the configuration comes from.
type LoadOptions struct {
	// Paths replaces DefaultDirs, like modprobe -C (which may be repeated).
	// Each path is a directory of *.conf files or a single file of any name.
	Paths []string

	// Root is prefixed to DefaultDirs, so tests can stage a whole system
	// under a temporary directory. It does not apply to Paths or ModuleDir.
	// modprobe -d has no equivalent: kmod applies its basedir only to
	// /lib/modules, never to modprobe.d.
	Root string

	// ModuleDir is the module directory (/lib/modules/VERSION). libkmod
	// parses its modules.softdep and modules.weakdep as if they were
	// configuration files of those names, sorted in among the *.conf files,
	// so their softdep lines take part in first-match-wins by name order.
	// Empty means none.
	ModuleDir string

	// Cmdline is the content of /proc/cmdline, applied after every file as
	// libkmod does. Empty means none.
	Cmdline string
}

// Load reads the configuration the way libkmod's kmod_config_new does.
// Missing files and directories are normal and ignored; anything else that
// goes wrong (unreadable file, bad line, bad kernel command line word) is
// recorded in Config.Problems and the rest still applies. The error is
// non-nil only for unusable options.
func Load(opts LoadOptions) (*Config, error) {
	c := &Config{}
	for _, f := range c.configFiles(opts) {
		data, err := readConfigFile(f.path)
		if err != nil {
			// libkmod skips files it cannot open without a word;
			// only a missing one is unremarkable.
			if !errors.Is(err, fs.ErrNotExist) {
				c.problem(f.path, 0, err.Error())
			}
			continue
		}
		c.Files = append(c.Files, f.path)
		c.parse(f.path, data)
	}
	c.addCmdline(opts.Cmdline)
	return c, nil
}

// confFile is one entry of libkmod's conf_files list: name is the sort and
// shadowing key, path what is opened.
type confFile struct {
	name, path string
}

// configFiles lists the files to parse in order. Every file from every path
// joins one list sorted by name (strcmp order); a name seen before, from an
// earlier path, shadows the later file. A symlink to /dev/null therefore
// masks a file of the same name further down, and an empty file does too.
func (c *Config) configFiles(opts LoadOptions) []confFile {
	var list []confFile
	insert := func(name, path string) {
		i := sort.Search(len(list), func(i int) bool { return list[i].name >= name })
		if i < len(list) && list[i].name == name {
			return
		}
		list = append(list, confFile{})
		copy(list[i+1:], list[i:])
		list[i] = confFile{name, path}
	}

	if opts.ModuleDir != "" {
		// Inserted before any path, so they win over a -C file of the
		// same name, as in libkmod.
		insert("modules.softdep", filepath.Join(opts.ModuleDir, "modules.softdep"))
		insert("modules.weakdep", filepath.Join(opts.ModuleDir, "modules.weakdep"))
	}

	paths := opts.Paths
	if len(paths) == 0 {
		for _, d := range DefaultDirs() {
			paths = append(paths, filepath.Join(opts.Root, d))
		}
	}
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				c.problem(p, 0, err.Error())
			}
			continue
		}
		if !st.IsDir() {
			// A path given as a file is read whatever its name or
			// type, /dev/null included.
			insert(filepath.Base(p), p)
			continue
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			c.problem(p, 0, err.Error())
		}
		for _, e := range entries {
			name := e.Name()
			// Hidden files and names not ending in ".conf" are skipped
			// (kmod 30 also took "*.alias"; later releases do not).
			if strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".conf") {
				continue
			}
			full := filepath.Join(p, name)
			// Symlinks are followed: one to /dev/null is a character
			// device and is kept, which is what makes it a mask.
			st, err := os.Stat(full)
			if err != nil {
				// Later kmod releases skip an entry they cannot
				// stat, such as a dangling symlink, so it shadows
				// nothing; kmod 30 read uninitialised memory here.
				c.problem(full, 0, "cannot stat directory entry: "+err.Error())
				continue
			}
			if st.IsDir() {
				c.problem(full, 0, "directories inside directories are not supported")
				continue
			}
			insert(name, full)
		}
	}
	return list
}

func (c *Config) problem(file string, line int, msg string) {
	c.Problems = append(c.Problems, &ParseError{File: file, Line: line, Msg: msg})
}

// readConfigFile reads one configuration file. A link to /dev/null (or
// -C /dev/null) masks by being empty, as libkmod reads it; any other
// non-regular file is refused without blocking on it.
func readConfigFile(path string) ([]byte, error) {
	if regfile.IsDevNull(path) {
		return nil, nil
	}
	return regfile.Read(path, maxConfigFile)
}
