package interop

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// Images qemu-img creates and qemu-io writes read byte-identical in Petrel,
// through block.Open and through petrel img convert -O raw.
func TestQemuWritesPetrelReads(t *testing.T) {
	needQemu(t)
	cases := []struct {
		name, format, opts string
	}{
		{"raw-sparse", "raw", ""},
		{"qed", "qed", ""},
		{"qed-4k", "qed", "cluster_size=4096,table_size=2"},
		{"qcow2-v3", "qcow2", ""},
		{"qcow2-v2", "qcow2", "compat=0.10"},
		{"qcow2-512", "qcow2", "cluster_size=512"},
		{"qcow2-2M", "qcow2", "cluster_size=2M"},
		{"qcow2-rc1", "qcow2", "refcount_bits=1"},
		{"qcow2-rc2", "qcow2", "refcount_bits=2"},
		{"qcow2-rc4", "qcow2", "refcount_bits=4"},
		{"qcow2-rc8", "qcow2", "refcount_bits=8"},
		{"qcow2-rc32", "qcow2", "refcount_bits=32"},
		{"qcow2-rc64", "qcow2", "refcount_bits=64"},
		{"qcow2-lazy", "qcow2", "lazy_refcounts=on"},
		{"qcow2-extl2", "qcow2", "extended_l2=on,cluster_size=64k"},
		{"qcow2-zstd", "qcow2", "compression_type=zstd"},
		{"qcow2-prealloc", "qcow2", "preallocation=metadata"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "q."+c.format)
			args := []string{"create", "-q", "-f", c.format}
			if c.opts != "" {
				args = append(args, "-o", c.opts)
			}
			run(t, "qemu-img", append(args, p, "4M")...)
			qemuPattern(t, p, c.format, int64(100+i))
			want := qemuRaw(t, p)
			sameBytes(t, "block.Open", petrelRead(t, p), want)
			sameBytes(t, "petrel img convert -O raw", petrelRaw(t, p), want)
			if c.format != "raw" {
				if rc, o, e := petrel("check", p); rc != 0 {
					t.Fatalf("petrel img check of qemu's image: exit %d\n%s%s", rc, o, e)
				}
			}
			compareInfoJSON(t, p, false)
		})
	}
}

// Compressed images (zlib and zstd), backing chains with relative names
// and QED over raw read identically.
func TestQemuSpecialImages(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	run(t, "qemu-img", "create", "-q", "-f", "raw", src, "4M")
	qemuPattern(t, src, "raw", 5)
	want := qemuRaw(t, src)
	for _, ct := range []string{"zlib", "zstd"} {
		c := filepath.Join(dir, "c-"+ct+".qcow2")
		run(t, "qemu-img", "convert", "-c", "-O", "qcow2", "-o", "compression_type="+ct, src, c)
		sameBytes(t, "compressed "+ct, petrelRead(t, c), want)
		sameBytes(t, "compressed "+ct+" via convert", petrelRaw(t, c), want)
	}
	for _, top := range []string{"qcow2", "qed"} {
		for _, base := range []string{"raw", "qcow2", "qed"} {
			sub := filepath.Join(dir, top+base)
			os.Mkdir(sub, 0o755)
			bp := filepath.Join(sub, "base."+base)
			run(t, "qemu-img", "create", "-q", "-f", base, bp, "4M")
			qemuPattern(t, bp, base, 9)
			tp := filepath.Join(sub, "top."+top)
			run(t, "qemu-img", "create", "-q", "-f", top, "-b", "base."+base, "-F", base, tp, "6M")
			qemuPattern(t, tp, top, 10)
			w := qemuRaw(t, tp)
			sameBytes(t, top+" over "+base, petrelRead(t, tp), w)
			sameBytes(t, top+" over "+base+" via convert", petrelRaw(t, tp), w)
			compareInfoJSON(t, tp, true)
			compareMapJSON(t, tp)
		}
	}
}

// Snapshot tables qemu-img writes are listed by petrel img snapshot -l as
// qemu-img lists them, and applying one gives qemu's content.
func TestQemuSnapshotsPetrelReads(t *testing.T) {
	needQemu(t)
	p := filepath.Join(t.TempDir(), "s.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "4M")
	qemuPattern(t, p, "qcow2", 30)
	first := qemuRaw(t, p)
	run(t, "qemu-img", "snapshot", "-c", "one", p)
	qemuPattern(t, p, "qcow2", 31)
	run(t, "qemu-img", "snapshot", "-c", "two", p)
	qemuPattern(t, p, "qcow2", 32)
	want := run(t, "qemu-img", "snapshot", "-l", p)
	got := mustPetrel(t, "snapshot", "-l", p)
	if strings.Join(snapshotRows(want), "\n") != strings.Join(snapshotRows(got), "\n") {
		t.Fatalf("snapshot lists differ:\nqemu-img:\n%s\npetrel:\n%s", want, got)
	}
	compareInfoJSON(t, p, false)
	mustPetrel(t, "snapshot", "-a", "one", p)
	qemuCheckClean(t, p)
	sameBytes(t, "applied qemu snapshot", petrelRead(t, p), first)
}

// snapshotRows returns the lines of a snapshot list; both tools must print
// them identically.
func snapshotRows(out string) []string {
	return strings.Split(strings.TrimSpace(out), "\n")
}

func decodeJSON(t *testing.T, what, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("%s: invalid JSON: %v\n%s", what, err, s)
	}
	return v
}

// compareInfoJSON compares qemu-img info --output=json with Petrel's.
func compareInfoJSON(t *testing.T, path string, chain bool) {
	t.Helper()
	args := []string{"info", "--output=json"}
	if chain {
		args = append(args, "--backing-chain")
	}
	args = append(args, path)
	want := decodeJSON(t, "qemu-img info", run(t, "qemu-img", args...))
	got := decodeJSON(t, "petrel img info", mustPetrel(t, args...))
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("info differs for %s:\nqemu-img: %v\npetrel:   %v", path, want, got)
	}
	// The human output too.
	hargs := append([]string{"info"}, args[2:]...)
	qh, ph := run(t, "qemu-img", hargs...), mustPetrel(t, hargs...)
	if qh != ph {
		t.Fatalf("info differs for %s:\nqemu-img:\n%s\npetrel:\n%s", path, qh, ph)
	}
}

// compareMapJSON compares qemu-img map --output=json with Petrel's.
func compareMapJSON(t *testing.T, path string) {
	t.Helper()
	want := normalizeMap(decodeJSON(t, "qemu-img map", run(t, "qemu-img", "map", "--output=json", path)))
	got := normalizeMap(decodeJSON(t, "petrel img map", mustPetrel(t, "map", "--output=json", path)))
	for i := range min(len(want), len(got)) {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Fatalf("map differs for %s at entry %d:\nqemu-img: %v\npetrel:   %v", path, i, want[i], got[i])
		}
	}
	if len(want) != len(got) {
		t.Fatalf("map differs for %s: %d entries from qemu-img, %d from petrel", path, len(want), len(got))
	}
	qh, _ := exec.Command("qemu-img", "map", path).Output() // fails on compressed images
	if ph := mustPetrel(t, "map", path); len(qh) > 0 && string(qh) != ph {
		t.Fatalf("human map differs for %s:\nqemu-img:\n%s\npetrel:\n%s", path, qh, ph)
	}
}

// normalizeMap drops the host offset of entries without data and merges
// the runs that then become adjacent and alike. Petrel's qcow2 engine
// does not report where a zero cluster's preallocated space lies (qemu
// does, for zero-flagged clusters that keep an allocation); everything
// else must match exactly.
func normalizeMap(v any) []map[string]any {
	var out []map[string]any
	list, _ := v.([]any)
	for _, e := range list {
		m := e.(map[string]any)
		if m["data"] == false {
			delete(m, "offset")
		}
		if n := len(out); n > 0 {
			p := out[n-1]
			_, hasOff := m["offset"]
			if !hasOff && p["offset"] == nil && p["depth"] == m["depth"] && p["present"] == m["present"] &&
				p["zero"] == m["zero"] && p["data"] == m["data"] {
				p["length"] = p["length"].(float64) + m["length"].(float64)
				continue
			}
		}
		out = append(out, m)
	}
	return out
}
