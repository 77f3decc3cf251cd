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

// sameMapAsQemu runs a subcommand once with qemu-img and once with petrel
// img, each in a fresh directory that setup fills (args and the image to
// look at are named relative to it), reads the image back with qemu-io's
// verify commands, and fails unless qemu-img map --output=json of both
// results is the same, host offsets left out (where clusters land may
// differ, what is allocated and how may not).
func sameMapAsQemu(t *testing.T, setup func(dir string), args []string, image string, verify ...string) {
	t.Helper()
	offset := regexp.MustCompile(`, "offset": [0-9]+`)
	maps := map[string]string{}
	for _, who := range []string{"qemu-img", "petrel"} {
		dir := t.TempDir()
		setup(dir)
		abs := make([]string, len(args))
		for i, a := range args {
			abs[i] = strings.ReplaceAll(a, "DIR", dir)
		}
		if who == "qemu-img" {
			qemuTool(t, "qemu-img", abs...)
		} else if rc, o, e := pimg(abs...); rc != 0 {
			t.Fatalf("petrel img %v: exit %d %s%s", abs, rc, o, e)
		}
		img := filepath.Join(dir, image)
		var cmds []string
		for _, v := range verify {
			cmds = append(cmds, "-c", v)
		}
		if len(cmds) > 0 {
			qemuTool(t, "qemu-io", append(cmds, img)...)
		}
		maps[who] = offset.ReplaceAllString(qemuTool(t, "qemu-img", "map", "--output=json", img), "")
	}
	if maps["qemu-img"] != maps["petrel"] {
		t.Errorf("%v:\nqemu-img: %s\npetrel:   %s", args, maps["qemu-img"], maps["petrel"])
	}
}

// TestRebaseZeroesLikeQemu: past the old backing file's end (here: no old
// backing file), differing runs are written as zero clusters, not
// zero-filled data, as qemu-img 7.2 (iotest 252).
func TestRebaseZeroesLikeQemu(t *testing.T) {
	sameMapAsQemu(t, func(dir string) {
		top, base := filepath.Join(dir, "t.qcow2"), filepath.Join(dir, "base.qcow2")
		qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", top, "384k")
		qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "384k")
		qemuTool(t, "qemu-io", "-c", "write -P 0x22 0 128k", "-c", "write -P 0x11 128k 128k", top)
		qemuTool(t, "qemu-io", "-c", "write -P 0x11 0 64k", "-c", "write -P 0x11 128k 64k", "-c", "write -P 0x11 256k 64k", base)
	}, []string{"rebase", "-b", "base.qcow2", "-F", "qcow2", "DIR/t.qcow2"}, "t.qcow2",
		"read -P 0x22 0 128k", "read -P 0x11 128k 128k", "read -P 0 256k 128k")
}

// TestRebaseRunsLikeQemu: below the old backing file's end, zeroes it
// holds are written as data, and a differing run across backing extents
// is written at once, so the image is allocated as qemu-img's (iotest
// 024, for qcow2 and QED).
func TestRebaseRunsLikeQemu(t *testing.T) {
	for _, f := range []string{"qcow2", "qed"} {
		sameMapAsQemu(t, func(dir string) {
			old, nw, top := filepath.Join(dir, "old."+f), filepath.Join(dir, "new."+f), filepath.Join(dir, "t."+f)
			qemuTool(t, "qemu-img", "create", "-q", "-f", f, old, "1M")
			qemuTool(t, "qemu-img", "create", "-q", "-f", f, nw, "1M")
			qemuTool(t, "qemu-img", "create", "-q", "-f", f, "-b", "old."+f, "-F", f, top, "1M")
			qemuTool(t, "qemu-io", "-c", "write -P 0x11 0 128k", "-c", "write -P 0x11 192k 64k", old)
			qemuTool(t, "qemu-io", "-c", "write -P 0x22 64k 128k", "-c", "write -P 0x11 192k 64k", nw)
		}, []string{"rebase", "-f", f, "-b", "new." + f, "-F", f, "DIR/t." + f}, "t."+f,
			"read -P 0x11 0 128k", "read -P 0 128k 64k", "read -P 0x11 192k 64k")
	}
}
