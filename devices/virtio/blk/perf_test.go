package blk

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/petrel-vmm/petrel/devices/virtio/virtiotest"
)

// roundTrip posts one 4 KiB request with prebuilt buffers and waits for it.
func (r *rig) roundTrip(tb testing.TB, bufs []virtiotest.Buf) {
	q := r.drv.Queues[0]
	if _, err := r.drv.Submit(q, bufs, false); err != nil {
		tb.Fatal(err)
	}
	r.drv.Kick(q)
	if _, _, err := r.drv.Wait(q); err != nil {
		tb.Fatal(err)
	}
	if r.ram[statusGPA] != StatusOK {
		tb.Fatalf("status %d", r.ram[statusGPA])
	}
}

func requestBufs(r *rig, typ uint32) []virtiotest.Buf {
	binary.LittleEndian.PutUint32(r.ram[hdrGPA:], typ)
	binary.LittleEndian.PutUint64(r.ram[hdrGPA+8:], 64)
	return []virtiotest.Buf{{Addr: hdrGPA, Len: 16}, {Addr: dataGPA, Len: 4096, Write: typ == TypeIn},
		{Addr: statusGPA, Len: 1, Write: true}}
}

// The whole request path (notify, queue goroutine wake-up, chain parse,
// image I/O into guest memory, used ring, MSI) allocates nothing.
func TestRequestPathAllocs(t *testing.T) {
	img, _ := newRawImage(t, false)
	r := newRig(t, img, Options{}, 1)
	for _, typ := range []uint32{TypeIn, TypeOut} {
		bufs := requestBufs(r, typ)
		r.roundTrip(t, bufs) // warm up
		if n := testing.AllocsPerRun(200, func() { r.roundTrip(t, bufs) }); n != 0 {
			t.Errorf("request type %d: %.1f allocations per round trip", typ, n)
		}
	}
	if r.msis.count(1) < 400 {
		t.Fatalf("only %d completions signalled", r.msis.count(1))
	}
}

func benchmarkRoundTrip(b *testing.B, typ uint32) {
	img, _ := newRawImage(b, false)
	r := newRig(b, img, Options{}, 1)
	bufs := requestBufs(r, typ)
	b.SetBytes(4096)
	b.ReportAllocs()
	for b.Loop() {
		r.roundTrip(b, bufs)
	}
}

// BenchmarkRead4K: one 4 KiB read request round trip through the queue
// against a raw file (page cache), one request in flight.
func BenchmarkRead4K(b *testing.B) { benchmarkRoundTrip(b, TypeIn) }

// BenchmarkWrite4K: the same for writes.
func BenchmarkWrite4K(b *testing.B) { benchmarkRoundTrip(b, TypeOut) }

// BenchmarkRead4KDepth32: 32 read requests of 4 KiB in flight per kick,
// the device-side cost with the wake-up latency amortised.
func BenchmarkRead4KDepth32(b *testing.B) {
	img, _ := newRawImage(b, false)
	r := newRig(b, img, Options{}, 1)
	q := r.drv.Queues[0]
	const depth = 32
	var reqs [depth][3]virtiotest.Buf
	for i := range depth {
		hdr := uint64(0x300000 + 64*i)
		binary.LittleEndian.PutUint32(r.ram[hdr:], TypeIn)
		binary.LittleEndian.PutUint64(r.ram[hdr+8:], uint64(8*i))
		reqs[i] = [3]virtiotest.Buf{{Addr: hdr, Len: 16}, {Addr: 0x500000 + 4096*uint64(i), Len: 4096, Write: true},
			{Addr: hdr + 32, Len: 1, Write: true}}
	}
	b.SetBytes(depth * 4096)
	b.ReportAllocs()
	for b.Loop() {
		for i := range depth {
			if _, err := r.drv.Submit(q, reqs[i][:], false); err != nil {
				b.Fatal(err)
			}
		}
		r.drv.Kick(q)
		for range depth {
			if _, _, err := r.drv.Wait(q); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// Four queues, each with 32 writes in flight, served by their goroutines
// at once; then everything is read back through other queues.
func TestMultiQueueConcurrent(t *testing.T) {
	img, _ := newRawImage(t, false)
	r := newRig(t, img, Options{NumQueues: 4}, 4)
	const nq, depth = 4, 32
	hdrs := uint64(0x300000)
	data := uint64(0x500000) // 4 x 32 x 4 KiB = 512 KiB
	bufs := make([][]virtiotest.Buf, nq*depth)
	submit := func(typ uint32, rotate int) {
		for q := range nq {
			for i := range depth {
				k := q*depth + i
				h := hdrs + 32*uint64(k)
				binary.LittleEndian.PutUint32(r.ram[h:], typ)
				binary.LittleEndian.PutUint64(r.ram[h+8:], uint64(8*k))
				r.ram[h+16] = 0xee
				bufs[k] = []virtiotest.Buf{{Addr: h, Len: 16}, {Addr: data + 4096*uint64(k), Len: 4096, Write: typ == TypeIn},
					{Addr: h + 16, Len: 1, Write: true}}
				if _, err := r.drv.Submit(r.drv.Queues[(q+rotate)%nq], bufs[k], false); err != nil {
					t.Fatal(err)
				}
			}
		}
		for q := range nq {
			r.drv.Kick(r.drv.Queues[q])
		}
		for q := range nq {
			for range depth {
				if _, _, err := r.drv.Wait(r.drv.Queues[q]); err != nil {
					t.Fatal(err)
				}
			}
		}
		for k := range nq * depth {
			if st := r.ram[hdrs+32*uint64(k)+16]; st != StatusOK {
				t.Fatalf("request %d: status %d", k, st)
			}
		}
	}
	for i := range nq * depth * 4096 {
		r.ram[data+uint64(i)] = byte(i*31 + i>>12)
	}
	want := append([]byte(nil), r.ram[data:data+nq*depth*4096]...)
	submit(TypeOut, 0)
	clear(r.ram[data : data+nq*depth*4096])
	submit(TypeIn, 1)
	if !bytes.Equal(r.ram[data:data+nq*depth*4096], want) {
		t.Fatal("data read back through other queues differs")
	}
}
