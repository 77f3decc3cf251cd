package qcow2

import (
	"errors"
	"fmt"
	"math/rand"
	"path/filepath"
	"strings"
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
	if img.hdr.rtClusters < 2 || img.hdr.rtOff == uint64(img.clusterSize) {
		t.Fatalf("refcount table never moved: %d clusters at %#x", img.hdr.rtClusters, img.hdr.rtOff)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, path, false)
	assertEqual(t, "qemu-img convert", qemuRaw(t, path), model)
}

// TestBeyond2TiB: data written past 2 TiB (and near the end of a 3 TiB
// disk) reads back through the engine and qemu-io.
func TestBeyond2TiB(t *testing.T) {
	img, path := mustCreate(t, block.CreateOptions{Size: 3 << 40})
	for _, off := range []int64{2<<40 + 12345, 3<<40 - 4096} {
		if _, err := img.WriteAt([]byte("far away"), off); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 8)
		img.ReadAt(got, off)
		if string(got) != "far away" {
			t.Fatalf("read %q at %d", got, off)
		}
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, path, false)
	out := run(t, "qemu-io", "-c", fmt.Sprintf("read -P 0x66 %d 1", int64(3<<40-4096)), "-c", fmt.Sprintf("read -v %d 8", int64(2<<40+12345)), path)
	if !strings.Contains(out, "far.away") || strings.Contains(out, "Pattern verification failed") {
		t.Fatalf("qemu-io:\n%s", out)
	}
}

// TestBackingLoop: a chain that names itself is refused, not followed.
func TestBackingLoop(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.qcow2"), filepath.Join(dir, "b.qcow2")
	if err := Create(a, block.CreateOptions{Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if err := Create(b, block.CreateOptions{Size: 1 << 20, BackingFile: "a.qcow2", BackingFormat: "qcow2"}); err != nil {
		t.Fatal(err)
	}
	img, err := Open(a, block.Options{NoBacking: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := img.SetBackingFile("b.qcow2", "qcow2"); err != nil {
		t.Fatal(err)
	}
	img.Close()
	if _, err := Open(a, block.Options{ReadOnly: true}); err == nil || !errors.Is(err, block.ErrBackingLoop) {
		t.Fatalf("opening a backing loop: %v", err)
	}
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

// TestSubclusterAllocation: a small write into an extended L2 image over a
// backing file allocates only the subclusters it touches; the rest of the
// cluster still reads from the backing file.
func TestSubclusterAllocation(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	if err := Create(base, block.CreateOptions{Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	b, _ := Open(base, block.Options{})
	pattern := []byte(strings.Repeat("B", 1<<20))
	b.WriteAt(pattern, 0)
	b.Close()
	top := filepath.Join(dir, "top.qcow2")
	if err := Create(top, block.CreateOptions{Size: 1 << 20, BackingFile: "base.qcow2", BackingFormat: "qcow2", ExtendedL2: true}); err != nil {
		t.Fatal(err)
	}
	img, err := Open(top, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	img.WriteAt([]byte("top"), 65536+2048+100) // subcluster 1 of cluster 1 (2 KiB subclusters)
	want := append([]byte(nil), pattern...)
	copy(want[65536+2048+100:], "top")
	assertEqual(t, "read", readAll(t, img), want)
	for _, c := range []struct {
		off   int64
		depth int
	}{{65536, 1}, {65536 + 2048, 0}, {65536 + 4096, 1}} {
		ext, err := img.BlockStatus(c.off, 2048)
		if err != nil || ext.Depth != c.depth || ext.Offset != c.off {
			t.Fatalf("block status at %d: %+v %v (want depth %d)", c.off, ext, err, c.depth)
		}
	}
	img.Close()
	qemuCheck(t, top, false)
	assertEqual(t, "qemu-img convert", qemuRaw(t, top), want)
	out := run(t, "qemu-img", "map", "--output=json", top)
	if !strings.Contains(out, `"start": 67584, "length": 2048, "depth": 0`) {
		t.Fatalf("qemu-img map does not show one allocated subcluster:\n%s", out)
	}
}
