package vmstate

import (
	"bytes"
	"io"
	"testing"
)

// FuzzReader: any stream is read to an error or to its end, within its
// limit, with no panic and no allocation beyond MaxSection.
func FuzzReader(f *testing.F) {
	f.Add(sample(f))
	f.Add([]byte(Magic + "\x01\x00\x00\x00\x00\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := NewReader(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		for i := 0; i < 64; i++ {
			name, ver, n, err := r.Next()
			if err != nil || name == "" {
				return
			}
			switch {
			case name == RAMSection:
				ReadRAM(r, ver, []RAMRegion{{GuestAddr: 0, Mem: make([]byte, 4*PageSize)}, {GuestAddr: 1 << 32, Mem: make([]byte, PageSize)}})
			case n <= 1<<16:
				p, err := r.Section()
				if err != nil {
					return
				}
				d := NewDec(name, p)
				d.Version(3)
				d.Bytes(1 << 10)
				d.String(64)
				d.Finish()
			default:
				io.Copy(io.Discard, r.Stream())
			}
		}
	})
}
