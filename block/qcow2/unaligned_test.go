package qcow2

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/petrel-vmm/petrel/block"
	"github.com/petrel-vmm/petrel/internal/testutil"
)

// TestRepairUnalignedEntry: check -r all leaves an unaligned extended L2
// entry that holds data as it is (still corrupt, reads fail), and turns
// one that holds none into an entry without host cluster whose bitmap
// still reads zeroes and the backing file where it did, as QEMU's
// check_refcounts_l2 (iotest 271).
func TestRepairUnalignedEntry(t *testing.T) {
	testutil.NeedTool(t, "qemu-io")
	for _, zero := range []bool{false, true} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "base.raw"), bytes.Repeat([]byte{0xff}, 128<<10), 0o644); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "t.qcow2")
		run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on", "-F", "raw", "-b", "base.raw", path)
		qemuIO(t, path, "qcow2", "write -q -P 1 4k 2k")
		if zero {
			qemuIO(t, path, "qcow2", "write -q -z 4k 2k")
		}
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt([]byte{2}, 0x40000+6) // L2 entry 0: host offset 0x50200
		f.Close()
		img, err := Open(path, block.Options{Repair: true})
		if err != nil {
			t.Fatal(err)
		}
		res, err := img.Check(block.RepairAll)
		if err != nil {
			t.Fatal(err)
		}
		img.Close()
		if !zero {
			if res.Corruptions == 0 {
				t.Errorf("unaligned data cluster reported repaired: %+v", res)
			}
			if out, err := runAllowFail("qemu-io", "-c", "read -q 4k 2k", path); err == nil && !bytes.Contains([]byte(out), []byte("failed")) {
				t.Errorf("the data of an unaligned entry reads after repair: %s", out)
			}
			continue
		}
		if res.Corruptions != 0 {
			t.Errorf("unaligned entry without data not repaired: %+v %v", res, res.Messages)
		}
		qemuCheck(t, path, false)
		qemuIO(t, path, "qcow2", "read -q -P 0xff 0 4k", "read -q -P 0 4k 2k", "read -q -P 0xff 6k 122k")
	}
}
