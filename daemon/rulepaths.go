package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// maxRulePathsFile bounds the rule paths file the helper reads.
const maxRulePathsFile = 64 << 10

// rulePathsFile is where the daemon whose control socket is control
// records the event rule paths it was started with.
func rulePathsFile(control string) string {
	return filepath.Join(filepath.Dir(control), "rule-paths")
}

// PublishRulePaths records, beside the control socket at control, the
// event rule paths the daemon was started with; with none (the default
// directories) it removes the record. The modprobe helper, when it loads
// without the daemon, reads them back with PublishedRulePaths and so
// refuses what the daemon would refuse. The file stays after the daemon
// exits: its allow-list still holds then. Call it after Listen, which
// checked the directory.
func PublishRulePaths(control string, paths []string) error {
	dst := rulePathsFile(control)
	if len(paths) == 0 {
		if err := os.Remove(dst); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	abs := make([]string, 0, len(paths))
	for _, p := range paths {
		a, err := filepath.Abs(p)
		if err != nil {
			return err
		}
		abs = append(abs, a)
	}
	data, err := json.Marshal(abs)
	if err != nil {
		return err
	}
	// Written aside and renamed, so a reader never sees half a file.
	f, err := os.CreateTemp(filepath.Dir(dst), ".rule-paths-*")
	if err != nil {
		return err
	}
	_, err = f.Write(append(data, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), dst)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("%s: %w", dst, err)
	}
	return nil
}

// PublishedRulePaths returns the event rule paths recorded by the daemon
// whose control socket is control: nil when it uses the default
// directories or no daemon recorded any. The file must be root's and
// writable by nobody else, in a directory that is the same.
func PublishedRulePaths(control string) ([]string, error) {
	name := rulePathsFile(control)
	f, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := checkRootDir(filepath.Dir(name)); err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("%s: not a regular file", name)
	case !ok || st.Uid != 0:
		return nil, fmt.Errorf("%s: not owned by root", name)
	case fi.Mode().Perm()&0o022 != 0:
		return nil, fmt.Errorf("%s: mode %04o lets group or others write to it", name, fi.Mode().Perm())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxRulePathsFile+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(data) > maxRulePathsFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, maxRulePathsFile)
	}
	var paths []string
	if err := json.Unmarshal(data, &paths); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("%s: no paths", name)
	}
	for _, p := range paths {
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("%s: %q is not an absolute path", name, p)
		}
	}
	return paths, nil
}
