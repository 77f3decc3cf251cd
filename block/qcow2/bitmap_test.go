package qcow2

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/petrel-vmm/petrel/block"
	"github.com/petrel-vmm/petrel/internal/testutil"
)

// TestMeasureBitmapsMatchesQemu: MeasureBitmaps gives qemu-img measure's
// "bitmaps" figure for bitmaps this engine added, at two target cluster
// sizes (iotest 190's arithmetic), and qemu-img check finds the image
// clean.
func TestMeasureBitmapsMatchesQemu(t *testing.T) {
	testutil.NeedTool(t, "qemu-img")
	path := filepath.Join(t.TempDir(), "m.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", path, "3G")
	img, err := Open(path, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for name, gran := range map[string]int64{"fine": 512, "a-longer-bitmap-name": 2 << 20, "default": 0} {
		if err := img.AddBitmap(name, gran, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, path, false)
	img, err = Open(path, block.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	for _, cs := range []string{"64k", "2M"} {
		var m struct{ Bitmaps int64 }
		out := run(t, "qemu-img", "measure", "--output=json", "-O", "qcow2", "-o", "cluster_size="+cs, "-f", "qcow2", path)
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			t.Fatal(err)
		}
		n := map[string]int64{"64k": 64 << 10, "2M": 2 << 20}[cs]
		if got := img.MeasureBitmaps(n); got != m.Bitmaps || got == 0 {
			t.Errorf("cluster_size=%s: MeasureBitmaps %d, qemu-img measure %d", cs, got, m.Bitmaps)
		}
	}
}
