package imgtool

import (
	"bufio"
	"bytes"
	"fmt"
	"io"

	"github.com/petrel-vmm/petrel/block"
)

func init() {
	register("compare", "compare contents: compare [-f fmt] [-F fmt] [-s] [-p] [-T cache] file1 file2", runCompare)
}

// Exit codes of qemu-img compare: scripts branch on them (an error is
// 2, not 1, so that "differ" stays distinguishable).
const (
	cmpIdentical = 0
	cmpDiffer    = 1
	cmpError     = 2
	// cmpReadError: reading an image's data failed (iotest 074).
	cmpReadError = 4
)

// compareChunk bounds one read of each image; extents are compared in
// pieces no larger.
const compareChunk = 1 << 20

// firstDiff returns the offset of the first differing 512-byte sector of a
// and b (qemu-img compare reports at sector granularity), or -1.
func firstDiff(a, b []byte) int {
	for i := 0; i < len(a); i += compareChunk {
		e := min(len(a), i+compareChunk)
		if bytes.Equal(a[i:e], b[i:e]) {
			continue
		}
		for j := i; j < e; j++ {
			if a[j] != b[j] {
				return j &^ 511
			}
		}
	}
	return -1
}

// runCompare is qemu-img compare: the images' contents as a guest sees
// them (backing files included), with -f/-F for the two formats (-F
// defaults to -f). Without -s images of different sizes compare equal when
// the longer one's tail reads as zeroes; -s (strict) also requires equal
// sizes and equal allocation. The first difference is reported at 512-byte
// sector granularity, as qemu-img.
func runCompare(t *tool, args []string) int {
	// qemu-img's stdout is a C stream, fully buffered on a pipe: the size
	// warning reaches a 2>&1 pipe after an error printed on stderr later
	// (iotest 074), so compare's stdout is buffered the same way.
	out := bufio.NewWriterSize(t.stdout, 4096)
	defer out.Flush()
	t.stdout = out
	p, err := optSpec{short: "hf:F:T:pqsU", long: []string{"object=", "image-opts", "force-share"}}.parse(args)
	if err == nil {
		err = t.commonOptions(p)
	}
	if err != nil {
		t.errorf("%v", err)
		return cmpError
	}
	if len(p.args) != 2 {
		t.errorf("Expecting two image file names")
		return cmpError
	}
	direct, err := cacheDirect(p.get("T"))
	if err != nil {
		t.errorf("%v", err)
		return cmpError
	}
	fmt1, fmt2 := p.get("f"), p.get("F")
	if fmt2 == "" {
		fmt2 = fmt1
	}
	a, err := t.openImage(p.args[0], fmt1, block.Options{ReadOnly: true, DirectIO: direct})
	if err != nil {
		t.errorf("%v", err)
		return cmpError
	}
	defer a.Close()
	b, err := t.openImage(p.args[1], fmt2, block.Options{ReadOnly: true, DirectIO: direct})
	if err != nil {
		t.errorf("%v", err)
		return cmpError
	}
	defer b.Close()
	if p.has("q") {
		// qemu-img's -q: every stdout message is qprintf'd away; errors
		// still go to stderr and the exit code tells the result.
		t.stdout = io.Discard
	}
	strict := p.has("s")
	if a.Size() != b.Size() && strict {
		fmt.Fprintln(t.stdout, "Strict mode: Image size mismatch!")
		return cmpDiffer
	}
	// Walk both images by allocation extents; ranges both report as
	// unallocated zeroes need no read (qemu-img skips them likewise).
	common := min(a.Size(), b.Size())
	ca, cb := block.Chain(a), block.Chain(b)
	bufA, bufB := make([]byte, compareChunk), make([]byte, compareChunk)
	for off := int64(0); off < common; {
		ea, err := layerStatus(a, ca, off, common-off)
		if err != nil {
			t.errorf("Error while reading block status of %s: %v", p.args[0], err)
			return cmpError
		}
		eb, err := layerStatus(b, cb, off, common-off)
		if err != nil {
			t.errorf("Error while reading block status of %s: %v", p.args[1], err)
			return cmpError
		}
		n := min(ea.length, eb.length, compareChunk)
		if strict && (ea.present != eb.present || ea.zero != eb.zero || ea.data != eb.data) {
			fmt.Fprintf(t.stdout, "Strict mode: Offset %d block status mismatch!\n", off)
			return cmpDiffer
		}
		if !(ea.zero && !ea.data && eb.zero && !eb.data) {
			if _, err := a.ReadAt(bufA[:n], off); err != nil {
				t.errorf("Error while reading offset %d of %s: %s", off, p.args[0], errnoText(err))
				return cmpReadError
			}
			if _, err := b.ReadAt(bufB[:n], off); err != nil {
				t.errorf("Error while reading offset %d of %s: %s", off, p.args[1], errnoText(err))
				return cmpReadError
			}
			if d := firstDiff(bufA[:n], bufB[:n]); d >= 0 {
				fmt.Fprintf(t.stdout, "Content mismatch at offset %d!\n", off+int64(d))
				return cmpDiffer
			}
		}
		off += n
	}
	// Without -s, the larger image's tail must read as zeroes. As in
	// qemu-img, the size warning comes only once the common part matched.
	if a.Size() != b.Size() {
		fmt.Fprintln(t.stdout, "Warning: Image size mismatch!")
	}
	longer, name := a, p.args[0]
	if b.Size() > a.Size() {
		longer, name = b, p.args[1]
	}
	for off := common; off < longer.Size(); {
		n := min(longer.Size()-off, compareChunk)
		if _, err := longer.ReadAt(bufA[:n], off); err != nil {
			t.errorf("Error while reading offset %d of %s: %s", off, name, errnoText(err))
			return cmpReadError
		}
		if !allZero(bufA[:n]) {
			d := firstDiff(bufA[:n], make([]byte, n))
			fmt.Fprintf(t.stdout, "Content mismatch at offset %d!\n", off+int64(d))
			return cmpDiffer
		}
		off += n
	}
	fmt.Fprintln(t.stdout, "Images are identical.")
	return cmpIdentical
}
