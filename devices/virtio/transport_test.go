package virtio_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/block"
	"github.com/petrel-vmm/petrel/block/raw"
	"github.com/petrel-vmm/petrel/devices/pci"
	"github.com/petrel-vmm/petrel/devices/virtio"
	"github.com/petrel-vmm/petrel/devices/virtio/blk"
	"github.com/petrel-vmm/petrel/devices/virtio/virtiotest"
	"golang.org/x/sys/unix"
)

// testWindows are BAR windows for a test bus (the PC's 32- and 64-bit
// windows; machine/pc owns the real ones).
var testWindows = pci.Windows{
	IO:    pci.Window{Base: 0xc000, Size: 0x4000},
	Mem32: pci.Window{Base: 0xc000_0000, Size: 0x3c00_0000},
	Mem64: pci.Window{Base: 1 << 40, Size: 1 << 40},
}

const want = virtio.FeatureVersion1 | virtio.FeatureEventIdx | virtio.FeatureIndirectDesc |
	blk.FeatureFlush | blk.FeatureMQ

// router is an EventRouter that records what KVM would be asked to do.
type router struct {
	mu       sync.Mutex
	ioevents map[uint64]int // notify address -> eventfd
	routes   map[uint32][2]uint64
	irqfds   map[uint32]int // gsi -> eventfd
	nextGSI  uint32
}

func newRouter() *router {
	return &router{ioevents: map[uint64]int{}, routes: map[uint32][2]uint64{}, irqfds: map[uint32]int{}, nextGSI: 24}
}

func (r *router) AddIoeventfd(fd int, addr uint64, size uint32, pio bool, match *uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if pio || size != 2 || match != nil {
		return errors.New("unexpected ioeventfd kind")
	}
	if _, dup := r.ioevents[addr]; dup {
		return fmt.Errorf("ioeventfd at %#x twice", addr)
	}
	r.ioevents[addr] = fd
	return nil
}

func (r *router) RemoveIoeventfd(fd int, addr uint64, size uint32, pio bool, match *uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ioevents[addr] != fd {
		return fmt.Errorf("no ioeventfd %d at %#x", fd, addr)
	}
	delete(r.ioevents, addr)
	return nil
}

func (r *router) AddMSIRoute(addr uint64, data uint32) (uint32, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.nextGSI
	r.nextGSI++
	r.routes[g] = [2]uint64{addr, uint64(data)}
	return g, nil
}

func (r *router) UpdateMSIRoute(gsi uint32, addr uint64, data uint32) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.routes[gsi]; !ok {
		return errors.New("no such route")
	}
	r.routes[gsi] = [2]uint64{addr, uint64(data)}
	return nil
}

func (r *router) RemoveMSIRoute(gsi uint32) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.routes, gsi)
	return nil
}

func (r *router) AddIrqfd(fd int, gsi uint32) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.routes[gsi]; !ok {
		return errors.New("irqfd on a GSI without a route")
	}
	r.irqfds[gsi] = fd
	return nil
}

func (r *router) RemoveIrqfd(fd int, gsi uint32) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.irqfds, gsi)
	return nil
}

// irqfdFor returns the eventfd KVM would watch for MSI data v.
func (r *router) irqfdFor(v uint32) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	for g, fd := range r.irqfds {
		if r.routes[g][1] == uint64(v) {
			return fd
		}
	}
	return -1
}

type line struct {
	mu    sync.Mutex
	level bool
	edges int
}

func (l *line) SetLevel(on bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if on != l.level {
		l.edges++
	}
	l.level = on
}

func (l *line) get() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.level
}

type msiCount struct {
	mu sync.Mutex
	n  map[uint32]int
}

func (m *msiCount) SignalMSI(addr uint64, data uint32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.n == nil {
		m.n = map[uint32]int{}
	}
	m.n[data]++
	return nil
}

func (m *msiCount) count(v uint32) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.n[v]
}

func newDisk(t testing.TB) block.Image { return openDisk(t, newDiskFile(t, 1<<20)) }

// newDiskFile creates a raw image of size zero bytes.
func newDiskFile(t testing.TB, size int) string {
	path := filepath.Join(t.TempDir(), "d.raw")
	if err := os.WriteFile(path, make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func openDisk(t testing.TB, path string) block.Image {
	img, err := raw.Open(path, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func newDevice(t testing.TB, o virtio.Options, nq int) (*virtio.PCI, *virtiotest.Driver) {
	mem, ram := virtiotest.NewMemory(4 << 20)
	o.Mem = mem
	dev, _, err := blk.NewPCI(newDisk(t), blk.Options{NumQueues: nq}, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Release() })
	d, err := virtiotest.New(dev, mem, ram)
	if err != nil {
		t.Fatal(err)
	}
	return dev, d
}

// flush submits a FLUSH request on q and waits for it.
func flush(t testing.TB, d *virtiotest.Driver, q int, kick bool) {
	t.Helper()
	hdr := d.Alloc(32)
	binary.LittleEndian.PutUint32(d.RAM[hdr:], blk.TypeFlush)
	d.RAM[hdr+16] = 0xff
	bufs := []virtiotest.Buf{{Addr: hdr, Len: 16}, {Addr: hdr + 16, Len: 1, Write: true}}
	if _, err := d.Submit(d.Queues[q], bufs, false); err != nil {
		t.Fatal(err)
	}
	if kick {
		d.Kick(d.Queues[q])
	}
	if _, _, err := d.Wait(d.Queues[q]); err != nil {
		t.Fatal(err)
	}
	if d.RAM[hdr+16] != blk.StatusOK {
		t.Fatalf("flush status %d", d.RAM[hdr+16])
	}
}

func TestIdentity(t *testing.T) {
	dev, _ := newDevice(t, virtio.Options{}, 1)
	c := dev.Config()
	if c.Uint16(pci.RegVendorID) != 0x1af4 || c.Uint16(pci.RegDeviceID) != 0x1042 ||
		c.Uint8(pci.RegRevision) != 1 || c.Uint16(pci.RegSubsysID) < 0x40 || c.Uint8(pci.RegInterruptPin) != 1 {
		t.Fatalf("identity %#x", c.Uint32(0))
	}
	if c.Uint32(pci.RegBAR0)&0xf != 0xc {
		t.Fatalf("BAR0 type bits %#x, want 64-bit prefetchable memory", c.Uint32(pci.RegBAR0)&0xf)
	}
	types := map[uint8]bool{}
	for _, off := range c.Capabilities() {
		if c.Uint8(off) == pci.CapVendor {
			types[c.Uint8(off+3)] = true
		}
	}
	for typ := uint8(1); typ <= 5; typ++ {
		if !types[typ] {
			t.Errorf("virtio capability type %d missing", typ)
		}
	}
}

func TestFeatureNegotiation(t *testing.T) {
	_, d := newDevice(t, virtio.Options{}, 1)
	offered := d.OfferedFeatures()
	if offered&want != want {
		t.Fatalf("offered %#x lacks %#x", offered, want&^offered)
	}
	if err := d.Init(want&^virtio.FeatureVersion1, 1, 0, false); err == nil {
		t.Fatal("FEATURES_OK accepted without VERSION_1")
	}
	if err := d.Init(want|1<<50, 1, 0, false); err != nil {
		t.Fatal(err) // Init masks with the offer: fine
	}
	// Ask for an unoffered bit by hand.
	d.SetCommon(virtiotest.DeviceStatus, 1, 0)
	d.SetCommon(virtiotest.DeviceStatus, 1, 3)
	d.SetCommon(virtiotest.DriverFeatureSelect, 4, 1)
	d.SetCommon(virtiotest.DriverFeature, 4, 1|1<<18)
	d.SetCommon(virtiotest.DeviceStatus, 1, 3|virtio.StatusFeaturesOK)
	if d.Common(virtiotest.DeviceStatus, 1)&virtio.StatusFeaturesOK != 0 {
		t.Fatal("FEATURES_OK accepted with an unoffered feature")
	}
	// After FEATURES_OK the driver features are frozen.
	d.SetCommon(virtiotest.DriverFeature, 4, 1)
	d.SetCommon(virtiotest.DeviceStatus, 1, 3|virtio.StatusFeaturesOK)
	d.SetCommon(virtiotest.DriverFeature, 4, 0)
	if d.Common(virtiotest.DriverFeature, 4) != 1 {
		t.Fatal("driver features changed after FEATURES_OK")
	}
	// DRIVER_OK without FEATURES_OK is a driver bug: NEEDS_RESET.
	d.SetCommon(virtiotest.DeviceStatus, 1, 0)
	d.SetCommon(virtiotest.DeviceStatus, 1, 3|virtio.StatusDriverOK)
	if d.Common(virtiotest.DeviceStatus, 1)&virtio.StatusDeviceNeedsReset == 0 {
		t.Fatal("DRIVER_OK without FEATURES_OK accepted")
	}
}

func TestReset(t *testing.T) {
	_, d := newDevice(t, virtio.Options{MSI: &msiCount{}}, 2)
	if err := d.Init(want, 2, 64, true); err != nil {
		t.Fatal(err)
	}
	flush(t, d, 1, true)
	d.SetCommon(virtiotest.QueueSelect, 2, 1)
	if d.Common(virtiotest.QueueSize, 2) != 64 || d.Common(virtiotest.QueueEnable, 2) != 1 ||
		d.Common(virtiotest.QueueMSIXVector, 2) != 2 || d.Common(virtiotest.QueueDesc, 8) != d.Queues[1].Desc {
		t.Fatal("queue 1 registers do not read back")
	}
	d.SetCommon(virtiotest.DeviceStatus, 1, 0)
	if d.Common(virtiotest.DeviceStatus, 1) != 0 || d.Common(virtiotest.ConfigMSIXVector, 2) != virtio.NoVector {
		t.Fatal("status or config vector survived reset")
	}
	for q := range 2 {
		d.SetCommon(virtiotest.QueueSelect, 2, uint64(q))
		if d.Common(virtiotest.QueueSize, 2) != 256 || d.Common(virtiotest.QueueEnable, 2) != 0 ||
			d.Common(virtiotest.QueueMSIXVector, 2) != virtio.NoVector || d.Common(virtiotest.QueueDesc, 8) != 0 ||
			d.Common(virtiotest.QueueDriver, 8) != 0 || d.Common(virtiotest.QueueDevice, 8) != 0 {
			t.Fatalf("queue %d not reset", q)
		}
	}
	d.SetCommon(virtiotest.DriverFeatureSelect, 4, 1)
	if d.Common(virtiotest.DriverFeature, 4) != 0 {
		t.Fatal("driver features survived reset")
	}
	// A vector beyond the table reads back as NO_VECTOR.
	d.SetCommon(virtiotest.ConfigMSIXVector, 2, 7)
	d.SetCommon(virtiotest.QueueMSIXVector, 2, 3)
	if d.Common(virtiotest.ConfigMSIXVector, 2) != virtio.NoVector || d.Common(virtiotest.QueueMSIXVector, 2) != virtio.NoVector {
		t.Fatal("out-of-range MSI-X vector accepted")
	}
	if err := d.Init(want, 2, 0, true); err != nil {
		t.Fatal(err)
	}
	flush(t, d, 0, true)
}

func TestINTxFallback(t *testing.T) {
	l := &line{}
	dev, d := newDevice(t, virtio.Options{IRQ: l}, 1)
	if err := d.Init(want, 1, 0, false); err != nil {
		t.Fatal(err)
	}
	flush(t, d, 0, true)
	waitFor(t, "INTx assertion", l.get) // raised just after the used entry
	if dev.Config().Uint16(pci.RegStatus)&pci.StatusINTx == 0 {
		t.Fatal("INTx not asserted without MSI-X")
	}
	if isr := d.ISR(); isr != 1 {
		t.Fatalf("ISR %#x, want queue bit", isr)
	}
	if l.get() || d.ISR() != 0 {
		t.Fatal("reading the ISR did not clear it and deassert INTx")
	}
	// Config change: ISR bit 1.
	dev.ConfigChanged()
	if d.ISR() != 2 || d.Common(virtiotest.ConfigGeneration, 1) != 1 {
		t.Fatal("config change not reported through ISR and generation")
	}
	// INTx disabled in the command register: no assertion.
	dev.Config().Write(pci.RegCommand, []byte{0, pci.CmdINTxDisable >> 8})
	flush(t, d, 0, true)
	waitFor(t, "interrupt status", func() bool { return dev.Config().Uint16(pci.RegStatus)&pci.StatusINTx != 0 })
	if l.get() {
		t.Fatal("INTx asserted while disabled")
	}
	if dev.Config().Uint16(pci.RegStatus)&pci.StatusINTx == 0 {
		t.Fatal("interrupt status bit clear while an interrupt is pending")
	}
	// Re-enabling INTx asserts the pending interrupt; disabling drops it.
	dev.Config().Write(pci.RegCommand, []byte{0, 0})
	if !l.get() {
		t.Fatal("pending INTx not asserted after re-enabling")
	}
	dev.Config().Write(pci.RegCommand, []byte{0, pci.CmdINTxDisable >> 8})
	if l.get() {
		t.Fatal("INTx still asserted after disabling")
	}
	if d.ISR() != 1 {
		t.Fatal("ISR not set while INTx is disabled")
	}
}

type host struct{}

func (host) MapBAR(pci.Mapping) error   { return nil }
func (host) UnmapBAR(pci.Mapping) error { return nil }

// With an EventRouter, a notify is an ioeventfd KVM signals and a
// completion an irqfd write: the test plays KVM's part on both fds.
func TestIoeventfdAndIrqfd(t *testing.T) {
	rt := newRouter()
	sig := &msiCount{}
	dev, d := newDevice(t, virtio.Options{Router: rt, MSI: sig}, 2)
	bus := pci.NewBus(host{}, testWindows)
	if err := bus.Add(4, dev); err != nil {
		t.Fatal(err)
	}
	bus.ConfigWrite(4, pci.RegCommand, []byte{pci.CmdMemorySpace, 0})
	bar := dev.Config().BARAddress(0)
	if len(rt.ioevents) != 2 || rt.ioevents[bar+0x3000] == 0 || rt.ioevents[bar+0x3004] == 0 {
		t.Fatalf("ioeventfds %v for BAR at %#x", rt.ioevents, bar)
	}
	if err := d.Init(want, 2, 0, true); err != nil {
		t.Fatal(err)
	}
	for q := range 2 {
		d.SetUsedEvent(d.Queues[q], 0)
		hdr := d.Alloc(32)
		binary.LittleEndian.PutUint32(d.RAM[hdr:], blk.TypeFlush)
		if _, err := d.Submit(d.Queues[q], []virtiotest.Buf{{Addr: hdr, Len: 16}, {Addr: hdr + 16, Len: 1, Write: true}}, false); err != nil {
			t.Fatal(err)
		}
		var one [8]byte
		one[0] = 1
		if _, err := unix.Write(rt.ioevents[bar+0x3000+4*uint64(q)], one[:]); err != nil { // KVM's ioeventfd
			t.Fatal(err)
		}
		if _, _, err := d.Wait(d.Queues[q]); err != nil {
			t.Fatal(err)
		}
		fd := rt.irqfdFor(uint32(q + 1))
		if fd < 0 {
			t.Fatalf("no irqfd for queue %d's vector", q)
		}
		var cnt [8]byte
		deadline := time.Now().Add(5 * time.Second)
		for {
			if n, _ := unix.Read(fd, cnt[:]); n == 8 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("queue %d completion never signalled its irqfd", q)
			}
			time.Sleep(time.Millisecond)
		}
	}
	if sig.count(1)+sig.count(2) != 0 {
		t.Fatal("KVM_SIGNAL_MSI used although irqfds carry the vectors")
	}
	// Moving the BAR moves the ioeventfds.
	bus.ConfigWrite(4, pci.RegBAR0, []byte{0, 0, 0, 0xe0})
	if rt.ioevents[0xe000_3000] == 0 || rt.ioevents[bar+0x3000] != 0 {
		t.Fatalf("ioeventfds after move: %v", rt.ioevents)
	}
	if err := bus.Remove(4); err != nil {
		t.Fatal(err)
	}
	if len(rt.ioevents) != 0 || len(rt.irqfds) != 0 || len(rt.routes) != 0 {
		t.Fatalf("left behind after unplug: %v %v %v", rt.ioevents, rt.irqfds, rt.routes)
	}
}

func TestPCICfgWindow(t *testing.T) {
	dev, d := newDevice(t, virtio.Options{}, 3)
	c := dev.Config()
	var capOff int
	for _, off := range c.Capabilities() {
		if c.Uint8(off) == pci.CapVendor && c.Uint8(off+3) == 5 {
			capOff = off
		}
	}
	if capOff == 0 {
		t.Fatal("no VIRTIO_PCI_CAP_PCI_CFG")
	}
	var b [4]byte
	c.Write(capOff+4, []byte{0})
	binary.LittleEndian.PutUint32(b[:], virtiotest.NumQueues)
	c.Write(capOff+8, b[:])
	binary.LittleEndian.PutUint32(b[:], 2)
	c.Write(capOff+12, b[:])
	c.Read(capOff+16, b[:])
	if got := binary.LittleEndian.Uint16(b[:]); got != 3 {
		t.Fatalf("num_queues through pci_cfg_data = %d", got)
	}
	// A write through the window: device status.
	binary.LittleEndian.PutUint32(b[:], virtiotest.DeviceStatus)
	c.Write(capOff+8, b[:])
	binary.LittleEndian.PutUint32(b[:], 1)
	c.Write(capOff+12, b[:])
	c.Write(capOff+16, []byte{virtio.StatusAcknowledge, 0, 0, 0})
	if d.Common(virtiotest.DeviceStatus, 1) != virtio.StatusAcknowledge {
		t.Fatal("write through pci_cfg_data lost")
	}
}

func TestBadRingNeedsReset(t *testing.T) {
	_, d := newDevice(t, virtio.Options{}, 1)
	d.SetCommon(virtiotest.DeviceStatus, 1, 0)
	d.SetCommon(virtiotest.DeviceStatus, 1, 3)
	d.SetCommon(virtiotest.DriverFeatureSelect, 4, 1)
	d.SetCommon(virtiotest.DriverFeature, 4, 1)
	d.SetCommon(virtiotest.DeviceStatus, 1, 3|virtio.StatusFeaturesOK)
	d.SetCommon(virtiotest.QueueDesc, 8, 1<<40) // outside guest memory
	d.SetCommon(virtiotest.QueueEnable, 2, 1)
	d.SetCommon(virtiotest.DeviceStatus, 1, 3|virtio.StatusFeaturesOK|virtio.StatusDriverOK)
	if d.Common(virtiotest.DeviceStatus, 1)&virtio.StatusDeviceNeedsReset == 0 {
		t.Fatal("ring outside memory accepted")
	}
}

// After hot-unplug the function may still see a late guest access: it is
// ignored, and a second Release is harmless.
func TestAccessAfterRelease(t *testing.T) {
	dev, d := newDevice(t, virtio.Options{}, 1)
	if err := d.Init(want, 1, 0, false); err != nil {
		t.Fatal(err)
	}
	if err := dev.Release(); err != nil {
		t.Fatal(err)
	}
	d.SetCommon(virtiotest.DeviceStatus, 1, 0)
	d.SetCommon(virtiotest.DeviceStatus, 1, 0xf)
	d.Kick(d.Queues[0])
	if err := dev.Release(); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond: interrupts are raised by the queue goroutine just
// after it publishes the used entry the driver waits for.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(100 * time.Microsecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s", what)
		}
	}
}

// A machine reset (pci.Bus.Reset) stops the queues and forgets the driver's
// setup; the device works again after the driver initialises it anew.
func TestBusResetStopsDevice(t *testing.T) {
	dev, d := newDevice(t, virtio.Options{MSI: &msiCount{}}, 1)
	bus := pci.NewBus(host{}, testWindows)
	if err := bus.Add(3, dev); err != nil {
		t.Fatal(err)
	}
	if err := d.Init(want, 1, 0, true); err != nil {
		t.Fatal(err)
	}
	flush(t, d, 0, true)
	bus.Reset()
	if d.Common(virtiotest.DeviceStatus, 1) != 0 || dev.MSIX().Enabled() {
		t.Fatal("device still active after a bus reset")
	}
	// A request posted now is not served: the queue is gone.
	hdr := d.Alloc(32)
	binary.LittleEndian.PutUint32(d.RAM[hdr:], blk.TypeFlush)
	if _, err := d.Submit(d.Queues[0], []virtiotest.Buf{{Addr: hdr, Len: 16}, {Addr: hdr + 16, Len: 1, Write: true}}, false); err != nil {
		t.Fatal(err)
	}
	d.Kick(d.Queues[0])
	time.Sleep(20 * time.Millisecond)
	if _, _, ok := d.Used(d.Queues[0]); ok {
		t.Fatal("request served after reset")
	}
	if err := d.Init(want, 1, 0, true); err != nil {
		t.Fatal(err)
	}
	flush(t, d, 0, true)
}
