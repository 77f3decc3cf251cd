package qcow2

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/petrel-vmm/petrel/block"
)

// TestGrowOverLongerBacking: growing an image whose backing file is
// longer makes the new area read zeroes, not the backing file's data past
// the old end, as QEMU's truncate (iotest 292); a v2 image, which cannot
// hold zero clusters there, is refused unchanged.
func TestGrowOverLongerBacking(t *testing.T) {
	for _, compat := range []string{"1.1", "0.10"} {
		dir := t.TempDir()
		createFilled(t, filepath.Join(dir, "base.qcow2"), bytes.Repeat([]byte{0x11}, 1<<20))
		top := filepath.Join(dir, "top.qcow2")
		if err := Create(top, block.CreateOptions{Size: 512 << 10, BackingFile: "base.qcow2", BackingFormat: "qcow2", Compat: compat}); err != nil {
			t.Fatal(err)
		}
		img, err := Open(top, block.Options{})
		if err != nil {
			t.Fatal(err)
		}
		err = img.Resize(1 << 20)
		if compat == "0.10" {
			if err == nil || err.Error() != "Failed to zero out new clusters: Operation not supported" || img.Size() != 512<<10 {
				t.Errorf("v2: resize over a longer backing file: %v, size %d", err, img.Size())
			}
			img.Close()
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		got := readAll(t, img)
		img.Close()
		want := append(bytes.Repeat([]byte{0x11}, 512<<10), make([]byte, 512<<10)...)
		assertEqual(t, "grown image", got, want)
		qemuCheck(t, top, false)
	}
}

// createFilled writes a new image at path holding data.
func createFilled(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := Create(path, block.CreateOptions{Size: int64(len(data))}); err != nil {
		t.Fatal(err)
	}
	img, err := Open(path, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if _, err := img.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
}
