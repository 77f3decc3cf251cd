package qcow2

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/block"
)

// freshImage creates a small default image and returns its bytes.
func freshImage(t *testing.T, o block.CreateOptions) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "h.qcow2")
	if err := Create(path, o); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func openBytes(t *testing.T, b []byte, opts block.Options) (*Image, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "x.qcow2")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return Open(path, opts)
}

// TestLyingHeaderFields: every size field a file can lie about is bounded
// before anything is allocated; each crafted header fails fast with a
// clear error and without allocating in proportion to the lie.
func TestLyingHeaderFields(t *testing.T) {
	base := freshImage(t, block.CreateOptions{Size: 1 << 20})
	be := binary.BigEndian
	cases := []struct {
		name  string
		patch func(b []byte)
		want  string
	}{
		{"l1_size 2^31", func(b []byte) { be.PutUint32(b[36:], 1<<31) }, "L1 table too large"},
		{"l1_size beyond file", func(b []byte) { be.PutUint32(b[36:], 1<<20) }, "beyond the end of the file"},
		{"refcount_table_clusters 2^31", func(b []byte) { be.PutUint32(b[56:], 1<<31) }, "refcount table size"},
		{"nb_snapshots 2^31", func(b []byte) { be.PutUint32(b[60:], 1<<31); be.PutUint64(b[64:], 65536) }, "too many snapshots"},
		{"snapshot table beyond file", func(b []byte) { be.PutUint32(b[60:], 60000); be.PutUint64(b[64:], 65536) }, "beyond the end"},
		{"backing_file_size 2^31", func(b []byte) { be.PutUint64(b[8:], 512); be.PutUint32(b[16:], 1<<31) }, "backing file name is too long"},
		{"cluster_bits 30", func(b []byte) { be.PutUint32(b[20:], 30) }, "unsupported cluster size"},
		{"cluster_bits 8", func(b []byte) { be.PutUint32(b[20:], 8) }, "unsupported cluster size"},
		{"extension length 2^31", func(b []byte) { be.PutUint32(b[112:], 0x12345678); be.PutUint32(b[116:], 1<<31) }, "goes beyond the header cluster"},
		{"header_length huge", func(b []byte) { be.PutUint32(b[100:], 1<<30) }, "header_length"},
		{"l1 misaligned", func(b []byte) { be.PutUint64(b[40:], be.Uint64(b[40:])+8) }, "not cluster aligned"},
		{"refcount_order 7", func(b []byte) { be.PutUint32(b[96:], 7) }, "refcount_order"},
		{"version 4", func(b []byte) { be.PutUint32(b[4:], 4) }, "unsupported qcow2 version"},
		// qcow2_do_open's words, which qemu-img prints (iotests 054, 080).
		{"size needs 2^33 L1 entries", func(b []byte) { be.PutUint64(b[24:], 1<<62) }, ": Image is too big"},
		{"l1_size 0", func(b []byte) { be.PutUint32(b[36:], 0) }, ": L1 table is too small"},
		// validate_compression_type (iotest 287).
		{"zlib with the compression bit", func(b []byte) { be.PutUint64(b[72:], incompatCompressed) },
			": qcow2: Compression type incompatible feature bit must not be set"},
		{"zstd without the compression bit", func(b []byte) { b[104] = compressionZstd },
			": qcow2: Compression type incompatible feature bit must be set"},
		{"compression type 7", func(b []byte) { be.PutUint64(b[72:], incompatCompressed); b[104] = 7 },
			": qcow2: unknown compression type: 7"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := append([]byte(nil), base...)
			c.patch(b)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			img, err := openBytes(t, b, block.Options{ReadOnly: true})
			runtime.ReadMemStats(&after)
			if err == nil {
				img.Close()
				t.Fatalf("opened an image with %s", c.name)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not mention %q", err, c.want)
			}
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 4<<20 {
				t.Fatalf("allocated %d bytes refusing a lying header", grew)
			}
		})
	}
}

// TestFeatureBits: unknown incompatible bits are refused by name, the
// corrupt bit allows read-only opens only, unknown autoclear bits are
// cleared on writable open, and unknown extensions survive header rewrites.
func TestFeatureBits(t *testing.T) {
	base := freshImage(t, block.CreateOptions{Size: 1 << 20})
	be := binary.BigEndian
	h, err := parseHeader(base, int64(len(base)))
	if err != nil {
		t.Fatal(err)
	}

	// Unknown incompatible bit 9, named in the feature table.
	h.incompat |= 1 << 9
	h.features = nil
	h.others = append(h.others, rawExt{0xdeadbeef, []byte("keep me")})
	enc, err := h.encode()
	if err != nil {
		t.Fatal(err)
	}
	// Replace our table by one naming bit 9 as "frobnication".
	b := append([]byte(nil), base...)
	copy(b, enc)
	off := int(be.Uint32(b[100:]))
	for be.Uint32(b[off:]) != extFeatureTable {
		off += 8 + int(be.Uint32(b[off+4:])+7)&^7
	}
	b[off+8], b[off+9] = 0, 9
	copy(b[off+10:off+56], append([]byte("frobnication"), make([]byte, 34)...))
	_, err = openBytes(t, b, block.Options{ReadOnly: true})
	if err == nil || !strings.Contains(err.Error(), "Unsupported qcow2 feature(s): frobnication") {
		t.Fatalf("unknown incompatible bit: %v", err)
	}

	// Corrupt bit: read-only only.
	c := append([]byte(nil), base...)
	be.PutUint64(c[72:], incompatCorrupt)
	if _, err := openBytes(t, c, block.Options{}); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("read-write open of a corrupt-flagged image: %v", err)
	}
	img, err := openBytes(t, c, block.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("read-only open of a corrupt-flagged image: %v", err)
	}
	img.Close()

	// External data file bit without a name: refused in QEMU's words
	// (datafile_test.go covers the images that have one), and the raw
	// data bit without the data file bit.
	d := append([]byte(nil), base...)
	be.PutUint64(d[72:], incompatDataFile)
	if _, err := openBytes(t, d, block.Options{ReadOnly: true}); err == nil || !strings.Contains(err.Error(), "'data-file' is required for this image") {
		t.Fatalf("external data file: %v", err)
	}
	d = append([]byte(nil), base...)
	be.PutUint64(d[88:], autoclearDataRaw)
	if _, err := openBytes(t, d, block.Options{ReadOnly: true}); err == nil || !strings.Contains(err.Error(), "data-file-raw requires a data file") {
		t.Fatalf("raw data bit alone: %v", err)
	}

	// Unknown autoclear bits cleared, unknown extension preserved.
	h3, _ := parseHeader(base, int64(len(base)))
	h3.autoclear = 1 << 5
	h3.others = []rawExt{{0xdeadbeef, []byte("keep me")}}
	enc3, err := h3.encode()
	if err != nil {
		t.Fatal(err)
	}
	a := append([]byte(nil), base...)
	copy(a, enc3)
	path := filepath.Join(t.TempDir(), "a.qcow2")
	os.WriteFile(path, a, 0o600)
	img, err = Open(path, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := img.SetBackingFile("", ""); err != nil { // forces a header rewrite
		t.Fatal(err)
	}
	img.Close()
	after, _ := os.ReadFile(path)
	h4, err := parseHeader(after, int64(len(after)))
	if err != nil {
		t.Fatal(err)
	}
	if h4.autoclear != 0 {
		t.Fatalf("autoclear %#x not cleared", h4.autoclear)
	}
	if len(h4.others) != 1 || string(h4.others[0].data) != "keep me" {
		t.Fatalf("unknown extension lost: %+v", h4.others)
	}
	qemuCheck(t, path, false)
}

// TestUnsupportedFeatureReport: the message for unknown incompatible bits
// is QEMU's report_unsupported_feature, with the image's own feature
// table read as QEMU reads it: a short last entry counts, the table ends
// at an empty name, named bits come in table order and the rest as one
// mask (iotest 036).
func TestUnsupportedFeatureReport(t *testing.T) {
	entry := func(bit byte, name string) []byte {
		e := append([]byte{0, bit}, name...)
		return append(e, make([]byte, 48-len(e))...)
	}
	cases := []struct {
		mask  uint64
		table []byte
		want  string
	}{
		{1 << 63, nil, "Unknown incompatible feature: 8000000000000000"},
		{1 << 63, []byte("\x00\x3fTest feature"), "Test feature"},
		{7 << 61, nil, "Unknown incompatible feature: e000000000000000"},
		{7 << 61, []byte("\x00\x3fTest feature"), "Test feature, Unknown incompatible feature: 6000000000000000"},
		{7 << 61, append(entry(61, "test1"), entry(62, "test2")...), "test1, test2, Unknown incompatible feature: 8000000000000000"},
		{7 << 61, append(append(entry(62, "test2"), make([]byte, 48)...), entry(61, "after the end")...),
			"test2, Unknown incompatible feature: a000000000000000"},
	}
	for _, c := range cases {
		h := &header{}
		h.headerLen = 104
		buf := make([]byte, 4096)
		binary.BigEndian.PutUint32(buf[104:], extFeatureTable)
		binary.BigEndian.PutUint32(buf[108:], uint32(len(c.table)))
		copy(buf[112:], c.table)
		if len(c.table) == 0 {
			binary.BigEndian.PutUint32(buf[104:], extEnd)
		}
		if err := h.parseExtensions(buf); err != nil {
			t.Fatal(err)
		}
		want := "Unsupported qcow2 feature(s): " + c.want
		if err := h.unsupportedFeatures(c.mask); err == nil || err.Error() != want {
			t.Errorf("mask %#x table %q: %v; want %q", c.mask, c.table, err, want)
		}
	}
}

// TestHeaderReadsWholeFirstCluster: the header is read up to the end of
// the first cluster, however large the clusters: a backing file name
// placed near the end of a 2 MiB first cluster is found, as qemu-img
// finds it; one placed past it is refused.
func TestHeaderReadsWholeFirstCluster(t *testing.T) {
	b := freshImage(t, block.CreateOptions{Size: 64 << 20, ClusterSize: 2 << 20})
	const name = "base.raw"
	be := binary.BigEndian
	for _, c := range []struct {
		at int
		ok bool
	}{{2<<20 - len(name), true}, {2<<20 - len(name) + 1, false}} {
		img := append([]byte(nil), b...)
		copy(img[c.at:], name)
		be.PutUint64(img[8:], uint64(c.at))
		be.PutUint32(img[16:], uint32(len(name)))
		got, err := openBytes(t, img, block.Options{ReadOnly: true, NoBacking: true})
		if !c.ok {
			if err == nil {
				got.Close()
				t.Errorf("name at %#x, past the first cluster: opened", c.at)
			}
			continue
		}
		if err != nil {
			t.Fatalf("name at %#x: %v", c.at, err)
		}
		if got.hdr.backingFile != name {
			t.Errorf("name at %#x: backing file %q, want %q", c.at, got.hdr.backingFile, name)
		}
		got.Close()
	}
}
