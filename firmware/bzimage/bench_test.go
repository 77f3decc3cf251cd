package bzimage

import (
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkDecompress measures host-side decompression of a 4 MiB
// synthetic vmlinux in every format (MB/s of output).
func BenchmarkDecompress(b *testing.B) {
	elfData := makeELF(b, testEntry, 4<<20)
	for _, c := range compressors {
		b.Run(c.name, func(b *testing.B) {
			img, err := Parse(makeBzImage(c.compress(b, elfData), uint32(len(elfData)+4096)))
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(elfData)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := img.Decompress(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLoadPVHCached is the second boot: the kernel file is hashed and
// the cached vmlinux read back.
func BenchmarkLoadPVHCached(b *testing.B) {
	dir := b.TempDir()
	kpath := filepath.Join(dir, "bzImage")
	elfData := makeELF(b, testEntry, 4<<20)
	if err := os.WriteFile(kpath, makeBzImage(goZstd(b, elfData), 8<<20), 0o644); err != nil {
		b.Fatal(err)
	}
	if _, _, _, err := LoadPVH(kpath, dir); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(elfData)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, cached, err := LoadPVH(kpath, dir); err != nil || !cached {
			b.Fatalf("cached=%v err=%v", cached, err)
		}
	}
}
