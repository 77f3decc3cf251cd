//go:build amd64

package tests

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/petrel-vmm/petrel/machine/pc"
	"github.com/petrel-vmm/petrel/tests/guest"
	"github.com/pierrec/lz4/v4"
)

// wrapBzImage puts an ELF into a bzImage the way the kernel build does: a
// protocol 2.15 setup header, the compressed payload, and the 4-byte
// decompressed size after it (gzip's own ISIZE).
func wrapBzImage(t *testing.T, elf []byte, format string) []byte {
	t.Helper()
	var p bytes.Buffer
	switch format {
	case "gzip":
		w := gzip.NewWriter(&p)
		w.Write(elf)
		w.Close()
	case "lz4":
		w := lz4.NewWriter(&p)
		if err := w.Apply(lz4.LegacyOption(true)); err != nil {
			t.Fatal(err)
		}
		w.Write(elf)
		w.Close()
	case "zstd":
		w, _ := zstd.NewWriter(nil)
		p.Write(w.EncodeAll(elf, nil))
		w.Close()
	}
	payload := p.Bytes()
	if format != "gzip" {
		payload = binary.LittleEndian.AppendUint32(payload, uint32(len(elf)))
	}
	le := binary.LittleEndian
	const setupSects = 4
	setup := (setupSects + 1) * 512
	img := make([]byte, setup+len(payload))
	img[0x1f1] = setupSects
	le.PutUint16(img[0x1fe:], 0xaa55)
	copy(img[0x202:], "HdrS")
	le.PutUint16(img[0x206:], 0x020f)
	img[0x211] = 1 // LOADED_HIGH
	le.PutUint32(img[0x230:], 0x200000)
	img[0x234] = 1
	le.PutUint16(img[0x236:], 3) // XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G
	le.PutUint32(img[0x248:], 0) // payload right at the protected-mode start
	le.PutUint32(img[0x24c:], uint32(len(payload)))
	le.PutUint64(img[0x258:], 0x1000000)
	le.PutUint32(img[0x260:], uint32(len(elf))+1<<20)
	copy(img[setup:], payload)
	return img
}

// TestBzImagePVHBoot: a guest program wrapped as a bzImage boots through
// firmware/bzimage: machine/pc decompresses the payload on the host, finds
// the PVH note, enters it by PVH, and caches the vmlinux under the
// bzImage's SHA-256, which the second boot uses instead of decompressing.
func TestBzImagePVHBoot(t *testing.T) {
	elfPath := guest.Build(t, "poweroff.c")
	elf, err := os.ReadFile(elfPath)
	if err != nil {
		t.Fatal(err)
	}
	marker, err := os.ReadFile(guest.Build(t, "marker.c"))
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"gzip", "lz4", "zstd"} {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			cache := filepath.Join(dir, "cache")
			kpath := filepath.Join(dir, "bzImage")
			bz := wrapBzImage(t, elf, format)
			if err := os.WriteFile(kpath, bz, 0o644); err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(bz)
			entry := filepath.Join(cache, hex.EncodeToString(sum[:])+".vmlinux")
			r := runGuest(t, kpath, pc.Config{Cmdline: "petrel-test bzimage", KernelCacheDir: cache})
			mustPass(t, r)
			if p := r.Machine.BootProtocol(); p != pc.BootPVH {
				t.Fatalf("boot used %v, want pvh", p)
			}
			cached, err := os.ReadFile(entry)
			if err != nil || !bytes.Equal(cached, elf) {
				t.Fatalf("cache entry missing or not the ELF (%v)", err)
			}
			// Swap the cache entry for another program: the second boot
			// must run it, which proves it skipped decompression.
			if err := os.WriteFile(entry, marker, 0o644); err != nil {
				t.Fatal(err)
			}
			r = runGuest(t, kpath, pc.Config{KernelCacheDir: cache})
			mustPass(t, r)
			if !bytes.Contains([]byte(r.Serial), []byte("FROM-THE-KERNEL-CACHE")) {
				t.Fatal("second boot did not use the cached vmlinux")
			}
		})
	}
}
