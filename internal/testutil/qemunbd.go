package testutil

import (
	"bytes"
	"net"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// QemuNBD starts Debian's qemu-nbd on a unix socket in a temporary
// directory, exporting "exp" with the given arguments (format, flags,
// file), and returns the socket path. The server is stopped when the
// test ends, or earlier by stop, which waits for it to exit (so the
// image is closed afterwards). A missing qemu-nbd skips the test, or
// fails it under CI (NeedTool).
func QemuNBD(t testing.TB, args ...string) (sock string, stop func()) {
	t.Helper()
	prog := NeedTool(t, "qemu-nbd")
	sock = filepath.Join(t.TempDir(), "sock")
	cmd := exec.Command(prog, append([]string{"--persistent", "--shared=4", "-k", sock, "-x", "exp"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	// A test binary killed by its timeout takes the server with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		// qemu-nbd may wait for a connected client on SIGTERM (one a
		// failed test left open): it gets a few seconds, then SIGKILL.
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(Timeout(5 * time.Second)):
			cmd.Process.Kill()
			<-exited
		}
	}
	t.Cleanup(stop)
	deadline := time.Now().Add(Timeout(10 * time.Second))
	// The socket file appears at bind, before qemu-nbd listens: a client
	// that comes in between is refused. Ready is when a connection is
	// accepted (--persistent: the probe's hang-up does not end it).
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return sock, stop
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("qemu-nbd did not create %s: %s", sock, stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
