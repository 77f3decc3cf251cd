package qcow2

import (
	"bufio"
	"fmt"
	"io"
	"math/rand"
	"path/filepath"
	"testing"

	"github.com/petrel-vmm/petrel/block"
)

const benchSize = 256 << 20

// benchImage creates a benchmark image, filled when fill is set.
func benchImage(b *testing.B, fill bool) *Image {
	b.Helper()
	path := filepath.Join(b.TempDir(), "bench.qcow2")
	if err := Create(path, block.CreateOptions{Size: benchSize}); err != nil {
		b.Fatal(err)
	}
	img, err := Open(path, block.Options{})
	if err != nil {
		b.Fatal(err)
	}
	if fill {
		buf := make([]byte, 1<<20)
		rand.New(rand.NewSource(1)).Read(buf)
		for off := int64(0); off < benchSize; off += int64(len(buf)) {
			if _, err := img.WriteAt(buf, off); err != nil {
				b.Fatal(err)
			}
		}
		if err := img.Flush(); err != nil {
			b.Fatal(err)
		}
	}
	b.Cleanup(func() { img.Close() })
	return img
}

func BenchmarkRandRead4K(b *testing.B) {
	img := benchImage(b, true)
	buf := make([]byte, 4096)
	rng := rand.New(rand.NewSource(2))
	b.SetBytes(4096)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := img.ReadAt(buf, rng.Int63n(benchSize/4096)*4096); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRandWrite4K overwrites allocated clusters (the steady state of a
// guest disk).
func BenchmarkRandWrite4K(b *testing.B) {
	img := benchImage(b, true)
	buf := make([]byte, 4096)
	rng := rand.New(rand.NewSource(3))
	b.SetBytes(4096)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := img.WriteAt(buf, rng.Int63n(benchSize/4096)*4096); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRandWrite4KAllocating writes into an empty image: every write
// to a new cluster allocates it (copy-on-write fill of the rest).
func BenchmarkRandWrite4KAllocating(b *testing.B) {
	img := benchImage(b, false)
	buf := make([]byte, 4096)
	rng := rand.New(rand.NewSource(4))
	b.SetBytes(4096)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := img.WriteAt(buf, rng.Int63n(benchSize/4096)*4096); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSeqWrite64K(b *testing.B) {
	img := benchImage(b, false)
	buf := make([]byte, 65536)
	b.SetBytes(65536)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := img.WriteAt(buf, int64(i)*65536%benchSize); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSeqRead64K(b *testing.B) {
	img := benchImage(b, true)
	buf := make([]byte, 65536)
	b.SetBytes(65536)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := img.ReadAt(buf, int64(i)*65536%benchSize); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParallelRandWrite4K: writers on several goroutines.
func BenchmarkParallelRandWrite4K(b *testing.B) {
	img := benchImage(b, true)
	b.SetBytes(4096)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 4096)
		rng := rand.New(rand.NewSource(rand.Int63()))
		for pb.Next() {
			if _, err := img.WriteAt(buf, rng.Int63n(benchSize/4096)*4096); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSaveVMState saves the state of a 512 MiB guest with 128 MiB
// touched (every fourth 1 MiB non-zero) in 4 KiB page writes, and reads
// it back once, the shape of issue 13's savevm bench. Bytes/op is the
// state's size; the file grows by the touched part only.
func BenchmarkSaveVMState(b *testing.B) {
	img := benchImage(b, false)
	page := make([]byte, 4096)
	rand.New(rand.NewSource(4)).Read(page)
	zero := make([]byte, 4096)
	const ram = 512 << 20
	state := func(w io.Writer) error {
		for off := 0; off < ram; off += len(page) {
			p := zero
			if off>>20%4 == 0 {
				p = page
			}
			if _, err := w.Write(p); err != nil {
				return err
			}
		}
		return nil
	}
	b.SetBytes(ram)
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("vm%d", i)
		if err := img.CreateSnapshotWithState(name, 1, state); err != nil {
			b.Fatal(err)
		}
		r, size, err := img.VMState(name)
		if err != nil {
			b.Fatal(err)
		}
		if n, err := io.Copy(io.Discard, bufio.NewReaderSize(io.NewSectionReader(r, 0, size), 1<<20)); err != nil || n != ram {
			b.Fatalf("read back %d bytes: %v", n, err)
		}
		b.StopTimer()
		if err := img.DeleteSnapshot(name); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
