package imgtool

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/internal/testutil"
)

// qemuTool runs qemu-img or qemu-io and fails the test on error.
func qemuTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	testutil.NeedTool(t, name)
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestConvertSnapshot: convert -l reads the named internal snapshot, as
// qemu-img does (iotest 058), for every way of naming it; names that match
// nothing fail as in qemu-img, and -s (gone from qemu-img 7) is refused.
func TestConvertSnapshot(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.qcow2")
	qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", src, "2M")
	for i := 1; i <= 3; i++ {
		qemuTool(t, "qemu-io", "-c", fmt.Sprintf("write -P %d %dk 64k", i, i*64), src)
		qemuTool(t, "qemu-img", "snapshot", "-c", fmt.Sprintf("snap%d", i), src)
	}
	qemuTool(t, "qemu-io", "-c", "write -P 9 0 1M", src)
	for _, sel := range []string{"snap1", "2", "snap3", "snapshot.name=snap2", "snapshot.id=3", "snapshot.id=1,snapshot.name=snap1",
		"snapshot.id=2,snapshot.name=snap1", "nosuch", "snapshot.bogus=1"} {
		t.Run(sel, func(t *testing.T) {
			theirs, ours := filepath.Join(t.TempDir(), "q.raw"), filepath.Join(t.TempDir(), "p.raw")
			qerr := exec.Command("qemu-img", "convert", "-l", sel, "-O", "raw", src, theirs).Run()
			rc, _, stderr := pimg("convert", "-l", sel, "-O", "raw", src, ours)
			if (qerr == nil) != (rc == 0) {
				t.Fatalf("qemu-img: %v; petrel img: exit %d %s", qerr, rc, stderr)
			}
			if qerr != nil {
				if _, err := os.Stat(ours); err == nil {
					t.Fatalf("a failed convert left %s behind", ours)
				}
				return
			}
			want, _ := os.ReadFile(theirs)
			got, _ := os.ReadFile(ours)
			if !bytes.Equal(got, want) {
				t.Fatalf("convert -l %s: output differs from qemu-img's", sel)
			}
			if exec.Command("qemu-img", "compare", "-f", "raw", "-F", "qcow2", ours, src).Run() == nil {
				t.Fatalf("convert -l %s wrote the active layer", sel)
			}
		})
	}
	if rc, _, _ := pimg("convert", "-s", "snap1", "-O", "raw", src, filepath.Join(dir, "s.raw")); rc == 0 {
		t.Fatal("convert -s was accepted")
	}
}
