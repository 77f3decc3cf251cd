package qcow2

import (
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

// qemuIOScript is a mix of writes, zero writes and discards at cluster and
// subcluster granularity.
var qemuIOScript = []string{
	"write -P 0x11 0 64k",
	"write -P 0x22 100k 3k",
	"write -P 0x33 1M 1M",
	"write -z 1200k 64k",
	"write -P 0x44 3M 7k",
	"discard 1536k 128k",
	"write -P 0x55 4095k 1k",
	"write -z -u 3M 64k",
}

func qemuIO(t *testing.T, path string, fmtOpt string, cmds ...string) {
	t.Helper()
	testutil.NeedTool(t, "qemu-io")
	args := []string{"-f", fmtOpt}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	run(t, "qemu-io", append(args, path)...)
}

// TestReadQemuImages: images qemu-img and qemu-io write with each option
// combination read byte-identical to qemu-img convert's output.
func TestReadQemuImages(t *testing.T) {
	testutil.NeedTool(t, "qemu-img")
	cases := []struct{ name, opts string }{
		{"default", ""},
		{"v2", "compat=0.10"},
		{"cs512", "cluster_size=512"},
		{"cs2M", "cluster_size=2M"},
		{"rb1", "refcount_bits=1"},
		{"rb64", "refcount_bits=64"},
		{"lazy", "lazy_refcounts=on"},
		{"extl2", "extended_l2=on"},
		{"extl2_cs32k", "extended_l2=on,cluster_size=32k"},
		{"zstd", "compression_type=zstd"},
		{"prealloc_meta", "preallocation=metadata"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "q.qcow2")
			args := []string{"create", "-q", "-f", "qcow2"}
			if c.opts != "" {
				args = append(args, "-o", c.opts)
			}
			run(t, "qemu-img", append(args, path, "4M")...)
			qemuIO(t, path, "qcow2", qemuIOScript...)
			compareWithQemu(t, path)
			// Write through the engine too (a subcluster inside a
			// partly written cluster, a fresh cluster) and let qemu-img judge.
			img, err := Open(path, block.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := img.WriteAt([]byte("petrel"), 100<<10+5); err != nil {
				t.Fatal(err)
			}
			if _, err := img.WriteAt([]byte("fresh"), 2<<20+77); err != nil {
				t.Fatal(err)
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			qemuCheck(t, path, false)
			compareWithQemu(t, path)
		})
	}
}

// compareWithQemu reads the image through the engine and through qemu-img.
func compareWithQemu(t *testing.T, path string) {
	t.Helper()
	img, err := Open(path, block.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	want := qemuRaw(t, path)
	assertEqual(t, path, readAll(t, img), want)
	// Unaligned ranges exercise run splitting (subclusters, compressed).
	rng := rand.New(rand.NewSource(int64(len(want))))
	for i := 0; i < 200; i++ {
		off := rng.Int63n(int64(len(want)))
		n := 1 + rng.Int63n(min(int64(len(want))-off, 300<<10))
		got := make([]byte, n)
		if _, err := img.ReadAt(got, off); err != nil {
			t.Fatalf("read %d+%d: %v", off, n, err)
		}
		assertEqual(t, fmt.Sprintf("%s at %d+%d", path, off, n), got, want[off:off+n])
	}
	res, err := img.Check(block.RepairNone)
	if err != nil || res.Corruptions != 0 || res.Leaks != 0 {
		t.Fatalf("own check of a qemu image: %+v %v %v", res, err, res.Messages)
	}
	compareCheckStats(t, path, res)
}

// compareCheckStats: the statistics qemu-img check prints must match ours.
func compareCheckStats(t *testing.T, path string, res block.CheckResult) {
	t.Helper()
	out, _ := exec.Command("qemu-img", "check", "-U", "--output=json", path).Output()
	var q block.CheckResult
	if err := json.Unmarshal(out, &q); err != nil {
		t.Fatalf("qemu-img check json: %v\n%s", err, out)
	}
	if q.ImageEndOffset != res.ImageEndOffset || q.TotalClusters != res.TotalClusters || q.AllocatedClusters != res.AllocatedClusters ||
		q.FragmentedClusters != res.FragmentedClusters || q.CompressedClusters != res.CompressedClusters {
		t.Fatalf("check statistics differ from qemu-img's:\nqemu   %+v\npetrel %+v", q, res)
	}
}

// TestReadQemuCompressed: qemu-img convert -c with zlib and zstd.
func TestReadQemuCompressed(t *testing.T) {
	testutil.NeedTool(t, "qemu-img")
	for _, ctype := range []string{"zlib", "zstd"} {
		t.Run(ctype, func(t *testing.T) {
			dir := t.TempDir()
			src := filepath.Join(dir, "src.qcow2")
			run(t, "qemu-img", "create", "-q", "-f", "qcow2", src, "4M")
			qemuIO(t, src, "qcow2", qemuIOScript...)
			// Compressible but varied data.
			qemuIO(t, src, "qcow2", "write -P 0x66 2M 512k", "write -P 0x67 2100k 5k")
			dst := filepath.Join(dir, "c.qcow2")
			run(t, "qemu-img", "convert", "-c", "-O", "qcow2", "-o", "compression_type="+ctype, src, dst)
			compareWithQemu(t, dst)
			img, err := Open(dst, block.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			res, _ := img.Check(block.RepairNone)
			img.Close()
			if res.CompressedClusters == 0 {
				t.Fatalf("no compressed clusters found: %+v", res)
			}
			// Overwrite part of a compressed cluster through the engine.
			rw, err := Open(dst, block.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := rw.WriteAt([]byte("partial"), 2<<20+100); err != nil {
				t.Fatal(err)
			}
			if err := rw.Close(); err != nil {
				t.Fatal(err)
			}
			qemuCheck(t, dst, false)
			compareWithQemu(t, dst)
		})
	}
}

// TestReadQemuSnapshots: a snapshot made by qemu-img after qemu-io writes
// is listed and applied by the engine; engine-made snapshots are listed,
// applied and deleted by qemu-img.
func TestReadQemuSnapshots(t *testing.T) {
	testutil.NeedTool(t, "qemu-img")
	for _, opts := range []string{"compat=1.1", "compat=0.10", "extended_l2=on", "refcount_bits=2"} {
		t.Run(opts, func(t *testing.T) {
			t.Parallel()
			snapshotInterop(t, opts)
		})
	}
}

func snapshotInterop(t *testing.T, opts string) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, path, "4M")
	qemuIO(t, path, "qcow2", "write -P 0x55 0 64k")
	run(t, "qemu-img", "snapshot", "-c", "snap1", path)
	qemuIO(t, path, "qcow2", "write -P 0x66 0 4k", "write -P 0x77 1M 64k")
	compareWithQemu(t, path)

	snapRaw := filepath.Join(dir, "snap1.raw")
	run(t, "qemu-img", "convert", "-O", "raw", "-l", "snapshot.name=snap1", path, snapRaw)
	wantSnap, err := os.ReadFile(snapRaw)
	if err != nil {
		t.Fatal(err)
	}

	img, err := Open(path, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := img.Snapshots()
	if err != nil || len(snaps) != 1 || snaps[0].Name != "snap1" || snaps[0].ID != "1" {
		t.Fatalf("snapshots: %+v %v", snaps, err)
	}
	active := readAll(t, img)
	if err := img.CreateSnapshot("petrel1"); err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt([]byte("after petrel1"), 10); err != nil {
		t.Fatal(err)
	}
	if err := img.ApplySnapshot("snap1"); err != nil {
		t.Fatal(err)
	}
	assertEqual(t, "applied snap1", readAll(t, img), wantSnap)
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, path, false)
	out := run(t, "qemu-img", "snapshot", "-l", path)
	if !strings.Contains(out, "petrel1") || !strings.Contains(out, "snap1") {
		t.Fatalf("qemu-img snapshot -l does not list both snapshots:\n%s", out)
	}
	run(t, "qemu-img", "snapshot", "-a", "petrel1", path)
	assertEqual(t, "qemu applied petrel1", qemuRaw(t, path), active)
	run(t, "qemu-img", "snapshot", "-d", "snap1", path)
	qemuCheck(t, path, false)

	img, err = Open(path, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := img.DeleteSnapshot("petrel1"); err != nil {
		t.Fatal(err)
	}
	assertEqual(t, "after deleting", readAll(t, img), active)
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, path, false)
	if out := run(t, "qemu-img", "snapshot", "-l", path); strings.Contains(out, "petrel1") {
		t.Fatalf("deleted snapshot still listed:\n%s", out)
	}
}

// TestReadLazyDirty: an image left dirty by qemu-io killed with lazy
// refcounts is repaired on read-write open and then checks clean.
func TestReadLazyDirty(t *testing.T) {
	testutil.NeedTool(t, "qemu-io")
	path := filepath.Join(t.TempDir(), "d.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", path, "4M")
	cmd := exec.Command("qemu-io", "-c", "write -P 0x55 0 64k", "-c", "write -P 0x56 1M 128k", "-c", "sigraise 9", path)
	cmd.Run() // killed by design
	img, err := Open(path, block.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if d := img.Describe()["dirty-flag"]; d != true {
		t.Fatalf("image not dirty after sigraise 9: %v", d)
	}
	got := readAll(t, img)
	img.Close()
	want := make([]byte, 4<<20)
	for i := range 64 << 10 {
		want[i] = 0x55
	}
	for i := 1 << 20; i < 1<<20+128<<10; i++ {
		want[i] = 0x56
	}
	assertEqual(t, "dirty image", got, want)
	img, err = Open(path, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, path, false)
	assertEqual(t, "repaired image", qemuRaw(t, path), want)
}

// TestQemuBitmaps: persistent bitmaps made by qemu-img are counted by
// Check (no leaks); petrel's writes through a writable open set their
// dirty bits and store them back consistent (qemu-img check clean, no
// in-use flag), and the data stays intact.
func TestQemuBitmaps(t *testing.T) {
	testutil.NeedTool(t, "qemu-img")
	path := filepath.Join(t.TempDir(), "b.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", path, "4M")
	qemuIO(t, path, "qcow2", "write -P 0x55 0 64k")
	run(t, "qemu-img", "bitmap", "--add", path, "b0")
	run(t, "qemu-img", "bitmap", "--add", "--disable", path, "off")
	qemuIO(t, path, "qcow2", "write -P 0x56 1M 64k")
	compareWithQemu(t, path)
	img, err := Open(path, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if img.hdr.autoclear&autoclearBitmaps == 0 {
		t.Fatal("bitmaps autoclear bit cleared by a writable open")
	}
	if _, err := img.WriteAt([]byte("x"), 3<<20+5); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, path, false)
	info := run(t, "qemu-img", "info", path)
	if strings.Contains(info, "in-use") || !strings.Contains(info, "name: b0") {
		t.Fatalf("bitmaps after petrel's write:\n%s", info)
	}
	img, err = Open(path, block.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	for name, want := range map[string][]Extent{
		"b0":  {{1 << 20, 64 << 10}, {3 << 20, 64 << 10}},
		"off": nil,
	} {
		got, err := img.BitmapExtents(name)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("bitmap %s: dirty %v, want %v", name, got, want)
		}
	}
	assertEqual(t, "after writable open", readAll(t, img), qemuRaw(t, path))
}
