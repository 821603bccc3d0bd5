// Command connhold runs inside the test guest: it opens many connections
// to the daemon's control socket and holds them open, sending nothing,
// until the daemon has used up its file descriptors (accept then fails
// with EMFILE), keeps them a while longer, and closes them all. The test
// then checks that the control server answers again.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	control := flag.String("control", "/run/modautoload/control", "the daemon's control socket")
	pid := flag.Int("pid", 0, "the daemon's process id, to watch its descriptors")
	conns := flag.Int("conns", 200, "connections to open; more than the daemon's descriptor limit")
	wait := flag.Duration("wait", 10*time.Second, "how long to wait for the daemon to run out of descriptors")
	hold := flag.Duration("hold", 3*time.Second, "how long to keep the connections once it has")
	flag.Parse()
	if *pid <= 0 || *conns <= 0 {
		fmt.Fprintln(os.Stderr, "connhold: --pid and a positive --conns are required")
		os.Exit(2)
	}
	limit, err := descriptorLimit(*pid)
	if err != nil {
		fmt.Fprintln(os.Stderr, "connhold:", err)
		os.Exit(1)
	}

	var held []net.Conn
	var dialErr error
	for range *conns {
		c, err := net.DialTimeout("unix", *control, 2*time.Second)
		if err != nil {
			dialErr = err
			break
		}
		held = append(held, c)
	}

	// The daemon accepts what it can; once its table is full its next
	// accept fails. Watch the table until it is, then a while longer.
	peak, exhaustedAt := 0, time.Time{}
	deadline := time.Now().Add(*wait)
	for {
		n, err := descriptorCount(*pid)
		if err != nil {
			fmt.Fprintln(os.Stderr, "connhold:", err)
			break
		}
		peak = max(peak, n)
		now := time.Now()
		if n >= limit && exhaustedAt.IsZero() {
			exhaustedAt = now
			deadline = now.Add(*hold)
		}
		if now.After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, c := range held {
		c.Close()
	}
	if dialErr != nil {
		fmt.Printf("E2E:HOLD_DIAL_ERR %v\n", dialErr)
	}
	fmt.Printf("E2E:HOLD dialed=%d limit=%d peak=%d exhausted=%v\n", len(held), limit, peak, !exhaustedAt.IsZero())
}

// descriptorLimit reads the soft "Max open files" limit of process pid.
func descriptorLimit(pid int) (int, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "Max open files")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			break
		}
		n, err := strconv.Atoi(fields[0])
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/limits: Max open files %q: %v", pid, fields[0], err)
		}
		return n, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("/proc/%d/limits: no Max open files line", pid)
}

func descriptorCount(pid int) (int, error) {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(fds), err
}
