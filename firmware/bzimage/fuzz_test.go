package bzimage

import (
	"testing"
	"time"
)

// noHang fails a fuzz iteration that takes longer than a few seconds: a
// decoder that spins on bad input is a bug the fuzzer must report, not wait out.
func noHang(t *testing.T, fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		panic("decoding did not finish within 5s")
	}
}

// fuzzLimit keeps each fuzz iteration's output small.
const fuzzLimit = 1 << 20

func FuzzParse(f *testing.F) {
	elfData := makeELF(f, testEntry, 2048)
	f.Add(makeBzImage(goGzip(f, elfData), 1<<16))
	f.Add(makeBzImage(goZstd(f, elfData), 1<<16))
	f.Add(makeBzImage(goLZ4Legacy(f, elfData), 1<<16))
	f.Fuzz(func(t *testing.T, data []byte) {
		img, err := Parse(data)
		if err != nil {
			return
		}
		if img.InitSize == 0 || img.InitSize > fuzzLimit {
			img.InitSize = fuzzLimit
		}
		noHang(t, func() {
			out, err := img.Decompress()
			if err == nil && len(out) > img.Limit() {
				t.Errorf("decompressed %d bytes past the limit %d", len(out), img.Limit())
			}
			FindPVHEntry(out)
		})
	})
}

func FuzzDecompress(f *testing.F) {
	elfData := makeELF(f, testEntry, 2048)
	f.Add(uint8(Gzip), goGzip(f, elfData))
	f.Add(uint8(LZMA), goLZMA(f, elfData))
	f.Add(uint8(XZ), goXZ(f, elfData))
	f.Add(uint8(LZ4), goLZ4Legacy(f, elfData))
	f.Add(uint8(Zstd), goZstd(f, elfData))
	f.Fuzz(func(t *testing.T, format uint8, payload []byte) {
		noHang(t, func() {
			out, err := decompress(Compression(format%8), payload, fuzzLimit)
			if err == nil && len(out) > fuzzLimit {
				t.Errorf("%d bytes past the limit", len(out))
			}
		})
	})
}

func FuzzFindPVHEntry(f *testing.F) {
	f.Add(makeELF(f, testEntry, 64))
	f.Add(makeELF(f, 0, 64))
	f.Fuzz(func(t *testing.T, data []byte) {
		FindPVHEntry(data)
	})
}

// FuzzLZO1X drives the LZO1X decoder directly, without lzop's checksums.
func FuzzLZO1X(f *testing.F) {
	f.Add([]byte{0x11, 0x00, 0x00}, uint16(0))
	f.Add([]byte{0x15, 'a', 'b', 'c', 'd', 0x11, 0x00, 0x00}, uint16(4))
	f.Add([]byte{0x00, 0x00, 0x01, 'x', 0x20, 0x00, 0x00, 0x11, 0x00, 0x00}, uint16(300))
	f.Fuzz(func(t *testing.T, src []byte, n uint16) {
		out, err := lzo1xDecompress(nil, src, int(n))
		if err == nil && len(out) != int(n) {
			t.Fatalf("decoded %d bytes, want %d", len(out), n)
		}
	})
}
