package raw

import (
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/petrel-vmm/petrel/block"
)

func create(t *testing.T, size int64, prealloc string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "d.raw")
	if err := Create(p, block.CreateOptions{Size: size, Preallocation: prealloc}); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadWriteSparse(t *testing.T) {
	p := create(t, 4<<20, "off")
	img, err := Open(p, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	data := bytes.Repeat([]byte{0xab}, 64<<10)
	if _, err := img.WriteAt(data, 1<<20); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if _, err := img.ReadAt(got, 1<<20); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v", err)
	}
	// The first 4 KiB were written when the file was made (as QEMU's
	// allocate_first_block); the hole follows.
	e, err := img.BlockStatus(0, 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	if e.Flags&block.ExtentData == 0 || e.Length != 4096 {
		t.Fatalf("first block: %+v", e)
	}
	if e, _ = img.BlockStatus(4096, 4<<20); e.Flags&block.ExtentZero == 0 || e.Length != 1<<20-4096 {
		t.Fatalf("leading hole: %+v", e)
	}
	e, _ = img.BlockStatus(1<<20, 4<<20)
	if e.Flags&block.ExtentData == 0 || e.Length != 64<<10 {
		t.Fatalf("data extent: %+v", e)
	}
	if err := img.Discard(1<<20, 64<<10); err != nil {
		t.Fatal(err)
	}
	img.ReadAt(got, 1<<20)
	if !bytes.Equal(got, make([]byte, len(got))) {
		t.Fatal("discarded range does not read as zeroes")
	}
	if _, err := img.WriteAt(data, 4<<20-10); err == nil {
		t.Fatal("write past the end accepted")
	}
	if n, err := img.ReadAt(got, 4<<20-10); n != 10 || err == nil {
		t.Fatalf("read across the end: n=%d err=%v", n, err)
	}
	if err := img.Resize(8 << 20); err != nil || img.Size() != 8<<20 {
		t.Fatalf("resize: %v", err)
	}
}

func TestPreallocation(t *testing.T) {
	for _, mode := range []string{"falloc", "full"} {
		p := create(t, 1<<20, mode)
		st, _ := os.Stat(p)
		if st.Size() != 1<<20 {
			t.Fatalf("%s: size %d", mode, st.Size())
		}
		img, _ := Open(p, block.Options{ReadOnly: true})
		e, _ := img.BlockStatus(0, 1<<20)
		img.Close()
		if mode == "full" && e.Flags&block.ExtentData == 0 {
			t.Fatalf("full preallocation left a hole: %+v", e)
		}
	}
	if err := Create(filepath.Join(t.TempDir(), "x"), block.CreateOptions{Size: 1, Preallocation: "metadata"}); err == nil {
		t.Fatal("metadata preallocation accepted for raw")
	}
}

func TestDirectIOUnaligned(t *testing.T) {
	p := create(t, 3<<20+1000, "off") // size not a multiple of the block size
	img, err := Open(p, block.Options{DirectIO: true})
	if err != nil {
		t.Skipf("O_DIRECT not supported here: %v", err)
	}
	defer img.Close()
	ref := make([]byte, img.Size())
	r := rand.New(rand.NewSource(1))
	for i := 0; i < 200; i++ {
		off := r.Int63n(img.Size())
		n := r.Int63n(min(img.Size()-off, 1<<21)) + 1
		buf := make([]byte, n)
		r.Read(buf)
		if _, err := img.WriteAt(buf, off); err != nil {
			t.Fatalf("write %#x+%#x: %v", off, n, err)
		}
		copy(ref[off:], buf)
	}
	got := make([]byte, img.Size())
	if _, err := img.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, ref) {
		t.Fatal("O_DIRECT read back differs")
	}
	plain, _ := os.ReadFile(p)
	if !bytes.Equal(plain, ref) {
		t.Fatal("file content differs from what was written with O_DIRECT")
	}
}

func TestResizePrealloc(t *testing.T) {
	p := create(t, 1<<20, "off")
	img, _ := Open(p, block.Options{})
	defer img.Close()
	if err := img.ResizePrealloc(3<<20, "full"); err != nil {
		t.Fatal(err)
	}
	e, _ := img.BlockStatus(2<<20, 1<<20)
	if img.Size() != 3<<20 || e.Flags&block.ExtentData == 0 {
		t.Fatalf("grown area not allocated: size %d, %+v", img.Size(), e)
	}
	if err := img.ResizePrealloc(4<<20, "metadata"); err == nil {
		t.Fatal("metadata preallocation accepted for raw")
	}
}
