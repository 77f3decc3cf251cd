package imgtool

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// TestQemuImgMessages: refusals that qemu-img words in its own way, each
// pinned by an iotest: the exit status and the whole stderr line.
func TestQemuImgMessages(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	img := filepath.Join(dir, "t.qcow2")
	must(t, "create", "-q", "-f", "qcow2", base, "1M")
	must(t, "create", "-q", "-f", "qcow2", img, "1M")
	// An unknown incompatible feature bit 63 (iotest 036): the engine's
	// reason without its "opening qcow2 image" context.
	bad := filepath.Join(dir, "bad.qcow2")
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	binary.BigEndian.PutUint64(b[72:], 1<<63)
	if err := os.WriteFile(bad, b, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"info", bad}, "Could not open '" + bad + "': Unsupported qcow2 feature(s): Unknown incompatible feature: 8000000000000000"},
		// iotest 114: a backing file needs its format.
		{[]string{"convert", "-O", "qcow2", "-B", base, base, filepath.Join(dir, "c.qcow2")}, "Use of backing file requires explicit backing format"},
		{[]string{"rebase", "-u", "-b", base, img}, "Could not change the backing file to '" + base + "': backing format must be specified"},
		{[]string{"rebase", "-b", base, img}, "Could not change the backing file to '" + base + "': backing format must be specified"},
		// iotest 122.
		{[]string{"convert", "-O", "qcow2", "-B", base, "-F", "qcow2", base, img, filepath.Join(dir, "c.qcow2")},
			"Having a backing file for the target makes no sense when concatenating multiple input images"},
	} {
		rc, _, e := pimg(c.args...)
		if want := "petrel img: " + c.msg + "\n"; rc != 1 || e != want {
			t.Errorf("%v: exit %d, stderr %q; want 1, %q", c.args, rc, e, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "c.qcow2")); err == nil {
		t.Error("a refused convert created its target")
	}
}

// TestCreateMessages: qcow2 creation refusals in qemu-img's words, after
// "FILE: ", and nothing left behind (iotests 049, 054, 112, 271).
func TestCreateMessages(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "t.qcow2")
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"1E"}, "The image size is too large for file format 'qcow2' (try using a larger cluster size)"},
		{[]string{"-o", "size=10M", "20M"}, "The image size must be specified only once"},
		{[]string{"-b", "", "1M"}, "Expected backing file name, got empty string"},
		{[]string{"-o", "compat=0.42", "64M"}, "Parameter 'version' does not accept value '0.42'"},
		{[]string{"-o", "preallocation=1234", "64M"}, "Parameter 'preallocation' does not accept value '1234'"},
		{[]string{"-o", "compat=0.10,lazy_refcounts=on", "64M"},
			"Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)"},
		{[]string{"-o", "refcount_bits=42", "64M"}, "Refcount width must be a power of two and may not exceed 64 bits"},
		{[]string{"-o", "refcount_bits=0", "64M"}, "Refcount width must be a power of two and may not exceed 64 bits"},
		{[]string{"-o", "compat=0.10,refcount_bits=1", "64M"},
			"Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)"},
		{[]string{"-o", "extended_l2=on,cluster_size=8k", "64M"},
			"Extended L2 entries are only supported with cluster sizes of at least 16384 bytes"},
	} {
		args := append([]string{"create", "-q", "-f", "qcow2", img}, c.args...)
		rc, _, e := pimg(args...)
		if want := "petrel img: " + img + ": " + c.msg + "\n"; rc != 1 || e != want {
			t.Errorf("%v: exit %d, stderr %q; want 1, %q", c.args, rc, e, want)
		}
		if _, err := os.Stat(img); err == nil {
			t.Errorf("%v: refused create left %s", c.args, img)
			os.Remove(img)
		}
	}
}

// TestConvertSkipCreateWithOptions: -n with -o is refused before anything
// is opened (iotest 122).
func TestConvertSkipCreateWithOptions(t *testing.T) {
	rc, _, e := pimg("convert", "-O", "qcow2", "-o", "preallocation=metadata", "-n", "a.qcow2", "b.qcow2")
	if want := "petrel img: -o has no effect when skipping image creation\n"; rc != 1 || e != want {
		t.Errorf("exit %d, stderr %q; want 1, %q", rc, e, want)
	}
}
