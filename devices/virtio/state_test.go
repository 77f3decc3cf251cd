package virtio_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"testing"

	"github.com/petrel-vmm/petrel/devices/pci"
	"github.com/petrel-vmm/petrel/devices/virtio"
	"github.com/petrel-vmm/petrel/devices/virtio/blk"
	"github.com/petrel-vmm/petrel/devices/virtio/virtiotest"
	"github.com/petrel-vmm/petrel/vmm/guestmem"
	"github.com/petrel-vmm/petrel/vmstate"
	"golang.org/x/sys/unix"
)

const (
	rigSlot = 4
	rigRAM  = 4 << 20
)

// vmRig is a virtio-blk function on a bus, with KVM's side recorded, as a
// machine built from one configuration holds it.
type vmRig struct {
	dev *virtio.PCI
	bus *pci.Bus
	rt  *router
	sig *msiCount
	irq *line
	mem *guestmem.Memory
	ram []byte
}

// newVMRig builds the machine over the disk at path with nq queues; its
// guest RAM starts as a copy of ram (nil: zeroes), as a load restores it.
func newVMRig(t testing.TB, path string, nq int, ram []byte, o blk.Options) *vmRig {
	r := &vmRig{rt: newRouter(), sig: &msiCount{}, irq: &line{}}
	r.mem, r.ram = virtiotest.NewMemory(rigRAM)
	copy(r.ram, ram)
	o.NumQueues = nq
	var err error
	r.dev, _, err = blk.NewPCI(openDisk(t, path), o,
		virtio.Options{Mem: r.mem, MSI: r.sig, Router: r.rt, IRQ: r.irq})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.dev.Release() })
	r.bus = pci.NewBus(host{}, testWindows)
	if err := r.bus.Add(rigSlot, r.dev); err != nil {
		t.Fatal(err)
	}
	return r
}

// save quiesces the machine's devices and returns the bus's and the
// device's sections, in the order the machine saves them.
func (r *vmRig) save() (busState, devState []byte) {
	r.bus.Quiesce()
	var b, d vmstate.Enc
	r.bus.SaveState(&b)
	r.dev.SaveState(&d)
	return b.Data(), d.Data()
}

// load applies the sections to a freshly built machine in the order the
// machine must: bus, then devices, then resume.
func (r *vmRig) load(t testing.TB, busState, devState []byte) {
	t.Helper()
	if err := r.bus.LoadState(vmstate.NewDec("pci", busState)); err != nil {
		t.Fatal(err)
	}
	if err := r.dev.LoadState(vmstate.NewDec("virtio", devState)); err != nil {
		t.Fatal(err)
	}
	r.bus.Resume()
}

// flushBufs lays out a FLUSH request and returns its buffers and status
// byte's address.
func flushBufs(d *virtiotest.Driver) ([]virtiotest.Buf, uint64) {
	hdr := d.Alloc(32)
	binary.LittleEndian.PutUint32(d.RAM[hdr:], blk.TypeFlush)
	d.RAM[hdr+16] = 0xff
	return []virtiotest.Buf{{Addr: hdr, Len: 16}, {Addr: hdr + 16, Len: 1, Write: true}}, hdr + 16
}

// registers is what the driver reads back: config space, every queue's
// common configuration (the queue select restored after) and the MSI-X
// table and PBA.
func registers(d *virtiotest.Driver) []byte {
	var out []byte
	cfg := make([]byte, pci.ConfigSize)
	d.Dev.Config().Read(0, cfg)
	out = append(out, cfg...)
	sel := d.Common(virtiotest.QueueSelect, 2)
	n := int(d.Common(virtiotest.NumQueues, 2))
	for q := range n + 1 {
		d.SetCommon(virtiotest.QueueSelect, 2, uint64(q)) // n: no such queue
		for off := uint64(0); off < 0x38; off += 2 {
			out = binary.LittleEndian.AppendUint16(out, uint16(d.Common(off, 2)))
		}
	}
	d.SetCommon(virtiotest.QueueSelect, 2, sel)
	var w [4]byte
	for off := uint64(0); off < 16*uint64(n+1); off += 4 {
		d.Dev.MSIX().Read(0, off, w[:])
		out = append(out, w[:]...)
	}
	d.Dev.MSIX().Read(0, 0x800, w[:])
	return append(out, w[:]...)
}

// awaitUsed waits until the device published used index idx on q without
// consuming the entry: with EVENT_IDX the test driver's Used moves
// used_event past it, and a device that looks after that rightly sends no
// interrupt for it.
func awaitUsed(t testing.TB, d *virtiotest.Driver, q *virtiotest.Queue, idx uint16) {
	t.Helper()
	waitFor(t, "used entry", func() bool { return d.UsedIdx(q) == idx })
}

func eventfdCount(t testing.TB, fd int) uint64 {
	t.Helper()
	var b [8]byte
	if n, err := unix.Read(fd, b[:]); err != nil || n != 8 {
		return 0
	}
	return binary.LittleEndian.Uint64(b[:])
}

// savedRig drives a two-queue device into an interesting state and saves
// it: driver OK, MSI-X on, queue 1 with three completed requests and its
// vector masked with an interrupt pending, queue 0 with one completed
// request and one the driver posted and notified while the device was
// quiesced (that notification is lost with the saving process). It
// returns the sections, the driver (its view of the rings), the guest
// RAM, the registers as the driver read them and the late request.
type savedRig struct {
	a                  *vmRig
	path               string
	busState, devState []byte
	d                  *virtiotest.Driver
	regs               []byte
	late               uint16
	lateStatus         uint64
}

func newSavedRig(t testing.TB) *savedRig {
	s := &savedRig{path: newDiskFile(t, 1<<20)}
	a := newVMRig(t, s.path, 2, nil, blk.Options{})
	s.a = a
	a.bus.ConfigWrite(rigSlot, pci.RegCommand, []byte{pci.CmdMemorySpace | pci.CmdBusMaster, 0})
	d, err := virtiotest.New(a.dev, a.mem, a.ram)
	if err != nil {
		t.Fatal(err)
	}
	s.d = d
	if err := d.Init(want, 2, 0, true); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		flush(t, d, 1, true)
	}
	flush(t, d, 0, true)
	a.dev.MSIX().Write(0, 16*2+12, []byte{1, 0, 0, 0}) // mask queue 1's vector
	flush(t, d, 1, true)
	a.dev.ConfigChanged() // generation 1, config interrupt on vector 0
	d.SetCommon(virtiotest.DeviceFeatureSelect, 4, 1)
	d.SetCommon(virtiotest.QueueSelect, 2, 1)
	a.bus.Quiesce()
	bufs, st := flushBufs(d)
	if s.late, err = d.Submit(d.Queues[0], bufs, false); err != nil {
		t.Fatal(err)
	}
	s.lateStatus = st
	d.Kick(d.Queues[0])
	s.busState, s.devState = a.save()
	s.regs = registers(d)
	return s
}

// load builds the machine anew (guest RAM copied) and loads the state;
// the driver now drives the new device.
func (s *savedRig) load(t testing.TB) *vmRig {
	b := newVMRig(t, s.path, 2, s.a.ram, blk.Options{})
	b.load(t, s.busState, s.devState)
	s.d.Dev, s.d.Mem, s.d.RAM = b.dev, b.mem, b.ram
	return b
}

func TestStateRoundTrip(t *testing.T) {
	s := newSavedRig(t)
	if pba := s.regs[len(s.regs)-4]; pba != 4 {
		t.Fatalf("saved PBA %#x, want vector 2 pending", pba)
	}
	bar := s.a.dev.Config().BARAddress(0)
	b := s.load(t)
	d := s.d
	// The late request, whose notification was lost, is served at the
	// saved used index, and signalled on queue 0's irqfd.
	awaitUsed(t, d, d.Queues[0], 2)
	waitFor(t, "queue 0's irqfd", func() bool { return b.rt.irqfdFor(1) >= 0 && eventfdCount(t, b.rt.irqfdFor(1)) > 0 })
	id, _, err := d.Wait(d.Queues[0])
	if err != nil || id != s.late || d.RAM[s.lateStatus] != blk.StatusOK {
		t.Fatalf("late request: used %d (want %d), status %d, %v", id, s.late, d.RAM[s.lateStatus], err)
	}
	if got := registers(d); !bytes.Equal(got, s.regs) {
		t.Fatalf("registers after load:\n got %x\nwant %x", got, s.regs)
	}
	if d.Common(virtiotest.DeviceStatus, 1) != 0xf || d.Common(virtiotest.ConfigGeneration, 1) != 1 ||
		d.Common(virtiotest.QueueSelect, 2) != 1 {
		t.Fatal("status, generation or queue select not restored")
	}
	// The notify ioeventfds are at the same BAR address, and MSI routes
	// and irqfds exist for the unmasked vectors only.
	if b.dev.Config().BARAddress(0) != bar || len(b.rt.ioevents) != 2 || b.rt.ioevents[bar+0x3000] == 0 ||
		b.rt.ioevents[bar+0x3004] == 0 {
		t.Fatalf("ioeventfds %v for BAR0 at %#x", b.rt.ioevents, bar)
	}
	if b.rt.irqfdFor(0) < 0 || b.rt.irqfdFor(1) < 0 || b.rt.irqfdFor(2) >= 0 {
		t.Fatalf("irqfds %v routes %v", b.rt.irqfds, b.rt.routes)
	}
	// A new request on queue 1, notified as KVM's ioeventfd would, lands
	// at the saved used index; its interrupt stays pending while masked
	// and comes through the re-created irqfd on unmask.
	bufs, st := flushBufs(d)
	head, err := d.Submit(d.Queues[1], bufs, false)
	if err != nil {
		t.Fatal(err)
	}
	var one [8]byte
	one[0] = 1
	unix.Write(b.rt.ioevents[bar+0x3004], one[:])
	if id, _, err := d.Wait(d.Queues[1]); err != nil || id != head || d.RAM[st] != blk.StatusOK || d.UsedIdx(d.Queues[1]) != 5 {
		t.Fatalf("new request on queue 1: used %d (want %d), used idx %d, %v", id, head, d.UsedIdx(d.Queues[1]), err)
	}
	b.dev.MSIX().Write(0, 16*2+12, []byte{0, 0, 0, 0})
	if fd := b.rt.irqfdFor(2); fd < 0 || eventfdCount(t, fd) != 1 || b.dev.MSIX().Pending(2) {
		t.Fatal("the pending vector was not delivered on unmask after load")
	}
	if b.sig.count(1)+b.sig.count(2) != 0 {
		t.Fatal("KVM_SIGNAL_MSI used although irqfds carry the vectors")
	}
}

// Without MSI-X the pending interrupt is the ISR and the INTx line: both
// come back, and reading the ISR deasserts the line of the new machine.
func TestStateINTx(t *testing.T) {
	path := newDiskFile(t, 1<<20)
	a := newVMRig(t, path, 1, nil, blk.Options{})
	a.bus.ConfigWrite(rigSlot, pci.RegCommand, []byte{pci.CmdMemorySpace, 0})
	d, err := virtiotest.New(a.dev, a.mem, a.ram)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Init(want, 1, 0, false); err != nil {
		t.Fatal(err)
	}
	flush(t, d, 0, true)
	waitFor(t, "INTx assertion", a.irq.get)
	busState, devState := a.save()
	b := newVMRig(t, path, 1, a.ram, blk.Options{})
	b.load(t, busState, devState)
	d.Dev, d.Mem, d.RAM = b.dev, b.mem, b.ram
	if !b.irq.get() || b.dev.Config().Uint16(pci.RegStatus)&pci.StatusINTx == 0 {
		t.Fatal("pending INTx not asserted after load")
	}
	if isr := d.ISR(); isr != 1 || b.irq.get() {
		t.Fatalf("ISR %#x after load, line %v", isr, b.irq.get())
	}
	bufs, _ := flushBufs(d)
	if _, err := d.Submit(d.Queues[0], bufs, false); err != nil {
		t.Fatal(err)
	}
	d.Kick(d.Queues[0])
	awaitUsed(t, d, d.Queues[0], 2)
	waitFor(t, "INTx after load", b.irq.get)
}

// A state from another device, or for another configuration of the same
// device, is refused naming the difference; the device works on.
func TestStateMismatch(t *testing.T) {
	s := newSavedRig(t)
	for _, c := range []struct {
		name string
		nq   int
		size int
		o    blk.Options
		want string
	}{
		{"queues", 1, 1 << 20, blk.Options{}, "2 queues saved, this device has 1"},
		{"read-only", 2, 1 << 20, blk.Options{ReadOnly: true}, "saved device offered features"},
		{"disk size", 2, 2 << 20, blk.Options{}, "the saved disk had 2048 sectors, this one has 4096"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := newVMRig(t, newDiskFile(t, c.size), c.nq, nil, c.o)
			err := m.dev.LoadState(vmstate.NewDec("virtio", s.devState))
			if !errors.Is(err, pci.ErrStateMismatch) || !bytes.Contains([]byte(err.Error()), []byte(c.want)) {
				t.Fatalf("load: %v, want %q", err, c.want)
			}
			m.bus.Resume()
			d, err := virtiotest.New(m.dev, m.mem, m.ram)
			if err != nil {
				t.Fatal(err)
			}
			if d.Common(virtiotest.DeviceStatus, 1) != 0 {
				t.Fatal("a refused load changed the device status")
			}
			if err := d.Init(want, c.nq, 0, true); err != nil {
				t.Fatal(err)
			}
			flush(t, d, 0, true)
		})
	}
}

// Truncated sections fail as corrupt; flipped bits fail or load, never
// panic; the device is usable after either.
func TestStateDamaged(t *testing.T) {
	s := newSavedRig(t)
	m := newVMRig(t, newDiskFile(t, 1<<20), 2, nil, blk.Options{})
	for n := range len(s.devState) {
		if err := m.dev.LoadState(vmstate.NewDec("virtio", s.devState[:n])); !errors.Is(err, vmstate.ErrCorrupt) {
			t.Fatalf("section cut at %d: %v", n, err)
		}
	}
	refused := 0
	for i := range len(s.devState) {
		for _, bit := range []byte{0x01, 0x10, 0x80} {
			x := slices.Clone(s.devState)
			x[i] ^= bit
			if m.dev.LoadState(vmstate.NewDec("virtio", x)) != nil {
				refused++
			}
		}
	}
	if refused < len(s.devState) {
		t.Fatalf("only %d of %d flipped sections refused", refused, 3*len(s.devState))
	}
	m.dev.Resume()
	d, err := virtiotest.New(m.dev, m.mem, m.ram)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Init(want, 2, 0, true); err != nil {
		t.Fatal(err)
	}
	flush(t, d, 1, true)
}

// A device saved while running is quiesced for the save and runs on.
func TestSaveRunningDevice(t *testing.T) {
	_, d := newDevice(t, virtio.Options{MSI: &msiCount{}}, 1)
	if err := d.Init(want, 1, 0, true); err != nil {
		t.Fatal(err)
	}
	flush(t, d, 0, true)
	var e vmstate.Enc
	d.Dev.SaveState(&e)
	flush(t, d, 0, true)
	// Quiesce holds requests back until Resume, which serves them.
	d.Dev.Quiesce()
	bufs, _ := flushBufs(d)
	if _, err := d.Submit(d.Queues[0], bufs, false); err != nil {
		t.Fatal(err)
	}
	d.Kick(d.Queues[0])
	if _, _, ok := d.Used(d.Queues[0]); ok {
		t.Fatal("request served while quiesced")
	}
	d.Dev.Resume()
	if _, _, err := d.Wait(d.Queues[0]); err != nil {
		t.Fatal(err)
	}
}

// FuzzLoadState loads fuzzed transport sections into a fresh virtio-blk
// function: an error or a device that runs, never a panic; a driver can
// reset and use it afterwards.
func FuzzLoadState(f *testing.F) {
	f.Add(newSavedRig(f).devState)
	disk := newDiskFile(f, 1<<20)
	f.Fuzz(func(t *testing.T, state []byte) {
		m := newVMRig(t, disk, 2, nil, blk.Options{})
		m.dev.LoadState(vmstate.NewDec("virtio", state))
		m.dev.Resume()
		d, err := virtiotest.New(m.dev, m.mem, m.ram)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Init(want, 2, 0, true); err != nil {
			t.Fatalf("init after a fuzzed load: %v", err)
		}
		flush(t, d, 1, true)
	})
}
