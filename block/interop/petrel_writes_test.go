package interop

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/block"
)

// Images Petrel creates and writes must be clean for qemu-img and read
// back byte-identical through qemu-img convert.
func TestPetrelWritesQemuReads(t *testing.T) {
	needQemu(t)
	cases := []struct {
		name, format string
		o            block.CreateOptions
	}{
		{"raw", "raw", block.CreateOptions{}},
		{"raw-falloc", "raw", block.CreateOptions{Preallocation: "falloc"}},
		{"qed", "qed", block.CreateOptions{}},
		{"qed-4k-table2", "qed", block.CreateOptions{ClusterSize: 4096, Extra: map[string]string{"table_size": "2"}}},
		{"qed-prealloc-full", "qed", block.CreateOptions{Preallocation: "full"}},
		{"qcow2", "qcow2", block.CreateOptions{}},
		{"qcow2-v2", "qcow2", block.CreateOptions{Compat: "0.10"}},
		{"qcow2-512", "qcow2", block.CreateOptions{ClusterSize: 512}},
		{"qcow2-2M", "qcow2", block.CreateOptions{ClusterSize: 2 << 20}},
		{"qcow2-rc1", "qcow2", block.CreateOptions{RefcountBits: 1}},
		{"qcow2-rc64", "qcow2", block.CreateOptions{RefcountBits: 64, ClusterSize: 4096}},
		{"qcow2-lazy", "qcow2", block.CreateOptions{LazyRefcounts: true}},
		{"qcow2-zstd", "qcow2", block.CreateOptions{CompressionType: "zstd"}},
		{"qcow2-prealloc-metadata", "qcow2", block.CreateOptions{Preallocation: "metadata"}},
		{"qcow2-prealloc-full", "qcow2", block.CreateOptions{Preallocation: "full", ClusterSize: 8192}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, ok := block.Lookup(c.format); !ok {
				t.Fatalf("format %s not registered", c.format)
			}
			p := filepath.Join(t.TempDir(), "img."+c.format)
			c.o.Size = diskSize
			if err := block.Create(c.format, p, c.o); err != nil {
				t.Fatal(err)
			}
			img, err := block.Open(p, block.Options{})
			if err != nil {
				t.Fatal(err)
			}
			ref := writePattern(t, img, int64(i), nil)
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			if c.format != "raw" {
				qemuCheckClean(t, p)
			}
			sameBytes(t, "qemu-img convert of Petrel's image", qemuRaw(t, p), ref)
			sameBytes(t, "Petrel reopening its image", petrelRead(t, p), ref)
			compareInfoJSON(t, p, false)
			compareMapJSON(t, p)
		})
	}
}

// Backing chains Petrel builds (top over qcow2/qed/raw bases, relative
// names) read identically in qemu-img.
func TestPetrelChainQemuReads(t *testing.T) {
	needQemu(t)
	for _, top := range []string{"qcow2", "qed"} {
		for _, base := range []string{"raw", "qcow2", "qed"} {
			t.Run(top+"-over-"+base, func(t *testing.T) {
				dir := t.TempDir()
				bp := filepath.Join(dir, "base."+base)
				if err := block.Create(base, bp, block.CreateOptions{Size: diskSize}); err != nil {
					t.Fatal(err)
				}
				bimg, err := block.Open(bp, block.Options{})
				if err != nil {
					t.Fatal(err)
				}
				bref := writePattern(t, bimg, 7, nil)
				bimg.Close()
				tp := filepath.Join(dir, "top."+top)
				mustPetrel(t, "create", "-q", "-f", top, "-b", "base."+base, "-F", base, tp)
				timg, err := block.Open(tp, block.Options{})
				if err != nil {
					t.Fatal(err)
				}
				if timg.Backing() == nil {
					t.Fatal("backing file not opened")
				}
				ref := writePattern(t, timg, 8, bref)
				timg.Close()
				qemuCheckClean(t, tp)
				sameBytes(t, "qemu-img reading Petrel's chain", qemuRaw(t, tp), ref)
				// commit into the base, then the top reads through.
				mustPetrel(t, "commit", tp)
				qemuCheckClean(t, tp)
				sameBytes(t, "base after petrel img commit", qemuRaw(t, bp), ref)
				sameBytes(t, "emptied top after commit", qemuRaw(t, tp), ref)
			})
		}
	}
}

// convert -c and convert to every format produce clean, identical images.
func TestPetrelConvertQemuReads(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", src, "4M")
	qemuPattern(t, src, "qcow2", 3)
	want := qemuRaw(t, src)
	for _, args := range [][]string{
		{"-O", "qcow2", "-c"},
		{"-O", "qcow2", "-c", "-o", "compression_type=zstd"},
		{"-O", "qcow2", "-o", "cluster_size=4k,refcount_bits=8", "-m", "4", "-W"},
		{"-O", "qed"},
		{"-O", "raw", "-t", "none"},
	} {
		t.Run(strings.Join(args, ""), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			mustPetrel(t, append(append([]string{"convert"}, args...), src, out)...)
			if args[1] != "raw" {
				qemuCheckClean(t, out)
			}
			sameBytes(t, "qemu-img reading petrel img convert output", qemuRaw(t, out), want)
		})
	}
}

// Snapshots Petrel takes are listed and applied by qemu-img.
func TestPetrelSnapshotsQemuReads(t *testing.T) {
	needQemu(t)
	p := filepath.Join(t.TempDir(), "s.qcow2")
	mustPetrel(t, "create", "-q", "-f", "qcow2", p, "4M")
	img, _ := block.Open(p, block.Options{})
	before := writePattern(t, img, 11, nil)
	img.Close()
	mustPetrel(t, "snapshot", "-c", "first", p)
	img, _ = block.Open(p, block.Options{})
	after := writePattern(t, img, 12, before)
	img.Close()
	qemuCheckClean(t, p)
	qlist := run(t, "qemu-img", "snapshot", "-l", p)
	plist := mustPetrel(t, "snapshot", "-l", p)
	if !strings.Contains(qlist, "first") || strings.Join(snapshotRows(qlist), "\n") != strings.Join(snapshotRows(plist), "\n") {
		t.Fatalf("snapshot lists differ:\nqemu-img:\n%s\npetrel:\n%s", qlist, plist)
	}
	compareInfoJSON(t, p, false)
	sameBytes(t, "active layer", qemuRaw(t, p), after)
	cp := p + ".copy"
	b, _ := os.ReadFile(p)
	os.WriteFile(cp, b, 0o644)
	run(t, "qemu-img", "snapshot", "-a", "first", cp)
	sameBytes(t, "qemu-img applying Petrel's snapshot", qemuRaw(t, cp), before)
	mustPetrel(t, "snapshot", "-a", "first", p)
	qemuCheckClean(t, p)
	sameBytes(t, "petrel applying its snapshot", qemuRaw(t, p), before)
	mustPetrel(t, "snapshot", "-d", "first", p)
	qemuCheckClean(t, p)
	if out := run(t, "qemu-img", "snapshot", "-l", p); strings.Contains(out, "first") {
		t.Fatalf("deleted snapshot still listed:\n%s", out)
	}
}

// Petrel creates extended-L2 images (its qcow2 engine opens them
// read-only); qemu writes them and Petrel reads them back.
func TestPetrelCreatesExtendedL2(t *testing.T) {
	needQemu(t)
	p := filepath.Join(t.TempDir(), "e.qcow2")
	mustPetrel(t, "create", "-q", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=128k", p, "4M")
	qemuCheckClean(t, p)
	if out := run(t, "qemu-img", "info", p); !strings.Contains(out, "extended l2: true") {
		t.Fatalf("qemu-img does not see extended L2:\n%s", out)
	}
	qemuPattern(t, p, "qcow2", 21)
	want := qemuRaw(t, p)
	sameBytes(t, "Petrel reading", petrelRead(t, p), want)
}

// convert -B writes only what differs from the new backing file's view;
// safe rebase keeps the content while qemu-img reads the result.
func TestPetrelConvertWithBackingAndRebase(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "4M")
	qemuPattern(t, base, "qcow2", 40)
	top := filepath.Join(dir, "top.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top)
	qemuPattern(t, top, "qcow2", 41)
	want := qemuRaw(t, top)
	out := filepath.Join(dir, "out.qcow2")
	mustPetrel(t, "convert", "-O", "qcow2", "-B", "base.qcow2", "-F", "qcow2", top, out)
	qemuCheckClean(t, out)
	sameBytes(t, "convert -B output", qemuRaw(t, out), want)
	other := filepath.Join(dir, "other.raw")
	run(t, "qemu-img", "create", "-q", "-f", "raw", other, "4M")
	qemuPattern(t, other, "raw", 42)
	mustPetrel(t, "rebase", "-b", "other.raw", "-F", "raw", out)
	qemuCheckClean(t, out)
	sameBytes(t, "after safe rebase", qemuRaw(t, out), want)
	if info := run(t, "qemu-img", "info", out); !strings.Contains(info, "backing file: other.raw") {
		t.Fatalf("backing file not changed:\n%s", info)
	}
	compareMapJSON(t, out)
}
