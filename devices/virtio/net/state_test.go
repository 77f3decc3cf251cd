package net

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/devices/pci"
	"github.com/petrel-vmm/petrel/devices/virtio"
	"github.com/petrel-vmm/petrel/devices/virtio/virtiotest"
	"github.com/petrel-vmm/petrel/vmstate"
)

type nullHost struct{}

func (nullHost) MapBAR(pci.Mapping) error   { return nil }
func (nullHost) UnmapBAR(pci.Mapping) error { return nil }

var stateWindows = pci.Windows{
	IO:    pci.Window{Base: 0xc000, Size: 0x4000},
	Mem32: pci.Window{Base: 0xc000_0000, Size: 0x3c00_0000},
}

// plug puts dev in slot 3 of a new bus.
func plug(t testing.TB, dev *virtio.PCI) *pci.Bus {
	bus := pci.NewBus(nullHost{}, stateWindows)
	if err := bus.Add(3, dev); err != nil {
		t.Fatal(err)
	}
	return bus
}

func saveState(s vmstate.Stater) []byte {
	var e vmstate.Enc
	s.SaveState(&e)
	return e.Data()
}

var (
	otherMAC = [6]byte{0x52, 0x54, 0, 9, 9, 9}
	mcastMAC = [6]byte{0x01, 0x00, 0x5e, 0, 0, 1}
)

// savedNet is a NIC driven into a state worth saving: the driver's MAC
// and receive filter set, frames sent and received (every queue's
// indices moved), receive buffers left posted; and a frame that arrived
// while it was quiesced for the save.
type savedNet struct {
	r                  *rig
	busState, devState []byte
	filter             FilterState
}

func newSavedNet(t testing.TB) *savedNet {
	r := newRig(t, true, linuxFeatures)
	bus := plug(t, r.dev)
	for _, c := range []struct {
		class, cmd uint8
		data       []byte
	}{
		{CtrlRx, CtrlRxPromisc, []byte{0}},
		{CtrlRx, CtrlRxAllmulti, []byte{0}},
		{CtrlMAC, CtrlMACTableSet, slices.Concat(binary.LittleEndian.AppendUint32(nil, 1), otherMAC[:],
			binary.LittleEndian.AppendUint32(nil, 1), mcastMAC[:])},
		{CtrlMAC, CtrlMACAddrSet, otherMAC[:]},
	} {
		if ack := r.ctrl(c.class, c.cmd, c.data); ack != AckOK {
			t.Fatalf("control %d/%d: ack %d", c.class, c.cmd, ack)
		}
	}
	r.transmit(Hdr{}, frame(testMAC, 200, 1), 1)
	r.postRx(4, 1536, 0)
	r.be.Deliver(append(make([]byte, hdrLen), frame(otherMAC, 300, 2)...))
	r.usedFrame(1536)
	bus.Quiesce()
	r.be.Deliver(append(make([]byte, hdrLen), frame(otherMAC, 300, 3)...))
	if _, _, ok := r.drv.Used(r.drv.Queues[rxQueue]); ok {
		t.Fatal("frame delivered into guest memory while quiesced")
	}
	return &savedNet{r: r, busState: saveState(bus), devState: saveState(r.dev), filter: r.net.Filter()}
}

// load builds a NIC with mac on a new backend, copies the guest RAM, loads
// the state and moves the driver to it.
func (s *savedNet) load(t *testing.T, mac [6]byte) (*rig, error) {
	be := &fakeBackend{vnet: true, maxFrame: s.r.be.maxFrame}
	mem, ram := virtiotest.NewMemory(ramSize)
	copy(ram, s.r.ram)
	dev, n, err := NewPCI(be, Options{MAC: mac}, virtio.Options{Mem: mem, MSI: &msiCount{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Release() })
	bus := plug(t, dev)
	if err := bus.LoadState(vmstate.NewDec("pci", s.busState)); err != nil {
		t.Fatal(err)
	}
	if err := dev.LoadState(vmstate.NewDec("virtio-net", s.devState)); err != nil {
		return nil, err
	}
	bus.Resume()
	r := *s.r
	r.t, r.be, r.dev, r.net, r.mem, r.ram = t, be, dev, n, mem, ram
	r.drv.Dev, r.drv.Mem, r.drv.RAM = dev, mem, ram
	return &r, nil
}

func TestStateRoundTrip(t *testing.T) {
	s := newSavedNet(t)
	r, err := s.load(t, testMAC)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.net.Filter(); !slices.Equal(got.Unicast, s.filter.Unicast) || !slices.Equal(got.Multicast, s.filter.Multicast) ||
		got.MAC != otherMAC || got.Promisc || got.Allmulti {
		t.Fatalf("filter after load %+v, saved %+v", got, s.filter)
	}
	var mac [6]byte
	for i := range mac {
		mac[i] = byte(r.drv.DeviceConfig(uint64(cfgMAC+i), 1))
	}
	if mac != otherMAC || r.drv.DeviceConfig(cfgStatus, 2) != statusLinkUp {
		t.Fatalf("config MAC %x, status %#x", mac, r.drv.DeviceConfig(cfgStatus, 2))
	}
	if o := r.be.offloads; !o.Csum || !o.TSO4 || !o.TSO6 || !o.ECN {
		t.Fatalf("backend offloads after load %+v", o)
	}
	// Frames go into the buffers posted before the save, through the
	// loaded filter; the frame that came while quiesced was not saved.
	r.be.Deliver(append(make([]byte, hdrLen), frame(testMAC, 100, 4)...)) // filtered out
	f := frame(mcastMAC, 400, 5)
	r.be.Deliver(append(make([]byte, hdrLen), f...))
	if _, data := r.usedFrame(1536); !bytes.Equal(data, f) {
		t.Fatal("frame after load wrong")
	}
	if q := r.drv.Queues[rxQueue]; r.drv.UsedIdx(q) != 2 || r.net.Stats.RxFiltered.Load() != 1 {
		t.Fatalf("rx used index %d, %d filtered", r.drv.UsedIdx(q), r.net.Stats.RxFiltered.Load())
	}
	g := frame(otherMAC, 600, 6)
	r.transmit(Hdr{}, g, 2)
	if got := r.be.lastFrame(); !bytes.Equal(got[hdrLen:], g) {
		t.Fatal("transmit after load wrong")
	}
	if ack := r.ctrl(CtrlRx, CtrlRxPromisc, []byte{1}); ack != AckOK || !r.net.Filter().Promisc {
		t.Fatal("control queue after load")
	}
}

// Another configured MAC, or a virtio-blk's state, is refused; damaged
// states fail or load, never panic.
func TestStateRefused(t *testing.T) {
	s := newSavedNet(t)
	if _, err := s.load(t, otherMAC); !errors.Is(err, pci.ErrStateMismatch) ||
		!strings.Contains(err.Error(), "saved MAC 52:54:00:12:34:56, this device has 52:54:00:09:09:09") {
		t.Fatalf("other MAC: %v", err)
	}
	n := s.r.net
	state := saveState(n)
	for i := range len(state) {
		if err := n.LoadState(vmstate.NewDec("virtio-net", state[:i])); !errors.Is(err, vmstate.ErrCorrupt) {
			t.Fatalf("cut at %d: %v", i, err)
		}
		x := slices.Clone(state)
		x[i] ^= 0x81
		n.LoadState(vmstate.NewDec("virtio-net", x))
	}
	if err := n.LoadState(vmstate.NewDec("virtio-net", state)); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(n.Filter().Unicast, s.filter.Unicast) {
		t.Fatal("filter not restored after damaged loads")
	}
}

// FuzzNetState loads fuzzed virtio-net states: an error, or a filter the
// device could hold that frames then pass through.
func FuzzNetState(f *testing.F) {
	f.Add(saveState(newSavedNet(f).r.net))
	f.Fuzz(func(t *testing.T, state []byte) {
		r := newRig(t, false, linuxFeatures)
		if r.net.LoadState(vmstate.NewDec("virtio-net", state)) != nil {
			return
		}
		fs := r.net.Filter()
		if len(fs.Unicast)+len(fs.Multicast) > MACTableEntries || fs.MAC[0]&1 != 0 {
			t.Fatalf("filter %+v", fs)
		}
		r.be.Deliver(frame(fs.MAC, 100, 1))
		r.be.Deliver(frame(mcastMAC, 100, 1))
	})
}
