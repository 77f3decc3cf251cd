package qcow2

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/block"
)

// Snapshots lists an ID or name longer than QEMUSnapshotInfo holds cut as
// qemu-img lists it (127 and 255 bytes; iotest 261 has 64 KiB ones).
func TestSnapshotsListsNamesAsQemu(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.qcow2")
	if err := Create(path, block.CreateOptions{Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	img, err := Open(path, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("n", 4000)
	if err := img.CreateSnapshot(long); err != nil {
		t.Fatal(err)
	}
	list, err := img.Snapshots()
	img.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Name != long[:255] {
		t.Fatalf("listed %d snapshots, name of %d bytes; want one, 255 bytes", len(list), len(list[0].Name))
	}
	out := run(t, "qemu-img", "snapshot", "-l", path)
	if !strings.Contains(out, " "+long[:255]+" ") || strings.Contains(out, long[:256]) {
		t.Fatalf("qemu-img lists the name otherwise:\n%.400s", out)
	}
}
