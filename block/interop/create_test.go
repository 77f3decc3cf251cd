package interop

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// petrel img create prints qemu-img's "Formatting ..." line and builds an
// image qemu-img check finds clean, for each option combination.
func TestCreateMatchesQemu(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	run(t, "qemu-img", "create", "-q", "-f", "raw", filepath.Join(dir, "base.raw"), "2M")
	for _, c := range [][]string{
		{"-f", "raw"},
		{"-f", "raw", "-o", "preallocation=falloc"},
		{"-f", "qed"},
		{"-f", "qed", "-o", "cluster_size=4k,table_size=2"},
		{"-f", "qed", "-b", "base.raw", "-F", "raw"},
		{"-f", "qcow2"},
		{"-f", "qcow2", "-o", "compat=0.10"},
		{"-f", "qcow2", "-o", "cluster_size=512,refcount_bits=1"},
		{"-f", "qcow2", "-o", "cluster_size=2M,refcount_bits=64,lazy_refcounts=on"},
		{"-f", "qcow2", "-o", "extended_l2=on,compression_type=zstd"},
		{"-f", "qcow2", "-o", "preallocation=metadata,cluster_size=4k"},
		{"-f", "qcow2", "-o", "preallocation=falloc"},
		{"-f", "qcow2", "-b", "base.raw", "-F", "raw"},
		{"-f", "qcow2", "-u", "-b", "missing.qcow2", "-F", "qcow2"},
	} {
		name := strings.Join(c, " ")
		t.Run(name, func(t *testing.T) {
			q, p := filepath.Join(dir, "q.img"), filepath.Join(dir, "p.img")
			args := append([]string{"create"}, c...)
			qout := run(t, "qemu-img", append(args, q, "3M")...)
			pout := mustPetrel(t, append(args, p, "3M")...)
			if strings.ReplaceAll(qout, "q.img", "X") != strings.ReplaceAll(pout, "p.img", "X") {
				t.Fatalf("create output:\nqemu-img: %s\npetrel:   %s", qout, pout)
			}
			if c[1] == "raw" {
				// QEMU writes the first block of a new raw file.
				if qm, pm := run(t, "qemu-img", "map", "--output=json", q), run(t, "qemu-img", "map", "--output=json", p); qm != pm {
					t.Fatalf("qemu-img map:\nqemu-img's: %s\npetrel's:   %s", qm, pm)
				}
			}
			if c[1] != "raw" && !strings.Contains(name, "missing") {
				qemuCheckClean(t, p)
				compareInfoJSONPair(t, q, p)
			}
		})
	}
}

// compareInfoJSONPair compares qemu-img info of two images made with the
// same options, apart from the file name and size on disk.
func compareInfoJSONPair(t *testing.T, q, p string) {
	t.Helper()
	qi := decodeJSON(t, "qemu-img info", run(t, "qemu-img", "info", "--output=json", q)).(map[string]any)
	pi := decodeJSON(t, "qemu-img info", run(t, "qemu-img", "info", "--output=json", p)).(map[string]any)
	for _, m := range []map[string]any{qi, pi} {
		delete(m, "filename")
		delete(m, "actual-size")
	}
	if a, b := strings.TrimSpace(strings.ReplaceAll(jsonString(qi), "q.img", "")), strings.TrimSpace(strings.ReplaceAll(jsonString(pi), "p.img", "")); a != b {
		t.Fatalf("qemu-img info differs between qemu's and Petrel's image:\nqemu's:   %s\nPetrel's: %s", a, b)
	}
}

// TestCreateRawOddSizesMatchQemu: a raw image of a size that is not a
// whole number of sectors is made as qemu-img makes it (rounded up to 512
// bytes, its first block written): the same file size and the same map.
func TestCreateRawOddSizesMatchQemu(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	for _, size := range []string{"100", "1000", "4096", "5000"} {
		q, p := filepath.Join(dir, "q"+size), filepath.Join(dir, "p"+size)
		run(t, "qemu-img", "create", "-q", "-f", "raw", q, size)
		mustPetrel(t, "create", "-q", "-f", "raw", p, size)
		qi, err := os.Stat(q)
		if err != nil {
			t.Fatal(err)
		}
		pi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if qi.Size() != pi.Size() {
			t.Errorf("size %s: qemu-img made %d bytes, petrel %d", size, qi.Size(), pi.Size())
		}
		if qm, pm := run(t, "qemu-img", "map", "--output=json", q), run(t, "qemu-img", "map", "--output=json", p); qm != pm {
			t.Errorf("size %s: qemu-img map:\nqemu-img's: %s\npetrel's:   %s", size, qm, pm)
		}
	}
}
