package qcow2

import (
	"fmt"
	"math/rand"
	"testing"

	"github.com/petrel-vmm/petrel/block"
)

// TestWriteCompressedInterop: clusters written with WriteCompressed (zlib
// and zstd, packed several to a host cluster) are read back by qemu-img,
// survive overwrites and snapshots, and check clean.
func TestWriteCompressedInterop(t *testing.T) {
	type tc struct {
		ctype string
		cs    int64
		ext   bool
	}
	for _, c := range []tc{{"zlib", 4096, false}, {"zlib", 65536, false}, {"zstd", 4096, false}, {"zstd", 65536, false}, {"zlib", 65536, true}} {
		ctype, cs := c.ctype, c.cs
		t.Run(fmt.Sprintf("%s_cs%d_extl2=%v", ctype, cs, c.ext), func(t *testing.T) {
			t.Parallel()
			o := block.CreateOptions{Size: 2<<20 + 1536, ClusterSize: cs, CompressionType: ctype, ExtendedL2: c.ext}
			img, path := mustCreate(t, o)
			model := make([]byte, img.Size())
			rng := rand.New(rand.NewSource(cs))
			for off := int64(0); off < img.Size(); off += cs {
				n := min(cs, img.Size()-off)
				c := model[off : off+n]
				// Text-like data compresses; every 5th cluster is random.
				for i := range c {
					c[i] = "abcdefgh"[rng.Intn(4+int(off/cs)%4)]
				}
				if (off/cs)%5 == 4 {
					rng.Read(c)
				}
				if err := img.WriteCompressed(c, off); err != nil {
					t.Fatalf("compressed write at %d: %v", off, err)
				}
			}
			assertEqual(t, "engine", readAll(t, img), model)
			if err := img.CreateSnapshot("s"); err != nil {
				t.Fatal(err)
			}
			randomOps(t, img, model, rng, 50, cs*2)
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			qemuCheck(t, path, false)
			assertEqual(t, "qemu-img convert", qemuRaw(t, path), model)
		})
	}
}
