package qcow2

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"testing"

	"github.com/petrel-vmm/petrel/block"
	"github.com/petrel-vmm/petrel/internal/testutil"
)

// leakHeaderCluster raises the refcount of cluster 0 (the header) to 2, a
// pure leak that makes check -r all repair the image.
func leakHeaderCluster(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [8]byte
	f.ReadAt(b[:], 48)
	rt := int64(binary.BigEndian.Uint64(b[:]))
	f.ReadAt(b[:], rt)
	rb := int64(binary.BigEndian.Uint64(b[:]))
	binary.BigEndian.PutUint16(b[:2], 2) // 16-bit refcounts
	if _, err := f.WriteAt(b[:2], rb); err != nil {
		t.Fatal(err)
	}
}

// TestRepairKeepsCompressedClusterAtEOF: the sector count of a compressed
// cluster descriptor is rounded up, so the last compressed cluster of a
// file may reach a little beyond its end (QEMU writes only the compressed
// bytes). Such an entry is valid; a repair must keep it, not replace it by
// zeroes. (With lazy refcounts every crash ends in such a repair when the
// image is reopened, which read back flushed compressed data as zeroes.)
func TestRepairKeepsCompressedClusterAtEOF(t *testing.T) {
	testutil.NeedTool(t, "qemu-img")
	for _, cs := range []int64{4096, 65536} {
		t.Run(fmt.Sprint(cs), func(t *testing.T) {
			want := bytes.Repeat([]byte("compressible data "), 8192)[:2*cs]
			img, path := mustCreate(t, block.CreateOptions{Size: 2 * cs, ClusterSize: cs})
			// The L2 table first, so that the compressed data ends the file.
			if _, err := img.WriteAt(want[cs:], cs); err != nil {
				t.Fatal(err)
			}
			if err := img.WriteCompressed(want[:cs], 0); err != nil {
				t.Fatal(err)
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			if st, _ := os.Stat(path); st.Size()%512 == 0 {
				t.Fatalf("file size %d: the compressed cluster does not end mid-sector, nothing is tested", st.Size())
			}
			leakHeaderCluster(t, path)
			img, err := Open(path, block.Options{Repair: true})
			if err != nil {
				t.Fatal(err)
			}
			res, err := img.Check(block.RepairAll)
			if err != nil || res.LeaksFixed != 1 || res.Corruptions != 0 {
				t.Fatalf("repair: %+v %v %v", res, err, res.Messages)
			}
			assertEqual(t, "compressed cluster after repair", readAll(t, img), want)
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			qemuCheck(t, path, false)
			assertEqual(t, "qemu-img reading the repaired image", qemuRaw(t, path), want)
		})
	}
}
