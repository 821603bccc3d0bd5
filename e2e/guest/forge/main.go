// Command forge runs inside the test guest as root and sends a fake kernel
// uevent to the kernel's multicast group, as CVE-2009-1185's exploit did, to
// prove that modautoload only listens to the kernel.
package main

import (
	"flag"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

func main() {
	devpath := flag.String("devpath", "/devices/virtual/forged/forged0", "DEVPATH of the fake event")
	modalias := flag.String("modalias", "", "MODALIAS of the fake event")
	count := flag.Int("count", 1, "how many copies to send")
	flag.Parse()

	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		fmt.Fprintln(os.Stderr, "forge: socket:", err)
		os.Exit(1)
	}
	defer unix.Close(fd)
	to := &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}
	for i := 0; i < *count; i++ {
		msg := fmt.Sprintf("add@%s\x00ACTION=add\x00DEVPATH=%s\x00SUBSYSTEM=forged\x00SEQNUM=%d\x00",
			*devpath, *devpath, 900000+i)
		if *modalias != "" {
			msg += "MODALIAS=" + *modalias + "\x00"
		}
		if err := unix.Sendto(fd, []byte(msg), 0, to); err != nil {
			fmt.Fprintln(os.Stderr, "forge: send:", err)
			os.Exit(1)
		}
	}
	fmt.Printf("E2E:FORGED %d\n", *count)
}
