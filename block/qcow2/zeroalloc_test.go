package qcow2

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/petrel-vmm/petrel/block"
	"github.com/petrel-vmm/petrel/internal/testutil"
)

// TestZeroAllocBlockStatus: a zero cluster that keeps its host cluster
// (QEMU's ZERO_ALLOC) reports its host offset, one without does not, and
// runs split where qemu-img map splits them (iotests 154, 179).
func TestZeroAllocBlockStatus(t *testing.T) {
	testutil.NeedTool(t, "qemu-img")
	for _, opts := range []string{"cluster_size=65536", "cluster_size=65536,extended_l2=on"} {
		path := filepath.Join(t.TempDir(), "z.qcow2")
		run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, path, "1M")
		qemuIO(t, path, "qcow2", "write -P 1 0 512k", "write -z 64k 128k", "write -z -u 192k 64k", "write -z 256k 64k")
		var want []struct {
			Start, Length int64
			Zero, Data    bool
			Offset        *int64
		}
		if err := json.Unmarshal([]byte(run(t, "qemu-img", "map", "--output=json", path)), &want); err != nil {
			t.Fatal(err)
		}
		img, err := Open(path, block.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range want {
			for off := w.Start; off < w.Start+w.Length; {
				e, err := img.BlockStatus(off, w.Start+w.Length-off)
				if err != nil {
					t.Fatal(err)
				}
				wantHost := int64(-1)
				if w.Offset != nil {
					wantHost = *w.Offset + off - w.Start
				}
				if e.Flags&block.ExtentZero != 0 != w.Zero || e.HostOffset != wantHost {
					t.Errorf("%s: extent at %#x: zero %v host %#x; qemu-img map: zero %v host %#x",
						opts, off, e.Flags&block.ExtentZero != 0, e.HostOffset, w.Zero, wantHost)
				}
				off += e.Length
			}
		}
		img.Close()
	}
}
