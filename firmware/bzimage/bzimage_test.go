package bzimage

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/petrel-vmm/petrel/internal/testutil"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"
)

const testEntry = 0x1000bc0

// makeELF builds a minimal ELF64 image: header, one PT_LOAD and one
// PT_NOTE program header, the notes, then body. With entry == 0 there is no
// PVH note. The body has x86-like call instructions (E8 rel32) so that the
// xz BCJ filter has work to do.
func makeELF(t testing.TB, entry uint32, bodyLen int) []byte {
	t.Helper()
	le := binary.LittleEndian
	var notes bytes.Buffer
	note := func(name string, typ uint32, desc []byte) {
		n := append([]byte(name), 0)
		for len(n)%4 != 0 {
			n = append(n, 0)
		}
		d := append([]byte(nil), desc...)
		for len(d)%4 != 0 {
			d = append(d, 0)
		}
		binary.Write(&notes, le, [3]uint32{uint32(len(name) + 1), uint32(len(desc)), typ})
		notes.Write(n)
		notes.Write(d)
	}
	note("Linux", 6, []byte("petrel\x00"))
	if entry != 0 {
		d := make([]byte, 8)
		le.PutUint64(d, uint64(entry))
		note("Xen", XenElfnotePhys32Entry, d)
	}
	const ehsize, phsize = 64, 56
	noteOff := uint64(ehsize + 2*phsize)
	bodyOff := noteOff + uint64(notes.Len())
	h := make([]byte, ehsize)
	copy(h, []byte{0x7f, 'E', 'L', 'F', 2, 1, 1})
	le.PutUint16(h[16:], 2)    // ET_EXEC
	le.PutUint16(h[18:], 0x3e) // x86-64
	le.PutUint32(h[20:], 1)
	le.PutUint64(h[24:], 0xffffffff81000000)
	le.PutUint64(h[32:], ehsize) // phoff
	le.PutUint16(h[52:], ehsize)
	le.PutUint16(h[54:], phsize)
	le.PutUint16(h[56:], 2)
	ph := func(typ uint32, off, size uint64) []byte {
		p := make([]byte, phsize)
		le.PutUint32(p[0:], typ)
		le.PutUint32(p[4:], 5)
		le.PutUint64(p[8:], off)
		le.PutUint64(p[16:], 0xffffffff81000000+off)
		le.PutUint64(p[24:], 0x1000000+off)
		le.PutUint64(p[32:], size)
		le.PutUint64(p[40:], size)
		le.PutUint64(p[48:], 4)
		return p
	}
	out := append(h, ph(1, bodyOff, uint64(bodyLen))...)
	out = append(out, ph(4, noteOff, uint64(notes.Len()))...)
	out = append(out, notes.Bytes()...)
	r := rand.New(rand.NewSource(int64(bodyLen)))
	body := make([]byte, bodyLen)
	for i := 0; i < bodyLen; {
		switch r.Intn(4) {
		case 0: // call rel32 with a small displacement
			if i+5 <= bodyLen {
				body[i] = 0xe8
				le.PutUint32(body[i+1:], uint32(int32(r.Intn(1<<16)-1<<15)))
				i += 5
				continue
			}
		case 1:
			copy(body[i:], "mov %rsp,%rbp;")
			i += 14
			continue
		}
		body[i] = byte(r.Intn(8))
		i++
	}
	return append(out, body...)
}

// makeBzImage wraps a payload in a setup header (protocol 2.15).
func makeBzImage(payload []byte, initSize uint32) []byte {
	le := binary.LittleEndian
	const setupSects = 3
	setupSize := (setupSects + 1) * 512
	const pmHeader = 0x200 // stand-in for the decompressor stub before the payload
	data := make([]byte, setupSize+pmHeader+len(payload)+64)
	data[offSetupSects] = setupSects
	le.PutUint16(data[offBootFlag:], bootFlag)
	le.PutUint32(data[offHeaderMagic:], headerMagic)
	le.PutUint16(data[offVersion:], 0x020f)
	data[offLoadFlags] = LoadedHigh
	le.PutUint32(data[offCode32Start:], 0x100000)
	le.PutUint32(data[offKernelAlignment:], 0x200000)
	data[offRelocatable] = 1
	le.PutUint16(data[offXLoadFlags:], XLFKernel64|XLFCanBeLoadedAbove4G)
	le.PutUint32(data[offPayloadOffset:], pmHeader)
	le.PutUint32(data[offPayloadLength:], uint32(len(payload)))
	le.PutUint64(data[offPrefAddress:], 0x1000000)
	le.PutUint32(data[offInitSize:], initSize)
	copy(data[setupSize+pmHeader:], payload)
	return data
}

// withSize appends the kernel build's size trailer (scripts/Makefile.lib size_append).
func withSize(stream []byte, n int) []byte {
	return binary.LittleEndian.AppendUint32(append([]byte(nil), stream...), uint32(n))
}

func goGzip(t testing.TB, in []byte) []byte {
	var b bytes.Buffer
	w, _ := gzip.NewWriterLevel(&b, 9)
	w.Write(in)
	w.Close()
	return b.Bytes() // gzip's own ISIZE is the trailer
}

func goLZMA(t testing.TB, in []byte) []byte {
	var b bytes.Buffer
	w, err := lzma.WriterConfig{SizeInHeader: false, EOSMarker: true}.NewWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(in)
	w.Close()
	return withSize(b.Bytes(), len(in))
}

func goXZ(t testing.TB, in []byte) []byte {
	var b bytes.Buffer
	w, err := xz.NewWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(in)
	w.Close()
	return withSize(b.Bytes(), len(in))
}

func goLZ4Legacy(t testing.TB, in []byte) []byte {
	var b bytes.Buffer
	w := lz4.NewWriter(&b)
	if err := w.Apply(lz4.LegacyOption(true)); err != nil {
		t.Fatal(err)
	}
	w.Write(in)
	w.Close()
	return withSize(b.Bytes(), len(in))
}

func goZstd(t testing.TB, in []byte) []byte {
	w, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBestCompression))
	defer w.Close()
	return withSize(w.EncodeAll(in, nil), len(in))
}

// cli compresses with a Debian tool the way scripts/Makefile.lib does.
func cli(tool string, args ...string) func(t testing.TB, in []byte) []byte {
	return func(t testing.TB, in []byte) []byte {
		t.Helper()
		p := testutil.NeedTool(t, tool)
		cmd := exec.Command(p, args...)
		cmd.Stdin = bytes.NewReader(in)
		var errb bytes.Buffer
		cmd.Stderr = &errb
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s %v: %v: %s", tool, args, err, errb.String())
		}
		if tool == "gzip" {
			return out
		}
		return withSize(out, len(in))
	}
}

var compressors = []struct {
	name     string
	want     Compression
	compress func(t testing.TB, in []byte) []byte
}{
	{"gzip-go", Gzip, goGzip},
	{"gzip-cli", Gzip, cli("gzip", "-n", "-9")},
	{"bzip2-cli", Bzip2, cli("bzip2", "-9")},
	{"lzma-go", LZMA, goLZMA},
	{"lzma-cli", LZMA, cli("lzma", "-9")},
	{"xz-go", XZ, goXZ},
	// scripts/xz_wrap.sh: the x86 BCJ filter before LZMA2, CRC32 check.
	{"xz-cli-bcj", XZ, cli("xz", "--check=crc32", "--x86", "--lzma2=,dict=1MiB")},
	{"xz-cli-crc64", XZ, cli("xz", "--lzma2=preset=1")},
	{"lz4-go-legacy", LZ4, goLZ4Legacy},
	{"lz4-cli-legacy", LZ4, cli("lz4", "-l", "-9", "-c")},
	{"zstd-go", Zstd, goZstd},
	{"zstd-cli", Zstd, cli("zstd", "-19", "-c")},
	// scripts/Makefile.lib cmd_zstd22: a 128 MiB window declared from stdin.
	{"zstd-cli-ultra22", Zstd, cli("zstd", "--ultra", "-22", "-c")},
	{"lzo-cli", LZO, cli("lzop", "-9", "-c")},
	{"lzo-cli-fast-crc", LZO, cli("lzop", "-1", "-c", "--crc32")},
}

func TestDecompressEveryFormat(t *testing.T) {
	elfData := makeELF(t, testEntry, 300<<10)
	for _, c := range compressors {
		t.Run(c.name, func(t *testing.T) {
			payload := c.compress(t, elfData)
			data := makeBzImage(payload, uint32(len(elfData)+4096))
			img, err := Parse(data)
			if err != nil {
				t.Fatal(err)
			}
			if img.Compression != c.want {
				t.Fatalf("compression %v, want %v", img.Compression, c.want)
			}
			got, entry, err := img.PVHKernel()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, elfData) {
				t.Fatalf("decompressed %d bytes differ from the %d-byte original", len(got), len(elfData))
			}
			if entry != testEntry {
				t.Fatalf("entry %#x, want %#x", entry, testEntry)
			}
		})
	}
}

func TestCorruptPayloadsFail(t *testing.T) {
	elfData := makeELF(t, testEntry, 64<<10)
	for _, c := range compressors {
		t.Run(c.name, func(t *testing.T) {
			payload := c.compress(t, elfData)
			cases := map[string][]byte{
				"truncated-half": withSize(payload[:len(payload)/2], len(elfData)),
				"truncated-end":  withSize(payload[:len(payload)-12], len(elfData)),
				"wrong-size":     withSize(payload[:len(payload)-4], len(elfData)+1),
			}
			flipped := append([]byte(nil), payload...)
			for i := len(flipped) / 3; i < len(flipped)/3+8; i++ {
				flipped[i] ^= 0x5a
			}
			cases["flipped"] = flipped
			for name, p := range cases {
				if c.want == Gzip && name == "wrong-size" {
					p = append(append([]byte(nil), payload[:len(payload)-4]...), 1, 0, 0, 0)
				}
				img, err := Parse(makeBzImage(p, uint32(len(elfData)+4096)))
				if err != nil {
					t.Fatal(err)
				}
				out, err := img.Decompress()
				if err == nil {
					// A flip in stored (uncompressed) data may decode; it must not give the original.
					if name == "flipped" && !bytes.Equal(out, elfData) {
						continue
					}
					t.Errorf("%s: decompressed without an error", name)
				}
			}
		})
	}
}

func TestInitSizeBoundsOutput(t *testing.T) {
	elfData := makeELF(t, testEntry, 64<<10)
	img, err := Parse(makeBzImage(goZstd(t, elfData), 4096))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.Decompress(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("declared size beyond init_size: err %v, want ErrCorrupt", err)
	}
	// A lying trailer that claims less than the stream holds is stopped at the limit.
	p := goGzip(t, elfData)
	p = withSize(p[:len(p)-4], 100)
	img, _ = Parse(makeBzImage(p, 8192))
	if _, err := img.Decompress(); err == nil {
		t.Fatal("oversized gzip output accepted")
	}
}

func TestParseRejects(t *testing.T) {
	good := makeBzImage(goGzip(t, makeELF(t, testEntry, 1024)), 1<<20)
	mod := func(f func(d []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	le := binary.LittleEndian
	cases := map[string][]byte{
		"short":       good[:0x200],
		"no-bootflag": mod(func(d []byte) []byte { d[offBootFlag] = 0; return d }),
		"no-magic":    mod(func(d []byte) []byte { d[offHeaderMagic] = 'X'; return d }),
		"old":         mod(func(d []byte) []byte { le.PutUint16(d[offVersion:], 0x0206); return d }),
		"setup-past":  mod(func(d []byte) []byte { d[offSetupSects] = 0xff; return d }),
		"payload-past": mod(func(d []byte) []byte {
			le.PutUint32(d[offPayloadLength:], 0xffffff00)
			return d
		}),
		"payload-offset-wrap": mod(func(d []byte) []byte {
			le.PutUint32(d[offPayloadOffset:], 0xffffffff)
			return d
		}),
	}
	for name, d := range cases {
		if _, err := Parse(d); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
	img, err := Parse(good)
	if err != nil {
		t.Fatal(err)
	}
	if img.Version != 0x020f || img.SetupSize != 2048 || img.PrefAddress != 0x1000000 ||
		!img.Relocatable || img.KernelAlignment != 0x200000 || img.XLoadFlags&XLFKernel64 == 0 {
		t.Fatalf("header fields: %+v", img)
	}
	if len(img.ProtectedMode(good)) != len(good)-2048 {
		t.Fatal("protected-mode part has the wrong length")
	}
}

func TestNoPVHNoteAndUnsupported(t *testing.T) {
	img, _ := Parse(makeBzImage(goGzip(t, makeELF(t, 0, 4096)), 1<<20))
	if _, _, err := img.PVHKernel(); !errors.Is(err, ErrNoPVH) {
		t.Fatalf("kernel without a note: %v, want ErrNoPVH", err)
	}
	img, _ = Parse(makeBzImage(withSize([]byte("\x89LZO\x00\r\n\x1a\n"), 4096), 1<<20))
	if img.Compression != LZO {
		t.Fatalf("lzo magic detected as %v", img.Compression)
	}
	if _, err := img.Decompress(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("truncated lzop header: %v, want ErrCorrupt", err)
	}
	img, _ = Parse(makeBzImage(withSize([]byte("plain text"), 10), 1<<20))
	if _, err := img.Decompress(); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("unknown magic: %v, want ErrUnsupported", err)
	}
	if _, ok := FindPVHEntry([]byte("not an elf")); ok {
		t.Fatal("entry found in garbage")
	}
}

func TestLoadPVHCache(t *testing.T) {
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	kpath := filepath.Join(dir, "bzImage")
	elf1 := makeELF(t, testEntry, 32<<10)
	if err := os.WriteFile(kpath, makeBzImage(goZstd(t, elf1), 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	got, entry, cached, err := LoadPVH(kpath, cache)
	if err != nil || cached || entry != testEntry || !bytes.Equal(got, elf1) {
		t.Fatalf("first load: cached=%v entry=%#x err=%v", cached, entry, err)
	}
	got, entry, cached, err = LoadPVH(kpath, cache)
	if err != nil || !cached || entry != testEntry || !bytes.Equal(got, elf1) {
		t.Fatalf("second load: cached=%v entry=%#x err=%v", cached, entry, err)
	}
	// A new kernel at the same path is a new key: decompressed afresh.
	elf2 := makeELF(t, testEntry+0x40, 40<<10)
	os.WriteFile(kpath, makeBzImage(goXZ(t, elf2), 1<<20), 0o644)
	got, entry, cached, err = LoadPVH(kpath, cache)
	if err != nil || cached || entry != testEntry+0x40 || !bytes.Equal(got, elf2) {
		t.Fatalf("changed kernel: cached=%v entry=%#x err=%v", cached, entry, err)
	}
	// A damaged cache entry is ignored and replaced.
	ents, _ := filepath.Glob(filepath.Join(cache, "*.vmlinux"))
	if len(ents) != 2 {
		t.Fatalf("cache holds %d entries, want 2", len(ents))
	}
	for _, e := range ents {
		os.WriteFile(e, []byte("junk"), 0o644)
	}
	got, _, cached, err = LoadPVH(kpath, cache)
	if err != nil || cached || !bytes.Equal(got, elf2) {
		t.Fatalf("damaged cache: cached=%v err=%v", cached, err)
	}
	if tmp, _ := filepath.Glob(filepath.Join(cache, ".tmp-*")); len(tmp) != 0 {
		t.Fatalf("temporary files left behind: %v", tmp)
	}
	// Not a bzImage: a clear error.
	os.WriteFile(kpath, []byte("hello"), 0o644)
	if _, _, _, err := LoadPVH(kpath, cache); !errors.Is(err, ErrNotBzImage) {
		t.Fatalf("garbage kernel: %v", err)
	}
}

func TestBCJRoundTripKnownVector(t *testing.T) {
	// E8 with an absolute target 0x105 at position 0 becomes relative 0x100.
	buf := []byte{0xe8, 0x05, 0x01, 0x00, 0x00, 0x90, 0x90, 0x90, 0x90}
	unBCJx86(buf, 0)
	if got := binary.LittleEndian.Uint32(buf[1:]); got != 0x100 {
		t.Fatalf("BCJ decode gave %#x, want 0x100", got)
	}
}

// TestLZOLongRunsAndMatches feeds lzop data with long zero runs, long
// repeats and incompressible stretches (stored blocks), which exercise the
// extended lengths, every match kind and uncompressed blocks.
func TestLZOLongRunsAndMatches(t *testing.T) {
	var in []byte
	in = append(in, make([]byte, 300<<10)...)
	for i := 0; i < 5000; i++ {
		in = append(in, []byte("petrel lzo1x match test line ")...)
		in = append(in, byte(i), byte(i>>8))
	}
	r := rand.New(rand.NewSource(1))
	noise := make([]byte, 300<<10)
	r.Read(noise)
	in = append(in, noise...)
	for _, level := range []string{"-1", "-9"} {
		p := cli("lzop", level, "-c")(t, in)
		out, err := decompress(LZO, p, len(in))
		if err != nil {
			t.Fatalf("lzop %s: %v", level, err)
		}
		if !bytes.Equal(out, in) {
			t.Fatalf("lzop %s: output differs", level)
		}
		if _, err := decompress(LZO, p, len(in)-1); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("lzop %s: output over the limit gave %v", level, err)
		}
	}
}

func TestOpenPVH(t *testing.T) {
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	kpath := filepath.Join(dir, "bzImage")
	elf1 := makeELF(t, testEntry, 32<<10)
	if err := os.WriteFile(kpath, makeBzImage(goLZ4Legacy(t, elf1), 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	for i, wantCached := range []bool{false, true} {
		f, entry, cached, err := OpenPVH(kpath, cache)
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		got, err := io.ReadAll(f)
		f.Close()
		if err != nil || cached != wantCached || entry != testEntry || !bytes.Equal(got, elf1) {
			t.Fatalf("open %d: cached=%v entry=%#x err=%v same=%v", i, cached, entry, err, bytes.Equal(got, elf1))
		}
	}
	// An unwritable cache still serves the kernel (from a temporary file).
	blocker := filepath.Join(dir, "file-not-dir")
	os.WriteFile(blocker, nil, 0o644)
	f, entry, cached, err := OpenPVH(kpath, filepath.Join(blocker, "cache"))
	if err != nil || cached || entry != testEntry {
		t.Fatalf("unwritable cache: cached=%v entry=%#x err=%v", cached, entry, err)
	}
	got, _ := io.ReadAll(f)
	f.Close()
	if !bytes.Equal(got, elf1) {
		t.Fatal("unwritable cache: wrong kernel bytes")
	}
	if _, _, _, err := OpenPVH(filepath.Join(dir, "missing"), cache); err == nil {
		t.Fatal("missing kernel opened")
	}
}

// TestOpenPVHStatIndex: a kernel file seen before and unchanged is found
// through its stat index entry without hashing it, and a kernel rewritten
// in place (same path, other content) is never served the old kernel's
// cache entry.
func TestOpenPVHStatIndex(t *testing.T) {
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	kpath := filepath.Join(dir, "bzImage")
	open := func(want []byte, wantCached bool) {
		t.Helper()
		f, entry, cached, err := OpenPVH(kpath, cache)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(f)
		f.Close()
		if err != nil || cached != wantCached || entry != testEntry || !bytes.Equal(got, want) {
			t.Fatalf("cached=%v (want %v) entry=%#x err=%v same kernel=%v", cached, wantCached, entry, err, bytes.Equal(got, want))
		}
	}
	elf1, elf2 := makeELF(t, testEntry, 32<<10), makeELF(t, testEntry, 48<<10)
	bz1, bz2 := makeBzImage(goLZ4Legacy(t, elf1), 1<<20), makeBzImage(goLZ4Legacy(t, elf2), 1<<20)
	if err := os.WriteFile(kpath, bz1, 0o644); err != nil {
		t.Fatal(err)
	}
	open(elf1, false)
	sums, _ := filepath.Glob(filepath.Join(cache, "*.sum"))
	if len(sums) != 1 {
		t.Fatalf("index entries after the first open: %v", sums)
	}
	open(elf1, true)

	// The index is what the lookup uses: pointed at another cached kernel,
	// it serves that one (which a hash of the file would never do).
	fi, err := os.Stat(kpath)
	if err != nil {
		t.Fatal(err)
	}
	key, ok := statKey(kpath, fi)
	if !ok {
		t.Skip("no stat identity on this file system")
	}
	other := filepath.Join(dir, "other")
	os.WriteFile(other, bz2, 0o644)
	open2, _, _, err := OpenPVH(other, cache)
	if err != nil {
		t.Fatal(err)
	}
	open2.Close()
	otherSums, _ := filepath.Glob(filepath.Join(cache, "*.sum"))
	var otherDigest []byte
	for _, s := range otherSums {
		if s != filepath.Join(cache, key+".sum") {
			otherDigest, _ = os.ReadFile(s)
		}
	}
	os.WriteFile(filepath.Join(cache, key+".sum"), otherDigest, 0o644)
	open(elf2, true)

	// Rewritten in place: a new change time, a new key; the right kernel.
	os.WriteFile(filepath.Join(cache, key+".sum"), nil, 0o644) // undo the test's tampering
	if err := os.WriteFile(kpath, bz2, 0o644); err != nil {
		t.Fatal(err)
	}
	open(elf2, true) // elf2 is cached already (from "other"), under its own digest
	if err := os.WriteFile(kpath, bz1, 0o644); err != nil {
		t.Fatal(err)
	}
	open(elf1, true)
}

// TestOpenPVHWithoutHome: with no user cache directory ($HOME and
// $XDG_CACHE_HOME unset, as in a bare initramfs) the kernel still opens by
// PVH and is cached in a private directory under $TMPDIR, which
// DefaultCacheDir names in its note.
func TestOpenPVHWithoutHome(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("HOME", "")
	t.Setenv("XDG_CACHE_HOME", "")
	t.Setenv("TMPDIR", dir)
	kpath := filepath.Join(dir, "bzImage")
	elf1 := makeELF(t, testEntry, 32<<10)
	if err := os.WriteFile(kpath, makeBzImage(goLZ4Legacy(t, elf1), 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	for i, wantCached := range []bool{false, true} {
		f, entry, cached, err := OpenPVH(kpath, "")
		if err != nil {
			t.Fatalf("open %d without $HOME: %v", i, err)
		}
		f.Close()
		if cached != wantCached || entry != testEntry {
			t.Fatalf("open %d: cached=%v entry=%#x", i, cached, entry)
		}
	}
	cache, note, err := DefaultCacheDir()
	if err != nil || !strings.HasPrefix(cache, dir) || !strings.Contains(note, cache) {
		t.Fatalf("DefaultCacheDir = %q, note %q, err %v: want a directory under %s, named in the note", cache, note, err, dir)
	}
	if fi, err := os.Stat(cache); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("cache directory %v, err %v: want mode 0700", fi.Mode(), err)
	}
	// A directory others can write is not used.
	if err := os.Chmod(cache, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, _, err := DefaultCacheDir(); err == nil {
		t.Fatal("a world-writable cache directory was accepted")
	}
}
