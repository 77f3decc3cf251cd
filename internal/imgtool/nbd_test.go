package imgtool

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/internal/testutil"
)

// qemuOut runs a qemu tool and returns its stdout; a failure fails the
// test.
func qemuOut(t *testing.T, name string, args ...string) string {
	t.Helper()
	prog := testutil.NeedTool(t, name)
	var stderr bytes.Buffer
	cmd := exec.Command(prog, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// qemuWrittenImage is a qcow2 image qemu-io wrote data, zeroes and
// nothing into.
func qemuWrittenImage(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "src.qcow2")
	qemuOut(t, "qemu-img", "create", "-q", "-f", "qcow2", path, "4M")
	qemuOut(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x42 64k 300k", "-c", "write -z 1M 128k",
		"-c", "write -P 0x17 3M 4k", path)
	return path
}

// petrel img convert writes a raw image into a qemu-nbd export (an
// existing export: convert checks its size and zeroes the first
// sector), compare finds the export identical to the source, and the
// export's file holds the bytes qemu-img converts the source to.
func TestConvertCompareIntoNBDExport(t *testing.T) {
	src := qemuWrittenImage(t)
	target := filepath.Join(t.TempDir(), "target.raw")
	if err := os.WriteFile(target, bytes.Repeat([]byte{0xff}, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	sock, stop := testutil.QemuNBD(t, "-f", "raw", target)
	uri := "nbd+unix:///exp?socket=" + sock
	must(t, "convert", "-f", "qcow2", "-O", "raw", src, uri)
	if out := must(t, "compare", "-f", "qcow2", "-F", "raw", src, uri); out != "Images are identical.\n" {
		t.Fatalf("petrel img compare: %q", out)
	}
	if out := qemuOut(t, "qemu-img", "compare", "-f", "qcow2", "-F", "raw", src, uri); out != "Images are identical.\n" {
		t.Fatalf("qemu-img compare: %q", out)
	}
	stop()
	want := filepath.Join(t.TempDir(), "want.raw")
	qemuOut(t, "qemu-img", "convert", "-O", "raw", src, want)
	w, _ := os.ReadFile(want)
	g, _ := os.ReadFile(target)
	if !bytes.Equal(g, w) {
		t.Fatal("the export's file holds other bytes than qemu-img's conversion")
	}
}

// petrel img convert -O qcow2 lays a qcow2 image out inside a qemu-nbd
// export that holds stale bytes (iotest 302 writes an OVA's disk this
// way), compressed and with preallocated metadata (whose clusters then
// need their zeroes written): qemu-img finds the image clean and
// identical to the source, and petrel img check, info and compare over
// the export print what qemu-img prints.
func TestConvertQcow2IntoNBDExport(t *testing.T) {
	src := qemuWrittenImage(t)
	for _, opts := range [][]string{{"-c"}, {"-o", "preallocation=metadata"}} {
		t.Run(strings.Join(opts, " "), func(t *testing.T) {
			target := filepath.Join(t.TempDir(), "target.raw")
			if err := os.WriteFile(target, bytes.Repeat([]byte{0xff}, 8<<20), 0o644); err != nil {
				t.Fatal(err)
			}
			sock, _ := testutil.QemuNBD(t, "-f", "raw", target)
			uri := "nbd+unix:///exp?socket=" + sock
			must(t, append(append([]string{"convert", "-f", "qcow2", "-O", "qcow2"}, opts...), src, uri)...)
			if out := qemuOut(t, "qemu-img", "compare", "-f", "qcow2", src, uri); out != "Images are identical.\n" {
				t.Fatalf("qemu-img compare: %q", out)
			}
			for _, args := range [][]string{{"check", uri}, {"info", uri}, {"compare", src, uri}} {
				if want, got := qemuOut(t, "qemu-img", args...), must(t, args...); got != want {
					t.Errorf("petrel img %s:\n%s\nqemu-img:\n%s", args[0], got, want)
				}
			}
		})
	}
}

// petrel img map and info print what qemu-img prints for an export,
// named by URI, by nbd: filename, by json: and by --image-opts, with
// base:allocation and with x-dirty-bitmap=qemu:allocation-depth.
func TestMapInfoOfNBDExportLikeQemu(t *testing.T) {
	src := qemuWrittenImage(t)
	sock, _ := testutil.QemuNBD(t, "-f", "qcow2", "-r", "-A", src)
	for _, args := range [][]string{
		{"map", "--output=json", "-f", "raw", "nbd+unix:///exp?socket=" + sock},
		{"map", "nbd:unix:" + sock + ":exportname=exp"},
		{"map", "--output=json", `json:{"driver": "nbd", "server": {"type": "unix", "path": "` + sock + `"}, "export": "exp"}`},
		{"map", "--output=json", "--image-opts", "driver=nbd,server.type=unix,server.path=" + sock + ",export=exp,x-dirty-bitmap=qemu:allocation-depth"},
		{"map", "--output=json", "--image-opts", "driver=raw,file.driver=nbd,file.path=" + sock + ",file.export=exp"},
		{"info", "nbd+unix:///exp?socket=" + sock},
		{"info", "--output=json", `json:{"driver": "nbd", "path": "` + sock + `", "export": "exp"}`},
	} {
		if got, want := must(t, args...), qemuOut(t, "qemu-img", args...); got != want {
			t.Errorf("%s:\n got %s\nwant %s", strings.Join(args, " "), got, want)
		}
	}
}

// Errors are qemu-img's: a socket nobody listens on, an export the
// server lacks, a context it does not have.
func TestNBDOpenErrorsLikeQemu(t *testing.T) {
	sock, _ := testutil.QemuNBD(t, "-f", "raw", "-r", "null-co://")
	for _, name := range []string{
		"nbd+unix:///exp?socket=" + sock + ".missing",
		"nbd+unix:///nope?socket=" + sock,
	} {
		_, _, e := pimg("info", name)
		if !strings.HasPrefix(e, "petrel img: Could not open '"+name+"': ") {
			t.Errorf("info %s: %q", name, e)
		}
	}
	_, _, e := pimg("info", "nbd+unix:///exp?socket="+sock+".missing")
	want := "petrel img: Could not open 'nbd+unix:///exp?socket=" + sock + ".missing': Failed to connect to '" + sock + ".missing': No such file or directory\n"
	if e != want {
		t.Errorf("missing socket:\n got %q\nwant %q", e, want)
	}
	// create on an export checks its size and cannot grow it.
	raw := filepath.Join(t.TempDir(), "small.raw")
	if err := os.WriteFile(raw, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	rwSock, _ := testutil.QemuNBD(t, "-f", "raw", raw)
	uri := "nbd+unix:///exp?socket=" + rwSock
	qcmd := exec.Command(testutil.NeedTool(t, "qemu-img"), "create", "-q", "-f", "raw", uri, "2M")
	qerr, _ := qcmd.CombinedOutput()
	if rc, _, e := pimg("create", "-q", "-f", "raw", uri, "2M"); rc != 1 || e != strings.Replace(string(qerr), "qemu-img:", "petrel img:", 1) {
		t.Errorf("create larger than the export: exit %d %q, qemu-img: %q", rc, e, qerr)
	}
	must(t, "create", "-q", "-f", "raw", uri, "1M")
}
