package nbd

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

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

// serve starts qemu-nbd exporting "exp" (testutil.QemuNBD).
func serve(t *testing.T, args ...string) (sock string, stop func()) {
	t.Helper()
	return testutil.QemuNBD(t, args...)
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
