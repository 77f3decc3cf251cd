package imgtool

import (
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
)

// mixedSource writes a 64 MiB raw image of random, zero and hole regions
// and converts it to format (benchmark input).
func mixedSource(b *testing.B, format string) string {
	b.Helper()
	dir := b.TempDir()
	raw := filepath.Join(dir, "src.raw")
	f, err := os.Create(raw)
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewSource(1))
	buf := make([]byte, 1<<20)
	for i := int64(0); i < 64; i++ {
		if i%3 != 2 {
			r.Read(buf)
			f.WriteAt(buf, i<<20)
		}
	}
	f.Truncate(64 << 20)
	f.Close()
	if format == "raw" {
		return raw
	}
	out := filepath.Join(dir, "src."+format)
	var o, e bytes.Buffer
	if rc := Main([]string{"convert", "-O", format, raw, out}, &o, &e); rc != 0 {
		b.Fatal(e.String())
	}
	return out
}

func benchConvert(b *testing.B, from, to string, extra ...string) {
	src := mixedSource(b, from)
	b.SetBytes(64 << 20)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		out := filepath.Join(b.TempDir(), "out")
		var o, e bytes.Buffer
		args := append(append([]string{"convert", "-O", to}, extra...), src, out)
		if rc := Main(args, &o, &e); rc != 0 {
			b.Fatal(e.String())
		}
	}
}

func BenchmarkConvertRawToQcow2(b *testing.B) { benchConvert(b, "raw", "qcow2") }
func BenchmarkConvertQcow2ToRaw(b *testing.B) { benchConvert(b, "qcow2", "raw") }
func BenchmarkConvertRawToQED(b *testing.B)   { benchConvert(b, "raw", "qed") }
func BenchmarkConvertCompressed(b *testing.B) { benchConvert(b, "raw", "qcow2", "-c") }
