package interop

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
	_ "github.com/petrel-vmm/petrel/block/all"
	"github.com/petrel-vmm/petrel/internal/imgtool"
	"github.com/petrel-vmm/petrel/internal/testutil"
)

const diskSize = 4 << 20

func needQemu(t *testing.T) {
	t.Helper()
	testutil.NeedTool(t, "qemu-img")
	testutil.NeedTool(t, "qemu-io")
}

// run runs a command and fails the test on a non-zero exit.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// exitCode runs a command and returns its exit code and output.
func exitCode(t *testing.T, name string, args ...string) (int, string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return 0, string(out)
}

// petrel runs `petrel img ARGS` in-process and returns exit code, stdout
// and stderr.
func petrel(args ...string) (int, string, string) {
	var o, e bytes.Buffer
	rc := imgtool.Main(args, &o, &e)
	return rc, o.String(), e.String()
}

func mustPetrel(t *testing.T, args ...string) string {
	t.Helper()
	rc, o, e := petrel(args...)
	if rc != 0 {
		t.Fatalf("petrel img %s: exit %d\n%s%s", strings.Join(args, " "), rc, o, e)
	}
	return o
}

// qemuRaw converts an image to raw with qemu-img and returns the bytes.
func qemuRaw(t *testing.T, path string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out.raw")
	run(t, "qemu-img", "convert", "-O", "raw", path, out)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// petrelRead reads a whole image through block.Open.
func petrelRead(t *testing.T, path string) []byte {
	t.Helper()
	img, err := block.Open(path, block.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("block.Open %s: %v", path, err)
	}
	defer img.Close()
	b := make([]byte, img.Size())
	if _, err := img.ReadAt(b, 0); err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	return b
}

// petrelRaw converts with `petrel img convert -O raw`.
func petrelRaw(t *testing.T, path string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "p.raw")
	mustPetrel(t, "convert", "-O", "raw", path, out)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sameBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d bytes, want %d", what, len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: first difference at byte %#x (got %#x want %#x)", what, i, got[i], want[i])
		}
	}
}

// qemuCheckClean asserts `qemu-img check` finds nothing.
func qemuCheckClean(t *testing.T, path string) {
	t.Helper()
	if rc, out := exitCode(t, "qemu-img", "check", path); rc != 0 {
		t.Fatalf("qemu-img check %s: exit %d\n%s", path, rc, out)
	}
}

// writePattern does a deterministic mix of writes, zeroing and discards
// through Petrel and returns the expected disk content. base is what the
// disk read before (backing data), or nil for zeroes.
func writePattern(t *testing.T, img block.Image, seed int64, base []byte) []byte {
	t.Helper()
	ref := make([]byte, img.Size())
	copy(ref, base)
	r := rand.New(rand.NewSource(seed))
	for i := 0; i < 60; i++ {
		off := r.Int63n(img.Size())
		n := min(r.Int63n(200<<10)+1, img.Size()-off)
		if i%3 == 0 { // sector-aligned, like most guest I/O
			off &^= 511
			n = max(n&^511, 512)
			n = min(n, img.Size()-off)
		}
		switch i % 12 {
		case 5:
			if err := img.WriteZeroes(off, n, i%2 == 0); err != nil {
				t.Fatalf("write zeroes %#x+%#x: %v", off, n, err)
			}
			clear(ref[off : off+n])
		default:
			buf := make([]byte, n)
			r.Read(buf)
			if i%4 == 0 {
				clear(buf[:n/2]) // zero runs inside data
			}
			if _, err := img.WriteAt(buf, off); err != nil {
				t.Fatalf("write %#x+%#x: %v", off, n, err)
			}
			copy(ref[off:], buf)
		}
	}
	return ref
}

// qemuPattern writes a deterministic pattern with qemu-io.
func qemuPattern(t *testing.T, path, format string, seed int64) {
	t.Helper()
	r := rand.New(rand.NewSource(seed))
	args := []string{"-f", format}
	for i := 0; i < 24; i++ {
		off := r.Int63n(diskSize/512-1) * 512
		n := min((r.Int63n(256)+1)*512, diskSize-off)
		switch i % 8 {
		case 3:
			args = append(args, "-c", fmt.Sprintf("write -z %d %d", off, n))
		case 6:
			args = append(args, "-c", fmt.Sprintf("discard %d %d", off, n))
		default:
			args = append(args, "-c", fmt.Sprintf("write -P %d %d %d", 1+r.Intn(254), off, n))
		}
	}
	run(t, "qemu-io", append(args, path)...)
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
