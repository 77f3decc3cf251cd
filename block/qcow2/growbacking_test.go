package qcow2

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/petrel-vmm/petrel/block"
	"github.com/petrel-vmm/petrel/internal/testutil"
)

// TestGrowOverLongerBacking: growing an image whose backing file is
// longer makes the new area read zeroes, not the backing file's data past
// the old end, as QEMU's truncate (iotest 292); a v2 image, which cannot
// hold zero clusters there, is refused unchanged.
func TestGrowOverLongerBacking(t *testing.T) {
	for _, compat := range []string{"1.1", "0.10"} {
		dir := t.TempDir()
		createFilled(t, filepath.Join(dir, "base.qcow2"), bytes.Repeat([]byte{0x11}, 1<<20))
		top := filepath.Join(dir, "top.qcow2")
		if err := Create(top, block.CreateOptions{Size: 512 << 10, BackingFile: "base.qcow2", BackingFormat: "qcow2", Compat: compat}); err != nil {
			t.Fatal(err)
		}
		img, err := Open(top, block.Options{})
		if err != nil {
			t.Fatal(err)
		}
		err = img.Resize(1 << 20)
		if compat == "0.10" {
			if err == nil || err.Error() != "Failed to zero out new clusters: Operation not supported" || img.Size() != 512<<10 {
				t.Errorf("v2: resize over a longer backing file: %v, size %d", err, img.Size())
			}
			img.Close()
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		got := readAll(t, img)
		img.Close()
		want := append(bytes.Repeat([]byte{0x11}, 512<<10), make([]byte, 512<<10)...)
		assertEqual(t, "grown image", got, want)
		qemuCheck(t, top, false)
	}
}

// createFilled writes a new image at path holding data.
func createFilled(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := Create(path, block.CreateOptions{Size: int64(len(data))}); err != nil {
		t.Fatal(err)
	}
	img, err := Open(path, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if _, err := img.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
}

// TestShrinkLikeQemu: a shrink over data keeps what lies below the new
// end, frees the rest, drops the L2 tables and refcount blocks left
// without use and cuts the file after its last cluster in use, as QEMU's
// qcow2 truncate (iotests 163, 250, 292): qemu-img check is clean, no L1
// entry or refcount table entry points past what is in use, and the
// file is no longer than qemu-img's own shrink of the same image.
func TestShrinkLikeQemu(t *testing.T) {
	testutil.NeedTool(t, "qemu-img")
	for _, o := range []string{"cluster_size=512,refcount_bits=1", "cluster_size=65536", "cluster_size=65536,extended_l2=on"} {
		sizes := map[string]int64{}
		for _, who := range []string{"qemu-img", "petrel"} {
			path := filepath.Join(t.TempDir(), "s.qcow2")
			run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", o, path, "4M")
			qemuIO(t, path, "qcow2", "write -P 0x5a 0 4M")
			if who == "qemu-img" {
				run(t, "qemu-img", "resize", "--shrink", path, "1000k")
			} else {
				img, err := Open(path, block.Options{})
				if err != nil {
					t.Fatal(err)
				}
				if err := img.Resize(1000 << 10); err != nil {
					t.Fatalf("%s: shrink: %v", o, err)
				}
				img.Close()
			}
			qemuCheck(t, path, false)
			qemuIO(t, path, "qcow2", "read -P 0x5a 0 1000k")
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			h, err := parseHeader(raw, int64(len(raw)))
			if err != nil {
				t.Fatal(err)
			}
			need := l1EntriesFor(h.size, h.clusterBits, h.l2EntryBits())
			for i := need; i < h.l1Size; i++ {
				if e := binary.BigEndian.Uint64(raw[h.l1Off+uint64(i)*8:]); e != 0 {
					t.Errorf("%s %s: L1 entry %d past the size is %#x", o, who, i, e)
				}
			}
			for i := uint64(0); i < uint64(h.rtClusters)<<h.clusterBits; i += 8 {
				if off := binary.BigEndian.Uint64(raw[h.rtOff+i:]); off != 0 && (off >= uint64(len(raw)) || bytes.Count(raw[off:off+1<<h.clusterBits], []byte{0}) == 1<<h.clusterBits) {
					t.Errorf("%s %s: refcount table entry %d names an empty block at %#x", o, who, i/8, off)
				}
			}
			sizes[who] = int64(len(raw))
		}
		if sizes["petrel"] > sizes["qemu-img"] {
			t.Errorf("%s: file after shrink %d bytes, qemu-img's %d", o, sizes["petrel"], sizes["qemu-img"])
		}
	}
}

// TestResizePrealloc: growing with preallocation allocates every cluster
// of the new area, the one the old end cuts included, and leaves the
// clusters before it as they were (iotest 125); qemu-img map and check
// agree.
func TestResizePrealloc(t *testing.T) {
	testutil.NeedTool(t, "qemu-img")
	for _, mode := range []string{"metadata", "falloc", "full"} {
		path := filepath.Join(t.TempDir(), "p.qcow2")
		if err := Create(path, block.CreateOptions{Size: 100 << 10}); err != nil {
			t.Fatal(err)
		}
		img, err := Open(path, block.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := img.WriteAt(bytes.Repeat([]byte{7}, 4096), 0); err != nil {
			t.Fatal(err)
		}
		if err := img.ResizePrealloc(1<<20, mode); err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		if err := img.ResizePrealloc(512<<10, mode); err == nil || err.Error() != "Preallocation can't be used for shrinking an image" {
			t.Errorf("%s: shrink with preallocation: %v", mode, err)
		}
		got := readAll(t, img)
		img.Close()
		want := append(bytes.Repeat([]byte{7}, 4096), make([]byte, 1<<20-4096)...)
		assertEqual(t, mode, got, want)
		qemuCheck(t, path, false)
		var ext []struct {
			Start, Length int64
			Data          bool
		}
		if err := json.Unmarshal([]byte(run(t, "qemu-img", "map", "--output=json", path)), &ext); err != nil {
			t.Fatal(err)
		}
		// Cluster 0 holds data; cluster 1 (the old end cuts it) and all
		// after it are preallocated: every byte of the disk is mapped.
		for _, e := range ext {
			if !e.Data {
				t.Errorf("%s: qemu-img map: %+v not allocated", mode, e)
			}
		}
	}
}

// TestResizePreallocUnalignedBacking: the cluster an unaligned old end
// cuts keeps the backing file's data below the old end when it is
// preallocated, the new area reads zeroes, and the file holds exactly two
// data clusters besides the metadata, as QEMU's (iotest 125).
func TestResizePreallocUnalignedBacking(t *testing.T) {
	for _, mode := range []string{"metadata", "full"} {
		dir := t.TempDir()
		createFilled(t, filepath.Join(dir, "base.qcow2"), bytes.Repeat([]byte{1}, 128<<10))
		top := filepath.Join(dir, "top.qcow2")
		if err := Create(top, block.CreateOptions{Size: 31 << 10, BackingFile: "base.qcow2", BackingFormat: "qcow2"}); err != nil {
			t.Fatal(err)
		}
		img, err := Open(top, block.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := img.ResizePrealloc(96<<10, mode); err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		got := readAll(t, img)
		img.Close()
		assertEqual(t, mode, got, append(bytes.Repeat([]byte{1}, 31<<10), make([]byte, 65<<10)...))
		// header, refcount table, refcount block, L1, L2, 2 data clusters
		if st, err := os.Stat(top); err != nil || st.Size() != 7<<16 {
			t.Errorf("%s: file length %v, %v; want %d", mode, st.Size(), err, 7<<16)
		}
		qemuCheck(t, top, false)
	}
}
