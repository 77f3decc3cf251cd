package qcow2

import (
	"encoding/binary"
	"os"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/block"
)

// TestRepairOpenOfCorruptImage: with Repair a corrupt-marked image opens
// writable, every mutator but Check is refused, a plain Check leaves the
// mark, and Check(RepairAll) clears it on disk so that normal writable
// opens work again.
func TestRepairOpenOfCorruptImage(t *testing.T) {
	img, path := mustCreate(t, block.CreateOptions{Size: 1 << 20})
	img.WriteAt([]byte("keep"), 0)
	img.WriteAt([]byte("lose"), 65536)
	l2off := int64(img.l1[0] & l1OffsetMask)
	img.Close()
	f, _ := os.OpenFile(path, os.O_RDWR, 0)
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], oflagCopied|1<<40) // beyond the file
	f.WriteAt(b[:], l2off+8)
	f.Close()
	img, err := Open(path, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	img.WriteAt([]byte("x"), 65536) // meets the bad entry: marks corrupt
	img.Close()

	if _, err := Open(path, block.Options{}); err == nil || !strings.Contains(err.Error(), "marked corrupt") {
		t.Fatalf("plain writable open: %v", err)
	}
	img, err = Open(path, block.Options{Repair: true})
	if err != nil {
		t.Fatalf("repair open: %v", err)
	}
	for name, op := range map[string]func() error{
		"write":       func() error { _, err := img.WriteAt([]byte("x"), 0); return err },
		"zeroes":      func() error { return img.WriteZeroes(0, 512, false) },
		"discard":     func() error { return img.Discard(0, 65536) },
		"compressed":  func() error { return img.WriteCompressed(make([]byte, 65536), 196608) },
		"make-empty":  img.MakeEmpty,
		"resize":      func() error { return img.Resize(2 << 20) },
		"snapshot":    func() error { return img.CreateSnapshot("s") },
		"delete-snap": func() error { return img.DeleteSnapshot("s") },
	} {
		if err := op(); err == nil || !strings.Contains(err.Error(), "marked corrupt") {
			t.Errorf("%s on a corrupt image opened for repair: %v", name, err)
		}
	}
	if res, err := img.Check(block.RepairNone); err != nil || res.Corruptions == 0 {
		t.Fatalf("plain check: %+v %v", res, err)
	}
	if !img.corrupted.Load() || img.hdr.incompat&incompatCorrupt == 0 {
		t.Fatal("a check without repair cleared the corrupt mark")
	}
	res, err := img.Check(block.RepairAll)
	if err != nil || res.Corruptions != 0 || res.CorruptionsFixed == 0 {
		t.Fatalf("repair: %+v %v %v", res, err, res.Messages)
	}
	if _, err := img.WriteAt([]byte("new!"), 4096); err != nil {
		t.Fatalf("write after repair on the same handle: %v", err)
	}
	img.Close()
	f, _ = os.Open(path)
	f.ReadAt(b[:], 72)
	f.Close()
	if binary.BigEndian.Uint64(b[:])&incompatCorrupt != 0 {
		t.Fatal("corrupt bit still set on disk after repair")
	}
	img, err = Open(path, block.Options{})
	if err != nil {
		t.Fatalf("writable open after repair: %v", err)
	}
	got := make([]byte, 4)
	img.ReadAt(got, 0)
	if string(got) != "keep" {
		t.Fatalf("intact data after repair: %q", got)
	}
	img.Close()
	qemuCheck(t, path, false)
}
