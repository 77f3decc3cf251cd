package net

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/petrel-vmm/petrel/devices/virtio"
	"github.com/petrel-vmm/petrel/devices/virtio/virtiotest"
	"github.com/petrel-vmm/petrel/netdev"
	"github.com/petrel-vmm/petrel/vmm/guestmem"
)

const ramSize = 16 << 20

var testMAC = [6]byte{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}

// linuxFeatures is what Linux's virtio_net asks for (of what Petrel
// offers).
const linuxFeatures = virtio.FeatureVersion1 | virtio.FeatureEventIdx | virtio.FeatureIndirectDesc |
	FeatureCsum | FeatureGuestCsum | FeatureMAC | FeatureGuestTSO4 | FeatureGuestTSO6 | FeatureGuestECN |
	FeatureHostTSO4 | FeatureHostTSO6 | FeatureHostECN | FeatureMrgRxbuf | FeatureStatus | FeatureCtrlVQ |
	FeatureCtrlRx | FeatureCtrlMACAddr

// fakeBackend records the last frame sent into a fixed buffer (so the
// transmit path can be measured for allocations) and injects frames
// through its Port as a backend's goroutine would.
type fakeBackend struct {
	netdev.Port
	vnet     bool
	maxFrame int

	mu       sync.Mutex
	last     [netdev.MaxFrame]byte
	lastLen  int
	sent     atomic.Uint64
	offloads netdev.Offloads
	failSend bool
}

var errFakeSend = errors.New("fake send failure")

func (f *fakeBackend) ID() string    { return "fake" }
func (f *fakeBackend) VnetHdr() bool { return f.vnet }
func (f *fakeBackend) MaxFrame() int { return f.maxFrame }
func (f *fakeBackend) Close() error  { return nil }

func (f *fakeBackend) SetOffloads(o netdev.Offloads) error {
	f.mu.Lock()
	f.offloads = o
	f.mu.Unlock()
	return nil
}

func (f *fakeBackend) Send(segs [][]byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failSend {
		return errFakeSend
	}
	n := 0
	for _, s := range segs {
		n += copy(f.last[n:], s)
	}
	f.lastLen = n
	f.sent.Add(1)
	return nil
}

func (f *fakeBackend) lastFrame() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]byte(nil), f.last[:f.lastLen]...)
}

// msiCount counts MSIs without allocating.
type msiCount struct{ n atomic.Uint64 }

func (m *msiCount) SignalMSI(uint64, uint32) error { m.n.Add(1); return nil }

type rig struct {
	t   testing.TB
	be  *fakeBackend
	dev *virtio.PCI
	net *Net
	drv *virtiotest.Driver
	ram []byte
	mem *guestmem.Memory
	msi *msiCount
	// guest areas
	txArea, rxArea, ctrlArea uint64
}

func newRig(t testing.TB, vnet bool, want uint64) *rig {
	t.Helper()
	be := &fakeBackend{vnet: vnet, maxFrame: netdev.MaxFrame}
	if !vnet {
		be.maxFrame = 1518
	}
	r := newRigOn(t, be, want)
	r.be = be
	return r
}

// newRigOn builds the device on backend be and initialises it with a test
// driver negotiating want.
func newRigOn(t testing.TB, be netdev.Backend, want uint64) *rig {
	t.Helper()
	mem, ram := virtiotest.NewMemory(ramSize)
	msi := &msiCount{}
	dev, n, err := NewPCI(be, Options{MAC: testMAC}, virtio.Options{Mem: mem, MSI: msi})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Release() })
	drv, err := virtiotest.New(dev, mem, ram)
	if err != nil {
		t.Fatal(err)
	}
	nq := 3
	if want&FeatureCtrlVQ == 0 {
		nq = 2
	}
	if err := drv.Init(want, nq, 0, true); err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, dev: dev, net: n, drv: drv, ram: ram, mem: mem, msi: msi}
	r.txArea = drv.Alloc(1 << 20)
	r.rxArea = drv.Alloc(4 << 20)
	r.ctrlArea = drv.Alloc(64 << 10)
	return r
}

// frame returns an Ethernet frame of n bytes to dst with a position
// pattern.
func frame(dst [6]byte, n int, seed byte) []byte {
	f := make([]byte, max(n, 14))
	for i := range f {
		f[i] = byte(i*7) ^ seed
	}
	copy(f, dst[:])
	copy(f[6:], []byte{0x52, 0x54, 0, 0, 0, 1})
	f[12], f[13] = 0x08, 0x00
	return f[:n]
}

// postRx posts count receive buffers of size bytes each (one descriptor
// each) from the rx area and kicks.
func (r *rig) postRx(count int, size uint32, start int) {
	r.t.Helper()
	q := r.drv.Queues[rxQueue]
	for i := range count {
		addr := r.rxArea + uint64(start+i)*uint64(size)
		if _, err := r.drv.Submit(q, []virtiotest.Buf{{Addr: addr, Len: size, Write: true}}, false); err != nil {
			r.t.Fatal(err)
		}
	}
	r.drv.Kick(q)
}

// transmit sends hdr+payload from guest memory split in pieces and waits
// for the chain to come back.
func (r *rig) transmit(h Hdr, payload []byte, pieces int) {
	r.t.Helper()
	h.Encode(r.ram[r.txArea:])
	copy(r.ram[r.txArea+hdrLen:], payload)
	total := uint32(hdrLen + len(payload))
	bufs := make([]virtiotest.Buf, 0, pieces)
	step := total / uint32(pieces)
	for i := range pieces {
		l := step
		if i == pieces-1 {
			l = total - step*uint32(pieces-1)
		}
		bufs = append(bufs, virtiotest.Buf{Addr: r.txArea + uint64(step)*uint64(i), Len: l})
	}
	if _, err := r.drv.Do(r.drv.Queues[txQueue], bufs, false); err != nil {
		r.t.Fatal(err)
	}
}

// ctrl runs a control command and returns the ack.
func (r *rig) ctrl(class, cmd uint8, data []byte) uint8 {
	r.t.Helper()
	a := r.ctrlArea
	r.ram[a], r.ram[a+1] = class, cmd
	copy(r.ram[a+2:], data)
	ack := a + 0x8000
	r.ram[ack] = 0xee
	bufs := []virtiotest.Buf{{Addr: a, Len: 2}, {Addr: ack, Len: 1, Write: true}}
	if len(data) > 0 {
		bufs = []virtiotest.Buf{{Addr: a, Len: 2}, {Addr: a + 2, Len: uint32(len(data))}, {Addr: ack, Len: 1, Write: true}}
	}
	if _, err := r.drv.Do(r.drv.Queues[ctrlQueue], bufs, false); err != nil {
		r.t.Fatal(err)
	}
	return r.ram[ack]
}
