package interop

import (
	"bytes"
	"encoding/binary"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/petrel-vmm/petrel/internal/imgtool"
)

// sameCheck runs `check ARGS... IMAGE` with qemu-img on one copy of image
// and with petrel img (as qemu-img) on another, and wants the same exit
// code, stdout and stderr (the copies' names differ, so the output names
// "IMG" for both). It returns qemu-img's copy and petrel's.
func sameCheck(t *testing.T, image string, args ...string) (string, string) {
	t.Helper()
	q, p := cloneFile(t, image), cloneFile(t, image)
	cmd := exec.Command("qemu-img", append(append([]string{"check"}, args...), q)...)
	var qo, qe bytes.Buffer
	cmd.Stdout, cmd.Stderr = &qo, &qe
	qrc := 0
	if err := cmd.Run(); err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatal(err)
		}
		qrc = ee.ExitCode()
	}
	var po, pe bytes.Buffer
	prc := imgtool.MainAs("qemu-img", append(append([]string{"check"}, args...), p), &po, &pe)
	norm := func(s, name string) string { return strings.ReplaceAll(s, name, "IMG") }
	qout, pout := norm(qo.String(), q), norm(po.String(), p)
	qerr, perr := norm(qe.String(), q), norm(pe.String(), p)
	if qrc != prc || qout != pout || qerr != perr {
		t.Errorf("check %s:\nqemu-img: exit %d\n%s%s\npetrel:   exit %d\n%s%s", strings.Join(args, " "), qrc, qerr, qout, prc, perr, pout)
	}
	return q, p
}

// qcow2Field reads a big-endian header or table field.
func qcow2Field(t *testing.T, path string, off int64) uint64 {
	return readU64(t, path, off, true)
}

// setRefcount16 sets the 16-bit refcount of cluster idx (64 KiB clusters,
// first refcount block) of a qemu-img-made image.
func setRefcount16(t *testing.T, path string, idx int64, v uint16) {
	t.Helper()
	rt := int64(qcow2Field(t, path, 48))
	rb := int64(qcow2Field(t, path, rt))
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	patchFile(t, path, rb+2*idx, b[:])
}

// TestCheckRepairWordsLikeQemu: check and check -r print qemu-img 7.2's
// lines, counts and exit codes on damaged images (iotests 039, 138, 214),
// and every repaired image is clean to qemu-img with its data intact.
func TestCheckRepairWordsLikeQemu(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()

	// A lazy-refcounts image whose writer was killed (iotest 039): the
	// data cluster has refcount 0 and the dirty bit is set.
	dirty := filepath.Join(dir, "dirty.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", dirty, "128M")
	cmd := exec.Command("qemu-io", "-c", "write -P 0x5a 0 512", "-c", "sigraise 9", dirty)
	if err := cmd.Run(); err == nil {
		t.Fatal("qemu-io was expected to die by SIGKILL")
	} else if ee, ok := err.(*exec.ExitError); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("qemu-io: %v", err)
	}
	if qcow2Field(t, dirty, 72)&1 == 0 {
		t.Fatal("the killed writer left no dirty bit")
	}

	// Cluster 0 counted twice and the L1 entry's copied flag cleared
	// (iotest 138's leaks-fixed/corruptions-fixed case).
	leaky := filepath.Join(dir, "leaky.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", leaky, "1M")
	run(t, "qemu-io", "-c", "write -P 7 0 64k", leaky)
	setRefcount16(t, leaky, 0, 2)
	l1 := int64(qcow2Field(t, leaky, 40))
	var e [8]byte
	binary.BigEndian.PutUint64(e[:], qcow2Field(t, leaky, l1)&^(1<<63))
	patchFile(t, leaky, l1, e[:])

	// A data cluster shared with a snapshot whose refcount says 1, and
	// one whose refcount says 0 (qemu-img rebuilds for that one).
	shared := filepath.Join(dir, "shared.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", shared, "1M")
	run(t, "qemu-io", "-c", "write -P 3 0 128k", shared)
	run(t, "qemu-img", "snapshot", "-c", "s1", shared)
	hostOf := func(path string, guestCluster int64) int64 {
		l2 := int64(qcow2Field(t, path, int64(qcow2Field(t, path, 40))) & 0x00fffffffffffe00)
		return int64(qcow2Field(t, path, l2+8*guestCluster) & 0x00fffffffffffe00)
	}
	tooLow := filepath.Join(dir, "toolow.qcow2")
	run(t, "cp", shared, tooLow)
	setRefcount16(t, tooLow, hostOf(tooLow, 0)>>16, 1)
	zero := filepath.Join(dir, "zero.qcow2")
	run(t, "cp", shared, zero)
	setRefcount16(t, zero, hostOf(zero, 1)>>16, 0)

	// Misaligned L2 entries of an extended L2 image over a raw backing
	// file (iotest 271): one whose subcluster holds data (no repair can
	// fix it; qemu-img rebuilds the refcounts around it), and one whose
	// subclusters are all unallocated (repaired in place).
	base := filepath.Join(dir, "base.raw")
	run(t, "qemu-img", "create", "-q", "-f", "raw", base, "128k")
	run(t, "qemu-io", "-f", "raw", "-c", "write -q -P 0xff 0 128k", base)
	misaligned := func(name string, cmds ...string) string {
		path := filepath.Join(dir, name)
		run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on", "-F", "raw", "-b", base, path)
		for _, c := range cmds {
			run(t, "qemu-io", "-c", c, path)
		}
		l2 := int64(qcow2Field(t, path, int64(qcow2Field(t, path, 40))) & 0x00fffffffffffe00)
		patchFile(t, path, l2+6, []byte{2})
		return path
	}
	alignData := misaligned("aligndata.qcow2", "write -q -P 1 4k 2k")
	alignZero := misaligned("alignzero.qcow2", "write -q -P 1 4k 2k", "write -q -z 4k 2k")

	for _, c := range []struct {
		image string
		args  []string
	}{
		{dirty, nil},
		{dirty, []string{"-r", "all"}},
		{dirty, []string{"-r", "leaks"}},
		{leaky, nil},
		{leaky, []string{"-r", "leaks"}},
		{leaky, []string{"-r", "all"}},
		{leaky, []string{"-r", "all", "--output=json"}},
		{tooLow, nil},
		{tooLow, []string{"-r", "leaks"}},
		{tooLow, []string{"-r", "all"}},
		{tooLow, []string{"--output=json"}},
		{zero, nil},
		{zero, []string{"-r", "leaks"}},
		{zero, []string{"-r", "all"}},
		{alignData, nil},
		{alignData, []string{"-r", "leaks"}},
		{alignData, []string{"-r", "all"}},
		{alignZero, nil},
		{alignZero, []string{"-r", "leaks"}},
		{alignZero, []string{"-r", "all"}},
	} {
		q, p := sameCheck(t, c.image, c.args...)
		if len(c.args) < 2 || c.args[1] != "all" {
			continue
		}
		// qemu-img judges both repairs alike; a clean one keeps the data
		// (the misaligned entry without data reads the backing file).
		qrc, qout := exitCode(t, "qemu-img", "check", q)
		prc, pout := exitCode(t, "qemu-img", "check", p)
		if qrc != prc {
			t.Errorf("%s: qemu-img check after qemu-img's repair: exit %d, after petrel's: %d\n%s\n%s", c.image, qrc, prc, qout, pout)
		}
		if prc == 0 {
			sameBytes(t, filepath.Base(c.image)+" after petrel's repair", qemuRaw(t, p), qemuRaw(t, q))
		}
	}
}

// TestCheckRefcountOverflowLikeQemu: a cluster referenced twice in an
// image with 1-bit refcounts has a reference no refcount entry can hold.
// check and check -r all report "ERROR: overflow cluster" with the advice
// to amend, as qemu-img does, and repair nothing (iotest 112); after an
// amend to 2 bits, check -r all fixes the refcount.
func TestCheckRefcountOverflowLikeQemu(t *testing.T) {
	needQemu(t)
	img := filepath.Join(t.TempDir(), "ov.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "refcount_bits=1", img, "64M")
	run(t, "qemu-io", "-c", "write 0 64k", img)
	// The data cluster is at 0x50000, the L2 table at 0x40000: a second
	// L2 entry pointing at it (with the copied flag) makes two references.
	patchFile(t, img, 0x40008, []byte{0x80, 0, 0, 0, 0, 0x05, 0, 0})
	sameCheck(t, img)
	_, p := sameCheck(t, img, "-r", "all")
	if out := run(t, "qemu-img", "amend", "-o", "refcount_bits=2", p); out != "" {
		t.Fatalf("amend: %s", out)
	}
	sameCheck(t, p, "-r", "all")
}
