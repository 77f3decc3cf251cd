package imgtool

import (
	"bytes"
	"encoding/json"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/block"
)

func pimg(args ...string) (int, string, string) {
	var o, e bytes.Buffer
	rc := Main(args, &o, &e)
	return rc, o.String(), e.String()
}

func must(t *testing.T, args ...string) string {
	t.Helper()
	rc, o, e := pimg(args...)
	if rc != 0 {
		t.Fatalf("petrel img %s: exit %d\n%s%s", strings.Join(args, " "), rc, o, e)
	}
	return o
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "512": 512, "1k": 1024, "1K": 1024, "2M": 2 << 20, "1G": 1 << 30, "1T": 1 << 40,
		"1.5M": 3 << 19, "100b": 100, "7E": 7 << 60, "1g": 1 << 30, "0x10": 16, "1024.0b": 1024,
	} {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "1Q", "abc", "-1", "1.5", "99999999999999999999", "8E", "1..5M"} {
		if v, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", bad, v)
		}
	}
}

func TestHumanSizeLikeQemu(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 B", 100: "100 B", 1023: "0.999 KiB", 200704: "196 KiB", 1 << 20: "1 MiB",
		3 << 19: "1.5 MiB", 1 << 30: "1 GiB", 23592960: "22.5 MiB", 1000 << 10: "0.977 MiB",
	} {
		if got := humanSize(n); got != want {
			t.Errorf("humanSize(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestOptionParsing(t *testing.T) {
	s := optSpec{short: "f:qo:", long: []string{"output=", "shrink"}}
	p, err := s.parse([]string{"file", "-qf", "qcow2", "--output=json", "-oa=b", "--shrink", "x", "--", "-y"})
	if err != nil {
		t.Fatal(err)
	}
	if p.get("f") != "qcow2" || !p.has("q") || p.get("output") != "json" || p.get("o") != "a=b" || !p.has("shrink") {
		t.Fatalf("options: %v", p.opts)
	}
	if strings.Join(p.args, ",") != "file,x,-y" {
		t.Fatalf("operands: %v", p.args)
	}
	for _, bad := range [][]string{{"-z"}, {"-f"}, {"--nope"}, {"--shrink=1"}, {"--output"}} {
		if _, err := s.parse(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	kv, err := parseKV("a=1,b=x,,y,c=")
	if err != nil || len(kv) != 3 || kv[1][1] != "x,y" {
		t.Fatalf("parseKV: %v %v", kv, err)
	}
}

func TestCreateInfoQED(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw")
	out := must(t, "create", "-f", "raw", base, "2M")
	if out != "Formatting '"+base+"', fmt=raw size=2097152\n" {
		t.Fatalf("create output %q", out)
	}
	top := filepath.Join(dir, "top.qed")
	out = must(t, "create", "-f", "qed", "-b", "base.raw", "-F", "raw", "-o", "table_size=2", top)
	if !strings.Contains(out, "fmt=qed size=2097152 backing_file=base.raw backing_fmt=raw cluster_size=65536 table_size=2") {
		t.Fatalf("create output %q", out)
	}
	var info []map[string]any
	if err := json.Unmarshal([]byte(must(t, "info", "--output=json", "--backing-chain", top)), &info); err != nil {
		t.Fatal(err)
	}
	if len(info) != 2 || info[0]["format"] != "qed" || info[0]["backing-filename"] != "base.raw" ||
		info[0]["full-backing-filename"] != base || info[1]["format"] != "raw" || info[0]["virtual-size"] != float64(2<<20) {
		t.Fatalf("info: %v", info)
	}
	human := must(t, "info", top)
	for _, want := range []string{"file format: qed", "virtual size: 2 MiB (2097152 bytes)", "cluster_size: 65536", "backing file format: raw"} {
		if !strings.Contains(human, want) {
			t.Errorf("info lacks %q:\n%s", want, human)
		}
	}
	if rc, _, e := pimg("create", "-f", "qed", "-b", "base.raw", filepath.Join(dir, "x.qed")); rc != 1 || !strings.Contains(e, "without backing format") {
		t.Fatalf("missing -F: exit %d %s", rc, e)
	}
	if rc, _, e := pimg("create", "-f", "qcow2", filepath.Join(dir, "y"), "1Q"); rc != 1 || !strings.Contains(e, "Invalid image size") {
		t.Fatalf("bad size: exit %d %s", rc, e)
	}
	if rc, _, e := pimg("create", "-f", "vmdk", filepath.Join(dir, "y"), "1M"); rc != 1 || !strings.Contains(e, "Unknown file format 'vmdk'") {
		t.Fatalf("bad format: exit %d %s", rc, e)
	}
	if rc, _, e := pimg("info", filepath.Join(dir, "missing")); rc != 1 || !strings.HasPrefix(e, "petrel img: Could not open") {
		t.Fatalf("missing file: exit %d %q", rc, e)
	}
	if rc, _, _ := pimg("check", base); rc != checkUnsupported {
		t.Fatalf("check of raw: exit %d", rc)
	}
	if rc, o, _ := pimg("check", top); rc != 0 || !strings.Contains(o, "No errors were found") {
		t.Fatalf("check of qed: exit %d %s", rc, o)
	}
}

func randomFile(t *testing.T, path string, size int64, seed int64) []byte {
	t.Helper()
	b := make([]byte, size)
	r := rand.New(rand.NewSource(seed))
	for off := int64(0); off < size; off += 64 << 10 {
		if r.Intn(3) != 0 { // leave a third as zeroes
			r.Read(b[off:min(size, off+64<<10)])
		}
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

func readImage(t *testing.T, path string) []byte {
	t.Helper()
	img, err := block.Open(path, block.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	b := make([]byte, img.Size())
	if _, err := img.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConvertCompareResize(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	data := randomFile(t, src, 3<<20, 1)
	q := filepath.Join(dir, "c.qed")
	must(t, "convert", "-O", "qed", "-m", "3", "-p", src, q)
	if !bytes.Equal(readImage(t, q), data) {
		t.Fatal("convert to qed differs")
	}
	if rc, o, _ := pimg("compare", src, q); rc != cmpIdentical || o != "Images are identical.\n" {
		t.Fatalf("compare: %d %q", rc, o)
	}
	// Two sources are concatenated.
	cat := filepath.Join(dir, "cat.raw")
	must(t, "convert", "-O", "raw", "-W", src, q, cat)
	if got := readImage(t, cat); !bytes.Equal(got[:3<<20], data) || !bytes.Equal(got[3<<20:], data) {
		t.Fatal("concatenating convert differs")
	}
	// A byte changed at 1 MiB + 700 is reported at its sector.
	img, _ := block.Open(q, block.Options{})
	img.WriteAt([]byte{data[1<<20+700] ^ 0xff}, 1<<20+700)
	img.Close()
	if rc, o, _ := pimg("compare", src, q); rc != cmpDiffer || o != "Content mismatch at offset 1049088!\n" {
		t.Fatalf("compare after change: %d %q", rc, o)
	}
	if rc, _, _ := pimg("compare", src, filepath.Join(dir, "nope")); rc != cmpError {
		t.Fatalf("compare with a missing file: %d", rc)
	}
	// Resizing: relative growth, refused shrink, then --shrink on raw.
	must(t, "resize", cat, "+1M")
	if rc, _, e := pimg("resize", cat, "-2M"); rc != 1 || !strings.Contains(e, "--shrink") {
		t.Fatalf("shrink without --shrink: %d %s", rc, e)
	}
	must(t, "resize", "--shrink", cat, "-2M")
	if st, _ := os.Stat(cat); st.Size() != 5<<20 {
		t.Fatalf("size after resizes: %d", st.Size())
	}
	if rc, o, _ := pimg("compare", src, cat); rc != cmpDiffer || !strings.HasPrefix(o, "Warning: Image size mismatch!") {
		t.Fatalf("compare of different sizes: %d %q", rc, o)
	}
	if rc, o, _ := pimg("compare", "-s", src, cat); rc != cmpDiffer || o != "Strict mode: Image size mismatch!\n" {
		t.Fatalf("strict compare of different sizes: %d %q", rc, o)
	}
}

func TestRebaseCommitMapQED(t *testing.T) {
	dir := t.TempDir()
	oldB := filepath.Join(dir, "old.raw")
	oldData := randomFile(t, oldB, 2<<20, 2)
	newB := filepath.Join(dir, "new.raw")
	randomFile(t, newB, 1<<20, 3) // shorter: the tail reads as zeroes
	top := filepath.Join(dir, "top.qed")
	must(t, "create", "-q", "-f", "qed", "-b", "old.raw", "-F", "raw", "-o", "cluster_size=4096", top)
	img, _ := block.Open(top, block.Options{})
	img.WriteAt(bytes.Repeat([]byte{0x77}, 10000), 5000)
	img.Close()
	want := readImage(t, top)
	if !bytes.Equal(want[20000:], oldData[20000:]) {
		t.Fatal("backing data not visible")
	}
	var m []map[string]any
	json.Unmarshal([]byte(must(t, "map", "--output=json", top)), &m)
	if len(m) != 3 || m[1]["depth"] != float64(0) || m[1]["data"] != true || m[0]["depth"] != float64(1) {
		t.Fatalf("map: %v", m)
	}
	must(t, "rebase", "-b", "new.raw", "-F", "raw", top)
	if !bytes.Equal(readImage(t, top), want) {
		t.Fatal("safe rebase changed the content")
	}
	// -u only rewrites the header: now the content is new.raw's.
	must(t, "rebase", "-u", "-b", "old.raw", "-F", "raw", top)
	if !bytes.Equal(readImage(t, top), want) {
		t.Fatal("after rebase -u back to old.raw the content differs")
	}
	must(t, "commit", top)
	if got, _ := os.ReadFile(oldB); !bytes.Equal(got, want) {
		t.Fatal("commit did not write the top's data into the base")
	}
	if !bytes.Equal(readImage(t, top), want) {
		t.Fatal("top does not read through after commit")
	}
	if st, _ := os.Stat(top); st.Size() != 5*4096 { // header cluster + 4-cluster L1
		t.Fatalf("top not emptied by commit: %d bytes", st.Size())
	}
	if rc, _, _ := pimg("commit", oldB); rc != 1 {
		t.Fatalf("commit of an image without backing: %d", rc)
	}
}

func TestBenchWritesPattern(t *testing.T) {
	p := filepath.Join(t.TempDir(), "b.qed")
	must(t, "create", "-q", "-f", "qed", p, "1M")
	out := must(t, "bench", "-w", "-c", "64", "-d", "8", "-s", "4k", "-S", "8k", "-o", "4096", "--pattern=0x5a", "-f", "qed", p)
	if !strings.HasPrefix(out, "Sending 64 write requests, 4096 bytes each, 8 in parallel (starting at offset 4096, step size 8192)\nRun completed in ") {
		t.Fatalf("bench output %q", out)
	}
	b := readImage(t, p)
	for i := int64(0); i < 64; i++ {
		off := 4096 + i*8192
		if b[off] != 0x5a || b[off+4095] != 0x5a || b[off+4096] != 0 {
			t.Fatalf("request %d at %#x not written as expected", i, off)
		}
	}
	if rc, _, _ := pimg("bench", "-c", "0", p); rc != 1 {
		t.Fatal("count 0 accepted")
	}
}

// commit -b commits every layer above the named base into it; -d keeps
// the top's data.
func TestCommitToBaseKeepTop(t *testing.T) {
	dir := t.TempDir()
	l0 := filepath.Join(dir, "l0.raw")
	randomFile(t, l0, 1<<20, 9)
	must(t, "create", "-q", "-f", "qed", "-b", "l0.raw", "-F", "raw", "-o", "cluster_size=4096", filepath.Join(dir, "l1.qed"))
	must(t, "create", "-q", "-f", "qed", "-b", "l1.qed", "-F", "qed", "-o", "cluster_size=4096", filepath.Join(dir, "l2.qed"))
	l1, l2 := filepath.Join(dir, "l1.qed"), filepath.Join(dir, "l2.qed")
	for i, p := range []string{l1, l2} {
		img, err := block.Open(p, block.Options{})
		if err != nil {
			t.Fatal(err)
		}
		img.WriteAt(bytes.Repeat([]byte{byte(0xa0 + i)}, 5000), int64(i)*300000+100)
		img.Close()
	}
	want := readImage(t, l2)
	must(t, "commit", "-d", "-b", l0, l2)
	if got, _ := os.ReadFile(l0); !bytes.Equal(got, want) {
		t.Fatal("commit -b did not bring both layers into the base")
	}
	if top := readImage(t, l2); !bytes.Equal(top, want) {
		t.Fatal("top content changed")
	}
	img, _ := block.Open(l2, block.Options{ReadOnly: true, NoBacking: true})
	e, _ := img.BlockStatus(300000, 4096)
	img.Close()
	if e.Flags&block.ExtentData == 0 || e.Depth != 0 {
		t.Fatalf("commit -d emptied the top: %+v", e)
	}
	if rc, _, e := pimg("commit", "-b", filepath.Join(dir, "other.raw"), l2); rc != 1 || !strings.Contains(e, "Did not find") {
		t.Fatalf("commit to a file outside the chain: %d %s", rc, e)
	}
}
