package qcow2

import (
	"fmt"
	"math/rand"
	"path/filepath"
	"testing"

	"github.com/petrel-vmm/petrel/block"
)

// TestWriteInterop: images this engine creates and writes pass qemu-img
// check and convert to the expected bytes, for every refcount width, cluster
// sizes 512 B..2 MiB, v2 and v3, lazy refcounts.
func TestWriteInterop(t *testing.T) {
	cases := []block.CreateOptions{
		{Size: 4 << 20, ClusterSize: 512, RefcountBits: 1},
		{Size: 4 << 20, ClusterSize: 512, RefcountBits: 2},
		{Size: 4 << 20, ClusterSize: 1024, RefcountBits: 4},
		{Size: 8 << 20, ClusterSize: 4096, RefcountBits: 8},
		{Size: 16 << 20},
		{Size: 16 << 20, RefcountBits: 32},
		{Size: 16 << 20, RefcountBits: 64, LazyRefcounts: true},
		{Size: 16 << 20, Compat: "0.10"},
		{Size: 16 << 20, Compat: "0.10", ClusterSize: 4096},
		{Size: 40 << 20, ClusterSize: 2 << 20},
		{Size: 3<<20 + 12345, ClusterSize: 65536}, // rounded up to 512
		{Size: 16 << 20, ExtendedL2: true},
		{Size: 8 << 20, ExtendedL2: true, ClusterSize: 16384, RefcountBits: 4},
	}
	for _, o := range cases {
		t.Run(fmt.Sprintf("cs%d_rb%d_%s_lazy%v_size%d", o.ClusterSize, o.RefcountBits, o.Compat, o.LazyRefcounts, o.Size), func(t *testing.T) {
			t.Parallel()
			img, path := mustCreate(t, o)
			qemuCheck(t, path, false)
			if want := (o.Size + 511) &^ 511; img.Size() != want {
				t.Fatalf("size %d, want %d", img.Size(), want)
			}
			model := make([]byte, img.Size())
			rng := rand.New(rand.NewSource(int64(o.Size) + int64(o.RefcountBits)))
			randomOps(t, img, model, rng, 300, 3*max(img.ClusterSize(), 4096))
			assertEqual(t, "engine read-back", readAll(t, img), model)
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			qemuCheck(t, path, false)
			assertEqual(t, "qemu-img convert", qemuRaw(t, path), model)
			img2, err := Open(path, block.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer img2.Close()
			assertEqual(t, "reopened", readAll(t, img2), model)
			res, err := img2.Check(block.RepairNone)
			if err != nil || res.Corruptions != 0 || res.Leaks != 0 {
				t.Fatalf("own check: %+v %v %v", res, err, res.Messages)
			}
			compareCheckStats(t, path, res)
		})
	}
}

// TestRefcountTableGrowth fills an image with 512-byte clusters and 64-bit
// refcounts (64 per block) far enough that the refcount table must move
// several times and new blocks must describe themselves.
func TestRefcountTableGrowth(t *testing.T) {
	o := block.CreateOptions{Size: 64 << 20, ClusterSize: 512, RefcountBits: 64}
	img, path := mustCreate(t, o)
	model := make([]byte, o.Size)
	buf := make([]byte, 512)
	rng := rand.New(rand.NewSource(7))
	// One cluster every 2 KiB: many L2 tables and refcount blocks.
	for off := int64(0); off < o.Size; off += 2048 {
		rng.Read(buf[:8])
		if _, err := img.WriteAt(buf[:8], off); err != nil {
			t.Fatal(err)
		}
		copy(model[off:], buf[:8])
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, path, false)
	assertEqual(t, "qemu-img convert", qemuRaw(t, path), model)
}

// TestBackingChain: reads fall through a chain, a shorter backing file
// reads zeroes beyond its end, partial writes copy up backing data.
func TestBackingChain(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	if err := Create(base, block.CreateOptions{Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	b, err := Open(base, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	model := make([]byte, 3<<20)
	rng := rand.New(rand.NewSource(1))
	rng.Read(model[:1<<20])
	if _, err := b.WriteAt(model[:1<<20], 0); err != nil {
		t.Fatal(err)
	}
	b.Close()
	mid := filepath.Join(dir, "mid.qcow2")
	if err := Create(mid, block.CreateOptions{Size: 2 << 20, BackingFile: "base.qcow2", BackingFormat: "qcow2"}); err != nil {
		t.Fatal(err)
	}
	top := filepath.Join(dir, "top.qcow2")
	if err := Create(top, block.CreateOptions{Size: 3 << 20, BackingFile: mid, ClusterSize: 4096}); err != nil {
		t.Fatal(err)
	}
	backingChainOps(t, top, mid, model, rng)

	// The same over an extended L2 top: subcluster states over a backing file.
	ext := filepath.Join(dir, "ext.qcow2")
	if err := Create(ext, block.CreateOptions{Size: 3 << 20, BackingFile: mid, ExtendedL2: true, ClusterSize: 32768}); err != nil {
		t.Fatal(err)
	}
	model = make([]byte, 3<<20)
	copy(model, readBackingModel(t, mid))
	backingChainOps(t, ext, mid, model, rng)
}

// readBackingModel reads a whole image through the engine.
func readBackingModel(t *testing.T, path string) []byte {
	img, err := Open(path, block.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	return readAll(t, img)
}

// backingChainOps writes into top over its chain and checks the result.
func backingChainOps(t *testing.T, top, mid string, model []byte, rng *rand.Rand) {
	t.Helper()
	img, err := Open(top, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	assertEqual(t, "chain read", readAll(t, img), model)
	randomOps(t, img, model, rng, 200, 10000)
	assertEqual(t, "after writes", readAll(t, img), model)
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, top, false)
	assertEqual(t, "qemu-img convert", qemuRaw(t, top), model)

	// MakeEmpty: the top reads through to mid/base again.
	img, err = Open(top, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := img.MakeEmpty(); err != nil {
		t.Fatal(err)
	}
	below := make([]byte, 3<<20)
	copy(below, readAll(t, img.Backing())) // mid is 2 MiB; the rest reads zeroes
	assertEqual(t, "after MakeEmpty", readAll(t, img), below)
	if ext, err := img.BlockStatus(0, 1<<20); err != nil || ext.Depth != 2 || ext.Flags&block.ExtentData == 0 {
		t.Fatalf("block status after MakeEmpty: %+v %v", ext, err)
	}
	img.Close()
	qemuCheck(t, top, false)
}
