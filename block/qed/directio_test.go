package qed

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/petrel-vmm/petrel/block"
)

// directDir returns a fresh directory on a file system that accepts
// O_DIRECT: t.TempDir() if it does, else one under /var/tmp.
func directDir(t *testing.T) string {
	t.Helper()
	for _, parent := range []string{"", "/var/tmp"} {
		dir := t.TempDir()
		if parent != "" {
			d, err := os.MkdirTemp(parent, "petrel-direct-")
			if err != nil {
				continue
			}
			t.Cleanup(func() { os.RemoveAll(d) })
			dir = d
		}
		if fd, err := unix.Open(filepath.Join(dir, "probe"), unix.O_CREAT|unix.O_RDWR|unix.O_DIRECT, 0o644); err == nil {
			unix.Close(fd)
			return dir
		}
	}
	t.Fatal("no directory on a file system supporting O_DIRECT (tried the test temp dir and /var/tmp)")
	return ""
}

// openFlagsOf finds this process's descriptor of path and returns its open
// flags (from /proc/self/fdinfo).
func openFlagsOf(t *testing.T, path string) int64 {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err != nil || target != path {
			continue
		}
		info, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%s", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(l, "flags:"); ok {
				fl, _ := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
				return fl
			}
		}
	}
	t.Fatalf("%s is not open", path)
	return 0
}

// TestDirectIO: cache=none (block.Options.DirectIO) opens the QED file with
// O_DIRECT, and unaligned guest writes, zero writes and the byte-granular
// table updates still produce the right image (qemu-img check and read).
func TestDirectIO(t *testing.T) {
	path := filepath.Join(directDir(t), "d.qed")
	mustCreate(t, path, block.CreateOptions{Size: 4 << 20, ClusterSize: 4096, Extra: map[string]string{"table_size": "2"}})
	img, err := Open(path, block.Options{DirectIO: true})
	if err != nil {
		t.Fatal(err)
	}
	if fl := openFlagsOf(t, path); fl&unix.O_DIRECT == 0 {
		t.Fatalf("cache=none opened the file without O_DIRECT (flags %#o)", fl)
	}
	ref := make([]byte, img.Size())
	r := rand.New(rand.NewSource(7))
	for i := 0; i < 200; i++ {
		off := r.Int63n(img.Size())
		n := r.Int63n(min(img.Size()-off, 40<<10)) + 1
		if i%8 == 7 {
			if err := img.WriteZeroes(off, n, i%2 == 0); err != nil {
				t.Fatal(err)
			}
			clear(ref[off : off+n])
			continue
		}
		buf := make([]byte, n+1)[1:] // an odd address, as a guest buffer may be
		r.Read(buf)
		if _, err := img.WriteAt(buf, off); err != nil {
			t.Fatal(err)
		}
		copy(ref[off:], buf)
	}
	if !bytes.Equal(readAll(t, img), ref) {
		t.Fatal("direct read-back differs")
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, path)
	if _, err := exec.LookPath("qemu-img"); err == nil {
		out := filepath.Join(t.TempDir(), "out.raw")
		if b, err := exec.Command("qemu-img", "convert", "-f", "qed", "-O", "raw", path, out).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img convert: %v %s", err, b)
		}
		if got, _ := os.ReadFile(out); !bytes.Equal(got, ref) {
			t.Fatal("qemu-img reads different data")
		}
	}
}
