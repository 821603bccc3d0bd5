package daemon

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestRulePathsRoundTrip(t *testing.T) {
	control := filepath.Join(t.TempDir(), "control")
	if paths, err := PublishedRulePaths(control); paths != nil || err != nil {
		t.Errorf("nothing published: %q, %v; want the defaults (nil)", paths, err)
	}
	rel, err := filepath.Abs("local.rules")
	if err != nil {
		t.Fatal(err)
	}
	if err := PublishRulePaths(control, []string{"/etc/site.rules", "local.rules"}); err != nil {
		t.Fatal(err)
	}
	paths, err := PublishedRulePaths(control)
	if want := []string{"/etc/site.rules", rel}; err != nil || !reflect.DeepEqual(paths, want) {
		t.Errorf("published %q, %v; want %q", paths, err, want)
	}
	if fi, err := os.Stat(rulePathsFile(control)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("rule paths file %v, %v; want mode 0600", fi.Mode(), err)
	}
	// A daemon started with the default directories removes the record.
	if err := PublishRulePaths(control, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(rulePathsFile(control)); !os.IsNotExist(err) {
		t.Errorf("the record of the defaults: %v; want none", err)
	}
	if paths, err := PublishedRulePaths(control); paths != nil || err != nil {
		t.Errorf("after publishing the defaults: %q, %v", paths, err)
	}
}

func TestPublishedRulePathsRefusesBadFiles(t *testing.T) {
	for _, tc := range []struct {
		name, content string
		mode          os.FileMode
		want          string
	}{
		{"group-writable", `["/etc/x.rules"]`, 0o620, "mode 0620"},
		{"not JSON", `/etc/x.rules`, 0o600, "invalid character"},
		{"relative path", `["x.rules"]`, 0o600, `"x.rules" is not an absolute path`},
		{"no paths", `[]`, 0o600, "no paths"},
		{"too large", `["/` + strings.Repeat("x", maxRulePathsFile) + `"]`, 0o600, "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			control := filepath.Join(t.TempDir(), "control")
			file := rulePathsFile(control)
			if err := os.WriteFile(file, []byte(tc.content), tc.mode); err != nil {
				t.Fatal(err)
			}
			os.Chmod(file, tc.mode) // past the umask
			paths, err := PublishedRulePaths(control)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), file) {
				t.Errorf("got %q, %v; want an error naming %s and saying %q", paths, err, file, tc.want)
			}
		})
	}
}
