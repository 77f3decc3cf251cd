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
