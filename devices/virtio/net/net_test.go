package net

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/petrel-vmm/petrel/devices/virtio"
	"github.com/petrel-vmm/petrel/devices/virtio/virtiotest"
)

func TestFeaturesAndConfig(t *testing.T) {
	r := newRig(t, true, linuxFeatures)
	if r.drv.Features != linuxFeatures {
		t.Errorf("negotiated %#x, want %#x", r.drv.Features, linuxFeatures)
	}
	var mac [6]byte
	for i := range mac {
		mac[i] = byte(r.drv.DeviceConfig(uint64(cfgMAC+i), 1))
	}
	if mac != testMAC {
		t.Errorf("config MAC %x", mac)
	}
	if s := r.drv.DeviceConfig(cfgStatus, 2); s != statusLinkUp {
		t.Errorf("status %#x", s)
	}
	if o := r.be.offloads; !o.Csum || !o.TSO4 || !o.TSO6 || !o.ECN || o.UFO {
		t.Errorf("backend offloads %+v", o)
	}
	// Without a vnet header nothing offloaded is offered.
	u := newRig(t, false, linuxFeatures)
	if u.drv.Features&offloadFeatures != 0 {
		t.Errorf("user-mode backend negotiated offloads %#x", u.drv.Features&offloadFeatures)
	}
	if u.drv.Features&FeatureMrgRxbuf == 0 || u.drv.Features&FeatureCtrlRx == 0 {
		t.Errorf("user-mode features %#x lack MRG_RXBUF or CTRL_RX", u.drv.Features)
	}
}

// A driver asking for TSO without checksum offload breaks 5.1.3.1: the
// device refuses DRIVER_OK.
func TestFeatureDependencies(t *testing.T) {
	mem, ram := virtiotest.NewMemory(ramSize)
	be := &fakeBackend{vnet: true, maxFrame: 2000}
	dev, _, err := NewPCI(be, Options{MAC: testMAC}, virtio.Options{Mem: mem})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Release()
	drv, _ := virtiotest.New(dev, mem, ram)
	if err := drv.Init(virtio.FeatureVersion1|FeatureHostTSO4, 2, 0, false); err == nil {
		t.Fatal("HOST_TSO4 without CSUM accepted")
	}
}

func TestTransmit(t *testing.T) {
	for _, vnet := range []bool{true, false} {
		r := newRig(t, vnet, linuxFeatures)
		f := frame([6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 1514, 1)
		h := Hdr{}
		if vnet {
			// A TSO frame with a partial checksum: its header must reach
			// the backend untouched.
			f = frame(testMAC, 30000, 2)
			h = Hdr{Flags: HdrFNeedsCsum, GSOType: GSOTCPv4, HdrLen: 54, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}
		}
		r.transmit(h, f, 3)
		got := r.be.lastFrame()
		want := f
		if vnet {
			var hb [hdrLen]byte
			h.Encode(hb[:])
			want = append(hb[:], f...)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("vnet=%v: backend got %d bytes, want %d (equal prefix %v)", vnet, len(got), len(want),
				len(got) >= 12 && bytes.Equal(got[:12], want[:12]))
		}
		if r.net.Stats.TxFrames.Load() != 1 || r.net.Stats.TxDropped.Load() != 0 {
			t.Fatalf("stats: %d sent, %d dropped", r.net.Stats.TxFrames.Load(), r.net.Stats.TxDropped.Load())
		}
	}
}

// Every bad transmit request is dropped and counted, the chain comes back,
// and the next good frame still goes out.
func TestTransmitRejects(t *testing.T) {
	r := newRig(t, true, linuxFeatures&^(FeatureHostTSO6|FeatureHostECN))
	good := frame(testMAC, 100, 3)
	cases := []struct {
		name string
		h    Hdr
		n    int
	}{
		{"runt", Hdr{}, 10},
		{"oversized without GSO", Hdr{}, 1600},
		{"oversized with GSO", Hdr{Flags: HdrFNeedsCsum, GSOType: GSOTCPv4, GSOSize: 1000, CsumStart: 34, CsumOffset: 16}, 70000},
		{"checksum beyond frame", Hdr{Flags: HdrFNeedsCsum, CsumStart: 90, CsumOffset: 16}, 100},
		{"TSO6 not negotiated", Hdr{Flags: HdrFNeedsCsum, GSOType: GSOTCPv6, GSOSize: 1000, CsumStart: 54, CsumOffset: 16}, 3000},
		{"ECN not negotiated", Hdr{Flags: HdrFNeedsCsum, GSOType: GSOTCPv4 | GSOECN, GSOSize: 1000, CsumStart: 34, CsumOffset: 16}, 3000},
		{"UFO", Hdr{Flags: HdrFNeedsCsum, GSOType: GSOUDP, GSOSize: 1000, CsumStart: 34, CsumOffset: 6}, 3000},
		{"GSO without size", Hdr{Flags: HdrFNeedsCsum, GSOType: GSOTCPv4, CsumStart: 34, CsumOffset: 16}, 3000},
		{"unknown flags", Hdr{Flags: 0x10}, 100},
	}
	for i, c := range cases {
		r.transmit(c.h, frame(testMAC, c.n, byte(i)), 1)
		if got := r.be.sent.Load(); got != 0 {
			t.Fatalf("%s: sent to the backend", c.name)
		}
		if got := r.net.Stats.TxDropped.Load(); got != uint64(i+1) {
			t.Fatalf("%s: %d dropped, want %d", c.name, got, i+1)
		}
	}
	// A chain with a writable buffer, and one pointing outside memory.
	q := r.drv.Queues[txQueue]
	if _, err := r.drv.Do(q, []virtiotest.Buf{{Addr: r.txArea, Len: 100}, {Addr: r.txArea + 200, Len: 10, Write: true}}, false); err != nil {
		t.Fatal(err)
	}
	if _, err := r.drv.Do(q, []virtiotest.Buf{{Addr: ramSize - 8, Len: 100}}, false); err != nil {
		t.Fatal(err)
	}
	if got := r.net.Stats.TxDropped.Load(); got != uint64(len(cases)+2) {
		t.Fatalf("%d dropped after bad chains", got)
	}
	r.transmit(Hdr{}, good, 2)
	if !bytes.Equal(r.be.lastFrame()[hdrLen:], good) {
		t.Fatal("good frame after bad ones not sent")
	}
	// A backend failure drops the frame, the queue goes on.
	r.be.failSend = true
	r.transmit(Hdr{}, good, 1)
	r.be.failSend = false
	r.transmit(Hdr{}, good, 1)
	if r.be.sent.Load() != 2 {
		t.Fatalf("%d frames sent", r.be.sent.Load())
	}
}

// usedFrame collects one received frame: num_buffers used elements.
func (r *rig) usedFrame(size uint32) (Hdr, []byte) {
	r.t.Helper()
	q := r.drv.Queues[rxQueue]
	id, n, err := r.drv.Wait(q)
	if err != nil {
		r.t.Fatal(err)
	}
	addr := r.rxBufAddr(q, id)
	h := DecodeHdr(r.ram[addr:])
	data := append([]byte(nil), r.ram[addr+hdrLen:addr+uint64(n)]...)
	for i := 1; i < int(h.NumBuffers); i++ {
		id, n, err := r.drv.Wait(q)
		if err != nil {
			r.t.Fatal(err)
		}
		a := r.rxBufAddr(q, id)
		data = append(data, r.ram[a:a+uint64(n)]...)
	}
	return h, data
}

// rxBufAddr reads the address of descriptor id of queue q.
func (r *rig) rxBufAddr(q *virtiotest.Queue, id uint16) uint64 {
	return binary.LittleEndian.Uint64(r.ram[q.Desc+16*uint64(id):])
}

func TestReceiveMergeable(t *testing.T) {
	r := newRig(t, true, linuxFeatures)
	r.postRx(64, 1536, 0)
	f := frame(testMAC, 20000, 5)
	in := Hdr{Flags: HdrFNeedsCsum, GSOType: GSOTCPv6, HdrLen: 74, GSOSize: 1440, CsumStart: 54, CsumOffset: 16, NumBuffers: 77}
	var hb [hdrLen]byte
	in.Encode(hb[:])
	r.be.Deliver(append(hb[:], f...))
	h, data := r.usedFrame(1536)
	wantBufs := (hdrLen + len(f) + 1535) / 1536
	if int(h.NumBuffers) != wantBufs {
		t.Errorf("num_buffers %d, want %d", h.NumBuffers, wantBufs)
	}
	h.NumBuffers = in.NumBuffers
	if h != in {
		t.Errorf("header %+v, want %+v", h, in)
	}
	if !bytes.Equal(data, f) {
		t.Fatalf("received %d bytes, want %d, equal: false", len(data), len(f))
	}
	if r.msi.n.Load() == 0 {
		t.Error("no interrupt")
	}
}

// Offloads the driver did not negotiate never reach it: a GSO frame for a
// driver without GUEST_TSO6 is dropped, DATA_VALID is cleared without
// GUEST_CSUM.
func TestReceiveOffloadsNotNegotiated(t *testing.T) {
	r := newRig(t, true, linuxFeatures&^(FeatureGuestTSO6|FeatureGuestTSO4|FeatureGuestECN|FeatureGuestCsum))
	r.postRx(16, 1536, 0)
	var hb [hdrLen]byte
	Hdr{Flags: HdrFNeedsCsum, GSOType: GSOTCPv6, GSOSize: 1000}.Encode(hb[:])
	r.be.Deliver(append(hb[:], frame(testMAC, 3000, 1)...))
	Hdr{Flags: HdrFDataValid}.Encode(hb[:])
	f := frame(testMAC, 1000, 2)
	r.be.Deliver(append(hb[:], f...))
	h, data := r.usedFrame(1536)
	if h.Flags != 0 || h.GSOType != 0 || !bytes.Equal(data, f) {
		t.Fatalf("got header %+v, %d bytes", h, len(data))
	}
	if r.net.Stats.RxDropped.Load() != 1 {
		t.Fatalf("%d dropped", r.net.Stats.RxDropped.Load())
	}
}

// The user-mode backend has no header: the device makes one.
func TestReceiveWithoutVnetHeader(t *testing.T) {
	r := newRig(t, false, linuxFeatures)
	r.postRx(4, 1536, 0)
	f := frame(testMAC, 1514, 9)
	r.be.Deliver(f)
	h, data := r.usedFrame(1536)
	if h != (Hdr{NumBuffers: 1}) || !bytes.Equal(data, f) {
		t.Fatalf("header %+v, %d bytes", h, len(data))
	}
}

// A frame that needs three buffers when two are posted waits; the third
// buffer's notification delivers it whole.
func TestReceiveWaitsForBuffers(t *testing.T) {
	r := newRig(t, true, linuxFeatures)
	r.postRx(2, 1536, 0)
	var hb [hdrLen]byte
	f := frame(testMAC, 4000, 3)
	r.be.Deliver(append(hb[:], f...))
	if _, _, ok := r.drv.Used(r.drv.Queues[rxQueue]); ok {
		t.Fatal("part of a frame was published")
	}
	r.postRx(1, 1536, 2)
	h, data := r.usedFrame(1536)
	if h.NumBuffers != 3 || !bytes.Equal(data, f) {
		t.Fatalf("num_buffers %d, %d bytes", h.NumBuffers, len(data))
	}
}

// A guest that never posts receive buffers: the host floods, frames are
// dropped and counted, memory stays the fixed backlog; when buffers come
// the backlog is delivered in order and the device works normally.
func TestReceiveFloodWithoutBuffers(t *testing.T) {
	r := newRig(t, false, linuxFeatures)
	slots := len(r.net.rx.slots)
	const flood = 5000
	for i := range flood {
		f := frame(testMAC, 1000, byte(i))
		binary.BigEndian.PutUint32(f[20:], uint32(i))
		r.be.Deliver(f)
	}
	if got := r.net.Stats.RxDropped.Load(); got != uint64(flood-slots) {
		t.Fatalf("%d dropped, want %d (backlog %d)", got, flood-slots, slots)
	}
	r.postRx(slots, 1536, 0)
	for i := range slots {
		_, data := r.usedFrame(1536)
		if seq := binary.BigEndian.Uint32(data[20:]); seq != uint32(i) {
			t.Fatalf("frame %d carries sequence %d", i, seq)
		}
	}
	if used := r.net.Stats.RxFrames.Load(); used != uint64(slots) {
		t.Fatalf("%d frames delivered, want %d", used, slots)
	}
	r.postRx(1, 1536, slots)
	f := frame(testMAC, 200, 7)
	r.be.Deliver(f)
	if _, data := r.usedFrame(1536); !bytes.Equal(data, f) {
		t.Fatal("frame after the flood wrong")
	}
}

// Without MRG_RXBUF a frame larger than the posted buffer is dropped and
// the buffer returned empty.
func TestReceiveTooBigWithoutMergeable(t *testing.T) {
	r := newRig(t, false, linuxFeatures&^FeatureMrgRxbuf)
	r.postRx(2, 1000, 0)
	r.be.Deliver(frame(testMAC, 1400, 1))
	q := r.drv.Queues[rxQueue]
	if _, n, err := r.drv.Wait(q); err != nil || n != 0 {
		t.Fatalf("used len %d, %v", n, err)
	}
	f := frame(testMAC, 600, 2)
	r.be.Deliver(f)
	h, data := r.usedFrame(1000)
	if h.NumBuffers != 1 || !bytes.Equal(data, f) {
		t.Fatalf("num_buffers %d, %d bytes", h.NumBuffers, len(data))
	}
	if r.net.Stats.RxDropped.Load() != 1 {
		t.Fatalf("%d dropped", r.net.Stats.RxDropped.Load())
	}
}

// A receive chain with a device-readable buffer is a broken driver: the
// device asks for a reset and drops host frames; after the reset it works.
func TestReceiveMalformedChainNeedsReset(t *testing.T) {
	r := newRig(t, false, linuxFeatures)
	q := r.drv.Queues[rxQueue]
	if _, err := r.drv.Submit(q, []virtiotest.Buf{{Addr: r.rxArea, Len: 1536}}, false); err != nil {
		t.Fatal(err)
	}
	r.drv.Kick(q)
	r.be.Deliver(frame(testMAC, 100, 1))
	if s := r.drv.Common(virtiotest.DeviceStatus, 1); s&virtio.StatusDeviceNeedsReset == 0 {
		t.Fatalf("status %#x after a readable receive buffer", s)
	}
	r.be.Deliver(frame(testMAC, 100, 2))
	if err := r.drv.Init(linuxFeatures, 3, 0, true); err != nil {
		t.Fatal(err)
	}
	r.postRx(1, 1536, 0)
	f := frame(testMAC, 100, 3)
	r.be.Deliver(f)
	if _, data := r.usedFrame(1536); !bytes.Equal(data, f) {
		t.Fatal("frame after reset wrong")
	}
}

func TestReceiveFilter(t *testing.T) {
	r := newRig(t, false, linuxFeatures)
	other := [6]byte{0x52, 0x54, 0, 9, 9, 9}
	mcast := [6]byte{0x01, 0x00, 0x5e, 0, 0, 1}
	if ack := r.ctrl(CtrlRx, CtrlRxPromisc, []byte{0}); ack != AckOK {
		t.Fatalf("promisc off: ack %d", ack)
	}
	table := binary.LittleEndian.AppendUint32(nil, 1)
	table = append(table, other[:]...)
	table = binary.LittleEndian.AppendUint32(table, 1)
	table = append(table, mcast[:]...)
	if ack := r.ctrl(CtrlMAC, CtrlMACTableSet, table); ack != AckOK {
		t.Fatalf("MAC table: ack %d", ack)
	}
	r.postRx(16, 1536, 0)
	stranger := [6]byte{0x52, 0x54, 0, 7, 7, 7}
	for i, dst := range [][6]byte{stranger, testMAC, other, {0x01, 0x00, 0x5e, 0, 0, 2}, mcast, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}} {
		r.be.Deliver(frame(dst, 100, byte(i)))
	}
	var got [][6]byte
	for range 4 {
		_, data := r.usedFrame(1536)
		got = append(got, [6]byte(data[:6]))
	}
	want := [][6]byte{testMAC, other, mcast, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("received %x, want %x", got, want)
		}
	}
	if r.net.Stats.RxFiltered.Load() != 2 {
		t.Fatalf("%d filtered", r.net.Stats.RxFiltered.Load())
	}
	fs := r.net.Filter()
	if fs.Promisc || len(fs.Unicast) != 1 || len(fs.Multicast) != 1 {
		t.Fatalf("filter state %+v", fs)
	}
	// MAC address set moves the filter and the configuration space.
	if ack := r.ctrl(CtrlMAC, CtrlMACAddrSet, stranger[:]); ack != AckOK {
		t.Fatalf("MAC set: ack %d", ack)
	}
	if r.net.MAC() != stranger || byte(r.drv.DeviceConfig(5, 1)) != 7 {
		t.Fatal("MAC not changed")
	}
	r.be.Deliver(frame(stranger, 100, 1))
	if _, data := r.usedFrame(1536); [6]byte(data[:6]) != stranger {
		t.Fatal("frame to the new MAC not received")
	}
}

func TestControlRejects(t *testing.T) {
	r := newRig(t, false, linuxFeatures)
	tooShort := binary.LittleEndian.AppendUint32(nil, 2)
	tooShort = append(tooShort, make([]byte, 6)...)
	trailing := binary.LittleEndian.AppendUint32(nil, 0)
	trailing = binary.LittleEndian.AppendUint32(trailing, 0)
	trailing = append(trailing, 1)
	for _, c := range []struct {
		class, cmd uint8
		data       []byte
	}{
		{CtrlRx, CtrlRxPromisc, nil},
		{CtrlRx, CtrlRxPromisc, []byte{1, 1}},
		{CtrlRx, 2, []byte{1}}, // ALLUNI needs CTRL_RX_EXTRA
		{CtrlMAC, CtrlMACTableSet, tooShort},
		{CtrlMAC, CtrlMACTableSet, trailing},
		{CtrlMAC, CtrlMACAddrSet, []byte{1, 2, 3, 4, 5, 6}}, // multicast
		{4, 0, []byte{1, 0}},                                // MQ not offered
		{9, 9, nil},
	} {
		if ack := r.ctrl(c.class, c.cmd, c.data); ack != AckErr {
			t.Errorf("class %d cmd %d data %x: ack %d", c.class, c.cmd, c.data, ack)
		}
	}
	// An overlong table turns on promiscuous unicast, as in QEMU.
	big := binary.LittleEndian.AppendUint32(nil, MACTableEntries+1)
	big = append(big, make([]byte, 6*(MACTableEntries+1))...)
	big = binary.LittleEndian.AppendUint32(big, 0)
	if ack := r.ctrl(CtrlMAC, CtrlMACTableSet, big); ack != AckOK || !r.net.Filter().UniOverflow {
		t.Fatalf("overlong table: ack %d, filter %+v", ack, r.net.Filter())
	}
}
