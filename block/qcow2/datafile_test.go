package qcow2

import (
	"bytes"
	"errors"
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

// createWithDataFile creates an image with an external data file beside it
// (absolute names: data file names are relative to the working directory)
// and opens it read-write.
func createWithDataFile(t *testing.T, o block.CreateOptions) (img *Image, path, data string) {
	t.Helper()
	dir := t.TempDir()
	path, data = filepath.Join(dir, "t.qcow2"), filepath.Join(dir, "t.data")
	o.DataFile = data
	if err := Create(path, o); err != nil {
		t.Fatalf("create: %v", err)
	}
	img, err := Open(path, block.Options{})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return img, path, data
}

// qemuIOVerify runs qemu-io commands on an image of format fmtOpt and
// fails on any error, a pattern mismatch of read -P included (qemu-io
// reports that on its output only).
func qemuIOVerify(t *testing.T, path, fmtOpt string, cmds ...string) {
	t.Helper()
	testutil.NeedTool(t, "qemu-io")
	args := []string{"-f", fmtOpt}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out := run(t, "qemu-io", append(args, path)...)
	if strings.Contains(out, "Pattern verification failed") || strings.Contains(out, "failed") {
		t.Fatalf("qemu-io %v on %s:\n%s", cmds, path, out)
	}
}

// TestDataFileInterop: Debian's qemu-io writes through an image with an
// external data file that petrel created and petrel reads the same bytes,
// petrel's writes (guest cluster 0 included, whose host offset 0 only the
// copied flag marks allocated) read back with qemu-io, the guest data
// lies in the data file at its guest offsets and nowhere in the image
// file, and qemu-img check finds the image clean with petrel's figures.
func TestDataFileInterop(t *testing.T) {
	testutil.NeedTool(t, "qemu-img")
	img, path, data := createWithDataFile(t, block.CreateOptions{Size: 4 << 20})
	img.Close()
	qemuCheck(t, path, false)
	if st, err := os.Stat(data); err != nil || st.Size() != 4<<20 {
		t.Fatalf("data file: %v %v, want 4 MiB", st, err)
	}

	qemuIOVerify(t, path, "qcow2", "write -P 0x11 0 128k", "write -P 0x22 300k 5000", "write -z 1M 64k")
	img, err := Open(path, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	model := make([]byte, img.Size())
	for i := range 128 << 10 {
		model[i] = 0x11
	}
	for i := range 5000 {
		model[300<<10+i] = 0x22
	}
	assertEqual(t, "petrel reading qemu-io's writes", readAll(t, img), model)

	write := func(b byte, off, n int64) {
		buf := bytes.Repeat([]byte{b}, int(n))
		if _, err := img.WriteAt(buf, off); err != nil {
			t.Fatalf("write %d+%d: %v", off, n, err)
		}
		copy(model[off:], buf)
	}
	write(0x33, 100, 1000)          // inside guest cluster 0, at host offset 0
	write(0x44, 2<<20-512, 100<<10) // across clusters, partial at both ends
	if err := img.WriteZeroes(64<<10, 64<<10, false); err != nil {
		t.Fatal(err)
	}
	clear(model[64<<10 : 128<<10])
	if err := img.Discard(3<<20, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, path, false)
	assertEqual(t, "qemu-img convert", qemuRaw(t, path), model)
	qemuIOVerify(t, path, "qcow2", "read -P 0x33 100 1000", "read -P 0x11 1100 64436", "read -P 0 64k 64k",
		"read -P 0x44 2096640 102400", "read -P 0x22 300k 5000")

	raw, err := os.ReadFile(data)
	if err != nil {
		t.Fatal(err)
	}
	assertEqual(t, "data file at guest offsets (first cluster)", raw[:1100], model[:1100])
	assertEqual(t, "data file at guest offsets (2 MiB)", raw[2<<20-512:2<<20+99<<10], model[2<<20-512:2<<20+99<<10])
	if st, _ := os.Stat(path); st.Size() > 6*defaultClusterSize {
		t.Fatalf("image file is %d bytes: guest data went into it", st.Size())
	}

	img, err = Open(path, block.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	res, err := img.Check(block.RepairNone)
	if err != nil || res.Corruptions != 0 || res.Leaks != 0 {
		t.Fatalf("own check: %+v %v %v", res, err, res.Messages)
	}
	compareCheckStats(t, path, res)
}

// TestDataFileRawRandom: with data_file_raw the data file alone is the
// disk, after random writes, zero writes and discards through petrel, and
// qemu-img reads the same through the image.
func TestDataFileRawRandom(t *testing.T) {
	testutil.NeedTool(t, "qemu-img")
	img, path, data := createWithDataFile(t, block.CreateOptions{Size: 8 << 20, DataFileRaw: true})
	model := make([]byte, img.Size())
	randomOps(t, img, model, rand.New(rand.NewSource(7)), 300, 200<<10)
	assertEqual(t, "engine read-back", readAll(t, img), model)
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, path, false)
	assertEqual(t, "qemu-img convert", qemuRaw(t, path), model)
	raw, err := os.ReadFile(data)
	if err != nil {
		t.Fatal(err)
	}
	assertEqual(t, "the raw data file alone", raw[:len(model)], model)
	out := run(t, "qemu-img", "info", path)
	if !strings.Contains(out, "data file raw: true") {
		t.Fatalf("qemu-img info:\n%s", out)
	}
}

// TestDataFileQemuCreated: an image qemu-img creates with a data file
// opens, reads what qemu-io wrote, and stays clean after petrel's writes;
// raw data stays raw (qemu-io reads the data file as raw).
func TestDataFileQemuCreated(t *testing.T) {
	testutil.NeedTool(t, "qemu-img")
	dir := t.TempDir()
	path, data := filepath.Join(dir, "q.qcow2"), filepath.Join(dir, "q.data")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+data+",data_file_raw=on", path, "2M")
	qemuIOVerify(t, path, "qcow2", "write -P 0x55 0 300k")
	img, err := Open(path, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 300<<10)
	if _, err := img.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	assertEqual(t, "qemu-io's data", got, bytes.Repeat([]byte{0x55}, 300<<10))
	if _, err := img.WriteAt(bytes.Repeat([]byte{0x66}, 4096), 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := img.WriteZeroes(0, 128<<10, false); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	qemuCheck(t, path, false)
	qemuIOVerify(t, data, "raw", "read -P 0 0 128k", "read -P 0x55 128k 172k", "read -P 0x66 1M 4k")
}

// TestDataFileRefusals: what an external data file rules out, in QEMU's
// words: internal snapshots and compressed clusters (ENOTSUP), version 2,
// raw data without a data file or with a backing file; and the open
// errors for a missing data file or a missing name.
func TestDataFileRefusals(t *testing.T) {
	img, path, data := createWithDataFile(t, block.CreateOptions{Size: 1 << 20})
	if err := img.CreateSnapshot("s"); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("snapshot: %v", err)
	}
	if err := img.WriteCompressed(make([]byte, defaultClusterSize), 0); err == nil || err.Error() != "Operation not supported" {
		t.Errorf("compressed write: %v", err)
	}
	if _, err := img.WriteAt([]byte{1}, 0); err != nil {
		t.Fatal(err)
	}
	img.Close()

	dir := t.TempDir()
	for _, c := range []struct {
		o    block.CreateOptions
		want string
	}{
		{block.CreateOptions{Size: 1 << 20, DataFile: filepath.Join(dir, "d"), Compat: "0.10"}, "External data files are only supported with compatibility level 1.1 and above (use version=v3 or greater)"},
		{block.CreateOptions{Size: 1 << 20, DataFileRaw: true}, "data-file-raw requires data-file"},
		{block.CreateOptions{Size: 1 << 20, DataFile: filepath.Join(dir, "d"), DataFileRaw: true, BackingFile: path, BackingFormat: "qcow2"}, "Backing file and data-file-raw cannot be used at the same time"},
	} {
		err := Create(filepath.Join(dir, "x.qcow2"), c.o)
		var ce *block.CreateError
		if !errors.As(err, &ce) || ce.Reason.Error() != c.want {
			t.Errorf("create %+v: %v, want %q", c.o, err, c.want)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("refused creates left files: %v", ents)
	}

	os.Rename(data, data+".moved")
	_, err := Open(path, block.Options{})
	if want := "Could not open '" + data + "': No such file or directory"; err == nil || !strings.HasSuffix(err.Error(), want) {
		t.Errorf("open without the data file: %v, want %q", err, want)
	}
	// Metadata only (qemu-img info) needs no data file.
	ro, err := Open(path, block.Options{ReadOnly: true, NoIO: true})
	if err != nil {
		t.Fatalf("NoIO open: %v", err)
	}
	fs := ro.Describe()["format-specific"].(map[string]any)["data"].(map[string]any)
	if fs["data-file"] != data || fs["data-file-raw"] != false {
		t.Errorf("describe: %v", fs)
	}
	if _, err := ro.ReadAt(make([]byte, 512), 0); err == nil {
		t.Errorf("read through a NoIO image succeeded")
	}
	ro.Close()
	os.Rename(data+".moved", data)

	// Data file bit without a name (qemu-img amend -o data_file=).
	if _, err := exec.LookPath("qemu-img"); err == nil {
		run(t, "qemu-img", "amend", "-o", "data_file=", path)
		_, err := Open(path, block.Options{})
		if err == nil || !strings.HasSuffix(err.Error(), "'data-file' is required for this image") {
			t.Errorf("open without a data file name: %v", err)
		}
	}
}

// TestDataFileResize: the data file follows a resize as in qemu-img: cut
// or extended to the new size, and with raw data the new clusters are
// mapped over what the data file holds there.
func TestDataFileResize(t *testing.T) {
	testutil.NeedTool(t, "qemu-img")
	img, path, data := createWithDataFile(t, block.CreateOptions{Size: 1 << 20})
	if err := img.Resize(3 << 20); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(data); st.Size() != 3<<20 {
		t.Errorf("data file after growing: %d bytes", st.Size())
	}
	if err := img.Resize(512 << 10); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(data); st.Size() != 512<<10 {
		t.Errorf("data file after shrinking: %d bytes", st.Size())
	}
	img.Close()
	qemuCheck(t, path, false)

	img, path, data = createWithDataFile(t, block.CreateOptions{Size: 1 << 20, DataFileRaw: true})
	img.Close()
	// Data appended to the raw file shows once the image grows over it
	// (iotest 244, "Truncation (growing)").
	if err := os.Truncate(data, 2<<20); err != nil {
		t.Fatal(err)
	}
	qemuIOVerify(t, data, "raw", "write -P 84 1M 1M")
	img, err := Open(path, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := img.Resize(2 << 20); err != nil {
		t.Fatal(err)
	}
	img.Close()
	qemuCheck(t, path, false)
	qemuIOVerify(t, path, "qcow2", "read -P 0 0 1M", "read -P 84 1M 1M")
}

// TestWriteDataFileFuzzSeeds writes FuzzOpen's external data file seeds
// (QCOW2_WRITE_SEEDS=1, with TestWriteFuzzSeeds): images qemu-img made
// with data_file, plain and raw, with data qemu-io wrote.
func TestWriteDataFileFuzzSeeds(t *testing.T) {
	if os.Getenv("QCOW2_WRITE_SEEDS") == "" {
		t.Skip("set QCOW2_WRITE_SEEDS=1 to regenerate testdata/fuzz seeds")
	}
	dir := t.TempDir()
	for i, opts := range []string{"data_file=d.data", "data_file=d.data,data_file_raw=on"} {
		p := filepath.Join(dir, "d.qcow2")
		cmd := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512,"+opts, p, "64k")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		cmd = exec.Command("qemu-io", "-c", "write -P 0x11 0 1k", "-c", "write -z 4k 1k", "-c", "discard 8k 512", p)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join("testdata", "fuzz", "FuzzOpen", fmt.Sprintf("datafile%d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
