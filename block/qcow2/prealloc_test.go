package qcow2

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/petrel-vmm/petrel/block"
	"github.com/petrel-vmm/petrel/internal/testutil"
)

// TestExtendedL2PreallocWithBacking: with extended L2 entries, preallocation
// and a backing file go together (iotest 271): every cluster gets a host
// cluster whose subclusters are all unallocated, so the image still reads
// the backing file; a partial write fills its subclusters in place. Judged
// against the same image made by qemu-img.
func TestExtendedL2PreallocWithBacking(t *testing.T) {
	testutil.NeedTool(t, "qemu-img")
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "1M")
	qemuIO(t, base, "qcow2", "write -P 5 0 1M")
	for _, mode := range []string{"metadata", "falloc", "full"} {
		t.Run(mode, func(t *testing.T) {
			ours := filepath.Join(dir, "ours-"+mode+".qcow2")
			theirs := filepath.Join(dir, "theirs-"+mode+".qcow2")
			run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on,preallocation="+mode, "-b", "base.qcow2", "-F", "qcow2", theirs, "1M")
			if err := Create(ours, block.CreateOptions{Size: 1 << 20, ExtendedL2: true, Preallocation: mode, BackingFile: "base.qcow2", BackingFormat: "qcow2"}); err != nil {
				t.Fatal(err)
			}
			qemuCheck(t, ours, false)
			for _, p := range []string{ours, theirs} {
				// Every cluster allocated in the top image, all reading the base.
				out, err := exec.Command("qemu-img", "check", p).CombinedOutput()
				if err != nil || !bytes.Contains(out, []byte("16/16 = 100.00% allocated")) {
					t.Fatalf("%s: %v\n%s", p, err, out)
				}
			}
			if out, err := exec.Command("qemu-img", "compare", ours, theirs).CombinedOutput(); err != nil {
				t.Fatalf("compare: %v %s", err, out)
			}
			img, err := Open(ours, block.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := img.WriteAt(bytes.Repeat([]byte{9}, 3000), 70000); err != nil {
				t.Fatal(err)
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			qemuIO(t, theirs, "qcow2", "write -P 9 70000 3000")
			qemuCheck(t, ours, false)
			if out, err := exec.Command("qemu-img", "compare", ours, theirs).CombinedOutput(); err != nil {
				t.Fatalf("compare after a partial write: %v %s", err, out)
			}
		})
	}
}
