package imgtool

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/petrel-vmm/petrel/block"
)

// TestDDCopiesLikeQemuImg: qemu-img dd's output holds exactly the bytes
// copied (bs, count and skip count input blocks), in a new image of that
// size (iotests 159, 160, 170).
func TestDDCopiesLikeQemuImg(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.qcow2")
	must(t, "create", "-q", "-f", "qcow2", src, "1M")
	img, err := block.Open(src, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 1<<20)
	for i := range want {
		want[i] = byte(i*7 + i>>9)
	}
	if _, err := img.WriteAt(want, 0); err != nil {
		t.Fatal(err)
	}
	img.Close()
	for _, c := range []struct {
		ops      []string
		from, to int
	}{
		{[]string{"bs=1999"}, 0, 1 << 20},
		{[]string{"bs=5", "count=3"}, 0, 15},
		{[]string{"bs=64K", "skip=3"}, 3 << 16, 1 << 20},
		{[]string{"skip=5", "count=7"}, 5 * 512, 7 * 512},
	} {
		out := filepath.Join(dir, "out.qcow2")
		args := append([]string{"dd", "-O", "qcow2", "if=" + src, "of=" + out}, c.ops...)
		must(t, args...)
		got, err := block.Open(out, block.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		// qcow2 rounds a new image's size up to 512 bytes, as qemu-img.
		if n := int64(c.to-c.from+511) &^ 511; got.Size() != n {
			t.Errorf("%v: size %d, want %d", c.ops, got.Size(), n)
		}
		b := make([]byte, got.Size())
		if _, err := got.ReadAt(b, 0); err != nil {
			t.Fatal(err)
		}
		got.Close()
		if !bytes.Equal(b[:c.to-c.from], want[c.from:c.to]) || !allZero(b[c.to-c.from:]) {
			t.Errorf("%v: output differs from input bytes %d..%d", c.ops, c.from, c.to)
		}
	}
}

// TestDDOperandErrors: qemu-img's messages and exit status for bad
// operands, and an empty output for a skip past the input's end.
func TestDDOperandErrors(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	if err := os.WriteFile(src, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.raw")
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"dd", "if=" + src}, "petrel img: Must specify both input and output files\n"},
		{[]string{"dd", "if=" + src, "of=" + out, "foo=1"}, "petrel img: unrecognized operand foo\n"},
		{[]string{"dd", "if=" + src, "of=" + out, "junk"}, "petrel img: unrecognized operand junk\n"},
		{[]string{"dd", "if=" + src, "of=" + out, "bs=0"}, "petrel img: Invalid bs specified. Must be between 1 and 2147483647.\n"},
	} {
		rc, _, e := pimg(c.args...)
		if rc != 1 || e != c.msg {
			t.Errorf("%v: exit %d, stderr %q; want 1, %q", c.args, rc, e, c.msg)
		}
	}
	rc, _, e := pimg("dd", "-f", "raw", "if="+src, "of="+out, "skip=9")
	if rc != 0 || e != "petrel img: "+src+": cannot skip to specified offset\n" {
		t.Errorf("skip past end: exit %d, stderr %q", rc, e)
	}
	if fi, err := os.Stat(out); err != nil || fi.Size() != 0 {
		t.Errorf("skip past end: output %v, %v; want an empty file", fi, err)
	}
}
