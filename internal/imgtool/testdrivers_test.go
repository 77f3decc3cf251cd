package imgtool

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/internal/testutil"
)

// TestConvertSalvageLikeQemu: convert --salvage over a blkdebug source
// that fails some block status queries and reads prints qemu-img's
// warnings in qemu-img's order and writes what qemu-img writes (zeroes
// for the unreadable sectors), judged by running Debian's qemu-img on the
// same source and comparing the targets with it.
func TestConvertSalvageLikeQemu(t *testing.T) {
	testutil.NeedTool(t, "qemu-img")
	testutil.NeedTool(t, "qemu-io")
	dir := t.TempDir()
	orig := filepath.Join(dir, "orig.qcow2")
	run := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return string(out)
	}
	run("qemu-img", "create", "-f", "qcow2", orig, "8M")
	run("qemu-io", "-c", "write -P 42 0 8M", orig)
	src := fmt.Sprintf(`json:{"driver": "blkdebug", "image": {"driver": "qcow2", "file": {"driver": "file", "filename": %q}}, "inject-error": [`+
		`{"event": "none", "iotype": "block-status", "errno": 5, "sector": 4100},`+
		`{"event": "none", "iotype": "read", "errno": 5, "sector": 8000},`+
		`{"event": "none", "iotype": "read", "errno": 5, "sector": 8001}]}`, orig)
	want := run("qemu-img", "convert", "--salvage", "-O", "qcow2", src, filepath.Join(dir, "qemu.qcow2"))
	rc, _, stderr := pimg("convert", "--salvage", "-O", "qcow2", src, filepath.Join(dir, "petrel.qcow2"))
	if rc != 0 {
		t.Fatalf("convert --salvage: exit %d\n%s", rc, stderr)
	}
	// petrel img prints "petrel img:" where qemu-img prints "qemu-img:".
	if got := stderr; got != replaceProg(want) {
		t.Errorf("warnings:\n%s\nqemu-img's:\n%s", got, want)
	}
	if out := run("qemu-img", "compare", filepath.Join(dir, "qemu.qcow2"), filepath.Join(dir, "petrel.qcow2")); out != "Images are identical.\n" {
		t.Error(out)
	}
	// The unreadable sectors read as zeroes, the rest as the source.
	run("qemu-io", "-c", "read -P 0 4096000 1024", "-c", "read -P 42 0 4096000", filepath.Join(dir, "petrel.qcow2"))
}

// replaceProg names petrel img where qemu-img's messages name qemu-img.
func replaceProg(s string) string {
	return strings.ReplaceAll("\n"+s, "\nqemu-img:", "\npetrel img:")[1:]
}

// TestCommitThroughJSONBacking: a backing file named by a json: filename
// with blkdebug under the format (iotest 020) is opened through it, by
// create (for its size) and by commit, whose write then fails as the
// rule says, in qemu-img's words; Debian's qemu-img finds the base
// consistent afterwards.
func TestCommitThroughJSONBacking(t *testing.T) {
	testutil.NeedTool(t, "qemu-img")
	testutil.NeedTool(t, "qemu-io")
	for _, format := range []string{"qcow2", "qed"} {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			base, top := filepath.Join(dir, "base"), filepath.Join(dir, "top")
			must(t, "create", "-q", "-f", format, base, "1M")
			backing := fmt.Sprintf(`json:{"driver": %q, "file": {"driver": "blkdebug", "inject-error": [{"event": "write_aio", "errno": 28, "once": true}], "image": {"driver": "file", "filename": %q}}}`, format, base)
			must(t, "create", "-q", "-f", format, "-b", backing, "-F", format, top)
			if out, err := exec.Command("qemu-io", "-c", "write -P 7 0 64k", top).CombinedOutput(); err != nil {
				t.Fatalf("qemu-io: %v\n%s", err, out)
			}
			rc, _, stderr := pimg("commit", top)
			if rc != 1 || stderr != "petrel img: Block job failed: No space left on device\n" {
				t.Fatalf("commit: exit %d, stderr %q", rc, stderr)
			}
			if out, err := exec.Command("qemu-img", "check", base).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img check of the base: %v\n%s", err, out)
			}
		})
	}
}

// TestConvertFromNullCo: a null-co source (iotest 150) reads as zeroes:
// with -S 512 the target allocates nothing, with -S 0 everything, as
// Debian's qemu-img map of the targets shows.
func TestConvertFromNullCo(t *testing.T) {
	testutil.NeedTool(t, "qemu-img")
	src := `json:{"driver": "null-co", "size": 1048576, "read-zeroes": true}`
	for sparse, want := range map[string]string{
		"512": "[]",
		"0":   `[{"data":true,"depth":0,"length":1048576,"present":true,"start":0,"zero":false}]`,
	} {
		dst := filepath.Join(t.TempDir(), "t.qcow2")
		must(t, "convert", "-O", "qcow2", "-S", sparse, src, dst)
		out, err := exec.Command("qemu-img", "map", "--output=json", dst).Output()
		if err != nil {
			t.Fatal(err)
		}
		var got []map[string]any
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatal(err)
		}
		var data []map[string]any
		for _, e := range got {
			if e["data"] == true {
				delete(e, "offset")
				delete(e, "compressed")
				data = append(data, e)
			}
		}
		b, _ := json.Marshal(data)
		if string(b) != want && !(want == "[]" && string(b) == "null") {
			t.Errorf("-S %s: data extents %s, want %s", sparse, b, want)
		}
	}
}

// TestSnapshotDeleteFreeErrorLikeQemu: snapshot -d over blkdebug failing
// every request from the first cluster free on (iotest 217): the failed
// free of the old snapshot table is reported and leaks, the snapshot's
// references then fail in qemu_snapshot_delete's words, and the image
// left behind is qemu-img's (the snapshot gone, only leaks that
// check -r leaks repairs), judged by running Debian's qemu-img on a copy.
func TestSnapshotDeleteFreeErrorLikeQemu(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "blkdebug.conf")
	if err := os.WriteFile(conf, []byte("[inject-error]\nevent = \"cluster_free\"\nerrno = \"5\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	img := map[string]string{}
	for _, who := range []string{"qemu", "petrel"} {
		img[who] = filepath.Join(dir, who+".qcow2")
		qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", img[who], "64M")
		qemuTool(t, "qemu-io", "-c", "write 0 64k", img[who])
		qemuTool(t, "qemu-img", "snapshot", "-c", "foo", img[who])
	}
	cmd := exec.Command("qemu-img", "snapshot", "-d", "foo", "blkdebug:"+conf+":"+img["qemu"])
	want, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatal("qemu-img snapshot -d succeeded despite the injected error")
	}
	rc, out, stderr := pimg("snapshot", "-d", "foo", "blkdebug:"+conf+":"+img["petrel"])
	if rc != 1 || out+stderr != replaceProg(string(want)) {
		t.Errorf("petrel img: exit %d\n%s%s\nqemu-img: %v\n%s", rc, out, stderr, err, want)
	}
	for _, args := range [][]string{{"snapshot", "-l"}, {"check"}, {"check", "-r", "leaks"}, {"check"}} {
		q, _ := exec.Command("qemu-img", append(args, img["qemu"])...).CombinedOutput()
		p, _ := exec.Command("qemu-img", append(args, img["petrel"])...).CombinedOutput()
		if string(p) != strings.ReplaceAll(string(q), "qemu.qcow2", "petrel.qcow2") {
			t.Errorf("qemu-img %v of petrel's image:\n%s\nof qemu-img's:\n%s", args, p, q)
		}
	}
}
