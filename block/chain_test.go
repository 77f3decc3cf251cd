package block_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/petrel-vmm/petrel/block"
	_ "github.com/petrel-vmm/petrel/block/qed"
	_ "github.com/petrel-vmm/petrel/block/raw"
)

func TestResolveBacking(t *testing.T) {
	for _, c := range [][3]string{
		{"/a/b/top.qcow2", "base.raw", "/a/b/base.raw"},
		{"/a/b/top.qcow2", "../c/base.raw", "/a/c/base.raw"},
		{"/a/b/top.qcow2", "/x/base.raw", "/x/base.raw"},
		{"top.qcow2", "base.raw", "base.raw"},
	} {
		if got := block.ResolveBacking(c[0], c[1]); got != c[2] {
			t.Errorf("ResolveBacking(%q, %q) = %q, want %q", c[0], c[1], got, c[2])
		}
	}
}

// chain creates layers l0 (raw) <- l1 <- ... <- l<n> (QED), each naming
// the one below relatively, and returns the top's path.
func chain(t *testing.T, dir string, n int) string {
	t.Helper()
	base := filepath.Join(dir, "l0.raw")
	if err := os.WriteFile(base, []byte("base data"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Truncate(base, 1<<20)
	prev := "l0.raw"
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("l%d.qed", i)
		o := block.CreateOptions{Size: 1 << 20, BackingFile: prev}
		if i == 1 {
			o.BackingFormat = "raw"
		}
		if err := block.Create("qed", filepath.Join(dir, name), o); err != nil {
			t.Fatal(err)
		}
		prev = name
	}
	return filepath.Join(dir, prev)
}

func TestChainReadsThroughLayers(t *testing.T) {
	top := chain(t, t.TempDir(), 5)
	img, err := block.Open(top, block.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	c := block.Chain(img)
	if len(c) != 6 || c[5].Format() != "raw" {
		t.Fatalf("chain of %d layers", len(c))
	}
	if got := filepath.Base(block.Filename(c[3])); got != "l2.qed" {
		t.Fatalf("layer 3 is %s", got)
	}
	b := make([]byte, 9)
	img.ReadAt(b, 0)
	if string(b) != "base data" {
		t.Fatalf("read %q through the chain", b)
	}
	e, err := img.BlockStatus(0, 1<<20)
	if err != nil || e.Depth != 5 || e.Flags&block.ExtentData == 0 {
		t.Fatalf("block status: %+v %v", e, err)
	}
}

func TestChainDepthLimit(t *testing.T) {
	top := chain(t, t.TempDir(), block.MaxChainDepth+1)
	_, err := block.Open(top, block.Options{ReadOnly: true})
	if !errors.Is(err, block.ErrChainTooDeep) {
		t.Fatalf("opening a chain of %d layers: %v", block.MaxChainDepth+2, err)
	}
	img, err := block.Open(top, block.Options{ReadOnly: true, NoBacking: true})
	if err != nil {
		t.Fatalf("opening without backing: %v", err)
	}
	img.Close()
}

func TestChainLoopAndMissing(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.qed"), filepath.Join(dir, "b.qed")
	block.Create("qed", a, block.CreateOptions{Size: 1 << 20, BackingFile: "b.qed"})
	block.Create("qed", b, block.CreateOptions{Size: 1 << 20, BackingFile: "./a.qed"})
	if _, err := block.Open(a, block.Options{ReadOnly: true}); !errors.Is(err, block.ErrBackingLoop) {
		t.Fatalf("loop: %v", err)
	}
	self := filepath.Join(dir, "self.qed")
	block.Create("qed", self, block.CreateOptions{Size: 1 << 20, BackingFile: "self.qed"})
	if _, err := block.Open(self, block.Options{ReadOnly: true}); !errors.Is(err, block.ErrBackingLoop) {
		t.Fatalf("self loop: %v", err)
	}
	m := filepath.Join(dir, "m.qed")
	block.Create("qed", m, block.CreateOptions{Size: 1 << 20, BackingFile: "missing.raw"})
	if _, err := block.Open(m, block.Options{ReadOnly: true}); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing backing: %v", err)
	}
	// BackingOverride replaces the name in the header.
	other := filepath.Join(dir, "other.raw")
	os.WriteFile(other, []byte("override"), 0o644)
	img, err := block.Open(m, block.Options{ReadOnly: true, BackingOverride: other, BackingFormat: "raw"})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	p := make([]byte, 8)
	img.ReadAt(p, 0)
	if string(p) != "override" {
		t.Fatalf("override not used: %q", p)
	}
}
