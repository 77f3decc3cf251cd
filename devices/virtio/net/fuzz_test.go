package net

import (
	"testing"

	"github.com/petrel-vmm/petrel/devices/virtio"
)

// chainOf makes a chain of readable bytes split at cut, plus an ack byte.
func chainOf(data []byte, cut int, ack []byte) *virtio.Chain {
	cut = min(max(cut, 0), len(data))
	c := &virtio.Chain{Complete: true}
	for _, b := range [][]byte{data[:cut], data[cut:]} {
		if len(b) > 0 {
			c.Segs = append(c.Segs, virtio.Segment{Len: uint32(len(b)), Buf: b})
			c.ReadLen += uint64(len(b))
		}
	}
	c.Segs = append(c.Segs, virtio.Segment{Len: 1, Write: true, Buf: ack})
	c.WriteLen = 1
	return c
}

// FuzzControl: any control command bytes get an ack and leave the filter
// within its table bounds.
func FuzzControl(f *testing.F) {
	f.Add([]byte{CtrlRx, CtrlRxPromisc, 0}, 2)
	f.Add([]byte{CtrlMAC, CtrlMACTableSet, 1, 0, 0, 0, 0x52, 0x54, 0, 1, 2, 3, 0, 0, 0, 0}, 3)
	f.Add([]byte{CtrlMAC, CtrlMACAddrSet, 0x52, 0x54, 0, 1, 2, 3}, 1)
	f.Add([]byte{CtrlMAC, CtrlMACTableSet, 0xff, 0xff, 0xff, 0xff}, 6)
	f.Fuzz(func(t *testing.T, data []byte, cut int) {
		n, err := New(&fakeBackend{maxFrame: 2000}, Options{MAC: testMAC})
		if err != nil {
			t.Fatal(err)
		}
		n.features.Store(linuxFeatures)
		ack := []byte{0xee}
		if got := n.control(chainOf(data, cut, ack)); got != 1 {
			t.Fatalf("used length %d", got)
		}
		if ack[0] != AckOK && ack[0] != AckErr {
			t.Fatalf("ack %d", ack[0])
		}
		fs := n.Filter()
		if len(fs.Unicast)+len(fs.Multicast) > MACTableEntries || fs.MAC[0]&1 != 0 {
			t.Fatalf("filter %+v", fs)
		}
	})
}

// FuzzTransmitHeader: CheckTx never accepts a header whose checksum or
// segmentation fields a backend could misread under the features.
func FuzzTransmitHeader(f *testing.F) {
	h := make([]byte, hdrLen)
	Hdr{Flags: HdrFNeedsCsum, GSOType: GSOTCPv4, HdrLen: 54, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}.Encode(h)
	f.Add(h, 30000, uint64(linuxFeatures))
	f.Add(make([]byte, hdrLen), 60, uint64(0))
	f.Fuzz(func(t *testing.T, hb []byte, frameLen int, features uint64) {
		if len(hb) < hdrLen {
			return
		}
		h := DecodeHdr(hb)
		if CheckTx(h, frameLen, features) != nil {
			return
		}
		if frameLen < ethMin || frameLen > maxGSOFrame {
			t.Fatalf("frame length %d accepted", frameLen)
		}
		if h.Flags&HdrFNeedsCsum != 0 && (features&FeatureCsum == 0 || int(h.CsumStart)+int(h.CsumOffset)+2 > frameLen) {
			t.Fatalf("checksum %+v accepted for %d bytes, features %#x", h, frameLen, features)
		}
		if h.GSOType == GSONone && frameLen > ethMax && features&FeatureMTU == 0 {
			t.Fatalf("%d-byte frame without GSO accepted", frameLen)
		}
		if h.GSOType != GSONone && (h.GSOSize == 0 || features&(FeatureHostTSO4|FeatureHostTSO6|FeatureHostUFO) == 0) {
			t.Fatalf("GSO %+v accepted, features %#x", h, features)
		}
		var back [hdrLen]byte
		h.Encode(back[:])
		if string(back[:]) != string(hb[:hdrLen]) {
			t.Fatal("header does not survive decode/encode")
		}
	})
}

// FuzzReceiveFrame: any frame from a backend is delivered or counted as
// dropped; nothing panics, used lengths stay within the buffers.
func FuzzReceiveFrame(f *testing.F) {
	h := make([]byte, hdrLen)
	Hdr{Flags: HdrFNeedsCsum, GSOType: GSOTCPv4, GSOSize: 1448}.Encode(h)
	f.Add(append(h, frame(testMAC, 3000, 1)...))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := newRig(t, true, linuxFeatures)
		r.postRx(8, 1024, 0)
		r.be.Deliver(in)
		st := &r.net.Stats
		if st.RxFrames.Load()+st.RxDropped.Load()+st.RxFiltered.Load() != 1 && r.net.rx.count != 1 {
			t.Fatalf("frame neither delivered, dropped nor queued: %d/%d/%d", st.RxFrames.Load(), st.RxDropped.Load(), st.RxFiltered.Load())
		}
	})
}
