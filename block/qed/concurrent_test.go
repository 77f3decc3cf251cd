package qed

import (
	"bytes"
	"path/filepath"
	"sync"
	"testing"

	"github.com/petrel-vmm/petrel/block"
)

// Eight writers on disjoint 12 KiB slots that share clusters and L2
// tables, with readers running alongside: every slot reads back as its
// writer left it and the metadata checks clean.
func TestConcurrentWriters(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.qed")
	mustCreate(t, p, block.CreateOptions{Size: 8 << 20, ClusterSize: 4096, Extra: map[string]string{"table_size": "2"}})
	img, err := Open(p, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	const slot = 12 << 10
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			buf := bytes.Repeat([]byte{byte(w + 1)}, 3000)
			for i := w; i < (8<<20)/slot; i += 8 {
				if _, err := img.WriteAt(buf, int64(i)*slot+1000); err != nil {
					t.Error(err)
					return
				}
				if i%5 == 0 {
					img.ReadAt(make([]byte, 20000), int64(i)*slot)
				}
			}
		}(w)
	}
	wg.Wait()
	for i := 0; i < (8<<20)/slot; i++ {
		got := make([]byte, slot)
		img.ReadAt(got, int64(i)*slot)
		want := make([]byte, slot)
		copy(want[1000:], bytes.Repeat([]byte{byte(i%8 + 1)}, 3000))
		if !bytes.Equal(got, want) {
			t.Fatalf("slot %d differs", i)
		}
	}
	res, err := img.Check(block.RepairNone)
	if err != nil || res.Corruptions != 0 || res.Leaks != 0 {
		t.Fatalf("check: %+v %v", res, err)
	}
	img.Close()
	qemuCheck(t, p)
}
