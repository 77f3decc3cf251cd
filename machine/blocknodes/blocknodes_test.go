package blocknodes

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/petrel-vmm/petrel/qemuopt"
)

func rawFile(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "d.raw")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNamedNodeOutlivesItsDevice(t *testing.T) {
	r := New()
	defer r.Close()
	spec := qemuopt.BlockdevSpec{NodeName: "n", Format: "raw", Filename: rawFile(t, 1<<20)}
	if err := r.Open(spec, false); err != nil {
		t.Fatal(err)
	}
	if err := r.Open(spec, false); !errors.Is(err, ErrExists) {
		t.Fatalf("second open: %v", err)
	}
	img, err := r.Borrow("n", "dev0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Borrow("n", "dev1"); !errors.Is(err, ErrInUse) {
		t.Fatalf("second borrow: %v", err)
	}
	if err := r.Delete("n"); !errors.Is(err, ErrInUse) {
		t.Fatalf("delete while borrowed: %v", err)
	}
	if l := r.List(); len(l) != 1 || l[0].User != "dev0" || l[0].Image.Size() != 1<<20 {
		t.Fatalf("list %+v", l)
	}
	// The device's Release closes what it borrowed: only a flush.
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Return("n"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	if _, err := r.List()[0].Image.ReadAt(buf, 0); err != nil {
		t.Fatalf("the named node's image was closed with its device: %v", err)
	}
	if err := r.Delete("n"); err != nil {
		t.Fatal(err)
	}
	if err := r.Delete("n"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
}

func TestAutomaticNodeGoesWithItsDevice(t *testing.T) {
	r := New()
	defer r.Close()
	if err := r.Open(qemuopt.BlockdevSpec{NodeName: "#d", Format: "raw", Filename: rawFile(t, 1<<20)}, true); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Borrow("#d", "d"); err != nil {
		t.Fatal(err)
	}
	if err := r.Return("#d"); err != nil {
		t.Fatal(err)
	}
	if l := r.List(); len(l) != 0 {
		t.Fatalf("automatic node kept: %+v", l)
	}
	if _, err := r.Borrow("nosuch", ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("borrow of a missing node: %v", err)
	}
}
