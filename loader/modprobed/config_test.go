package modprobed

import (
	"slices"
	"testing"
)

func TestMatchAliasesAllInOrder(t *testing.T) {
	c := parsed("alias snd-card-* snd-x\nalias other y\nalias snd-card-0 snd-y\nalias snd-card-? snd-x\n")
	want := []Alias{{"snd_card_*", "snd_x"}, {"snd_card_0", "snd_y"}, {"snd_card_?", "snd_x"}}
	if got := c.MatchAliases("snd_card_0"); !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if got := c.MatchAliases("none"); got != nil {
		t.Errorf("got %v for no match", got)
	}
}

func TestOptions(t *testing.T) {
	c := parsed("options m a=1\noptions m* never=pattern\nalias al* m\noptions al* via=alias\noptions m  \noptions m b=2\n")
	c.addCmdline("m.c=3 al*.d=4\n")
	tests := []struct{ module, alias, want string }{
		// "options m  " has the one-blank value " ", which is not empty.
		{"m", "", "a=1   b=2 c=3"},
		{"m", "al*", "a=1 via=alias   b=2 c=3 d=4"},
		{"x", "", ""},
	}
	for _, tt := range tests {
		if got := c.OptionsVia(tt.module, tt.alias); got != tt.want {
			t.Errorf("OptionsVia(%q, %q) = %q, want %q", tt.module, tt.alias, got, tt.want)
		}
	}
	if got := c.Options("m"); got != c.OptionsVia("m", "") {
		t.Errorf("Options = %q", got)
	}
}

// OptionSources names where each options line OptionsVia joins was
// written, in the same order, the kernel command line once.
func TestOptionSources(t *testing.T) {
	c := parsed("options m a=1\noptions m b=2\noptions other x=1\nalias al* m\noptions al* via=alias\n")
	c.parse("u.conf", []byte("# comment\noptions m u=1\n"))
	c.addCmdline("m.c=3 other.y=2 m.e=5")
	tests := []struct {
		module, alias string
		want          []string
	}{
		{"m", "", []string{"t.conf:1", "t.conf:2", "u.conf:2", "kernel command line"}},
		{"m", "al*", []string{"t.conf:1", "t.conf:2", "t.conf:5", "u.conf:2", "kernel command line"}},
		{"x", "", nil},
	}
	for _, tt := range tests {
		if got := c.OptionSources(tt.module, tt.alias); !slices.Equal(got, tt.want) {
			t.Errorf("OptionSources(%q, %q) = %q, want %q", tt.module, tt.alias, got, tt.want)
		}
	}
}

func TestOptionsSkipsEmpty(t *testing.T) {
	// "m." on the kernel command line adds an empty option.
	c := &Config{}
	c.addCmdline("m. m.a=1")
	if got := c.Options("m"); got != "a=1" {
		t.Errorf("got %q", got)
	}
}

func TestCommands(t *testing.T) {
	// As measured with kmod's modprobe -n -v: a module found by name runs
	// the first pattern match; the commands lookup step takes the first
	// line naming it exactly.
	c := parsed("install dup1 echo first\ninstall dup1 echo second\ninstall dup* echo pattern\n" +
		"install dup2 echo exact\nremove r-* echo rm-pattern\nremove r-1 echo rm-exact\n")
	check := func(name string, got string, ok bool, want string) {
		t.Helper()
		if !ok && want != "" || ok && got != want {
			t.Errorf("%s = %q, %v; want %q", name, got, ok, want)
		}
	}
	cmd, ok := c.Install("dup1")
	check("Install(dup1)", cmd, ok, "echo first")
	cmd, ok = c.Install("dup2")
	check("Install(dup2)", cmd, ok, "echo pattern")
	cmd, ok = c.ExactInstall("dup2")
	check("ExactInstall(dup2)", cmd, ok, "echo exact")
	cmd, ok = c.ExactInstall("dup3")
	check("ExactInstall(dup3)", cmd, ok, "")
	cmd, ok = c.Remove("r_1")
	check("Remove(r_1)", cmd, ok, "echo rm-pattern")
	cmd, ok = c.ExactRemove("r_1")
	check("ExactRemove(r_1)", cmd, ok, "echo rm-exact")
	cmd, ok = c.Install("other")
	check("Install(other)", cmd, ok, "")
}

func TestSoftdepFirstMatchWins(t *testing.T) {
	c := parsed("softdep uhci-hcd pre: ehci-hcd\nsoftdep *hcd pre: x\nsoftdep empty pre:\nsoftdep empty pre: hidden\n")
	pre, post := c.Softdep("uhci_hcd")
	if !slices.Equal(pre, []string{"ehci-hcd"}) || post != nil {
		t.Errorf("uhci_hcd: %v %v", pre, post)
	}
	pre, _ = c.Softdep("ohci_hcd")
	if !slices.Equal(pre, []string{"x"}) {
		t.Errorf("ohci_hcd: %v", pre)
	}
	if pre, post := c.Softdep("empty"); pre != nil || post != nil {
		t.Errorf("a matching empty softdep must hide later lines: %v %v", pre, post)
	}
}

func TestWeakdep(t *testing.T) {
	c := parsed("weakdep lan78xx microchip smsc\nweakdep lan* other\n")
	if got := c.Weakdep("lan78xx"); !slices.Equal(got, []string{"microchip", "smsc"}) {
		t.Errorf("got %v", got)
	}
	if got := c.Weakdep("lan9"); !slices.Equal(got, []string{"other"}) {
		t.Errorf("got %v", got)
	}
	if got := c.Weakdep("x"); got != nil {
		t.Errorf("got %v", got)
	}
}

func TestBlacklistedIsExact(t *testing.T) {
	c := parsed("blacklist pcspkr\nblacklist snd-*\n")
	c.addCmdline("modprobe.blacklist=nouveau,foo-bar\n")
	tests := []struct {
		module string
		want   bool
	}{
		{"pcspkr", true},
		{"snd_*", true},
		{"snd_hda", false}, // no fnmatch
		{"nouveau", true},
		{"foo_bar", false}, // kernel command line names are not normalised
		{"foo-bar", true},
	}
	for _, tt := range tests {
		if got := c.Blacklisted(tt.module); got != tt.want {
			t.Errorf("Blacklisted(%q) = %v", tt.module, got)
		}
	}
}
