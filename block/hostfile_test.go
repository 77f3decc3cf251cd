package block

import (
	"bytes"
	"errors"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
)

// TestHostFileDirect drives random unaligned reads and writes (including
// ones past the end of the file, at unaligned buffer addresses) through an
// O_DIRECT HostFile with 512- and 4096-byte alignment and checks the bytes
// and the exact file size against an in-memory model.
func TestHostFileDirect(t *testing.T) {
	for _, align := range []int64{0, 4096} {
		path := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(path, bytes.Repeat([]byte{0xa5}, 3000), 0o644); err != nil {
			t.Fatal(err)
		}
		hf, err := OpenHostFile(path, false, true)
		if err != nil {
			t.Fatalf("open O_DIRECT in %s: %v", path, err)
		}
		if align != 0 {
			if err := hf.RaiseAlignment(align); err != nil {
				t.Fatal(err)
			}
		}
		model := bytes.Repeat([]byte{0xa5}, 3000)
		rng := rand.New(rand.NewSource(align))
		for i := 0; i < 400; i++ {
			off := rng.Int63n(int64(len(model)) + 9000)
			n := 1 + rng.Intn(10000)
			if rng.Intn(3) == 0 {
				off &^= 4095
				n = (n + 4095) &^ 4095
			}
			if rng.Intn(2) == 0 {
				p := make([]byte, n+1)[1:]
				rng.Read(p)
				if _, err := hf.WriteAt(p, off); err != nil {
					t.Fatalf("write %d+%d: %v", off, n, err)
				}
				if end := off + int64(n); end > int64(len(model)) {
					model = append(model, make([]byte, end-int64(len(model)))...)
				}
				copy(model[off:], p)
				continue
			}
			p := make([]byte, n+1)[1:]
			m, err := hf.ReadAt(p, off)
			want := max(0, min(int64(n), int64(len(model))-off))
			if int64(m) != want || (want < int64(n)) != errors.Is(err, io.EOF) || (err != nil && !errors.Is(err, io.EOF)) {
				t.Fatalf("read %d+%d of %d bytes: %d, %v", off, n, len(model), m, err)
			}
			if m > 0 && !bytes.Equal(p[:m], model[off:off+int64(m)]) {
				t.Fatalf("read %d+%d: wrong bytes", off, n)
			}
		}
		if err := hf.Close(); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, model) {
			t.Fatalf("alignment %d: file (%d bytes) differs from the model (%d bytes)", align, len(got), len(model))
		}
	}
}
