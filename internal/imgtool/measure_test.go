package imgtool

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/internal/testutil"
)

// sameMeasure runs `measure ARGS` with Debian's qemu-img and with petrel
// img (as qemu-img, so messages carry the same prefix) and wants the same
// exit code, stdout and stderr.
func sameMeasure(t *testing.T, args ...string) {
	t.Helper()
	qemuImg := testutil.NeedTool(t, "qemu-img")
	var qo, qe bytes.Buffer
	qrc := 0
	// With LUKS, qemu-img times PBKDF2 on the thread's CPU clock and
	// gives up when the clock did not move (common on a loaded virtual
	// machine): that says nothing about the figures, so it is asked again.
	for try := 0; ; try++ {
		qo.Reset()
		qe.Reset()
		cmd := exec.Command(qemuImg, append([]string{"measure"}, args...)...)
		cmd.Stdout, cmd.Stderr = &qo, &qe
		qrc = 0
		if err := cmd.Run(); err != nil {
			ee, ok := err.(*exec.ExitError)
			if !ok {
				t.Fatalf("qemu-img measure %v: %v", args, err)
			}
			qrc = ee.ExitCode()
		}
		if !strings.Contains(qe.String(), "Unable to get accurate CPU usage") {
			break
		}
		if try == 20 {
			t.Skipf("qemu-img measure %v: no answer in %d tries: %s", args, try+1, qe.String())
		}
	}
	var po, pe bytes.Buffer
	prc := MainAs("qemu-img", append([]string{"measure"}, args...), &po, &pe)
	if prc != qrc || po.String() != qo.String() || pe.String() != qe.String() {
		t.Errorf("measure %s:\nqemu-img: exit %d\n%s%s\npetrel:   exit %d\n%s%s", strings.Join(args, " "),
			qrc, qo.String(), qe.String(), prc, po.String(), pe.String())
	}
}

// TestMeasureNewImageLikeQemu: the figures for a new image over sizes
// (empty, sub-sector, unaligned, up to the L1 limit and past it), cluster
// sizes, refcount widths, extended L2 entries and preallocation modes, in
// both output formats.
func TestMeasureNewImageLikeQemu(t *testing.T) {
	sizes := []string{"0", "1", "512", "65535", "1000000", "1G", "2147484161", "64G", "1T", "2P", "7E"}
	clusters := []string{"512", "4k", "64k", "2M"}
	variants := []string{"", "refcount_bits=1", "refcount_bits=64", "extended_l2=on", "preallocation=metadata",
		"preallocation=full", "compat=0.10", "lazy_refcounts=on,refcount_bits=8", "backing_file=x"}
	i := 0
	for _, size := range sizes {
		for _, cs := range clusters {
			for _, out := range []string{"human", "json"} {
				v := variants[i%len(variants)]
				i++
				o := "cluster_size=" + cs
				if v != "" {
					o += "," + v
				}
				sameMeasure(t, "--output="+out, "-O", "qcow2", "-o", o, "--size", size)
			}
		}
		sameMeasure(t, "--size", size)
		sameMeasure(t, "--output=json", "-O", "raw", "--size", size)
	}
}

// TestMeasureRefusalsLikeQemu: argument and option errors in qemu-img's
// order and words (iotest 178's input validation and more).
func TestMeasureRefusalsLikeQemu(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "t.qcow2")
	qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "1G")
	for _, args := range [][]string{
		{},
		{"--size", "2G", img},
		{img, "a"},
		{"--object", "secret,id=sec0,data=MTIzNDU2,format=base64"},
		{"--image-opts"},
		{"-f", "qcow2"},
		{"-l", "snap1"},
		{"-o", ","},
		{"-o", "a=b,,,", "--size", "1G"},
		{"-o", "", "--size", "1G"},
		{"-l", "snapshot.foo=bar"},
		{"--output", "foo"},
		{"--size", "-1"},
		{"--size", "1x"},
		{"--size", "8E"},
		{"-O", "foo", img},
		{"-O", "qed", "--size", "1G"},
		{"-O", "qed", "-o", "refcount_bits=1", "--size", "1G"},
		{"-l", "nosuch", img},
		{"-O", "qcow2", "-o", "size=5G"},
		{"-O", "qcow2", "-o", "size=5G", img},
		{"-O", "qcow2", "-o", "foo=bar", "--size", "1G"},
		{"-O", "qcow2", "-o", "help", "--size", "1G"},
		{"-O", "qcow2", "-o", "lazy_refcounts", "--size", "1G"},
		{"-O", "qcow2", "-o", "cluster_size=1000", "--size", "1G"},
		{"-O", "qcow2", "-o", "cluster_size=0", "--size", "1G"},
		{"-O", "qcow2", "-o", "cluster_size=abc", "--size", "1G"},
		{"-O", "qcow2", "-o", "cluster_size=4M", "--size", "1G"},
		{"-O", "qcow2", "-o", "refcount_bits=3", "--size", "1G"},
		{"-O", "qcow2", "-o", "refcount_bits=0", "--size", "1G"},
		{"-O", "qcow2", "-o", "refcount_bits=128", "--size", "1G"},
		{"-O", "qcow2", "-o", "refcount_bits=abc", "--size", "1G"},
		{"-O", "qcow2", "-o", "compat=0.10,refcount_bits=1", "--size", "1G"},
		{"-O", "qcow2", "-o", "compat=0.42,cluster_size=4k", "--size", "1G"},
		{"-O", "qcow2", "-o", "compat=v3", "--size", "1G"},
		{"-O", "qcow2", "-o", "preallocation=foo", "--size", "1G"},
		{"-O", "qcow2", "-o", "preallocation=foo,cluster_size=1000", "--size", "1G"},
		{"-O", "qcow2", "-o", "extended_l2=on,cluster_size=4k", "--size", "1G"},
		{"-O", "qcow2", "-o", "extended_l2=on,compat=0.10", "--size", "1G"},
		{"-O", "qcow2", "-o", "extended_l2=maybe", "--size", "1G"},
		{"-O", "qcow2", "-o", "encryption=on,data_file=x,compression_type=zstd", "--size", "1G"},
		{"-O", "qcow2", "-o", "encrypt.format=luks", "--size", "1G"},
		{"-O", "qcow2", "-o", "cluster_size=64k", "-o", "cluster_size=4k", "--size", "1G"},
		{"-O", "qcow2", "-o", "cluster_size=512", "--size", "100T"},
		{"-O", "raw", "-o", "preallocation=full", "--size", "1000"},
		{"-O", "raw", "-o", "cluster_size=4k", "--size", "1000"},
	} {
		sameMeasure(t, args...)
	}
}

// TestMeasureImagesLikeQemu: an input image's data counts toward the
// required size cluster by cluster, as QEMU walks block status: partial
// clusters, two writes in one cluster with zeroes between, zero clusters,
// compressed clusters, data only in the backing file, an internal
// snapshot (-l), raw inputs with holes, extended L2 subclusters,
// version 2 images (no bitmaps line) and persistent bitmaps.
func TestMeasureImagesLikeQemu(t *testing.T) {
	dir := t.TempDir()
	path := func(n string) string { return filepath.Join(dir, n) }
	qi := func(img string, cmds ...string) {
		t.Helper()
		for _, c := range cmds {
			qemuTool(t, "qemu-io", "-c", c, img)
		}
	}
	qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", path("data.qcow2"), "1G")
	qi(path("data.qcow2"), "write 512 512", "write 64k 64k", "write 128M 63k", "write 200M 1k", "write 209756160 1k",
		"write -z 300M 1M", "write -c 400M 64k", "write 1073740800 1k")
	qemuTool(t, "qemu-img", "snapshot", "-c", "snap1", path("data.qcow2"))
	qi(path("data.qcow2"), "write 500M 3M", "discard 64k 64k")

	qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", path("data.qcow2"), "-F", "qcow2", path("top.qcow2"), "1500M")
	qi(path("top.qcow2"), "write 1200M 100k", "write -z 128M 64k")

	qemuTool(t, "qemu-img", "create", "-q", "-f", "raw", path("holes.raw"), "100000001")
	qi(path("holes.raw"), "write 0 1k", "write 10M 4k", "write 50M 130k")

	qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=128k", path("sub.qcow2"), "64M")
	qi(path("sub.qcow2"), "write 4k 4k", "write 100k 4k", "write 1M 256k", "write -z 1M 8k")

	qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", path("v2.qcow2"), "10M")
	qi(path("v2.qcow2"), "write 1M 1M")

	qemuTool(t, "qemu-img", "create", "-q", "-f", "qcow2", path("bitmaps.qcow2"), "3G")
	qi(path("bitmaps.qcow2"), "write 0 1M")
	qemuTool(t, "qemu-img", "bitmap", "--add", path("bitmaps.qcow2"), "b0")
	qemuTool(t, "qemu-img", "bitmap", "--add", "-g", "512", path("bitmaps.qcow2"), "a-rather-long-bitmap-name-of-some-length")
	qemuTool(t, "qemu-img", "bitmap", "--add", "-g", "2M", path("bitmaps.qcow2"), "c")

	for _, img := range []string{"data.qcow2", "top.qcow2", "holes.raw", "sub.qcow2", "v2.qcow2", "bitmaps.qcow2"} {
		for _, o := range []string{"cluster_size=64k", "cluster_size=4k,refcount_bits=1", "cluster_size=2M,extended_l2=on",
			"cluster_size=512", "preallocation=full", "backing_file=x", "compat=0.10"} {
			for _, out := range []string{"human", "json"} {
				sameMeasure(t, "--output="+out, "-O", "qcow2", "-o", o, path(img))
			}
		}
		sameMeasure(t, path(img))
		sameMeasure(t, "-O", "qed", path(img))
	}
	sameMeasure(t, "-O", "qcow2", "-l", "snap1", path("data.qcow2"))
	sameMeasure(t, "--output=json", "-O", "qcow2", "-l", "snapshot.id=1", path("data.qcow2"))
	sameMeasure(t, "-O", "qcow2", "-f", "raw", path("data.qcow2"))
	sameMeasure(t, "-O", "qcow2", "--image-opts", fmt.Sprintf("driver=qcow2,file.filename=%s", path("top.qcow2")))
}

// TestMeasureLUKSLikeQemu: encrypt.format=luks adds the LUKS header area
// (header and eight key slots for the cipher's key length) in whole
// clusters, for a new image and for an input image (iotest 178); the
// secret may be given in base64; bad option values and a missing secret
// are refused in qemu-img's words.
func TestMeasureLUKSLikeQemu(t *testing.T) {
	img := filepath.Join(t.TempDir(), "t.raw")
	qemuTool(t, "qemu-img", "create", "-q", "-f", "raw", img, "1G")
	qemuTool(t, "qemu-io", "-f", "raw", "-c", "write 64k 64k", img)
	// Each qemu-img measure with LUKS spends about half a second timing
	// PBKDF2, so the cases are few.
	luks := "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10"
	sameMeasure(t, "--output=json", "--object", "secret,id=sec0,data=base", "-O", "qcow2", "-o", luks, "--size", "1G")
	sameMeasure(t, "--object", "secret,id=sec0,data=YmFzZQ==,format=base64", "-O", "qcow2", "-o", luks, "-f", "raw", img)
	for _, o := range []string{",cluster_size=4k,encrypt.cipher-alg=aes-128", ",cluster_size=512,encrypt.hash-alg=sha1,preallocation=full",
		",cluster_size=2M,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv", ",encrypt.key-secret=nope", ",encrypt.hash-alg=md7", ",encrypt.cipher-alg=sm4"} {
		sameMeasure(t, "--object", "secret,id=sec0,data=base", "-O", "qcow2", "-o", luks+o, "--size", "1G")
	}
	sameMeasure(t, "-O", "qcow2", "-o", "encrypt.format=luks", "--size", "1G")
	sameMeasure(t, "--object", "secret,id=sec0,data=YmFz*ZQ,format=base64", "--size", "1G")
	sameMeasure(t, "--object", "secret,id=sec0,data=base,format=hex", "--size", "1G")
}
