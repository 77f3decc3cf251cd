package blk

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/petrel-vmm/petrel/block"
	_ "github.com/petrel-vmm/petrel/block/all"
	"github.com/petrel-vmm/petrel/internal/testutil"
)

// TestQcow2Interop serves a qcow2 image made by qemu-img through the
// virtio-blk queue (writes, reads, discard, write-zeroes, flush), then
// checks with qemu-img that the image is clean and holds exactly the bytes
// the guest wrote.
func TestQcow2Interop(t *testing.T) {
	qemuImg := testutil.NeedTool(t, "qemu-img")
	dir := t.TempDir()
	path := filepath.Join(dir, "disk.qcow2")
	if out, err := exec.Command(qemuImg, "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536",
		path, "4M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	img, err := block.Open(path, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if img.Format() != "qcow2" {
		t.Fatalf("opened as %s", img.Format())
	}
	r := newRig(t, img, Options{NumQueues: 2}, 2)
	model := make([]byte, diskSize)
	write := func(q int, sector uint64, n int, seed byte) {
		for i := range n {
			r.ram[dataGPA+uint64(i)] = seed + byte(i*13)
		}
		copy(model[sector*512:], r.ram[dataGPA:dataGPA+uint64(n)])
		if st, _ := r.do(q, TypeOut, sector, uint32(n), true, 3, q == 1); st != StatusOK {
			t.Fatalf("write at sector %d: status %d", sector, st)
		}
	}
	write(0, 0, 65536, 1)
	write(1, 130, 12288, 2) // crosses a cluster boundary
	write(0, 4096, 4096, 3)
	write(1, 8000, 8192, 4)
	segment := func(typ uint32, sector uint64, num, flags uint32) {
		binary.LittleEndian.PutUint64(r.ram[dataGPA:], sector)
		binary.LittleEndian.PutUint32(r.ram[dataGPA+8:], num)
		binary.LittleEndian.PutUint32(r.ram[dataGPA+12:], flags)
		if st, _ := r.do(0, typ, 0, 16, true, 1, false); st != StatusOK {
			t.Fatalf("type %d at sector %d: status %d", typ, sector, st)
		}
		clear(model[sector*512 : (sector+uint64(num))*512])
	}
	segment(TypeWriteZeroes, 4096, 8, unmapFlag)
	segment(TypeWriteZeroes, 8008, 8, 0)
	segment(TypeDiscard, 0, 128, 0) // one whole cluster
	// Read everything back through the queue.
	for sector := uint64(0); sector < diskSize/512; sector += 256 {
		if st, _ := r.do(int(sector/256)%2, TypeIn, sector, 131072, false, 2, false); st != StatusOK {
			t.Fatalf("read at sector %d: status %d", sector, st)
		}
		if !bytes.Equal(r.ram[dataGPA:dataGPA+131072], model[sector*512:sector*512+131072]) {
			t.Fatalf("read at sector %d differs from what was written", sector)
		}
	}
	if st, _ := r.do(0, TypeFlush, 0, 0, false, 1, false); st != StatusOK {
		t.Fatalf("flush: status %d", st)
	}
	if err := r.dev.Release(); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(qemuImg, "check", "-q", path).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img check: %v\n%s", err, out)
	}
	rawPath := filepath.Join(dir, "out.raw")
	if out, err := exec.Command(qemuImg, "convert", "-O", "raw", path, rawPath).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	got, err := os.ReadFile(rawPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, model) {
		t.Fatal("qemu-img reads different data than the guest wrote")
	}
}
