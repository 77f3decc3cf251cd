package imgtool

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/internal/testutil"
)

// qemuTool runs qemu-img or qemu-io and fails the test on error.
func qemuTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	testutil.NeedTool(t, name)
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestConvertSnapshot: convert -l reads the named internal snapshot, as
// qemu-img does (iotest 058), for every way of naming it; names that match
// nothing fail as in qemu-img, and -s (gone from qemu-img 7) is refused.
func TestConvertSnapshot(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.qcow2")
	qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", src, "2M")
	for i := 1; i <= 3; i++ {
		qemuTool(t, "qemu-io", "-c", fmt.Sprintf("write -P %d %dk 64k", i, i*64), src)
		qemuTool(t, "qemu-img", "snapshot", "-c", fmt.Sprintf("snap%d", i), src)
	}
	qemuTool(t, "qemu-io", "-c", "write -P 9 0 1M", src)
	for _, sel := range []string{"snap1", "2", "snap3", "snapshot.name=snap2", "snapshot.id=3", "snapshot.id=1,snapshot.name=snap1",
		"snapshot.id=2,snapshot.name=snap1", "nosuch", "snapshot.bogus=1"} {
		t.Run(sel, func(t *testing.T) {
			theirs, ours := filepath.Join(t.TempDir(), "q.raw"), filepath.Join(t.TempDir(), "p.raw")
			qerr := exec.Command("qemu-img", "convert", "-l", sel, "-O", "raw", src, theirs).Run()
			rc, _, stderr := pimg("convert", "-l", sel, "-O", "raw", src, ours)
			if (qerr == nil) != (rc == 0) {
				t.Fatalf("qemu-img: %v; petrel img: exit %d %s", qerr, rc, stderr)
			}
			if qerr != nil {
				if _, err := os.Stat(ours); err == nil {
					t.Fatalf("a failed convert left %s behind", ours)
				}
				return
			}
			want, _ := os.ReadFile(theirs)
			got, _ := os.ReadFile(ours)
			if !bytes.Equal(got, want) {
				t.Fatalf("convert -l %s: output differs from qemu-img's", sel)
			}
			if exec.Command("qemu-img", "compare", "-f", "raw", "-F", "qcow2", ours, src).Run() == nil {
				t.Fatalf("convert -l %s wrote the active layer", sel)
			}
		})
	}
	if rc, _, _ := pimg("convert", "-s", "snap1", "-O", "raw", src, filepath.Join(dir, "s.raw")); rc == 0 {
		t.Fatal("convert -s was accepted")
	}
}

// TestConvertBitmaps: where qemu-img refuses convert --bitmaps (raw
// target, raw source, several sources) petrel img refuses too; where
// qemu-img copies bitmaps, petrel img copies them too.
func TestConvertBitmaps(t *testing.T) {
	dir := t.TempDir()
	withBM, without, raw := filepath.Join(dir, "bm.qcow2"), filepath.Join(dir, "plain.qcow2"), filepath.Join(dir, "r.raw")
	for _, p := range []string{withBM, without} {
		qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "1M")
		qemuTool(t, "qemu-io", "-c", "write -P 1 0 64k", p)
	}
	qemuTool(t, "qemu-img", "bitmap", "--add", withBM, "b0")
	qemuTool(t, "qemu-img", "create", "-q", "-f", "raw", raw, "1M")
	for _, c := range [][]string{
		{"-O", "qcow2", withBM},
		{"-O", "raw", withBM},
		{"-O", "qcow2", without},
		{"-O", "raw", without},
		{"-O", "qcow2", raw},
		{"-O", "qcow2", without, without},
		{"--skip-broken-bitmaps-only", "-O", "qcow2", without},
	} {
		args := append([]string{"convert", "--bitmaps"}, c...)
		if c[0] == "--skip-broken-bitmaps-only" {
			args = append([]string{"convert", "--skip-broken-bitmaps"}, c[1:]...)
		}
		t.Run(strings.ReplaceAll(strings.Join(args[1:], " "), dir+"/", ""), func(t *testing.T) {
			theirs, ours := filepath.Join(t.TempDir(), "q.out"), filepath.Join(t.TempDir(), "p.out")
			qerr := exec.Command("qemu-img", append(args, theirs)...).Run()
			rc, _, stderr := pimg(append(args, ours)...)
			if qerr != nil {
				if rc == 0 {
					t.Fatalf("qemu-img refuses (%v), petrel img succeeds", qerr)
				}
				return
			}
			if rc != 0 {
				t.Fatalf("petrel img: exit %d %s", rc, stderr)
			}
			qinfo := qemuTool(t, "qemu-img", "info", theirs)
			pinfo := qemuTool(t, "qemu-img", "info", ours)
			if strings.Contains(qinfo, "bitmaps:") != strings.Contains(pinfo, "bitmaps:") {
				t.Fatalf("bitmaps differ: qemu-img's copy:\n%s\npetrel's:\n%s", qinfo, pinfo)
			}
		})
	}
}
