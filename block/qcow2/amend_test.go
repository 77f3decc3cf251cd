package qcow2

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/block"
	"github.com/petrel-vmm/petrel/internal/testutil"
)

// amendImage opens path writable, amends it and closes it.
func amendImage(t *testing.T, path string, opts map[string]string) error {
	t.Helper()
	img, err := Open(path, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	aerr := img.Amend(opts, nil)
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	return aerr
}

// qemuInfoSpecific is the format-specific part of qemu-img info.
func qemuInfoSpecific(t *testing.T, path string) map[string]any {
	t.Helper()
	out := run(t, "qemu-img", "info", "--output=json", path)
	var info struct {
		Specific struct {
			Data map[string]any `json:"data"`
		} `json:"format-specific"`
		VirtualSize int64 `json:"virtual-size"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("qemu-img info: %v\n%s", err, out)
	}
	info.Specific.Data["virtual-size"] = float64(info.VirtualSize)
	return info.Specific.Data
}

// snapshotRaw is a snapshot's contents, as qemu-img convert -l reads them.
func snapshotRaw(t *testing.T, path, name string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "snap.raw")
	run(t, "qemu-img", "convert", "-l", "snapshot.name="+name, "-O", "raw", path, out)
	return readFile(t, out)
}

// TestAmendDowngrade: version 3 images written by qemu-io with zero
// clusters (plain and preallocated, in the active tree, in a snapshot, in
// an L2 table shared with a snapshot, over a backing file) become version
// 2 images that qemu-img checks clean, reports as compat 0.10, and reads
// with the same bytes, snapshot included.
func TestAmendDowngrade(t *testing.T) {
	testutil.NeedTool(t, "qemu-img")
	testutil.NeedTool(t, "qemu-io")
	for _, backed := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "backed"}[backed], func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "t.qcow2")
			args := []string{"create", "-q", "-f", "qcow2", "-o", "compat=1.1,lazy_refcounts=on"}
			if backed {
				base := filepath.Join(dir, "base.qcow2")
				run(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "8M")
				run(t, "qemu-io", "-c", "write -P 0x2a 0 8M", base)
				args = append(args, "-b", base, "-F", "qcow2")
			}
			run(t, "qemu-img", append(args, path, "8M")...)
			run(t, "qemu-io", "-c", "write -z 0 128k", "-c", "write -P 0x11 1M 192k",
				"-c", "write -z 1088k 64k", path)
			run(t, "qemu-img", "snapshot", "-c", "s1", path)
			run(t, "qemu-io", "-c", "write -P 0x22 64k 64k", "-c", "write -z 4M 64k", path)
			wantActive, wantSnap := qemuRaw(t, path), snapshotRaw(t, path, "s1")

			if err := amendImage(t, path, map[string]string{"compat": "0.10"}); err != nil {
				t.Fatal(err)
			}
			qemuCheck(t, path, false)
			if got := qemuInfoSpecific(t, path)["compat"]; got != "0.10" {
				t.Fatalf("compat after downgrade: %v", got)
			}
			assertEqual(t, "active after downgrade", qemuRaw(t, path), wantActive)
			assertEqual(t, "snapshot after downgrade", snapshotRaw(t, path, "s1"), wantSnap)
			run(t, "qemu-io", "-c", "read -P 0x22 64k 64k", "-c", "read -P 0x11 1M 64k", path)
		})
	}
}

// TestAmendRefusals: the conditions under which qemu-img amend refuses a
// change, in its words, leave the image as it was.
func TestAmendRefusals(t *testing.T) {
	testutil.NeedTool(t, "qemu-img")
	dir := t.TempDir()
	v2 := filepath.Join(dir, "v2.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", v2, "64M")
	xl2 := filepath.Join(dir, "xl2.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on", xl2, "64M")
	rb64 := filepath.Join(dir, "rb64.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "refcount_bits=64", rb64, "64M")
	for _, c := range []struct {
		path string
		opts map[string]string
		want string
	}{
		{v2, map[string]string{"lazy_refcounts": "on"}, "Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)"},
		{v2, map[string]string{"compat": "0.42"}, "Unknown compatibility level 0.42"},
		{v2, map[string]string{"refcount_bits": "32"}, "Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)"},
		{v2, map[string]string{"backing_file": "foo"}, "Cannot amend the backing file\nYou can use 'qemu-img rebase' instead."},
		{xl2, map[string]string{"compat": "0.10"}, "Cannot downgrade an image with incompatible features 0x10 set"},
		{rb64, map[string]string{"compat": "0.10"}, "compat=0.10 requires refcount_bits=16"},
		{rb64, map[string]string{"refcount_bits": "3"}, "Refcount width must be a power of two and may not exceed 64 bits"},
		{rb64, map[string]string{"data_file": "x"}, "data-file can only be set for images that use an external data file"},
		{rb64, map[string]string{"data_file_raw": "on"}, "data-file-raw cannot be set on existing images"},
		{rb64, map[string]string{"encrypt.state": "active"}, "Can't amend encryption options - encryption not present"},
	} {
		before := readFile(t, c.path)
		err := amendImage(t, c.path, c.opts)
		if err == nil || err.Error() != c.want {
			t.Errorf("%s %v: got %v, want %q", filepath.Base(c.path), c.opts, err, c.want)
		}
		if after := readFile(t, c.path); string(after[:512]) != string(before[:512]) {
			t.Errorf("%s %v: the header changed", filepath.Base(c.path), c.opts)
		}
	}
}

// TestAmendRefcountWidth: the refcount structure rewritten to every width
// on an image with a snapshot (refcounts of 2) checks clean with qemu-img,
// which reports the new width, and reads the same; a width too narrow for
// the refcounts is refused with qemu-img's message.
func TestAmendRefcountWidth(t *testing.T) {
	testutil.NeedTool(t, "qemu-img")
	testutil.NeedTool(t, "qemu-io")
	path := filepath.Join(t.TempDir(), "t.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", path, "16M")
	run(t, "qemu-io", "-c", "write -P 0x33 0 1M", "-c", "write -c -P 0x44 2M 4k", path)
	run(t, "qemu-img", "snapshot", "-c", "s1", path)
	run(t, "qemu-io", "-c", "write -P 0x55 512k 1M", path)
	want, wantSnap := qemuRaw(t, path), snapshotRaw(t, path, "s1")
	err := amendImage(t, path, map[string]string{"refcount_bits": "1"})
	if err == nil || !strings.HasPrefix(err.Error(), "Cannot decrease refcount entry width to 1 bits: Cluster at offset 0x") {
		t.Fatalf("refcount_bits=1 with shared clusters: %v", err)
	}
	for _, bits := range []string{"2", "64", "8", "32", "4", "16"} {
		if err := amendImage(t, path, map[string]string{"refcount_bits": bits}); err != nil {
			t.Fatalf("refcount_bits=%s: %v", bits, err)
		}
		qemuCheck(t, path, false)
		if got := qemuInfoSpecific(t, path)["refcount-bits"]; got != float64(must(strconv.Atoi(bits))) {
			t.Fatalf("refcount bits %v after amend to %s", got, bits)
		}
		assertEqual(t, "active after refcount_bits="+bits, qemuRaw(t, path), want)
		assertEqual(t, "snapshot after refcount_bits="+bits, snapshotRaw(t, path, "s1"), wantSnap)
	}
	// Still writable by qemu-io and Petrel with the new structure.
	run(t, "qemu-io", "-c", "write -P 0x66 8M 128k", path)
	qemuCheck(t, path, false)
}

// TestAmendUpgradeLazySize: a version 2 image with snapshots becomes
// version 3 with lazy refcounts and a new size in one amend, then lazy
// refcounts go off again; qemu-img checks it clean and reads the same
// bytes and snapshot, and sees the complete snapshot table entries.
func TestAmendUpgradeLazySize(t *testing.T) {
	testutil.NeedTool(t, "qemu-img")
	testutil.NeedTool(t, "qemu-io")
	path := filepath.Join(t.TempDir(), "t.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", path, "32M")
	run(t, "qemu-io", "-c", "write -P 0x2a 24M 64k", path)
	run(t, "qemu-img", "snapshot", "-c", "foo", path)
	run(t, "qemu-io", "-c", "write -P 0x2b 0 64k", path)
	want, wantSnap := qemuRaw(t, path), snapshotRaw(t, path, "foo")
	if err := amendImage(t, path, map[string]string{"compat": "1.1", "lazy_refcounts": "on", "size": "64M"}); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, path, false)
	info := qemuInfoSpecific(t, path)
	if info["compat"] != "1.1" || info["lazy-refcounts"] != true || info["virtual-size"] != float64(64<<20) {
		t.Fatalf("after upgrade: %v", info)
	}
	assertEqual(t, "active after upgrade", qemuRaw(t, path)[:32<<20], want)
	// convert -l reads a snapshot at the image's current size.
	assertEqual(t, "snapshot after upgrade", snapshotRaw(t, path, "foo")[:32<<20], wantSnap)
	if err := amendImage(t, path, map[string]string{"lazy_refcounts": "off"}); err != nil {
		t.Fatal(err)
	}
	if info := qemuInfoSpecific(t, path); info["lazy-refcounts"] != false {
		t.Fatalf("after lazy_refcounts=off: %v", info)
	}
	qemuCheck(t, path, false)
}

// readFile reads a whole file.
func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// must returns v, for values whose error cannot happen.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestResizeWithSnapshots: a version 3 image with a snapshot grows and
// shrinks (QEMU refuses only version 2 images with snapshots, in its
// words), and qemu-img then checks it clean and reads the snapshot as it
// was.
func TestResizeWithSnapshots(t *testing.T) {
	testutil.NeedTool(t, "qemu-img")
	testutil.NeedTool(t, "qemu-io")
	dir := t.TempDir()
	for _, compat := range []string{"0.10", "1.1"} {
		path := filepath.Join(dir, compat+".qcow2")
		run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat="+compat, path, "32M")
		run(t, "qemu-io", "-c", "write -P 0x2a 24M 64k", "-c", "write -P 0x2b 0 64k", path)
		run(t, "qemu-img", "snapshot", "-c", "foo", path)
		wantSnap := snapshotRaw(t, path, "foo")
		img, err := Open(path, block.Options{})
		if err != nil {
			t.Fatal(err)
		}
		err = img.Resize(128 << 20)
		if compat == "0.10" {
			img.Close()
			if err == nil || err.Error() != "Can't resize a v2 image which has snapshots" {
				t.Fatalf("v2 resize with a snapshot: %v", err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := img.Resize(16 << 20); err != nil {
			t.Fatal(err)
		}
		if err := img.Close(); err != nil {
			t.Fatal(err)
		}
		qemuCheck(t, path, false)
		if got := qemuInfoSpecific(t, path)["virtual-size"]; got != float64(16<<20) {
			t.Fatalf("virtual size %v after shrink", got)
		}
		run(t, "qemu-img", "snapshot", "-a", "foo", path)
		assertEqual(t, "snapshot after resizes", qemuRaw(t, path), wantSnap)
		qemuCheck(t, path, false)
	}
}

// A downgrade to compat 0.10 refuses an image with an external data file
// in qemu-img's words, and leaves it version 3.
func TestAmendDowngradeRefusesDataFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "d.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+filepath.Join(dir, "d.data"), path, "1M")
	img, err := Open(path, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = img.Amend(map[string]string{"compat": "0.10"}, nil)
	img.Close()
	if err == nil || err.Error() != "Cannot downgrade an image with a data file" {
		t.Fatalf("amend compat=0.10 of an image with a data file: %v", err)
	}
	if out := run(t, "qemu-img", "info", path); !strings.Contains(out, "compat: 1.1") {
		t.Fatalf("the image changed:\n%s", out)
	}
}
