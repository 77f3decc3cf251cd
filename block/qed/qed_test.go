package qed

import (
	"bytes"
	"encoding/binary"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/petrel-vmm/petrel/block"
	_ "github.com/petrel-vmm/petrel/block/raw"
)

func mustCreate(t *testing.T, path string, o block.CreateOptions) {
	t.Helper()
	if err := Create(path, o); err != nil {
		t.Fatal(err)
	}
}

func readAll(t *testing.T, img block.Image) []byte {
	t.Helper()
	b := make([]byte, img.Size())
	if _, err := img.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

// qemuCheck runs qemu-img check when it is installed (the interop matrix
// in block/interop requires it; here it is an extra assertion).
func qemuCheck(t *testing.T, path string) {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		return
	}
	if out, err := exec.Command("qemu-img", "check", "-f", "qed", path).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img check %s: %v\n%s", path, err, out)
	}
}

func TestRandomWritesWithBacking(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw")
	bdata := make([]byte, 3<<20) // smaller than the top image
	rand.New(rand.NewSource(2)).Read(bdata)
	os.WriteFile(base, bdata, 0o644)
	top := filepath.Join(dir, "top.qed")
	mustCreate(t, top, block.CreateOptions{Size: 8 << 20, BackingFile: "base.raw", BackingFormat: "raw", ClusterSize: 4096, Extra: map[string]string{"table_size": "2"}})
	img, err := Open(top, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ref := make([]byte, 8<<20)
	copy(ref, bdata)
	r := rand.New(rand.NewSource(3))
	for i := 0; i < 300; i++ {
		off := r.Int63n(img.Size())
		n := r.Int63n(min(img.Size()-off, 100<<10)) + 1
		buf := make([]byte, n)
		r.Read(buf)
		switch i % 10 {
		case 7:
			if err := img.WriteZeroes(off, n, i%2 == 0); err != nil {
				t.Fatal(err)
			}
			clear(ref[off : off+n])
		default:
			if _, err := img.WriteAt(buf, off); err != nil {
				t.Fatal(err)
			}
			copy(ref[off:], buf)
		}
		if i == 5 && img.hdr.Features&featNeedCheck == 0 {
			t.Fatal("need-check bit not set after allocating writes")
		}
	}
	if !bytes.Equal(readAll(t, img), ref) {
		t.Fatal("read back differs")
	}
	res, err := img.Check(block.RepairNone)
	if err != nil || res.Corruptions != 0 || res.Leaks != 0 {
		t.Fatalf("check: %+v %v", res, err)
	}
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	if img.hdr.Features&featNeedCheck != 0 {
		t.Fatal("need-check bit still set after flush")
	}
	img.Close()
	qemuCheck(t, top)
	img2, err := block.Open(top, block.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img2.Close()
	if !bytes.Equal(readAll(t, img2), ref) {
		t.Fatal("read back after reopen differs")
	}
	if img2.Backing() == nil || img2.Backing().Format() != "raw" {
		t.Fatal("backing file not opened as raw")
	}
}

func TestZeroClusterHidesBacking(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw")
	os.WriteFile(base, bytes.Repeat([]byte{0x55}, 1<<20), 0o644)
	top := filepath.Join(dir, "top.qed")
	mustCreate(t, top, block.CreateOptions{Size: 1 << 20, BackingFile: base, BackingFormat: "raw"})
	img, err := Open(top, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if err := img.WriteZeroes(0, 128<<10, true); err != nil {
		t.Fatal(err)
	}
	e, _ := img.BlockStatus(0, 1<<20)
	if e.Flags != block.ExtentZero|block.ExtentAllocated || e.Length != 128<<10 {
		t.Fatalf("zero clusters: %+v", e)
	}
	e, _ = img.BlockStatus(128<<10, 1<<20)
	if e.Depth != 1 || e.Flags&block.ExtentData == 0 {
		t.Fatalf("backing extent: %+v", e)
	}
	got := readAll(t, img)
	if !bytes.Equal(got[:128<<10], make([]byte, 128<<10)) || got[128<<10] != 0x55 {
		t.Fatal("zero clusters do not hide the backing file")
	}
}

func TestNeedCheckRepairOnOpen(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.qed")
	mustCreate(t, p, block.CreateOptions{Size: 1 << 20})
	img, _ := Open(p, block.Options{})
	img.WriteAt(bytes.Repeat([]byte{1}, 4096), 0)
	// Simulate a crash during allocation: a cluster appended but never
	// linked, with the need-check bit still set.
	img.f.WriteAt(make([]byte, img.clusterSize), img.fileSize)
	img.f.Close() // no Flush: the bit stays set
	img2, err := Open(p, block.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	res, _ := img2.check(block.RepairNone)
	if res.Leaks != 1 || img2.hdr.Features&featNeedCheck == 0 {
		t.Fatalf("expected one leak and the need-check bit: %+v", res)
	}
	img2.Close()
	img3, err := Open(p, block.Options{}) // repairs
	if err != nil {
		t.Fatal(err)
	}
	if img3.hdr.Features&featNeedCheck != 0 {
		t.Fatal("need-check bit not cleared by the check on open")
	}
	res, _ = img3.Check(block.RepairNone)
	if res.Leaks != 0 || res.Corruptions != 0 {
		t.Fatalf("after repair: %+v", res)
	}
	b := make([]byte, 4096)
	img3.ReadAt(b, 0)
	if b[0] != 1 {
		t.Fatal("data lost by the repair")
	}
	img3.Close()
	qemuCheck(t, p)
}

func TestCorruptionDetected(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.qed")
	mustCreate(t, p, block.CreateOptions{Size: 1 << 20})
	img, _ := Open(p, block.Options{})
	img.WriteAt([]byte{1}, 0)
	img.WriteAt([]byte{2}, 64<<10)
	l2 := int64(img.l1[0])
	img.Close()
	// Point entry 1 at entry 0's cluster: a duplicate reference.
	f, _ := os.OpenFile(p, os.O_RDWR, 0)
	var e [8]byte
	f.ReadAt(e[:], l2)
	f.WriteAt(e[:], l2+8)
	f.Close()
	img, err := Open(p, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	res, _ := img.Check(block.RepairNone)
	if res.Corruptions != 1 || res.Leaks != 1 {
		t.Fatalf("expected 1 corruption and 1 leak: %+v", res)
	}
	res, _ = img.Check(block.RepairAll)
	if res.CorruptionsFixed != 1 {
		t.Fatalf("repair: %+v", res)
	}
	if res, _ = img.Check(block.RepairNone); res.Corruptions != 0 {
		t.Fatalf("after repair: %+v", res)
	}
}

func TestBadHeadersRejected(t *testing.T) {
	p := filepath.Join(t.TempDir(), "h.qed")
	mustCreate(t, p, block.CreateOptions{Size: 1 << 20})
	good, _ := os.ReadFile(p)
	for name, mut := range map[string]func(h *header){
		"cluster":  func(h *header) { h.ClusterSize = 3000 },
		"table":    func(h *header) { h.TableSize = 32 },
		"features": func(h *header) { h.Features |= 0x100 },
		"l1":       func(h *header) { h.L1TableOffset = 1 << 40 },
		"size":     func(h *header) { h.ImageSize = 1<<62 + 512 },
		"backing":  func(h *header) { h.Features |= featBackingFile; h.BackingNameOffset, h.BackingNameSize = 60000, 10000 },
	} {
		h, _ := parseHeader(good)
		mut(&h)
		b := append(h.encode(), good[headerLen:]...)
		os.WriteFile(p, b, 0o644)
		if img, err := Open(p, block.Options{ReadOnly: true}); err == nil {
			img.Close()
			t.Errorf("%s: corrupt header accepted", name)
		}
	}
}

func TestBackingLoop(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.qed"), filepath.Join(dir, "b.qed")
	mustCreate(t, a, block.CreateOptions{Size: 1 << 20, BackingFile: "b.qed"})
	mustCreate(t, b, block.CreateOptions{Size: 1 << 20, BackingFile: "a.qed"})
	_, err := block.Open(a, block.Options{ReadOnly: true})
	if err == nil || !errorsIs(err, block.ErrBackingLoop) {
		t.Fatalf("loop not detected: %v", err)
	}
}

// A data entry pointing into an L2 table is the corruption, not the table.
func TestDataEntryIntoTableBlamed(t *testing.T) {
	p := filepath.Join(t.TempDir(), "d.qed")
	mustCreate(t, p, block.CreateOptions{Size: 1 << 20, ClusterSize: 4096, Extra: map[string]string{"table_size": "2"}})
	img, _ := Open(p, block.Options{})
	img.WriteAt([]byte{7}, 0)
	l2 := img.l1[0]
	img.Close()
	f, _ := os.OpenFile(p, os.O_RDWR, 0)
	var e [8]byte
	binary.LittleEndian.PutUint64(e[:], l2) // entry 5 -> the L2 table itself
	f.WriteAt(e[:], int64(l2)+8*5)
	f.Close()
	img, err := Open(p, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	res, _ := img.Check(block.RepairAll)
	if res.Corruptions != 1 || res.CorruptionsFixed != 1 {
		t.Fatalf("check: %+v", res)
	}
	b := make([]byte, 1)
	img.ReadAt(b, 0)
	if b[0] != 7 {
		t.Fatal("the good L2 table was dropped instead of the bad entry")
	}
}

// A size that is not a whole number of sectors rounds up, as qemu-img's
// QED create does (iotest 104); one beyond the format's limit is refused.
func TestCreateRoundsSizeUp(t *testing.T) {
	path := filepath.Join(t.TempDir(), "odd.qed")
	mustCreate(t, path, block.CreateOptions{Size: 1234})
	img, err := Open(path, block.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if img.Size() != 1536 {
		t.Fatalf("size %d, want 1536", img.Size())
	}
	qemuCheck(t, path)
	if err := Create(filepath.Join(t.TempDir(), "huge.qed"), block.CreateOptions{Size: 1 << 62}); err == nil {
		t.Fatal("a 4 EiB QED image was created")
	}
}

// TestGrowOverLongerBackingRefused: growing over a longer backing file
// would show its data in the new area; QEMU's QED driver cannot zero it
// on truncate, so qemu-img refuses, and so does this engine, leaving the
// image as it was.
func TestGrowOverLongerBackingRefused(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(base, bytes.Repeat([]byte{0x11}, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	top := filepath.Join(dir, "top.qed")
	mustCreate(t, top, block.CreateOptions{Size: 512 << 10, BackingFile: "base.raw", BackingFormat: "raw"})
	img, err := Open(top, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if err := img.Resize(1 << 20); err == nil || err.Error() != "Block driver does not support requested flags" || img.Size() != 512<<10 {
		t.Fatalf("resize: %v, size %d", err, img.Size())
	}
	if err := img.Resize(2 << 20); err == nil {
		t.Fatal("grew over the backing file's data")
	}
	// An image already as long as its backing file grows as before.
	long := filepath.Join(dir, "long.qed")
	mustCreate(t, long, block.CreateOptions{Size: 2 << 20, BackingFile: "base.raw", BackingFormat: "raw"})
	l, err := Open(long, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Resize(3 << 20); err != nil {
		t.Fatalf("resize past the backing file's end: %v", err)
	}
}
