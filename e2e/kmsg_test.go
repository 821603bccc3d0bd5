package e2e

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// foreignVermagic is what dummy.ko's vermagic becomes: Debian 11's kernel.
// With modversions the kernel compares what follows the release, so the
// flags must differ too (5.10 had no "preempt").
const foreignVermagic = "vermagic=5.10.0-30-amd64 SMP mod_unload modversions "

// TestLoadFailureCauses: each kind of refused load is reported with its
// cause, the explanation and the kernel's own line, in the one-shot
// command's error output and, through the daemon, in its log and status:
// a bad parameter from modprobe.d, a module built for another kernel
// (unsigned, and signed but altered), a dependency's file removed (and a
// module whose modules.dep line lost that dependency: the kernel names
// the unknown symbol), and modules_disabled.
func TestLoadFailureCauses(t *testing.T) {
	Require(t)
	k := KernelFor(t)
	const dummyPath, vethPath = "kernel/drivers/net/dummy.ko", "kernel/drivers/net/veth.ko"
	// Another kernel's module is unsigned, or signed with another key,
	// which the kernel lets by where signatures are not required; a
	// signature that no longer matches is refused (EKEYREJECTED) even
	// there.
	foreign := rebuiltForAnotherKernel(t, k, dummyPath, false)
	tampered := rebuiltForAnotherKernel(t, k, vethPath, true)

	res := Boot(t.Context(), t, Scenario{
		Files: append(daemonFiles(t),
			File{Guest: "/etc/modprobe.d/e2e.conf", Data: []byte("options loop max_loop=abc\n")},
			// In place of the real one: what a package built for another
			// kernel leaves in the tree modules.dep describes.
			File{Guest: "/lib/modules/" + k.Version + "/" + dummyPath, Data: foreign},
			File{Guest: "/lib/modules/" + k.Version + "/" + vethPath, Data: tampered},
		),
		Timeout: 3 * time.Minute,
		Script: `
M=/lib/modules/$(uname -r)
rm $M/kernel/net/xfrm/xfrm_algo.ko
# ah4 needs xfrm_algo; without it in modules.dep the kernel meets the
# unknown symbols itself (the text file serves when the index is gone).
sed -i 's|^kernel/net/ipv4/ah4.ko: .*|kernel/net/ipv4/ah4.ko:|' $M/modules.dep
rm $M/modules.dep.bin
# try NAME CASE: one-shot load, its exit status and error output
try() {
	modautoload modprobe "$1" >/tmp/out 2>&1; echo "E2E:RC_$2 $?"
	while read -r l; do echo "E2E:OUT_$2 $l"; done </tmp/out
}
` + startDaemon("") + `
modautoload settle --timeout 60s; echo "E2E:SETTLE_RC $?"
try loop PARAM
try dummy VERMAGIC
try veth SIGNATURE
try xfrm_user MISSING
try ah4 SYMBOL
echo "E2E:STATUS $(modautoload status --json)"
kill $DAEMON; wait $DAEMON
` + daemonLog + `
# Without the daemon, the one-shot command loads by itself.
try dummy VERMAGIC_DIRECT
echo 1 >/proc/sys/kernel/modules_disabled
try nlmon DISABLED
`,
	})
	if res.Value("SETTLE_RC") != "0" {
		t.Fatalf("settle exited %q; log %q", res.Value("SETTLE_RC"), res.Lines("LOG"))
	}
	var st struct {
		Modules map[string]struct {
			State, Err  string
			KernelLines []string
		} `json:"modules"`
	}
	if err := json.Unmarshal([]byte(res.Value("STATUS")), &st); err != nil {
		t.Fatalf("status %q: %v", res.Value("STATUS"), err)
	}
	logs := res.Lines("LOG")
	for _, c := range []struct {
		key, module, failed string // failed: the module whose load failed (a dependency's)
		says                []string
		kernel              string // the kernel's line, if it says one
		silent              bool   // the kernel cannot have said anything
		daemon              bool
	}{
		{"PARAM", "loop", "loop", []string{"EINVAL", "max_loop=abc", "/etc/modprobe.d/e2e.conf:1"},
			"loop: `abc' invalid for parameter `max_loop'", false, true},
		{"VERMAGIC", "dummy", "dummy", []string{"ENOEXEC", "built for another kernel"},
			"dummy: version magic '5.10.0-30-amd64 SMP mod_unload modversions ' should be '" + k.Version + " SMP preempt", false, true},
		{"SIGNATURE", "veth", "veth", []string{"EKEYREJECTED", "signature was rejected"}, "", false, true},
		{"MISSING", "xfrm_user", "xfrm_algo", []string{"ENOENT", "xfrm_algo.ko", "modules.dep names is missing"}, "", true, true},
		{"SYMBOL", "ah4", "ah4", []string{"ENOENT", "unknown symbol"}, "ah4: Unknown symbol xfrm_", false, true},
		{"VERMAGIC_DIRECT", "dummy", "dummy", []string{"ENOEXEC", "built for another kernel"}, "dummy: version magic '5.10.0-30-amd64", false, false},
		{"DISABLED", "nlmon", "nlmon", []string{"EPERM", "modules_disabled"}, "", true, false},
	} {
		out := strings.Join(res.Lines("OUT_"+c.key), "\n")
		t.Logf("%s: exit %s: %s", c.key, res.Value("RC_"+c.key), out)
		if res.Value("RC_"+c.key) != "1" {
			t.Errorf("%s: modprobe %s exited %q, want 1", c.key, c.module, res.Value("RC_"+c.key))
		}
		want := c.says
		if c.kernel != "" {
			want = append(want, "the kernel said: "+c.kernel)
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: the error output does not say %q", c.key, w)
			}
		}
		if c.silent && strings.Contains(out, "the kernel said") {
			t.Errorf("%s: kernel lines attached where the kernel says nothing", c.key)
		}
		if !c.daemon {
			continue
		}
		ms := st.Modules[c.failed]
		if ms.State != "failed" || !strings.Contains(ms.Err, want[len(want)-1]) {
			t.Errorf("%s: status of %s %+v does not say %q", c.key, c.failed, ms, want[len(want)-1])
		}
		if c.kernel != "" && !slices.ContainsFunc(ms.KernelLines, func(l string) bool { return strings.HasPrefix(l, c.kernel) }) {
			t.Errorf("%s: status of %s has kernel lines %q, want %q", c.key, c.failed, ms.KernelLines, c.kernel)
		}
		logged := 0
		for _, l := range logs {
			if strings.Contains(l, `"load failed"`) && strings.Contains(l, `"module":"`+c.failed+`"`) {
				logged++
				if !strings.Contains(l, want[len(want)-1]) {
					t.Errorf("%s: the daemon logged %s, without %q", c.key, l, want[len(want)-1])
				}
			}
		}
		if logged != 1 {
			t.Errorf("%s: the daemon logged the failure of %s %d times, want once", c.key, c.failed, logged)
		}
	}
}

// unsigned strips a module's appended signature: the image, the
// signature, a 12-byte struct module_signature ending in the signature's
// big-endian length, and the marker.
func unsigned(ko []byte) ([]byte, error) {
	const marker = "~Module signature appended~\n"
	rest, ok := bytes.CutSuffix(ko, []byte(marker))
	if !ok {
		return ko, nil
	}
	if len(rest) < 12 {
		return nil, fmt.Errorf("signature marker without a signature")
	}
	sigLen := int(binary.BigEndian.Uint32(rest[len(rest)-4:]))
	if sigLen > len(rest)-12 {
		return nil, fmt.Errorf("signature length %d beyond the file", sigLen)
	}
	return rest[:len(rest)-12-sigLen], nil
}

// rebuiltForAnotherKernel returns a copy of the module at path in k's tree
// as if built for Debian 11's kernel: its vermagic rewritten in place (the
// same length, NUL-padded: the kernel skips NULs between .modinfo
// strings), its signature kept (no longer matching) or stripped.
func rebuiltForAnotherKernel(t *testing.T, k *Kernel, path string, keepSignature bool) []byte {
	t.Helper()
	ko, err := os.ReadFile(filepath.Join(k.ModulesDir(), path))
	if err != nil {
		t.Fatal(err)
	}
	own := []byte("vermagic=" + k.Version + " ")
	at := bytes.Index(ko, own)
	if at < 0 {
		t.Fatalf("%s has no %q", path, own)
	}
	end := at + bytes.IndexByte(ko[at:], 0)
	if end-at < len(foreignVermagic) {
		t.Fatalf("%s: vermagic %q is shorter than the foreign one", path, ko[at:end])
	}
	copy(ko[at:end], foreignVermagic+strings.Repeat("\x00", end-at-len(foreignVermagic)))
	if keepSignature {
		return ko
	}
	ko, err = unsigned(ko)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return ko
}
