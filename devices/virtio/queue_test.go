package virtio

import (
	"encoding/binary"
	"errors"
	"testing"
	"unsafe"

	"github.com/petrel-vmm/petrel/vmm/guestmem"
)

// ring is a queue laid out in a fresh guest memory at GPA base.
type ring struct {
	mem               *guestmem.Memory
	ram               []byte
	base              uint64
	desc, avail, used uint64
	size              uint16
}

func newRing(t testing.TB, size uint16, ramSize int) *ring {
	r := &ring{ram: make([]byte, ramSize), base: 0x1000, size: size, mem: guestmem.New()}
	if err := r.mem.Add(r.base, r.ram); err != nil {
		t.Fatal(err)
	}
	r.desc = r.base
	r.avail = r.desc + 16*uint64(size)
	r.used = (r.avail + 6 + 2*uint64(size) + 3) &^ 3
	return r
}

func (r *ring) queue(t testing.TB, eventIdx, indirect bool) *Queue {
	q, err := NewQueue(r.mem, QueueConfig{Size: r.size, Desc: r.desc, Driver: r.avail, Device: r.used,
		EventIdx: eventIdx, IndirectDescOK: indirect})
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func (r *ring) b(gpa uint64) []byte { return r.ram[gpa-r.base:] }

func (r *ring) putDesc(table uint64, i int, addr uint64, n uint32, flags, next uint16) {
	e := r.b(table + 16*uint64(i))
	binary.LittleEndian.PutUint64(e, addr)
	binary.LittleEndian.PutUint32(e[8:], n)
	binary.LittleEndian.PutUint16(e[12:], flags)
	binary.LittleEndian.PutUint16(e[14:], next)
}

func (r *ring) publish(slot, head uint16, idx uint16) {
	binary.LittleEndian.PutUint16(r.b(r.avail+4+2*uint64(slot%r.size)), head)
	binary.LittleEndian.PutUint16(r.b(r.avail+2), idx)
}

func TestParseChains(t *testing.T) {
	r := newRing(t, 8, 0x10000)
	q := r.queue(t, false, true)
	c := NewChain()
	buf := r.base + 0x8000
	// Direct chain: readable 16, writable 512 + 1.
	r.putDesc(r.desc, 3, buf, 16, descFNext, 5)
	r.putDesc(r.desc, 5, buf+0x100, 512, descFNext|descFWrite, 1)
	r.putDesc(r.desc, 1, buf+0x400, 1, descFWrite, 0)
	// Indirect chain at head 2.
	ind := r.base + 0x6000
	r.putDesc(ind, 0, buf, 16, descFNext, 1)
	r.putDesc(ind, 1, buf+0x800, 1, descFWrite, 0)
	r.putDesc(r.desc, 2, ind, 32, descFIndirect, 0)
	r.publish(0, 3, 1)
	r.publish(1, 2, 2)
	if !q.Pop(c) || c.Err != nil || !c.Complete || c.Head != 3 || len(c.Segs) != 3 ||
		c.ReadLen != 16 || c.WriteLen != 513 {
		t.Fatalf("direct chain: %+v", c)
	}
	if &c.Segs[1].Buf[0] != &r.b(buf + 0x100)[0] || len(c.Segs[1].Buf) != 512 || !c.Segs[1].Write {
		t.Fatal("segment does not alias guest memory")
	}
	if !q.Pop(c) || c.Err != nil || c.Head != 2 || len(c.Segs) != 2 || c.WriteLen != 1 {
		t.Fatalf("indirect chain: %+v", c)
	}
	if q.Pop(c) {
		t.Fatal("pop from an empty ring")
	}
	q.Push(3, 513)
	q.Push(2, 1)
	if got := binary.LittleEndian.Uint16(r.b(r.used + 2)); got != 2 {
		t.Fatalf("used idx %d", got)
	}
	if id, n := binary.LittleEndian.Uint32(r.b(r.used+4)), binary.LittleEndian.Uint32(r.b(r.used+8)); id != 3 || n != 513 {
		t.Fatalf("used[0] = %d/%d", id, n)
	}
	// Indirect without the feature is refused.
	q2 := r.queue(t, false, false)
	r.publish(2, 2, 3)
	q2.lastAvail = 2
	if !q2.Pop(c) || !errors.Is(c.Err, ErrIndirectDisabled) {
		t.Fatalf("indirect without feature: %v", c.Err)
	}
}

func TestQueueSetupRejects(t *testing.T) {
	r := newRing(t, 8, 0x1000)
	for _, c := range []QueueConfig{
		{Size: 0, Desc: r.desc, Driver: r.avail, Device: r.used},
		{Size: 6, Desc: r.desc, Driver: r.avail, Device: r.used},
		{Size: 2048, Desc: r.desc, Driver: r.avail, Device: r.used},
		{Size: 8, Desc: r.desc + 8, Driver: r.avail, Device: r.used},
		{Size: 8, Desc: r.desc, Driver: r.avail + 1, Device: r.used},
		{Size: 8, Desc: r.desc, Driver: r.avail, Device: r.used + 2},
		{Size: 8, Desc: 0, Driver: r.avail, Device: r.used},
		{Size: 8, Desc: r.desc, Driver: r.avail, Device: r.base + 0x1000 - 8},
	} {
		if _, err := NewQueue(r.mem, c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

func TestEventIdx(t *testing.T) {
	r := newRing(t, 8, 0x1000)
	q := r.queue(t, true, false)
	usedEvent := func(v uint16) { binary.LittleEndian.PutUint16(r.b(r.avail+4+2*8), v) }
	q.Push(0, 0)
	if !q.NeedInterrupt() {
		t.Fatal("first interrupt suppressed")
	}
	usedEvent(5) // the driver wants to hear when entry 5 is used
	for i := 1; i < 5; i++ {
		q.Push(0, 0)
		if q.NeedInterrupt() {
			t.Fatalf("interrupt at used idx %d before used_event 5", i+1)
		}
	}
	q.Push(0, 0)
	if !q.NeedInterrupt() {
		t.Fatal("no interrupt when used idx passed used_event")
	}
	// Several entries at once crossing the event still interrupt.
	usedEvent(7)
	q.Push(0, 0)
	q.Push(0, 0)
	q.Push(0, 0)
	if !q.NeedInterrupt() {
		t.Fatal("batch crossing used_event not signalled")
	}
	// Driver notifications: avail_event follows what the device consumed.
	r.publish(0, 0, 3)
	c := NewChain()
	for q.Pop(c) {
	}
	if q.EnableNotify() {
		t.Fatal("pending after draining")
	}
	if got := binary.LittleEndian.Uint16(r.b(r.used + 4 + 8*8)); got != 3 {
		t.Fatalf("avail_event %d, want 3", got)
	}
}

func TestNotifyFlags(t *testing.T) {
	r := newRing(t, 8, 0x1000)
	q := r.queue(t, false, false)
	q.SuppressNotify()
	if binary.LittleEndian.Uint16(r.b(r.used)) != usedFNoNotify {
		t.Fatal("NO_NOTIFY not set while busy")
	}
	r.publish(0, 0, 1)
	if !q.EnableNotify() {
		t.Fatal("chain published during suppression not seen")
	}
	if binary.LittleEndian.Uint16(r.b(r.used)) != 0 {
		t.Fatal("NO_NOTIFY still set")
	}
	q.Push(0, 0)
	binary.LittleEndian.PutUint16(r.b(r.avail), availFNoInterrupt)
	if q.NeedInterrupt() {
		t.Fatal("interrupt despite NO_INTERRUPT")
	}
	binary.LittleEndian.PutUint16(r.b(r.avail), 0)
	if !q.NeedInterrupt() {
		t.Fatal("no interrupt without NO_INTERRUPT")
	}
}

// Parsing a chain (direct or indirect) and returning it allocates nothing.
func TestParseAllocs(t *testing.T) {
	r := newRing(t, 16, 0x10000)
	q := r.queue(t, true, true)
	buf := r.base + 0x8000
	r.putDesc(r.desc, 0, buf, 16, descFNext, 1)
	r.putDesc(r.desc, 1, buf+0x100, 4096, descFNext|descFWrite, 2)
	r.putDesc(r.desc, 2, buf+0x1100, 1, descFWrite, 0)
	ind := r.base + 0x6000
	r.putDesc(ind, 0, buf, 16, descFNext, 1)
	r.putDesc(ind, 1, buf+0x100, 4096, descFWrite|descFNext, 2)
	r.putDesc(ind, 2, buf+0x1100, 1, descFWrite, 0)
	r.putDesc(r.desc, 3, ind, 48, descFIndirect, 0)
	c := NewChain()
	var idx uint16
	allocs := testing.AllocsPerRun(1000, func() {
		r.publish(idx, 0, idx+1)
		r.publish(idx+1, 3, idx+2)
		idx += 2
		for q.Pop(c) {
			if c.Err != nil || len(c.Segs) != 3 {
				t.Fatalf("chain %+v", c)
			}
			q.Push(c.Head, 4097)
		}
		q.NeedInterrupt()
		q.EnableNotify()
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per parse", allocs)
	}
}

// FuzzDescriptorChain fills guest memory (descriptor table, rings, indirect
// tables) with fuzzed bytes and serves the queue: no panic, every segment
// inside guest memory and aliasing it, bounded work, invariants on valid
// chains.
func FuzzDescriptorChain(f *testing.F) {
	seed := make([]byte, 0x400)
	// A valid 2-descriptor chain and an indirect one, queue size 8.
	putLE := func(b []byte, off int, v uint64, n int) {
		for i := range n {
			b[off+i] = byte(v >> (8 * i))
		}
	}
	putLE(seed, 0, 0x1200, 8)
	putLE(seed, 8, 16, 4)
	putLE(seed, 12, descFNext, 2)
	putLE(seed, 14, 1, 2)
	putLE(seed, 16, 0x1300, 8)
	putLE(seed, 24, 1, 4)
	putLE(seed, 28, descFWrite, 2)
	putLE(seed, 32, 0x1100, 8)
	putLE(seed, 40, 32, 4)
	putLE(seed, 44, descFIndirect, 2)
	putLE(seed, 0x80+2, 2, 2)     // avail idx
	putLE(seed, 0x80+4, 0, 2)     // ring[0] = 0
	putLE(seed, 0x80+6, 2, 2)     // ring[1] = 2
	putLE(seed, 0x100, 0x1200, 8) // indirect table at GPA 0x1100
	putLE(seed, 0x108, 16, 4)
	f.Add(uint8(3), uint8(3), uint16(0), seed)
	f.Add(uint8(1), uint8(0), uint16(0xffff), []byte{0xff, 0xff})
	f.Fuzz(func(t *testing.T, sizeLog, flags uint8, start uint16, data []byte) {
		size := uint16(1) << (sizeLog % 8)
		r := newRing(t, size, 0x2000)
		copy(r.ram, data)
		q, err := NewQueue(r.mem, QueueConfig{Size: size, Desc: r.desc, Driver: r.avail, Device: r.used,
			EventIdx: flags&1 != 0, IndirectDescOK: flags&2 != 0})
		if err != nil {
			t.Fatal(err)
		}
		q.lastAvail, q.usedIdx = start, start
		c := NewChain()
		lo := uintptr(unsafe.Pointer(&r.ram[0]))
		hi := lo + uintptr(len(r.ram))
		for i := 0; i < int(size)+2; i++ {
			q.SuppressNotify()
			if !q.Pop(c) {
				break
			}
			if len(c.Segs) > MaxQueueSize {
				t.Fatalf("%d segments", len(c.Segs))
			}
			for _, s := range c.Segs {
				if s.Buf == nil {
					if c.Err == nil {
						t.Fatal("segment outside memory without an error")
					}
					continue
				}
				if uint32(len(s.Buf)) != s.Len || s.Addr < r.base || s.Addr+uint64(s.Len) > r.base+uint64(len(r.ram)) {
					t.Fatalf("segment %#x+%d outside guest memory", s.Addr, s.Len)
				}
				if s.Len > 0 {
					p := uintptr(unsafe.Pointer(&s.Buf[0]))
					if p < lo || p+uintptr(s.Len) > hi || p-lo != uintptr(s.Addr-r.base) {
						t.Fatal("segment does not alias its guest address")
					}
				}
			}
			if c.Err == nil {
				seenW := false
				for _, s := range c.Segs {
					if !s.Write && seenW {
						t.Fatal("valid chain with readable after writable")
					}
					seenW = seenW || s.Write
				}
				if !c.Complete {
					t.Fatal("valid chain not complete")
				}
			}
			q.Push(c.Head, uint32(c.WriteLen))
			q.NeedInterrupt()
			q.EnableNotify()
		}
	})
}

// BenchmarkPopPush: parse a 3-descriptor chain and return it.
func BenchmarkPopPush(b *testing.B) {
	r := newRing(b, 256, 0x10000)
	q := r.queue(b, true, true)
	buf := r.base + 0x8000
	r.putDesc(r.desc, 0, buf, 16, descFNext, 1)
	r.putDesc(r.desc, 1, buf+0x100, 4096, descFNext|descFWrite, 2)
	r.putDesc(r.desc, 2, buf+0x1100, 1, descFWrite, 0)
	c := NewChain()
	var idx uint16
	b.ReportAllocs()
	for b.Loop() {
		r.publish(idx, 0, idx+1)
		idx++
		if !q.Pop(c) || c.Err != nil {
			b.Fatal("pop failed")
		}
		q.Push(c.Head, 4097)
		q.NeedInterrupt()
	}
}
