package imgtool

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/block"
)

// TestConvertProgressCountsData: convert -p measures progress in the data
// it copies and prints a value only when it moved more than 1%, as
// qemu-img (iotest 086: four 1 MiB extents of 128 MiB).
func TestConvertProgressCountsData(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src.qcow2"), filepath.Join(dir, "dst.qcow2")
	must(t, "create", "-q", "-f", "qcow2", src, "128M")
	img, err := block.Open(src, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	mib := make([]byte, 1<<20)
	for i := range mib {
		mib[i] = 0xcd
	}
	for _, off := range []int64{0, 2 << 20, 4 << 20, 32 << 20} {
		if _, err := img.WriteAt(mib, off); err != nil {
			t.Fatal(err)
		}
	}
	img.Close()
	// One worker: with several, the order in which jobs finish is free,
	// but every printed value is still one of these.
	out := must(t, "convert", "-m", "1", "-p", "-O", "qcow2", "-f", "qcow2", src, dst)
	want := "    (0.00/100%)\r    (25.00/100%)\r    (50.00/100%)\r    (75.00/100%)\r    (100.00/100%)\r    (100.00/100%)\r\n"
	if out != want {
		t.Errorf("progress:\n%q\nwant\n%q", out, want)
	}
	if !strings.HasSuffix(must(t, "compare", src, dst), "Images are identical.\n") {
		t.Error("converted image differs")
	}
}
