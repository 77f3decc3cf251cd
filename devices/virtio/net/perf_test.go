package net

import (
	"testing"

	"github.com/petrel-vmm/petrel/devices/virtio/virtiotest"
)

// txRoundTrip sends one prepared frame and waits for its chain.
func (r *rig) txRoundTrip(tb testing.TB, bufs []virtiotest.Buf) {
	q := r.drv.Queues[txQueue]
	if _, err := r.drv.Submit(q, bufs, false); err != nil {
		tb.Fatal(err)
	}
	r.drv.Kick(q)
	if _, _, err := r.drv.Wait(q); err != nil {
		tb.Fatal(err)
	}
}

// rxRoundTrip posts one buffer, has the backend deliver frame, and waits
// for it.
func (r *rig) rxRoundTrip(tb testing.TB, buf []virtiotest.Buf, frame []byte) {
	q := r.drv.Queues[rxQueue]
	if _, err := r.drv.Submit(q, buf, false); err != nil {
		tb.Fatal(err)
	}
	r.drv.Kick(q)
	r.be.Deliver(frame)
	if _, _, err := r.drv.Wait(q); err != nil {
		tb.Fatal(err)
	}
}

func packetPathRig(tb testing.TB, size int) (*rig, []virtiotest.Buf, []virtiotest.Buf, []byte) {
	r := newRig(tb, true, linuxFeatures)
	f := frame(testMAC, size, 1)
	Hdr{}.Encode(r.ram[r.txArea:])
	copy(r.ram[r.txArea+hdrLen:], f)
	tx := []virtiotest.Buf{{Addr: r.txArea, Len: hdrLen}, {Addr: r.txArea + hdrLen, Len: uint32(size)}}
	rx := []virtiotest.Buf{{Addr: r.rxArea, Len: 2048, Write: true}}
	in := append(make([]byte, hdrLen), f...)
	return r, tx, rx, in
}

// The packet path (notify, queue goroutine, chain parse, header checks,
// backend send; backend delivery, buffer placement, used ring, MSI)
// allocates nothing.
func TestPacketPathAllocs(t *testing.T) {
	r, tx, rx, in := packetPathRig(t, 1514)
	r.txRoundTrip(t, tx)
	r.rxRoundTrip(t, rx, in)
	if n := testing.AllocsPerRun(200, func() { r.txRoundTrip(t, tx) }); n != 0 {
		t.Errorf("transmit: %.1f allocations per frame", n)
	}
	if n := testing.AllocsPerRun(200, func() { r.rxRoundTrip(t, rx, in) }); n != 0 {
		t.Errorf("receive: %.1f allocations per frame", n)
	}
	if r.be.sent.Load() < 201 || r.net.Stats.RxFrames.Load() < 201 {
		t.Fatalf("%d sent, %d received", r.be.sent.Load(), r.net.Stats.RxFrames.Load())
	}
}

// BenchmarkTransmit1514: one full-size frame per round trip through the
// transmit queue to a backend that copies it.
func BenchmarkTransmit1514(b *testing.B) {
	r, tx, _, _ := packetPathRig(b, 1514)
	b.SetBytes(1514)
	b.ReportAllocs()
	for b.Loop() {
		r.txRoundTrip(b, tx)
	}
}

// BenchmarkReceive1514: one full-size frame from the backend into a posted
// buffer per round trip.
func BenchmarkReceive1514(b *testing.B) {
	r, _, rx, in := packetPathRig(b, 1514)
	b.SetBytes(1514)
	b.ReportAllocs()
	for b.Loop() {
		r.rxRoundTrip(b, rx, in)
	}
}
