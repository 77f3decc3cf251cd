package qed

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/petrel-vmm/petrel/block"
)

func errorsIs(err, target error) bool { return errors.Is(err, target) }

// FuzzOpen opens arbitrary bytes as a QED image, reads every run and
// checks it: nothing may panic, hang or allocate beyond the file's size.
func FuzzOpen(f *testing.F) {
	dir := f.TempDir()
	for i, o := range []block.CreateOptions{
		{Size: 1 << 20, ClusterSize: 4096, Extra: map[string]string{"table_size": "2"}},
		{Size: 64 << 10, ClusterSize: 4096, BackingFile: "nonexistent", BackingFormat: "raw", Extra: map[string]string{"table_size": "2"}},
	} {
		p := filepath.Join(dir, "seed"+string(rune('0'+i)))
		if err := Create(p, o); err != nil {
			f.Fatal(err)
		}
		if img, err := Open(p, block.Options{NoBacking: true}); err == nil {
			img.WriteAt([]byte("hello"), 5000)
			img.WriteZeroes(8192, 4096, false)
			img.Close()
		}
		b, _ := os.ReadFile(p)
		f.Add(b)
	}
	// fdatasync dominates each run (~100 ms here) and proves nothing
	// about parsing: skip it while fuzzing.
	oldSync := syncFile
	f.Cleanup(func() { syncFile = oldSync })
	syncFile = func(block.File) error { return nil }
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "f.qed")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		img, err := Open(p, block.Options{NoBacking: true})
		if err != nil {
			return
		}
		defer img.Close()
		buf := make([]byte, 64<<10)
		for off := int64(0); off < min(img.Size(), 16<<20); off += int64(len(buf)) {
			img.ReadAt(buf, off)
			img.BlockStatus(off, int64(len(buf)))
		}
		img.WriteAt([]byte{1, 2, 3}, 0)
		img.Check(block.RepairAll)
		img.Check(block.RepairNone)
	})
}
