package imgtool

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// commitChain makes base <- mid <- top in dir, each layer writing part of
// what the one below holds (iotest 097's shape).
func commitChain(t *testing.T, dir string) {
	t.Helper()
	base, mid, top := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "mid.qcow2"), filepath.Join(dir, "top.qcow2")
	qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "1M")
	qemuTool(t, "qemu-io", "-c", "write -P 1 0 1M", base)
	qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", mid)
	qemuTool(t, "qemu-io", "-c", "write -P 2 0 512k", mid)
	qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", top)
	qemuTool(t, "qemu-io", "-c", "write -P 3 128k 256k", "-c", "write -P 4 768k 64k", top)
}

// TestCommitLikeQemu runs the same commit with qemu-img and petrel img on
// copies of one chain: every layer must read the same afterwards (the top
// keeps its data with -b, which implies -d; a base below an intermediate
// layer receives the data of every layer above it).
func TestCommitLikeQemu(t *testing.T) {
	for _, args := range [][]string{
		{"-b", "base.qcow2"},
		{"-b", "mid.qcow2"},
		{},
		{"-d"},
	} {
		t.Run(strings.Join(append([]string{"commit"}, args...), " "), func(t *testing.T) {
			q, p := t.TempDir(), t.TempDir()
			commitChain(t, q)
			for _, n := range []string{"base.qcow2", "mid.qcow2", "top.qcow2"} {
				b, err := os.ReadFile(filepath.Join(q, n))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(p, n), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			before := filepath.Join(t.TempDir(), "before.raw")
			qemuTool(t, "qemu-img", "convert", "-O", "raw", filepath.Join(q, "top.qcow2"), before)
			qemuTool(t, "qemu-img", append(append([]string{"commit", "-q"}, args...), filepath.Join(q, "top.qcow2"))...)
			if rc, o, e := pimg(append(append([]string{"commit", "-q"}, args...), filepath.Join(p, "top.qcow2"))...); rc != 0 {
				t.Fatalf("petrel img commit: exit %d %s%s", rc, o, e)
			}
			for _, n := range []string{"base.qcow2", "mid.qcow2", "top.qcow2"} {
				if out, err := exec.Command("qemu-img", "compare", filepath.Join(q, n), filepath.Join(p, n)).CombinedOutput(); err != nil {
					t.Fatalf("%s differs from qemu-img's result: %v %s", n, err, out)
				}
				// Each layer alone, without its backing file.
				u := "json:{\"driver\":\"qcow2\",\"backing\":null,\"file\":{\"driver\":\"file\",\"filename\":\"%s\"}}"
				if out, err := exec.Command("qemu-img", "compare", strings.Replace(u, "%s", filepath.Join(q, n), 1), strings.Replace(u, "%s", filepath.Join(p, n), 1)).CombinedOutput(); err != nil {
					t.Fatalf("%s alone differs from qemu-img's result: %v %s", n, err, out)
				}
			}
			if len(args) > 0 && args[0] == "-b" {
				if out, err := exec.Command("qemu-img", "compare", "-F", "raw", filepath.Join(p, "top.qcow2"), before).CombinedOutput(); err != nil {
					t.Fatalf("the top's content changed: %v %s", err, out)
				}
			}
		})
	}
}

// TestCommitZeroesUnmapLikeQemu: a range the top reads as zeroes is
// committed as zeroes that free the base's clusters, as qemu-img's
// active commit does (iotest 313): qemu-img map of both bases agrees.
func TestCommitZeroesUnmapLikeQemu(t *testing.T) {
	maps := map[string]string{}
	for _, who := range []string{"qemu-img", "petrel"} {
		dir := t.TempDir()
		base, top := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "top.qcow2")
		qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "1M")
		qemuTool(t, "qemu-io", "-c", "write -P 1 0 1M", base)
		qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top)
		qemuTool(t, "qemu-io", "-c", "write -z 0 512k", top)
		if who == "qemu-img" {
			qemuTool(t, "qemu-img", "commit", "-q", top)
		} else if rc, o, e := pimg("commit", "-q", top); rc != 0 {
			t.Fatalf("petrel img commit: exit %d %s%s", rc, o, e)
		}
		maps[who] = qemuTool(t, "qemu-img", "map", "--output=json", base)
	}
	if maps["qemu-img"] != maps["petrel"] {
		t.Errorf("base after commit:\nqemu-img: %s\npetrel:   %s", maps["qemu-img"], maps["petrel"])
	}
}

// TestRebaseZeroesLikeQemu: where the old backing reads zeroes and the
// new one does not, rebase writes zero clusters, not zero-filled data, as
// qemu-img 7.2 (iotest 252): qemu-img map of both results agrees.
func TestRebaseZeroesLikeQemu(t *testing.T) {
	offset := regexp.MustCompile(`, "offset": [0-9]+`)
	maps := map[string]string{}
	for _, who := range []string{"qemu-img", "petrel"} {
		dir := t.TempDir()
		top, base := filepath.Join(dir, "t.qcow2"), filepath.Join(dir, "base.qcow2")
		qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", top, "384k")
		qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "384k")
		qemuTool(t, "qemu-io", "-c", "write -P 0x22 0 128k", "-c", "write -P 0x11 128k 128k", top)
		qemuTool(t, "qemu-io", "-c", "write -P 0x11 0 64k", "-c", "write -P 0x11 128k 64k", "-c", "write -P 0x11 256k 64k", base)
		args := []string{"rebase", "-b", "base.qcow2", "-F", "qcow2", top}
		if who == "qemu-img" {
			qemuTool(t, "qemu-img", args...)
		} else if rc, o, e := pimg(args...); rc != 0 {
			t.Fatalf("petrel img rebase: exit %d %s%s", rc, o, e)
		}
		qemuTool(t, "qemu-io", "-c", "read -P 0x22 0 128k", "-c", "read -P 0x11 128k 128k", "-c", "read -P 0 256k 128k", top)
		maps[who] = offset.ReplaceAllString(qemuTool(t, "qemu-img", "map", "--output=json", top), "")
	}
	if maps["qemu-img"] != maps["petrel"] {
		t.Errorf("after rebase:\nqemu-img: %s\npetrel:   %s", maps["qemu-img"], maps["petrel"])
	}
}

// TestRebaseRunsLikeQemu: below the old backing file's end, zeroes it
// holds are written as data, and a differing run across backing extents
// is written at once, so the image is allocated as qemu-img's (iotest
// 024, for qcow2 and QED).
func TestRebaseRunsLikeQemu(t *testing.T) {
	offset := regexp.MustCompile(`, "offset": [0-9]+`)
	for _, f := range []string{"qcow2", "qed"} {
		maps := map[string]string{}
		for _, who := range []string{"qemu-img", "petrel"} {
			dir := t.TempDir()
			old, nw, top := filepath.Join(dir, "old."+f), filepath.Join(dir, "new."+f), filepath.Join(dir, "t."+f)
			qemuTool(t, "qemu-img", "create", "-q", "-f", f, old, "1M")
			qemuTool(t, "qemu-img", "create", "-q", "-f", f, nw, "1M")
			qemuTool(t, "qemu-img", "create", "-q", "-f", f, "-b", "old."+f, "-F", f, top, "1M")
			qemuTool(t, "qemu-io", "-c", "write -P 0x11 0 128k", "-c", "write -P 0x11 192k 64k", old)
			qemuTool(t, "qemu-io", "-c", "write -P 0x22 64k 128k", "-c", "write -P 0x11 192k 64k", nw)
			args := []string{"rebase", "-f", f, "-b", "new." + f, "-F", f, top}
			if who == "qemu-img" {
				qemuTool(t, "qemu-img", args...)
			} else if rc, o, e := pimg(args...); rc != 0 {
				t.Fatalf("petrel img rebase: exit %d %s%s", rc, o, e)
			}
			qemuTool(t, "qemu-io", "-c", "read -P 0x11 0 128k", "-c", "read -P 0 128k 64k", "-c", "read -P 0x11 192k 64k", top)
			maps[who] = offset.ReplaceAllString(qemuTool(t, "qemu-img", "map", "--output=json", top), "")
		}
		if maps["qemu-img"] != maps["petrel"] {
			t.Errorf("%s after rebase:\nqemu-img: %s\npetrel:   %s", f, maps["qemu-img"], maps["petrel"])
		}
	}
}
