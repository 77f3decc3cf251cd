package qed

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/petrel-vmm/petrel/block"
)

// FuzzOps applies a byte-coded sequence of writes, zeroings and discards
// to a QED image over a raw backing file and to an in-memory model: reads
// must agree after every step and after reopening, and the image must
// check clean.
func FuzzOps(f *testing.F) {
	f.Add([]byte{0, 1, 0, 0, 16, 1, 2, 0, 40, 0, 3, 0, 1, 0, 0x20, 0})
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 0, 1})
	oldSync := syncFile
	f.Cleanup(func() { syncFile = oldSync })
	syncFile = func(block.File) error { return nil }
	f.Fuzz(func(t *testing.T, ops []byte) {
		const size = 256 << 10
		dir := t.TempDir()
		base := filepath.Join(dir, "b.raw")
		model := bytes.Repeat([]byte{0xbb}, size)
		if err := os.WriteFile(base, model[:size-5000], 0o644); err != nil { // shorter than the image
			t.Fatal(err)
		}
		clear(model[size-5000:])
		p := filepath.Join(dir, "t.qed")
		if err := Create(p, block.CreateOptions{Size: size, BackingFile: "b.raw", BackingFormat: "raw", ClusterSize: 4096, Extra: map[string]string{"table_size": "1"}}); err != nil {
			t.Fatal(err)
		}
		img, err := Open(p, block.Options{})
		if err != nil {
			t.Fatal(err)
		}
		for len(ops) >= 6 && len(ops) < 4096 {
			op := ops[0] % 3
			off := int64(binary.LittleEndian.Uint16(ops[1:])) * 7 % size
			n := min(int64(binary.LittleEndian.Uint16(ops[3:]))%20000+1, size-off)
			fill := ops[5]
			ops = ops[6:]
			switch op {
			case 0:
				if _, err := img.WriteAt(bytes.Repeat([]byte{fill}, int(n)), off); err != nil {
					t.Fatal(err)
				}
				for i := off; i < off+n; i++ {
					model[i] = fill
				}
			case 1:
				if err := img.WriteZeroes(off, n, fill&1 == 1); err != nil {
					t.Fatal(err)
				}
				clear(model[off : off+n])
			case 2:
				if err := img.Discard(off, n); err != nil {
					t.Fatal(err)
				}
				clear(model[off : off+n])
			}
			got := make([]byte, n)
			if _, err := img.ReadAt(got, off); err != nil || !bytes.Equal(got, model[off:off+n]) {
				t.Fatalf("read back after op %d at %#x+%#x: %v", op, off, n, err)
			}
		}
		if err := img.Close(); err != nil {
			t.Fatal(err)
		}
		img, err = Open(p, block.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer img.Close()
		got := make([]byte, size)
		if _, err := img.ReadAt(got, 0); err != nil || !bytes.Equal(got, model) {
			t.Fatalf("reopened image differs: %v", err)
		}
		if res, err := img.Check(block.RepairNone); err != nil || res.Corruptions+res.Leaks+res.CheckErrors != 0 {
			t.Fatalf("check: %+v %v", res, err)
		}
	})
}
