package qcow2

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/block"
	"github.com/petrel-vmm/petrel/internal/testutil"
)

// run runs a command and fails the test with its output on error.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := testutil.QemuCombinedOutput(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// qemuCheck runs qemu-img check and fails on corruption (and on leaks
// unless allowLeaks).
func qemuCheck(t testing.TB, path string, allowLeaks bool) {
	t.Helper()
	testutil.NeedTool(t, "qemu-img")
	out, err := exec.Command("qemu-img", "check", "--output=json", path).Output()
	var r struct {
		Corruptions int `json:"corruptions"`
		Leaks       int `json:"leaks"`
		CheckErrors int `json:"check-errors"`
	}
	if jerr := json.Unmarshal(out, &r); jerr != nil {
		t.Fatalf("qemu-img check %s: %v %v\n%s", path, err, jerr, out)
	}
	if r.Corruptions != 0 || r.CheckErrors != 0 || (!allowLeaks && r.Leaks != 0) {
		human, _ := exec.Command("qemu-img", "check", path).CombinedOutput()
		t.Fatalf("qemu-img check %s: %+v\n%s", path, r, human)
	}
}

// qemuRaw converts an image to raw with qemu-img and returns the bytes.
func qemuRaw(t testing.TB, path string) []byte {
	t.Helper()
	testutil.NeedTool(t, "qemu-img")
	dst := filepath.Join(t.TempDir(), "out.raw")
	run(t, "qemu-img", "convert", "-O", "raw", path, dst)
	b, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readAll reads the whole virtual disk through the engine.
func readAll(t testing.TB, img block.Image) []byte {
	t.Helper()
	b := make([]byte, img.Size())
	if _, err := img.ReadAt(b, 0); err != nil {
		t.Fatalf("reading image: %v", err)
	}
	return b
}

// mustCreate creates an image with the engine and opens it read-write.
func mustCreate(t testing.TB, o block.CreateOptions) (*Image, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "test.qcow2")
	if err := Create(path, o); err != nil {
		t.Fatalf("create: %v", err)
	}
	img, err := Open(path, block.Options{})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return img, path
}

// firstDiff describes where two byte slices differ.
func firstDiff(a, b []byte) string {
	if len(a) != len(b) {
		return fmt.Sprintf("length %d != %d", len(a), len(b))
	}
	for i := range a {
		if a[i] != b[i] {
			return fmt.Sprintf("first difference at %#x: %#x != %#x", i, a[i], b[i])
		}
	}
	return "equal"
}

func assertEqual(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: content differs: %s", what, firstDiff(got, want))
	}
}

// randomOps applies random writes, zero writes and discards to img and to
// the model, returning the model.
func randomOps(t testing.TB, img *Image, model []byte, rng *rand.Rand, n int, maxLen int64) {
	t.Helper()
	size := int64(len(model))
	for i := 0; i < n; i++ {
		off := rng.Int63n(size)
		l := 1 + rng.Int63n(min(maxLen, size-off))
		switch op := rng.Intn(10); {
		case op < 7:
			buf := make([]byte, l)
			rng.Read(buf)
			if _, err := img.WriteAt(buf, off); err != nil {
				t.Fatalf("write %d+%d: %v", off, l, err)
			}
			copy(model[off:], buf)
		case op < 9:
			if err := img.WriteZeroes(off, l, op == 8); err != nil {
				t.Fatalf("write zeroes %d+%d: %v", off, l, err)
			}
			clear(model[off : off+l])
		default:
			// Discard may leave partial clusters; zero the model only for
			// whole clusters when the image has no backing file.
			if err := img.Discard(off, l); err != nil {
				t.Fatalf("discard %d+%d: %v", off, l, err)
			}
			cs := img.ClusterSize()
			s, e := (off+cs-1)&^(cs-1), (off+l)&^(cs-1)
			if off+l == size {
				e = size
			}
			if e > s {
				clear(model[s:e])
			}
		}
	}
}
