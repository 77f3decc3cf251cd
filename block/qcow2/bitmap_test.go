package qcow2

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"path/filepath"
	"strings"
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

// TestBitmapShrinkThenGrow: a shrink drops the bits past the new end at
// once, so growing again in the same session does not bring them back;
// qemu-img check finds the stored result clean.
func TestBitmapShrinkThenGrow(t *testing.T) {
	img, path := mustCreate(t, block.CreateOptions{Size: 8 << 20})
	if err := img.AddBitmap("a", 64<<10, true); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{1 << 20, 7 << 20} {
		if _, err := img.WriteAt(make([]byte, 4096), off); err != nil {
			t.Fatal(err)
		}
	}
	if err := img.Resize(6 << 20); err != nil {
		t.Fatal(err)
	}
	if err := img.Resize(8 << 20); err != nil {
		t.Fatal(err)
	}
	got, err := img.BitmapExtents("a")
	if err != nil {
		t.Fatal(err)
	}
	if want := []Extent{{1 << 20, 64 << 10}}; len(got) != 1 || got[0] != want[0] {
		t.Fatalf("dirty after shrink and grow: %v, want %v", got, want)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, path, false)
}

// TestBitmapInUseAfterCrash: a writer that dies before Close leaves its
// bitmaps marked in use (QEMU then shows them in-use and refuses to use
// them) rather than consistent and stale; the disabled one too, as QEMU
// marks every bitmap it loads writable.
func TestBitmapInUseAfterCrash(t *testing.T) {
	testutil.NeedTool(t, "qemu-img")
	path := filepath.Join(t.TempDir(), "c.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", path, "4M")
	run(t, "qemu-img", "bitmap", "--add", path, "on")
	run(t, "qemu-img", "bitmap", "--add", "--disable", path, "off")
	img, err := Open(path, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt(make([]byte, 512), 0); err != nil {
		t.Fatal(err)
	}
	img.f.Close() // the process dies: no Close, the bitmaps are not stored
	info := run(t, "qemu-img", "info", path)
	if strings.Count(info, "[0]: in-use") != 2 {
		t.Fatalf("qemu-img info after a crash:\n%s", info)
	}
	qemuCheck(t, path, false)
}

// TestBitmapBitsModel: setBits, clearBeyond and extents agree with a
// plain bool-per-granule model over random ranges, whole chunks (the
// all-ones stand-in) included.
func TestBitmapBitsModel(t *testing.T) {
	const chunkBits, granBits = 4096, 9
	const nbits = 5*chunkBits + 123
	rng := rand.New(rand.NewSource(1))
	for round := 0; round < 200; round++ {
		b := &dirtyBitmap{bitmapEntry: bitmapEntry{granBits: granBits}}
		model := make([]bool, nbits)
		for k := rng.Intn(6); k >= 0; k-- {
			from := uint64(rng.Intn(nbits))
			to := min(from+uint64(rng.Intn(3*chunkBits)), nbits)
			if rng.Intn(4) == 0 { // a whole chunk
				from = uint64(rng.Intn(5)) * chunkBits
				to = from + chunkBits
			}
			b.setBits(from, to, chunkBits)
			for i := from; i < to; i++ {
				model[i] = true
			}
		}
		cut := uint64(rng.Intn(nbits))
		b.clearBeyond(cut, chunkBits)
		for i := cut; i < nbits; i++ {
			model[i] = false
		}
		var want []Extent
		for i := 0; i < nbits; i++ {
			if !model[i] {
				continue
			}
			off := int64(i) << granBits
			if k := len(want) - 1; k >= 0 && want[k].Off+want[k].Len == off {
				want[k].Len += 1 << granBits
			} else {
				want = append(want, Extent{off, 1 << granBits})
			}
		}
		got := b.extents(nbits<<granBits, chunkBits)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("round %d: extents %v, want %v", round, got, want)
		}
	}
}
