package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/petrel-vmm/petrel/block"
)

// TestConcurrentWriters: goroutines writing disjoint regions (allocating
// and overwriting, with snapshots of shared clusters underneath) while
// others read; run with -race. The result checks clean and reads back.
func TestConcurrentWriters(t *testing.T) {
	img, path := mustCreate(t, block.CreateOptions{Size: 16 << 20, ClusterSize: 4096})
	const workers = 8
	region := img.Size() / workers
	model := make([]byte, img.Size())
	// Some pre-existing data shared with a snapshot forces copy-on-write.
	pre := make([]byte, 1<<20)
	rand.New(rand.NewSource(99)).Read(pre)
	for off := int64(0); off < img.Size(); off += 4 << 20 {
		if _, err := img.WriteAt(pre, off); err != nil {
			t.Fatal(err)
		}
		copy(model[off:], pre)
	}
	if err := img.CreateSnapshot("base"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers*2)
	for w := 0; w < workers; w++ {
		wg.Add(2)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w)))
			lo := int64(w) * region
			for i := 0; i < 150; i++ {
				off := lo + rng.Int63n(region-70000)
				buf := make([]byte, 1+rng.Intn(65536))
				rng.Read(buf)
				if _, err := img.WriteAt(buf, off); err != nil {
					errs <- err
					return
				}
				copy(model[off:], buf) // regions are disjoint
			}
		}(w)
		go func(w int) {
			defer wg.Done()
			buf := make([]byte, 8192)
			rng := rand.New(rand.NewSource(int64(w + 100)))
			for i := 0; i < 200; i++ {
				if _, err := img.ReadAt(buf, rng.Int63n(img.Size()-8192)); err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	assertEqual(t, "after concurrent writes", readAll(t, img), model)
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, path, false)
	assertEqual(t, "qemu-img convert", qemuRaw(t, path), model)
}

// TestConcurrentSameCluster: many goroutines writing different bytes of the
// same unallocated clusters must not allocate twice or lose writes.
func TestConcurrentSameCluster(t *testing.T) {
	for _, ext := range []bool{false, true} {
		img, path := mustCreate(t, block.CreateOptions{Size: 1 << 20, ClusterSize: 65536, ExtendedL2: ext})
		var wg sync.WaitGroup
		for g := 0; g < 16; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				for c := int64(0); c < 8; c++ {
					if _, err := img.WriteAt([]byte{byte(g + 1)}, c*65536+int64(g)*100); err != nil {
						t.Error(err)
					}
				}
			}(g)
		}
		wg.Wait()
		got := readAll(t, img)
		for g := 0; g < 16; g++ {
			for c := int64(0); c < 8; c++ {
				if b := got[c*65536+int64(g)*100]; b != byte(g+1) {
					t.Fatalf("extended L2 %v: cluster %d byte of writer %d is %d", ext, c, g, b)
				}
			}
		}
		img.Close()
		qemuCheck(t, path, false)
	}
}

// TestCheckFindsAndRepairs: damage made by hand is reported like qemu-img
// check reports it, and -r leaks / -r all repair it so qemu-img agrees.
func TestCheckFindsAndRepairs(t *testing.T) {
	img, path := mustCreate(t, block.CreateOptions{Size: 4 << 20, ClusterSize: 4096})
	data := make([]byte, 64<<10)
	rand.New(rand.NewSource(5)).Read(data)
	img.WriteAt(data, 0)
	img.WriteAt(data, 1<<20)
	// A leak: allocate a cluster nothing references.
	img.mu.Lock()
	leakOff, err := img.allocClusters(2)
	img.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	img.Close()
	img, _ = Open(path, block.Options{})
	res, err := img.Check(block.RepairNone)
	if err != nil || res.Leaks != 2 || res.Corruptions != 0 {
		t.Fatalf("leak check: %+v %v", res, err)
	}
	res, err = img.Check(block.RepairLeaks)
	if err != nil || res.LeaksFixed != 2 || res.Leaks != 0 {
		t.Fatalf("leak repair: %+v %v", res, err)
	}
	img.Close()
	qemuCheck(t, path, false)
	_ = leakOff

	// A corruption: lower the refcount of a data cluster to 0 on disk.
	img, _ = Open(path, block.Options{ReadOnly: true})
	ext, _ := img.BlockStatus(1<<20, 4096)
	rtOff := img.hdr.rtOff
	rbBits := img.rcBits
	img.Close()
	if ext.HostOffset <= 0 || rbBits != 16 {
		t.Fatalf("unexpected layout: %+v", ext)
	}
	f, _ := os.OpenFile(path, os.O_RDWR, 0)
	var b [8]byte
	f.ReadAt(b[:], int64(rtOff))
	rb := int64(binary.BigEndian.Uint64(b[:]))
	f.WriteAt([]byte{0, 0}, rb+ext.HostOffset/4096*2)
	f.Close()
	out, _ := runAllowFail("qemu-img", "check", path)
	if !strings.Contains(out, "ERROR cluster") {
		t.Fatalf("qemu-img does not see the damage:\n%s", out)
	}
	img, err = Open(path, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	res, err = img.Check(block.RepairNone)
	if err != nil || res.Corruptions == 0 {
		t.Fatalf("corruption not found: %+v %v", res, err)
	}
	res, err = img.Check(block.RepairAll)
	if err != nil || res.Corruptions != 0 || res.CorruptionsFixed == 0 {
		t.Fatalf("repair all: %+v %v %v", res, err, res.Messages)
	}
	got := make([]byte, len(data))
	img.ReadAt(got, 1<<20)
	assertEqual(t, "data after repair", got, data)
	img.Close()
	qemuCheck(t, path, false)
}

// TestResizeAndDescribe: grow (moving the L1 table), shrink over data,
// info fields, rebase -u.
func TestResizeAndDescribe(t *testing.T) {
	img, path := mustCreate(t, block.CreateOptions{Size: 1 << 20, ClusterSize: 512, LazyRefcounts: true, RefcountBits: 8})
	data := []byte("tail data")
	img.WriteAt(data, 1<<20-9)
	if err := img.Resize(3 << 30); err != nil { // 512-byte clusters: L1 grows
		t.Fatal(err)
	}
	img.WriteAt(data, 3<<30-9)
	// A shrink drops what lies beyond the new end, as QEMU's qcow2
	// truncate (qemu-img resize --shrink); what lies below stays.
	if err := img.Resize(2 << 20); err != nil {
		t.Fatalf("shrink over data: %v", err)
	}
	if err := img.Resize(3 << 30); err != nil {
		t.Fatal(err)
	}
	tail := make([]byte, 9)
	if img.ReadAt(tail, 3<<30-9); !bytes.Equal(tail, make([]byte, 9)) {
		t.Fatalf("data beyond a shrink reads back: %q", tail)
	}
	if img.ReadAt(tail, 1<<20-9); !bytes.Equal(tail, data) {
		t.Fatalf("data below a shrink lost: %q", tail)
	}
	if err := img.Resize(2 << 20); err != nil {
		t.Fatal(err)
	}
	d := img.Describe()
	fs := d["format-specific"].(map[string]any)["data"].(map[string]any)
	if d["virtual-size"] != int64(2<<20) || d["cluster-size"] != int64(512) || fs["lazy-refcounts"] != true || fs["refcount-bits"] != 8 || fs["compat"] != "1.1" {
		t.Fatalf("describe: %v", d)
	}
	if err := os.WriteFile(filepath.Join(filepath.Dir(path), "other.raw"), make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := img.SetBackingFile("other.raw", "raw"); err != nil {
		t.Fatal(err)
	}
	img.Close()
	qemuCheck(t, path, false)
	info := run(t, "qemu-img", "info", "--output=json", "-U", path)
	if !strings.Contains(info, `"backing-filename": "other.raw"`) || !strings.Contains(info, `"backing-filename-format": "raw"`) || !strings.Contains(info, `"virtual-size": 2097152`) {
		t.Fatalf("qemu-img info:\n%s", info)
	}
}

func runAllowFail(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

// TestLazyRefcountsDirtyBit: with lazy refcounts the dirty bit is on disk
// after the first write and cleared by a clean close.
func TestLazyRefcountsDirtyBit(t *testing.T) {
	img, path := mustCreate(t, block.CreateOptions{Size: 1 << 20, LazyRefcounts: true})
	dirtyOnDisk := func() bool {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return binary.BigEndian.Uint64(b[72:])&incompatDirty != 0
	}
	if dirtyOnDisk() {
		t.Fatal("dirty before any write")
	}
	if _, err := img.WriteAt([]byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	if !dirtyOnDisk() {
		t.Fatal("not dirty after the first allocating write")
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	if dirtyOnDisk() {
		t.Fatal("still dirty after a clean close")
	}
	qemuCheck(t, path, false)
}

// TestSmallCache: a cache of a few tables forces evictions of dirty L2
// tables and refcount blocks in every order; the result must check clean.
func TestSmallCache(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.qcow2")
	if err := Create(path, block.CreateOptions{Size: 32 << 20, ClusterSize: 1024, RefcountBits: 4}); err != nil {
		t.Fatal(err)
	}
	img, err := Open(path, block.Options{CacheSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	if img.l2c.max != 4 || img.rbc.max != 4 {
		t.Fatalf("cache sizes %d/%d, want the minimum 4/4", img.l2c.max, img.rbc.max)
	}
	model := make([]byte, img.Size())
	randomOps(t, img, model, rand.New(rand.NewSource(11)), 400, 8192)
	if err := img.CreateSnapshot("s"); err != nil {
		t.Fatal(err)
	}
	randomOps(t, img, model, rand.New(rand.NewSource(12)), 200, 8192)
	assertEqual(t, "small cache", readAll(t, img), model)
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, path, false)
	assertEqual(t, "qemu-img convert", qemuRaw(t, path), model)
}

// TestNoAllocsOnHotPath: reads and in-place writes of allocated clusters
// allocate nothing.
func TestNoAllocsOnHotPath(t *testing.T) {
	img, _ := mustCreate(t, block.CreateOptions{Size: 8 << 20})
	defer img.Close()
	buf := make([]byte, 4096)
	for off := int64(0); off < img.Size(); off += 65536 {
		img.WriteAt(buf, off)
	}
	off := int64(0)
	if n := testing.AllocsPerRun(200, func() {
		off = (off + 69632) % (img.Size() - 4096)
		img.ReadAt(buf, off)
		img.WriteAt(buf, off)
	}); n != 0 {
		t.Fatalf("%v allocations per read+write", n)
	}
}

// TestCheckCopiedFlag: a data entry whose copied flag disagrees with its
// refcount is a corruption for qemu-img and for us; RepairAll sets it.
func TestCheckCopiedFlag(t *testing.T) {
	img, path := mustCreate(t, block.CreateOptions{Size: 1 << 20})
	img.WriteAt([]byte("data"), 0)
	l2off := int64(img.l1[0] & l1OffsetMask)
	img.Close()
	f, _ := os.OpenFile(path, os.O_RDWR, 0)
	var b [8]byte
	f.ReadAt(b[:], l2off)
	b[0] &^= 0x80 // clear bit 63 of L2 entry 0
	f.WriteAt(b[:], l2off)
	f.Close()
	out, _ := runAllowFail("qemu-img", "check", path)
	if !strings.Contains(out, "ERROR OFLAG_COPIED data cluster") {
		t.Fatalf("qemu-img does not see the damage:\n%s", out)
	}
	img, err := Open(path, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := img.Check(block.RepairNone)
	if err != nil || res.Corruptions != 1 || !strings.Contains(strings.Join(res.Messages, "\n"), "ERROR OFLAG_COPIED data cluster") {
		t.Fatalf("check: %+v %v", res, err)
	}
	if res, err = img.Check(block.RepairAll); err != nil || res.Corruptions != 0 || res.CorruptionsFixed != 1 {
		t.Fatalf("repair: %+v %v", res, err)
	}
	img.Close()
	qemuCheck(t, path, false)
}

// TestSnapshotRefcountOverflow: a snapshot that would overflow narrow
// refcounts fails with qemu-img's errno text and leaves the image
// consistent, its new L1 table leaked as qemu-img leaks it (iotest 112).
func TestSnapshotRefcountOverflow(t *testing.T) {
	for _, bits := range []int{1, 2} {
		img, path := mustCreate(t, block.CreateOptions{Size: 1 << 20, RefcountBits: bits})
		img.WriteAt([]byte("some data"), 0)
		img.WriteAt([]byte("more data"), 1<<19)
		made := 0
		for ; made < 4; made++ {
			if err := img.CreateSnapshot("s"); err != nil {
				if err.Error() != "-22 (Invalid argument)" {
					t.Fatalf("%d-bit: unexpected error %v", bits, err)
				}
				break
			}
		}
		if want := 1<<bits - 2; made != want {
			t.Fatalf("%d-bit refcounts: %d snapshots made, want %d", bits, made, want)
		}
		if _, err := img.WriteAt([]byte("after"), 3); err != nil {
			t.Fatal(err)
		}
		if err := img.Close(); err != nil {
			t.Fatal(err)
		}
		qemuCheck(t, path, true)
	}
}

// TestCorruptionMarksImage: a write that meets corrupt metadata fails,
// sets the corrupt bit as QEMU does, and later writes are refused.
func TestCorruptionMarksImage(t *testing.T) {
	img, path := mustCreate(t, block.CreateOptions{Size: 1 << 20})
	img.WriteAt([]byte("data"), 0)
	l2off := int64(img.l1[0] & l1OffsetMask)
	img.Close()
	f, _ := os.OpenFile(path, os.O_RDWR, 0)
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], oflagCopied|1<<40) // data cluster far beyond the file
	f.WriteAt(b[:], l2off)
	f.Close()
	img, err := Open(path, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt([]byte("x"), 10); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("write over a corrupt entry: %v", err)
	}
	if _, err := img.WriteAt([]byte("x"), 512<<10); err == nil || !strings.Contains(err.Error(), "marked corrupt") {
		t.Fatalf("write after corruption: %v", err)
	}
	img.Close()
	if _, err := Open(path, block.Options{}); err == nil {
		t.Fatal("read-write open of a corrupt-marked image succeeded")
	}
	info := run(t, "qemu-img", "info", "--output=json", path)
	if !strings.Contains(info, `"corrupt": true`) {
		t.Fatalf("qemu-img info does not see the corrupt bit:\n%s", info)
	}
}

// TestRepairAllDropsInvalidEntries: an L2 entry pointing beyond the file,
// a misaligned zero cluster and reserved bits are corruptions; -r all
// clears them so that qemu-img checks the image clean.
func TestRepairAllDropsInvalidEntries(t *testing.T) {
	img, path := mustCreate(t, block.CreateOptions{Size: 1 << 20})
	img.WriteAt([]byte("keep"), 0)
	img.WriteAt([]byte("lose"), 65536)
	img.WriteAt([]byte("lose"), 131072)
	l2off := int64(img.l1[0] & l1OffsetMask)
	img.Close()
	f, _ := os.OpenFile(path, os.O_RDWR, 0)
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], oflagCopied|1<<40)
	f.WriteAt(b[:], l2off+8)
	f.ReadAt(b[:], l2off+16)
	b[6] |= 0x02 // misaligned: offset bit 9 in 64 KiB clusters
	b[7] |= 1    // and zero-flagged: no data, so repairable (QEMU leaves a misaligned data cluster)
	f.WriteAt(b[:], l2off+16)
	f.ReadAt(b[:], l2off+24)
	binary.BigEndian.PutUint64(b[:], binary.BigEndian.Uint64(b[:])|0x80) // reserved bit 7
	f.WriteAt(b[:], l2off+24)
	f.Close()
	img, err := Open(path, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := img.Check(block.RepairAll)
	if err != nil || res.Corruptions != 0 || res.CorruptionsFixed < 3 {
		t.Fatalf("repair: %+v %v %v", res, err, res.Messages)
	}
	got := make([]byte, 4)
	img.ReadAt(got, 0)
	if string(got) != "keep" {
		t.Fatalf("valid data lost: %q", got)
	}
	img.ReadAt(got, 65536)
	if string(got) != "\x00\x00\x00\x00" {
		t.Fatalf("cleared entry reads %q", got)
	}
	img.Close()
	qemuCheck(t, path, false)
}
