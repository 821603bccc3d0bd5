package main

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/modautoload/modautoload/daemon/daemontest"
	"github.com/modautoload/modautoload/internal/testtool"
)

// runMainEnv makes the test binary run main() with its arguments instead
// of the tests, so that a test can watch the whole process.
const runMainEnv = "MODAUTOLOAD_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
	}
	os.Exit(m.Run())
}

// runMain starts this test binary as modautoload with args.
func runMain(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), runMainEnv+"=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

// modprobe keeps kmod's signal dispositions: SIGTERM ends it at once,
// where the other commands catch it and stop cleanly (exit status 1 for
// a load cut short). The daemon here takes the request and sits on it.
func TestModprobeDiesOfSIGTERMLikeKmod(t *testing.T) {
	testtool.NeedRoot(t, "the helper talks only to a daemon run by root")
	asked := make(chan struct{}, 1)
	path := daemontest.FakeServer(t, func(_ *net.UnixConn, done <-chan struct{}) {
		asked <- struct{}{}
		<-done
	})
	cmd := runMain(t, "modprobe", "--control", path, "-q", "--", "dummy")
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case <-asked:
	case err := <-exited:
		t.Fatalf("modprobe ended before it asked the daemon: %v", err)
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("modprobe did not ask the daemon within 10 s")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-exited:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("modprobe still runs 10 s after SIGTERM")
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("modprobe after SIGTERM: %v; want it killed by the signal", err)
	}
	if ws := ee.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Errorf("modprobe after SIGTERM: %v; want it killed by SIGTERM, as kmod's is", err)
	}
}
