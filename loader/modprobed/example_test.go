package modprobed_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/modautoload/modautoload/loader/modprobed"
)

func Example() {
	dir, err := os.MkdirTemp("", "modprobe.d")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	conf := `# local policy
alias my-nic e1000e
options e1000e InterruptThrottleRate=3000
blacklist pcspkr
install usb-storage /bin/false
softdep uhci-hcd pre: ehci-hcd
`
	if err := os.WriteFile(filepath.Join(dir, "local.conf"), []byte(conf), 0o644); err != nil {
		log.Fatal(err)
	}

	cfg, err := modprobed.Load(modprobed.LoadOptions{
		Paths:   []string{dir},                                      // nil: the system's modprobe.d directories
		Cmdline: "quiet e1000e.debug=2 modprobe.blacklist=floppy\n", // the content of /proc/cmdline
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, p := range cfg.Problems {
		log.Print(p)
	}

	for _, a := range cfg.MatchAliases("my_nic") {
		fmt.Printf("%s: %s\n", a.Module, cfg.OptionsVia(a.Module, a.Pattern))
	}
	fmt.Println(cfg.Blacklisted("pcspkr"), cfg.Blacklisted("floppy"))
	cmd, _ := cfg.Install("usb_storage")
	fmt.Println(cmd)
	pre, _ := cfg.Softdep("uhci_hcd")
	fmt.Println(pre)
	// Output:
	// e1000e: InterruptThrottleRate=3000 debug=2
	// true true
	// /bin/false
	// [ehci-hcd]
}
