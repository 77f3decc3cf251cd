package nbd

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/internal/testutil"
)

// run runs a command and fails the test on a non-zero exit.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// serve starts Debian's qemu-nbd on a unix socket in a temporary
// directory, exporting "exp" with the given arguments (format, file and
// flags), and returns the socket path; the server is stopped when the
// test ends, or by the returned stop function (which waits for it, so
// the image is no longer open afterwards).
func serve(t *testing.T, args ...string) (sock string, stop func()) {
	t.Helper()
	testutil.NeedTool(t, "qemu-nbd")
	sock = filepath.Join(t.TempDir(), "sock")
	cmd := exec.Command("qemu-nbd", append([]string{"--persistent", "--shared=4", "-k", sock, "-x", "exp"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := false
	stop = func() {
		if done {
			return
		}
		done = true
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}
	t.Cleanup(stop)
	deadline := time.Now().Add(testutil.Timeout(10 * time.Second))
	for {
		if _, err := os.Stat(sock); err == nil {
			return sock, stop
		}
		if time.Now().After(deadline) {
			t.Fatalf("qemu-nbd did not create %s: %s", sock, stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// qemuImage makes a qcow2 image of size bytes with qemu-img and runs
// the given qemu-io commands on it.
func qemuImage(t *testing.T, size string, ioCmds ...string) string {
	t.Helper()
	testutil.NeedTool(t, "qemu-img")
	testutil.NeedTool(t, "qemu-io")
	path := filepath.Join(t.TempDir(), "disk.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", path, size)
	for _, c := range ioCmds {
		run(t, "qemu-io", "-f", "qcow2", "-c", c, path)
	}
	return path
}

// qemuRaw is the image's content as qemu-img converts it to raw.
func qemuRaw(t *testing.T, path string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out.raw")
	run(t, "qemu-img", "convert", "-O", "raw", path, out)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
