package blk

import (
	"encoding/binary"
	"testing"

	"github.com/petrel-vmm/petrel/devices/virtio"
	"github.com/petrel-vmm/petrel/vmm/guestmem"
)

// FuzzRequest serves fuzzed guest memory (descriptor table, available ring,
// request headers, discard segments, buffers) against a real raw image: no
// panic, used lengths within the writable bytes, status values from the
// spec, and the disk never grows.
func FuzzRequest(f *testing.F) {
	const size = 8
	seed := make([]byte, 0x800)
	le := binary.LittleEndian
	// desc 0: header at 0x1400 (16, NEXT 1); desc 1: data 0x1500 (512, W|NEXT 2);
	// desc 2: status 0x1700 (1, W). Header: IN sector 1.
	put := func(i int, addr uint64, n uint32, flags, next uint16) {
		le.PutUint64(seed[16*i:], addr)
		le.PutUint32(seed[16*i+8:], n)
		le.PutUint16(seed[16*i+12:], flags)
		le.PutUint16(seed[16*i+14:], next)
	}
	put(0, 0x1400, 16, 1, 1)
	put(1, 0x1500, 512, 3, 2)
	put(2, 0x1700, 1, 2, 0)
	le.PutUint16(seed[16*size+2:], 1) // avail idx
	le.PutUint32(seed[0x400:], TypeIn)
	le.PutUint64(seed[0x408:], 1)
	f.Add(seed)
	out := append([]byte(nil), seed...)
	le.PutUint32(out[0x400:], TypeWriteZeroes)
	put(1, 0x1500, 16, 1, 2)
	le.PutUint64(out[0x500:], 3)
	le.PutUint32(out[0x508:], 2)
	le.PutUint32(out[0x50c:], 1)
	f.Add(out)

	img, _ := newRawImage(f, false)
	b, err := New(img, Options{Serial: "fuzz"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ram := make([]byte, 0x1000)
		copy(ram, data)
		mem := guestmem.New()
		if err := mem.Add(0x1000, ram); err != nil {
			t.Fatal(err)
		}
		q, err := virtio.NewQueue(mem, virtio.QueueConfig{Size: size, Desc: 0x1000, Driver: 0x1000 + 16*size,
			Device: 0x1000 + 0x200, EventIdx: true, IndirectDescOK: true})
		if err != nil {
			t.Fatal(err)
		}
		c := virtio.NewChain()
		for range size + 1 {
			if !q.Pop(c) {
				break
			}
			n := b.HandleChain(0, c)
			if uint64(n) > c.WriteLen {
				t.Fatalf("used len %d > writable %d", n, c.WriteLen)
			}
			if n > 0 {
				if st := statusByte(c); st == nil || st[0] > StatusUnsupp {
					t.Fatalf("status %v", st)
				}
			}
			q.Push(c.Head, n)
		}
		if img.Size() != diskSize {
			t.Fatalf("disk size changed to %d", img.Size())
		}
	})
}
