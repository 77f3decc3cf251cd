package qcow2

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/petrel-vmm/petrel/block"
)

// FuzzOpen feeds arbitrary files to the engine: open, read a few ranges,
// check. Seeds in testdata/fuzz/FuzzOpen are small images made by qemu-img
// and by this engine (see testdata/README.md).
func FuzzOpen(f *testing.F) {
	// Whatever data file a fuzzed header names, a scratch file is opened
	// (the writable pass must write nowhere else).
	scratch := filepath.Join(f.TempDir(), "data")
	if err := os.WriteFile(scratch, make([]byte, 64<<10), 0o600); err != nil {
		f.Fatal(err)
	}
	saved := openDataHost
	openDataHost = func(_ string, readOnly, direct bool) (*block.HostFile, error) {
		return block.OpenHostFile(scratch, readOnly, direct)
	}
	f.Cleanup(func() { openDataHost = saved })
	f.Fuzz(fuzzBody)
}

// fuzzBody is FuzzOpen's body.
func fuzzBody(t *testing.T, data []byte) {
	path := filepath.Join(t.TempDir(), "f.qcow2")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	img, err := Open(path, block.Options{ReadOnly: true, NoBacking: true, CacheSize: 64 << 10})
	if err != nil {
		return
	}
	defer img.Close()
	size := img.Size()
	buf := make([]byte, 8192)
	for _, off := range []int64{0, 512, 65536 - 100, size / 2, size - 8192} {
		if off < 0 || off+int64(len(buf)) > size {
			continue
		}
		img.ReadAt(buf, off)
		img.BlockStatus(off, 1<<20)
	}
	img.Check(block.RepairNone)
	img.bitmapsSize(64 << 10)
	if list, err := img.Snapshots(); err == nil {
		for _, sn := range list[:min(len(list), 4)] {
			fuzzReadVMState(img, sn.ID)
		}
	}
	img.Describe()
	for _, b := range img.Bitmaps() {
		img.BitmapExtents(b.Name)
	}
	// The writable pass only for images whose refcount table covers a
	// modest file: allocation past a corrupt, fully used table lands
	// beyond its coverage, and a sparse file of many GiB makes every
	// later step slow without testing anything new.
	covered := int64(len(img.rt)) * img.rbEntries * img.clusterSize
	small := covered <= 256<<20 && len(data) < 1<<20
	img.Close()
	if !small {
		return
	}
	// Mutating paths on corrupt metadata: errors are fine, panics,
	// hangs and huge allocations are not.
	// NoSync (cache=unsafe): fsync makes no difference to what this
	// checks and costs milliseconds per barrier.
	rw, err := Open(path, block.Options{NoBacking: true, NoSync: true, CacheSize: 64 << 10})
	if err != nil {
		return
	}
	defer rw.Close()
	size = rw.Size()
	rw.AddBitmap("fuzz", 4096, true)
	if size >= 4096 {
		rw.WriteAt(buf[:3000], 100)
		rw.WriteAt(buf[:4096], size-4096)
		rw.WriteZeroes(0, min(size, 1<<20), false)
		rw.Discard(size/2, min(size/2, 1<<20))
		if cw := min(rw.ClusterSize(), size); size%rw.ClusterSize() == 0 {
			rw.WriteCompressed(make([]byte, cw), 0)
		}
	}
	rw.CreateSnapshot("fuzz")
	rw.CreateSnapshotWithState("fuzzvm", 1, func(w io.Writer) error {
		_, err := w.Write(buf[:5000])
		return err
	})
	fuzzReadVMState(rw, "fuzzvm")
	rw.ApplySnapshot("1")
	rw.DeleteSnapshot("fuzz")
	rw.Check(block.RepairAll)
	rw.Resize(size + 1<<20)
	if ext, err := rw.BitmapExtents("fuzz"); err == nil {
		rw.MergeBitmap("fuzz", ext)
	}
	// Amend walks every L1 and L2 table (zero expansion) and rewrites
	// the refcount structure from what the old one says.
	rw.Amend(map[string]string{"refcount_bits": "64"}, nil)
	rw.Amend(map[string]string{"refcount_bits": "16", "compat": "0.10"}, nil)
	rw.Amend(map[string]string{"compat": "1.1", "lazy_refcounts": "on"}, nil)
}

// FuzzBitmapDirectory parses arbitrary bitmap directories; whatever
// parses must encode to the same bytes (the directory has no slack: every
// byte belongs to an entry, padding included, and padding must be zero).
func FuzzBitmapDirectory(f *testing.F) {
	f.Fuzz(func(t *testing.T, dir []byte, count uint16) {
		list, err := parseBitmapDir(dir, uint32(count))
		if err != nil {
			return
		}
		if enc := encodeBitmapDir(list); !bytes.Equal(enc, dir) {
			t.Fatalf("round trip: %d entries of %d bytes encode to %d bytes\n%x\n%x", len(list), len(dir), len(enc), dir, enc)
		}
		for _, e := range list {
			bitmapTableEntries(1<<40, e.granBits, 9)
		}
	})
}

// TestWriteBitmapDirSeeds regenerates FuzzBitmapDirectory's seeds
// (QCOW2_WRITE_SEEDS=1): the directory of an image with two bitmaps made
// by qemu-img (one disabled, one with data), and one encoded here with
// extra data.
func TestWriteBitmapDirSeeds(t *testing.T) {
	if os.Getenv("QCOW2_WRITE_SEEDS") == "" {
		t.Skip("set QCOW2_WRITE_SEEDS=1 to regenerate testdata/fuzz seeds")
	}
	p := filepath.Join(t.TempDir(), "bm.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "1M")
	run(t, "qemu-img", "bitmap", "--add", "-g", "4096", p, "first")
	run(t, "qemu-img", "bitmap", "--add", "--disable", p, "second-bitmap")
	qemuIO(t, p, "qcow2", "write 0 64k")
	img, err := Open(p, block.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := img.bitmapsExtension()
	ext, err := parseBitmapExt(raw)
	if err != nil {
		t.Fatal(err)
	}
	dir := make([]byte, ext.dirSize)
	img.f.ReadAt(dir, int64(ext.dirOff))
	img.Close()
	extra := encodeBitmapDir([]bitmapEntry{{tableOff: 1 << 16, tableSize: 1, flags: bitmapFlagAuto | bitmapFlagExtraDataComp, granBits: 16, name: "x", extra: []byte{1, 2, 3}}})
	writeCorpus(t, "FuzzBitmapDirectory", [][]byte{dir, extra}, func(b []byte) string {
		n := 2
		if len(b) == len(extra) {
			n = 1
		}
		return fmt.Sprintf("[]byte(%q)\nuint16(%d)\n", b, n)
	})
}

// fuzzReadVMState reads the start and the end of a snapshot's VM state,
// whatever size the table claims.
func fuzzReadVMState(img *Image, id string) {
	r, size, err := img.VMState(id)
	if err != nil {
		return
	}
	buf := make([]byte, min(size, 64<<10))
	r.ReadAt(buf, 0)
	r.ReadAt(buf, size-int64(len(buf)))
}

// FuzzSnapshotTable parses arbitrary snapshot tables; whatever parses must
// survive an encode/parse round trip unchanged.
func FuzzSnapshotTable(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte, n uint16, v3 bool) {
		r := bytes.NewReader(data)
		snaps, _, err := parseSnapshots(r, 0, uint32(n), int64(len(data)), tableParse{v3: v3, diskSize: 1 << 20, repair: n%2 == 1})
		if err != nil {
			return
		}
		enc := encodeSnapshots(snaps)
		again, size, err := parseSnapshots(bytes.NewReader(enc), 0, uint32(len(snaps)), int64(max(len(enc), len(data))), tableParse{v3: v3, diskSize: 1 << 20})
		if err != nil {
			t.Fatalf("re-parsing encoded table: %v", err)
		}
		if size != int64(len(enc)) || len(again) != len(snaps) {
			t.Fatalf("encoded table: %d bytes/%d entries, parsed %d bytes/%d entries", len(enc), len(snaps), size, len(again))
		}
		for i := range again {
			a, b := snaps[i], again[i]
			if a.id != b.id || a.name != b.name || a.l1Off != b.l1Off || a.l1Size != b.l1Size || a.vmState != b.vmState || a.diskSize != b.diskSize || !bytes.Equal(a.extra, b.extra) {
				t.Fatalf("snapshot %d round trip: %+v != %+v", i, a, b)
			}
		}
		if enc2 := encodeSnapshots(again); !bytes.Equal(enc, enc2) {
			t.Fatal("encoding is not stable")
		}
	})
}

// TestWriteFuzzSeeds regenerates the seed corpora (QCOW2_WRITE_SEEDS=1).
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("QCOW2_WRITE_SEEDS") == "" {
		t.Skip("set QCOW2_WRITE_SEEDS=1 to regenerate testdata/fuzz seeds")
	}
	dir := t.TempDir()
	var seeds [][]byte
	mk := func(opts string, cmds ...string) {
		p := filepath.Join(dir, fmt.Sprintf("s%d.qcow2", len(seeds)))
		args := []string{"create", "-q", "-f", "qcow2", "-o", "cluster_size=512," + opts, p, "256k"}
		run(t, "qemu-img", args...)
		if len(cmds) > 0 {
			qemuIO(t, p, "qcow2", cmds...)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	mk("refcount_bits=16", "write -P 0x11 0 4k", "write -z 8k 2k")
	mk("compat=0.10", "write -P 0x22 1k 3k")
	mk("refcount_bits=1,lazy_refcounts=on", "write -P 0x33 100k 1k")
	p := filepath.Join(dir, "snap.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", p, "64k")
	qemuIO(t, p, "qcow2", "write -P 0x55 0 2k")
	run(t, "qemu-img", "snapshot", "-c", "s1", p)
	qemuIO(t, p, "qcow2", "write -P 0x56 0 1k")
	b, _ := os.ReadFile(p)
	seeds = append(seeds, b)
	src := filepath.Join(dir, "src.raw")
	os.WriteFile(src, bytes.Repeat([]byte("petrel qcow2 "), 2000), 0o600)
	for _, ct := range []string{"zlib", "zstd"} {
		c := filepath.Join(dir, "c"+ct+".qcow2")
		run(t, "qemu-img", "convert", "-c", "-O", "qcow2", "-o", "cluster_size=512,compression_type="+ct, "-f", "raw", src, c)
		b, _ := os.ReadFile(c)
		seeds = append(seeds, b)
	}
	e := filepath.Join(dir, "e.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=16k,extended_l2=on", e, "256k")
	qemuIO(t, e, "qcow2", "write -P 0x11 1k 1k", "write -z 4k 512")
	b, _ = os.ReadFile(e)
	seeds = append(seeds, b)
	bm := filepath.Join(dir, "bm.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", bm, "256k")
	qemuIO(t, bm, "qcow2", "write -P 0x11 0 4k")
	run(t, "qemu-img", "bitmap", "--add", bm, "b0")
	qemuIO(t, bm, "qcow2", "write -P 0x12 64k 4k")
	b, _ = os.ReadFile(bm)
	seeds = append(seeds, b)
	// A VM state saved by this engine with a snapshot.
	vm := filepath.Join(dir, "vm.qcow2")
	if err := Create(vm, block.CreateOptions{Size: 64 << 10, ClusterSize: 512}); err != nil {
		t.Fatal(err)
	}
	vimg, err := Open(vm, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	vimg.WriteAt(bytes.Repeat([]byte{0x77}, 1024), 0)
	if err := vimg.CreateSnapshotWithState("vm", 1e9, streamIn(vmStateData(8, 3000), 8)); err != nil {
		t.Fatal(err)
	}
	vimg.Close()
	b, _ = os.ReadFile(vm)
	seeds = append(seeds, b)
	writeCorpus(t, "FuzzOpen", seeds, func(b []byte) string { return fmt.Sprintf("[]byte(%q)\n", b) })

	// Snapshot tables: the table of the snapshot image above, v3 and v2.
	img, err := Open(p, block.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	_, tsize, err := img.readSnapshots()
	if err != nil {
		t.Fatal(err)
	}
	tbl := make([]byte, tsize)
	img.f.ReadAt(tbl, int64(img.hdr.snapOff))
	img.Close()
	two := encodeSnapshots([]snapshot{{l1Off: 512, l1Size: 1, id: "1", name: "a"}, {l1Off: 1024, l1Size: 2, id: "2", name: "bb", extra: []byte{1, 2, 3}}})
	writeCorpus(t, "FuzzSnapshotTable", [][]byte{tbl, two}, func(b []byte) string {
		return fmt.Sprintf("[]byte(%q)\nuint16(%d)\nbool(true)\n", b, 2)
	})
}

func writeCorpus(t *testing.T, name string, seeds [][]byte, enc func([]byte) string) {
	d := filepath.Join("testdata", "fuzz", name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range seeds {
		body := "go test fuzz v1\n" + enc(s)
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("seed%d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
