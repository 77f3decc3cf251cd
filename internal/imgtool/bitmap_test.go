package imgtool

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/internal/testutil"
)

// bitmapScenario is iotest qemu-img-bitmaps' setup, every bitmap and
// convert step done by img (qemu-img or petrel img) and the guest writes
// by qemu-io: bitmaps added, cleared, disabled and enabled between
// writes, copied by convert --bitmaps, merged across images with -b.
// It returns the top image.
func bitmapScenario(t *testing.T, dir string, img func(args ...string)) string {
	top := filepath.Join(dir, "t.qcow2")
	base, orig := top+".base", top+".orig"
	qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "10M")
	img("bitmap", "--add", "-f", "qcow2", base, "b0")
	qemuTool(t, "qemu-io", "-c", "w 3M 1M", "-f", "qcow2", base)
	qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", orig, "10M")
	qemuTool(t, "qemu-io", "-c", "w 0 1M", "-f", "qcow2", orig)
	img("bitmap", "--add", "-g", "512k", "-f", "qcow2", orig, "b1")
	img("bitmap", "--add", "--disable", "-f", "qcow2", orig, "b2")
	qemuTool(t, "qemu-io", "-c", "w 3M 1M", "-f", "qcow2", orig)
	img("bitmap", "--clear", "-f", "qcow2", orig, "b1")
	qemuTool(t, "qemu-io", "-c", "w 1M 1M", "-f", "qcow2", orig)
	img("bitmap", "--disable", "-f", "qcow2", orig, "b1")
	img("bitmap", "--enable", "-f", "qcow2", orig, "b2")
	qemuTool(t, "qemu-io", "-c", "w 2M 1M", "-f", "qcow2", orig)
	img("convert", "--bitmaps", "-O", "qcow2", orig, top)
	img("bitmap", "--add", "--disable", "-f", "qcow2", top, "b0")
	img("bitmap", "--add", "--merge", "b0", "-b", base, "-F", "qcow2", "-f", "qcow2", top, "tmp")
	img("bitmap", "--merge", "tmp", "-f", "qcow2", top, "b0")
	img("bitmap", "--remove", "--image-opts", "driver=qcow2,file.driver=file,file.filename="+top, "tmp")
	img("rebase", "-u", "-F", "qcow2", "-b", base, top)
	img("bitmap", "--add", "--merge", "b2", "-b", top, "-F", "qcow2", "-f", "qcow2", base, "b3")
	return top
}

// dirtyMaps is what qemu-img map shows of each bitmap through qemu-nbd's
// qemu:dirty-bitmap contexts (x-dirty-bitmap reports dirty areas as
// "data": false), host offsets left out.
func dirtyMaps(t *testing.T, path string, names ...string) string {
	testutil.NeedTool(t, "qemu-nbd")
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	args := []string{"-t", "-k", sock, "-r", "-f", "qcow2"}
	for _, n := range names {
		args = append(args, "-B", n)
	}
	srv := exec.Command("qemu-nbd", append(args, path)...)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	for deadline := time.Now().Add(testutil.Timeout(10 * time.Second)); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("qemu-nbd did not create its socket")
		}
	}
	offsets := regexp.MustCompile(`"offset": [0-9]+`)
	var out strings.Builder
	for _, n := range names {
		m := qemuTool(t, "qemu-img", "map", "--output=json", "--image-opts",
			"driver=nbd,server.type=unix,server.path="+sock+",x-dirty-bitmap=qemu:dirty-bitmap:"+n)
		out.WriteString(n + ": " + offsets.ReplaceAllString(m, `"offset": X`))
	}
	return out.String()
}

// bitmapsInfo is the bitmaps part of qemu-img info --output=json.
func bitmapsInfo(t *testing.T, path string) string {
	var info struct {
		FormatSpecific struct {
			Data struct {
				Bitmaps json.RawMessage `json:"bitmaps"`
			} `json:"data"`
		} `json:"format-specific"`
	}
	if err := json.Unmarshal([]byte(qemuTool(t, "qemu-img", "info", "--output=json", path)), &info); err != nil {
		t.Fatal(err)
	}
	return string(info.FormatSpecific.Data.Bitmaps)
}

// TestBitmapsMatchQemu: the bitmaps petrel img adds, clears, toggles,
// merges and copies hold the same bits as qemu-img's after the same
// steps, as Debian's qemu-nbd and qemu-img map read them; qemu-img info
// lists the same bitmaps and qemu-img check finds both images clean.
func TestBitmapsMatchQemu(t *testing.T) {
	theirs := bitmapScenario(t, t.TempDir(), func(args ...string) { qemuTool(t, "qemu-img", args...) })
	ours := bitmapScenario(t, t.TempDir(), func(args ...string) { must(t, args...) })
	for _, p := range []string{ours, ours + ".base", ours + ".orig"} {
		qemuTool(t, "qemu-img", "check", p)
	}
	names := []string{"b0", "b1", "b2", "b3"}
	if q, p := dirtyMaps(t, theirs, names...), dirtyMaps(t, ours, names...); q != p {
		t.Errorf("dirty bits differ\nqemu-img:\n%s\npetrel img:\n%s", q, p)
	}
	for _, suffix := range []string{"", ".base", ".orig"} {
		if q, p := bitmapsInfo(t, theirs+suffix), bitmapsInfo(t, ours+suffix); q != p || p == "" {
			t.Errorf("qemu-img info of t.qcow2%s: bitmaps differ\nqemu-img:\n%s\npetrel img:\n%s", suffix, q, p)
		}
	}
}

// TestBitmapsInconsistent: bitmaps left in use by a writer that did not
// close (qemu-io abort) are shown in-use, refused by convert --bitmaps in
// qemu-img's words before the target is created, skipped with
// --skip-broken-bitmaps, and can be removed.
func TestBitmapsInconsistent(t *testing.T) {
	dir := t.TempDir()
	img, copy := filepath.Join(dir, "a.qcow2"), filepath.Join(dir, "c.qcow2")
	qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "4M")
	qemuTool(t, "qemu-img", "bitmap", "--add", img, "b0")
	qemuTool(t, "qemu-img", "bitmap", "--add", img, "b1")
	exec.Command("qemu-io", "-c", "abort", img).Run()
	must(t, "bitmap", "--add", img, "b2")
	if info := must(t, "info", img); !strings.Contains(info, "[0]: in-use\n                [1]: auto\n            name: b1") {
		t.Fatalf("petrel img info:\n%s", info)
	}
	rc, _, stderr := pimg("convert", "--bitmaps", "-O", "qcow2", img, copy)
	want := "Cannot copy inconsistent bitmap 'b1'\nTry --skip-broken-bitmaps, or use 'qemu-img bitmap --remove' to delete it\n"
	if rc == 0 || !strings.HasSuffix(stderr, want) {
		t.Fatalf("convert of in-use bitmaps: exit %d, %q", rc, stderr)
	}
	if _, err := os.Stat(copy); err == nil {
		t.Fatal("convert created the target before refusing")
	}
	_, _, stderr = pimg("convert", "--bitmaps", "--skip-broken-bitmaps", "-O", "qcow2", img, copy)
	if !strings.Contains(stderr, "warning: Skipping inconsistent bitmap 'b1'\n") || !strings.Contains(stderr, "'b0'") {
		t.Fatalf("convert --skip-broken-bitmaps: %q", stderr)
	}
	qemuTool(t, "qemu-img", "check", copy)
	if info := qemuTool(t, "qemu-img", "info", copy); strings.Contains(info, "b0") || !strings.Contains(info, "name: b2") {
		t.Fatalf("qemu-img info of the copy:\n%s", info)
	}
	must(t, "bitmap", "--remove", img, "b0")
	must(t, "bitmap", "--remove", img, "b1")
	qemuTool(t, "qemu-img", "check", img)
	if info := qemuTool(t, "qemu-img", "info", img); strings.Contains(info, "in-use") || !strings.Contains(info, "name: b2") {
		t.Fatalf("qemu-img info after removing the in-use bitmaps:\n%s", info)
	}
}

// TestBitmapMessages: petrel img bitmap refuses what qemu-img refuses, in
// its words, and adds the bitmaps of iotest 190 (512-byte granularity
// over 2 TiB, the most QEMU allows) that qemu-img measure then counts.
func TestBitmapMessages(t *testing.T) {
	dir := t.TempDir()
	big, huge, small := filepath.Join(dir, "2t.qcow2"), filepath.Join(dir, "4t.qcow2"), filepath.Join(dir, "s.qcow2")
	qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=2M", big, "2T")
	qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=2M", huge, "4T")
	must(t, "bitmap", "--add", "--granularity", "512", "-f", "qcow2", big, "b1")
	must(t, "bitmap", "--add", "-g", "2M", "-f", "qcow2", big, "b2")
	qemuTool(t, "qemu-img", "check", big)
	if m := qemuTool(t, "qemu-img", "measure", "--output=json", "-O", "qcow2", "-o", "cluster_size=2M", "-f", "qcow2", big); !strings.Contains(m, `"bitmaps": 545259520`) {
		t.Errorf("qemu-img measure of petrel's bitmaps:\n%s", m)
	}
	// The refusals on a small image: qemu-img loads 512 MiB for b1.
	qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", small, "64M")
	must(t, "bitmap", "--add", small, "b1")
	must(t, "bitmap", "--add", small, "b2")
	for _, args := range [][]string{
		{"--add", "-g", "512", huge, "b"},
		{"--add", "-g", "1000", huge, "b"},
		{"--add", "-g", "4G", huge, "b"},
		{"--add", small, "b1"},
		{"--clear", small, "nothere"},
		{"--merge", "nothere", small, "b1"},
		{small, "b1"},
		{"--add", small},
		{"-g", "1M", "--remove", small, "b1"},
		{"-b", small, "--remove", small, "b1"},
		{"-F", "qcow2", "--merge", "b2", small, "b1"},
	} {
		args = append([]string{"bitmap"}, args...)
		want, err := exec.Command("qemu-img", args...).CombinedOutput()
		if err == nil {
			t.Fatalf("qemu-img %v succeeded", args)
		}
		rc, _, got := pimg(args...)
		got = strings.ReplaceAll(got, "petrel img:", "qemu-img:")
		// qemu-img names the node, not the file, in one message.
		wantText := regexp.MustCompile(`'#block[0-9]+'`).ReplaceAllString(string(want), "'"+huge+"'")
		if rc != 1 || got != wantText {
			t.Errorf("petrel img %v: exit %d\n%s\nqemu-img:\n%s", args, rc, got, wantText)
		}
	}
}

// TestBitmapsResize: growing and shrinking an image keeps its bitmap's
// bits as qemu-img resize does (bits past a shrunk end dropped), as
// qemu-nbd and qemu-img map read them.
func TestBitmapsResize(t *testing.T) {
	scenario := func(img func(args ...string)) string {
		p := filepath.Join(t.TempDir(), "r.qcow2")
		qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "4M")
		img("bitmap", "--add", "-g", "64k", p, "a")
		qemuTool(t, "qemu-io", "-c", "w 3M 1M", p)
		img("resize", p, "8M")
		qemuTool(t, "qemu-io", "-c", "w 6M 64k", "-c", "w 7M 64k", p)
		img("resize", "--shrink", p, "7M")
		qemuTool(t, "qemu-img", "check", p)
		return p
	}
	theirs := scenario(func(args ...string) { qemuTool(t, "qemu-img", args...) })
	ours := scenario(func(args ...string) { must(t, args...) })
	if q, p := dirtyMaps(t, theirs, "a"), dirtyMaps(t, ours, "a"); q != p {
		t.Errorf("dirty bits differ\nqemu-img:\n%s\npetrel img:\n%s", q, p)
	}
}

// TestBitmapsInfoJSON: info --output=json prints the format-specific
// part as qemu-img does, character for character: its keys in QEMU's
// order, each bitmap's flags, name and granularity, and an empty flags
// list over two lines.
func TestBitmapsInfoJSON(t *testing.T) {
	p := filepath.Join(t.TempDir(), "j.qcow2")
	qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "1M")
	qemuTool(t, "qemu-img", "bitmap", "--add", "--disable", p, "off")
	qemuTool(t, "qemu-img", "bitmap", "--add", "-g", "4k", p, "on")
	section := func(s string) string {
		i, j := strings.Index(s, `"format-specific"`), strings.Index(s, `"dirty-flag"`)
		if i < 0 || j < i {
			t.Fatalf("no format-specific part in\n%s", s)
		}
		return s[i:j]
	}
	want := section(qemuTool(t, "qemu-img", "info", "--output=json", p))
	if got := section(must(t, "info", "--output=json", p)); got != want {
		t.Errorf("petrel img info --output=json:\n%s\nqemu-img:\n%s", got, want)
	}
}
