package imgtool

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/block"
	"github.com/petrel-vmm/petrel/internal/testutil"
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

// TestConvertAllocationLikeQemu: what convert allocates in the target is
// what qemu-img allocates (iotest 122): -S 0 writes zeroes as data (also
// compressed), and nothing is written past the end of a new target's
// backing file, even in a v2 image without zero clusters.
func TestConvertAllocationLikeQemu(t *testing.T) {
	offset := regexp.MustCompile(`, "offset": [0-9]+`)
	for _, args := range [][]string{
		{"-S", "0"},
		{"-c", "-S", "0"},
		{"-B", "base.qcow2", "-F", "qcow2", "-o", "compat=0.10"},
	} {
		maps := map[string]string{}
		for _, who := range []string{"qemu-img", "petrel"} {
			dir := t.TempDir()
			base, src, dst := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "src.qcow2"), filepath.Join(dir, "dst.qcow2")
			qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "4M")
			qemuTool(t, "qemu-io", "-c", "write -P 0x11 3M 1M", base)
			qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", src, "12M")
			qemuTool(t, "qemu-io", "-c", "write -P 0x22 1M 1M", "-c", "write -P 0x33 9M 1M", src)
			cargs := append(append([]string{"convert", "-O", "qcow2"}, args...), src, dst)
			if who == "qemu-img" {
				qemuTool(t, "qemu-img", cargs...)
			} else if rc, o, e := pimg(cargs...); rc != 0 {
				t.Fatalf("petrel img %v: exit %d %s%s", cargs, rc, o, e)
			}
			qemuTool(t, "qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", src, dst)
			maps[who] = offset.ReplaceAllString(qemuTool(t, "qemu-img", "map", "--output=json", dst), "")
		}
		if maps["qemu-img"] != maps["petrel"] {
			t.Errorf("convert %v:\nqemu-img: %s\npetrel:   %s", args, maps["qemu-img"], maps["petrel"])
		}
	}
}

// TestConvertZeroDetectionLikeQemu: convert leaves out the same all-zero
// 4 KiB blocks of the data it reads as qemu-img (the default -S 4k), for
// a qcow2 and a raw target: a block whose only non-zero byte is its last
// one is data, runs of zero blocks start and end anywhere in a 2 MiB
// chunk. The data extents of qemu-img map must match, and the bytes.
func TestConvertZeroDetectionLikeQemu(t *testing.T) {
	testutil.NeedTool(t, "qemu-img")
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	const block = 4096
	data := make([]byte, 20<<20) // more 2 MiB chunks than workers
	r := rand.New(rand.NewSource(7))
	for b := 0; b < len(data)/block; {
		run := 1 + r.Intn(40)
		kind := r.Intn(3)
		for ; run > 0 && b < len(data)/block; run, b = run-1, b+1 {
			blk := data[b*block : (b+1)*block]
			switch kind {
			case 1: // full data
				r.Read(blk)
			case 2: // one non-zero byte, somewhere (the last one at times)
				blk[[]int{0, block - 1, r.Intn(block)}[r.Intn(3)]] = 0x5a
			}
		}
	}
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	dataExtents := func(img string) string {
		t.Helper()
		var got []map[string]any
		if err := json.Unmarshal([]byte(qemuTool(t, "qemu-img", "map", "--output=json", img)), &got); err != nil {
			t.Fatal(err)
		}
		var s strings.Builder
		for _, e := range got {
			if e["data"] == true {
				fmt.Fprintf(&s, "%v+%v ", e["start"], e["length"])
			}
		}
		return s.String()
	}
	for _, format := range []string{"qcow2", "raw"} {
		want, got := filepath.Join(dir, "qemu."+format), filepath.Join(dir, "petrel."+format)
		qemuTool(t, "qemu-img", "convert", "-O", format, src, want)
		must(t, "convert", "-O", format, src, got)
		qemuTool(t, "qemu-img", "compare", src, got)
		if w, g := dataExtents(want), dataExtents(got); w != g {
			t.Errorf("%s: data extents\npetrel:   %s\nqemu-img: %s", format, g, w)
		}
	}
}
