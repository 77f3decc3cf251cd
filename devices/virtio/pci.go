package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"github.com/petrel-vmm/petrel/devices/pci"
	"github.com/petrel-vmm/petrel/vmm/guestmem"
	"golang.org/x/sys/unix"
)

// Layout of the virtio BAR (BAR0, 64-bit; section 4.1.4) and the MSI-X BAR.
// Each structure gets its own 4 KiB page of the 16 KiB BAR, so that a
// guest mapping them separately (as Linux does) never shares a page
// between them; offsets are in bytes from the BAR's base, commonSize is
// the size of struct virtio_pci_common_cfg (4.1.4.3), deviceMax bounds a
// backend's device-specific configuration.
const (
	virtioBAR    = 0
	msixBAR      = 2
	barSize      = 0x4000
	commonOffset = 0x0000
	commonSize   = 0x38
	isrOffset    = 0x1000
	deviceOffset = 0x2000
	deviceMax    = 0x1000
	notifyOffset = 0x3000
	// NotifyMultiplier is notify_off_multiplier: queue i is notified by a
	// write at notifyOffset + 4*i.
	NotifyMultiplier = 4
)

// virtio_pci_cap cfg_type values (section 4.1.4).
const (
	capCommon = 1
	capNotify = 2
	capISR    = 3
	capDevice = 4
	capPCI    = 5
)

// Options connect a virtio-pci device to the machine.
type Options struct {
	// Mem is guest RAM: the rings and every buffer the driver posts are
	// reached through it, bounds-checked. Required.
	Mem *guestmem.Memory
	// MSI injects MSI-X messages; Router, when set, makes notifications
	// ioeventfds and interrupts irqfds. IRQ is the INTx line used while
	// MSI-X is disabled. Any of them may be nil.
	MSI    pci.MSISignaler
	Router pci.EventRouter
	IRQ    pci.IRQLine
}

// queueState is one queue's registers as the driver programs them through
// the common configuration (4.1.4.3): queue_size, queue_enable, and the
// guest-physical addresses of the descriptor table, driver (available) and
// device (used) areas. They take effect when the queue is enabled.
type queueState struct {
	size                 uint16
	enabled              bool
	desc, driver, device uint64
}

// PCI is a virtio 1.x modern PCI function serving one Backend.
//
// Lock order: pci.Bus.mu, PCI.mu, then pci.MSIX.mu / isrMu / ConfigSpace.mu.
// Queue goroutines never take PCI.mu, so a reset (which holds mu while it
// waits for them) cannot deadlock.
type PCI struct {
	be   Backend
	o    Options
	cfg  *pci.ConfigSpace
	msix *pci.MSIX // nq+1 vectors: one per queue and one for config changes, mapped by the driver
	// offer is the device features offered: the backend's and the
	// transport's (VERSION_1, ring features).
	offer  uint64
	nq     int // number of queues, fixed by the backend
	pciCap int // offset of the VIRTIO_PCI_CAP_PCI_CFG capability

	// mu guards the registers below, the workers and the eventfd state.
	mu sync.Mutex
	// devFeatSel and drvFeatSel select the 32-bit half of the features
	// that device_feature and driver_feature show; drvFeatures is what the
	// driver wrote, which takes effect at FEATURES_OK.
	devFeatSel  uint32
	drvFeatSel  uint32
	drvFeatures uint64
	status      uint8 // device_status, the driver's progress (2.1)
	// generation is config_generation, bumped when the device changes
	// its configuration so that a driver reading it twice can retry.
	generation uint8
	// configVector is config_msix_vector (NoVector for none).
	configVector atomic.Uint32
	needsReset   atomic.Bool // a queue goroutine found the driver's ring broken
	queueSel     uint16      // queue_select: the queue the queue_* registers show
	queues       []queueState
	vectors      []atomic.Uint32 // per-queue MSI-X vector, read by workers
	// workers are the running queue goroutines (nil entries for queues
	// not enabled); wg waits for them on reset, quiesce and release.
	workers []*worker
	wg      sync.WaitGroup
	kicks   []*os.File // one eventfd per queue, for the device's life
	kickFDs []int      // their fds (File.Fd would make them blocking)
	// barAddr is BAR0's guest-physical address while it is mapped; the
	// ioeventfds are registered at barAddr + notifyOffset + 4*queue.
	barAddr  uint64
	ioevents bool // kicks are registered as ioeventfds at barAddr
	released bool // Release ran: guest writes are ignored from now on
	// quiesced: Quiesce ran (or LoadState); the queue goroutines stay
	// stopped until Resume.
	quiesced bool

	// isrMu guards isr and level. isr is the ISR status (4.1.4.5): bit 0
	// a queue interrupt, bit 1 a configuration change, cleared by the
	// driver's read. level is whether INTx is asserted, which it is while
	// isr is non-zero and the command register allows INTx (setLevelLocked;
	// with MSI-X on, interrupts go as messages and isr stays 0).
	isrMu sync.Mutex
	isr   uint8
	level bool

	// BadAccesses counts ignored guest accesses (odd widths, offsets).
	BadAccesses atomic.Uint64
	// InvalidChains counts malformed descriptor chains the guest posted.
	InvalidChains atomic.Uint64
}

// NewPCI builds the PCI function for be.
func NewPCI(be Backend, o Options) (*PCI, error) {
	if o.Mem == nil {
		return nil, errors.New("virtio-pci: no guest memory")
	}
	nq := be.NumQueues()
	if nq < 1 || nq > 1023 {
		return nil, fmt.Errorf("virtio-pci: %d queues out of range", nq)
	}
	if m := be.MaxQueueSize(); m == 0 || m > MaxQueueSize || m&(m-1) != 0 {
		return nil, fmt.Errorf("virtio-pci: max queue size %d invalid", m)
	}
	if be.ConfigSize() > deviceMax {
		return nil, fmt.Errorf("virtio-pci: device config of %d bytes too large", be.ConfigSize())
	}
	p := &PCI{be: be, o: o, nq: nq,
		offer:   be.DeviceFeatures() | transportFeatures,
		queues:  make([]queueState, nq),
		vectors: make([]atomic.Uint32, nq),
	}
	p.cfg = pci.NewConfigSpace(pci.Header{
		VendorID: VendorID, DeviceID: DeviceIDBase + be.DeviceType(), Class: be.Class(),
		Revision: 1, SubsysVendor: VendorID, SubsysID: 0x1100, InterruptPin: 1,
	})
	if err := p.cfg.SetBAR(virtioBAR, pci.BAR{Size: barSize, Is64: true, Prefetch: true, Handler: p}); err != nil {
		return nil, err
	}
	vectors := nq + 1
	tableSize := uint64(16 * vectors)
	pbaOff := max(0x800, (tableSize+7)&^7)
	msixSize := uint64(0x1000)
	for msixSize < pbaOff+uint64((vectors+63)/64*8) {
		msixSize *= 2
	}
	var err error
	p.msix, err = pci.NewMSIX(p.cfg, pci.MSIXConfig{Vectors: vectors, TableBAR: msixBAR, PBABAR: msixBAR,
		PBAOffset: pbaOff, Signaler: o.MSI, Router: o.Router})
	if err != nil {
		return nil, err
	}
	if err := p.cfg.SetBAR(msixBAR, pci.BAR{Size: msixSize, Handler: p.msix}); err != nil {
		return nil, err
	}
	if err := p.addCaps(); err != nil {
		return nil, err
	}
	for i := range nq {
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			p.closeKicks()
			return nil, fmt.Errorf("virtio-pci: queue %d eventfd: %w", i, err)
		}
		p.kicks = append(p.kicks, os.NewFile(uintptr(fd), fmt.Sprintf("virtio-kick-%d", i)))
		p.kickFDs = append(p.kickFDs, fd)
	}
	p.resetLocked()
	return p, nil
}

// addCaps adds the five virtio vendor capabilities (4.1.4): common,
// notify (with notify_off_multiplier), ISR and device configuration, each
// pointing into BAR0, then VIRTIO_PCI_CAP_PCI_CFG, whose bar, offset and
// length fields the driver writes (hence the write masks) before
// accessing pci_cfg_data. It also hooks the command register for INTx.
func (p *PCI) addCaps() error {
	vcap := func(typ uint8, off, length uint32, extra int) []byte {
		b := make([]byte, 14+extra)
		b[0] = byte(16 + extra) // cap_len counts the ID and next bytes
		b[1] = typ
		b[2] = virtioBAR
		binary.LittleEndian.PutUint32(b[6:], off)
		binary.LittleEndian.PutUint32(b[10:], length)
		return b
	}
	notify := vcap(capNotify, notifyOffset, uint32(NotifyMultiplier*p.nq), 4)
	binary.LittleEndian.PutUint32(notify[14:], NotifyMultiplier)
	for _, body := range [][]byte{
		vcap(capCommon, commonOffset, commonSize, 0),
		notify,
		vcap(capISR, isrOffset, 1, 0),
		vcap(capDevice, deviceOffset, uint32(max(p.be.ConfigSize(), 1)), 0),
	} {
		if _, err := p.cfg.AddCapability(pci.CapVendor, body); err != nil {
			return err
		}
	}
	// VIRTIO_PCI_CAP_PCI_CFG: the driver picks bar/offset/length and
	// accesses the BAR through pci_cfg_data (section 4.1.4.9).
	off, err := p.cfg.AddCapability(pci.CapVendor, vcap(capPCI, 0, 0, 4))
	if err != nil {
		return err
	}
	p.pciCap = off
	p.cfg.PutUint8(off+4, 0)
	if err := p.cfg.SetWriteMask(off+4, []byte{0xff}); err != nil {
		return err
	}
	if err := p.cfg.SetWriteMask(off+8, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}); err != nil {
		return err
	}
	p.cfg.Hook(off+16, 4, pciCfgHook{p})
	p.cfg.Hook(pci.RegCommand, 2, commandHook{p})
	return nil
}

// commandHook re-evaluates INTx when the guest flips INTx disable in the
// command register (an asserted line drops, a pending ISR re-asserts).
type commandHook struct{ p *PCI }

// ConfigRead leaves the command register's stored value as it is.
func (commandHook) ConfigRead(int, []byte) {}

// ConfigWrite runs after the new command value is stored: INTx follows
// the ISR again under the new INTx Disable bit.
func (h commandHook) ConfigWrite(int, []byte) {
	h.p.isrMu.Lock()
	defer h.p.isrMu.Unlock()
	h.p.setLevelLocked(h.p.isr != 0)
}

// pciCfgHook turns pci_cfg_data accesses into BAR accesses.
type pciCfgHook struct{ p *PCI }

// target decodes the PCI_CFG capability's window: ok only for an access to
// pci_cfg_data itself, with a length of 1, 2 or 4 (4.1.4.9.1: other
// lengths are not allowed) and a BAR this function has.
func (h pciCfgHook) target(off int, n int) (bar int, boff uint64, length int, ok bool) {
	c, capOff := h.p.cfg, h.p.pciCap
	bar = int(c.Uint8(capOff + 4))
	boff = uint64(c.Uint32(capOff + 8))
	length = int(c.Uint32(capOff + 12))
	ok = off == capOff+16 && (length == 1 || length == 2 || length == 4) && n >= length &&
		(bar == virtioBAR || bar == msixBAR)
	return
}

// ConfigRead reads the window's bytes from the BAR into data; an access
// the window does not allow returns the stored bytes (whatever was last
// written to pci_cfg_data).
func (h pciCfgHook) ConfigRead(off int, data []byte) {
	bar, boff, length, ok := h.target(off, len(data))
	if !ok {
		return
	}
	if bar == virtioBAR {
		h.p.Read(0, boff, data[:length])
	} else {
		h.p.msix.Read(0, boff, data[:length])
	}
}

// ConfigWrite writes data's first length bytes to the BAR at the window's
// offset, exactly as a BAR access would.
func (h pciCfgHook) ConfigWrite(off int, data []byte) {
	bar, boff, length, ok := h.target(off, len(data))
	if !ok {
		return
	}
	if bar == virtioBAR {
		h.p.Write(0, boff, data[:length])
	} else {
		h.p.msix.Write(0, boff, data[:length])
	}
}

// Config implements pci.Device.
func (p *PCI) Config() *pci.ConfigSpace { return p.cfg }

// Backend returns the device model behind the function.
func (p *PCI) Backend() Backend { return p.be }

// MSIX returns the function's MSI-X state.
func (p *PCI) MSIX() *pci.MSIX { return p.msix }

// Status returns the device status byte.
func (p *PCI) Status() uint8 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status
}

// Reset implements pci.Resetter (machine reset): the device status goes to
// zero as if the driver wrote it, and MSI-X returns to its power-on state.
func (p *PCI) Reset() {
	p.mu.Lock()
	if !p.released {
		p.resetLocked()
	}
	p.mu.Unlock()
	p.msix.Reset()
}

// Release implements pci.Releaser: stops the queues, drops the kernel
// routes, closes the eventfds and releases the backend.
func (p *PCI) Release() error {
	p.mu.Lock()
	if p.released {
		p.mu.Unlock()
		return nil
	}
	p.released = true
	p.stopWorkersLocked()
	p.unregisterIoeventsLocked()
	p.closeKicks()
	p.mu.Unlock()
	return errors.Join(p.msix.Close(), p.be.Release())
}

// closeKicks closes the queues' eventfds (release, or a failed NewPCI).
// Called with mu held or before the device is shared.
func (p *PCI) closeKicks() {
	for _, f := range p.kicks {
		f.Close()
	}
	p.kicks, p.kickFDs = nil, nil
}

// BARMapped implements pci.BARObserver: with an EventRouter, queue
// notifications become ioeventfds so a notify costs no VMM exit.
func (p *PCI) BARMapped(bar int, addr uint64) {
	if bar != virtioBAR || p.o.Router == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.released {
		return
	}
	p.unregisterIoeventsLocked()
	p.barAddr = addr
	for i, fd := range p.kickFDs {
		if err := p.o.Router.AddIoeventfd(fd, p.notifyAddr(i), 2, false, nil); err != nil {
			// The BAR handler still serves the write: slower, not wrong.
			for j := range i {
				p.o.Router.RemoveIoeventfd(p.kickFDs[j], p.notifyAddr(j), 2, false, nil)
			}
			p.BadAccesses.Add(1)
			return
		}
	}
	p.ioevents = true
}

// BARUnmapped implements pci.BARObserver.
func (p *PCI) BARUnmapped(bar int, _ uint64) {
	if bar != virtioBAR {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.unregisterIoeventsLocked()
}

// notifyAddr is the guest-physical address a driver writes to notify
// queue q (4.1.4.4: cap.offset + queue_notify_off * multiplier, with
// queue_notify_off = q here).
func (p *PCI) notifyAddr(q int) uint64 {
	return p.barAddr + notifyOffset + uint64(NotifyMultiplier*q)
}

// unregisterIoeventsLocked removes the ioeventfds, before the BAR moves
// or the device goes; notifications then come through Write. Caller holds
// mu.
func (p *PCI) unregisterIoeventsLocked() {
	if !p.ioevents {
		return
	}
	for i, fd := range p.kickFDs {
		p.o.Router.RemoveIoeventfd(fd, p.notifyAddr(i), 2, false, nil)
	}
	p.ioevents = false
}

// Read implements vmm.BusDevice for the virtio BAR.
func (p *PCI) Read(_, off uint64, data []byte) {
	n := uint64(len(data))
	switch {
	case off < commonOffset+commonSize && off+n <= commonOffset+commonSize:
		p.readCommon(int(off-commonOffset), data)
	case off == isrOffset && n == 1:
		data[0] = p.readISR()
	case off >= deviceOffset && off+n <= deviceOffset+uint64(p.be.ConfigSize()):
		p.be.ReadConfig(int(off-deviceOffset), data)
	case off >= notifyOffset && off+n <= notifyOffset+uint64(NotifyMultiplier*p.nq):
		clear(data)
	default:
		fillOnes(data)
		p.BadAccesses.Add(1)
	}
}

// Write implements vmm.BusDevice for the virtio BAR.
func (p *PCI) Write(_, off uint64, data []byte) {
	n := uint64(len(data))
	switch {
	case off < commonOffset+commonSize && off+n <= commonOffset+commonSize:
		p.writeCommon(int(off-commonOffset), data)
	case off >= deviceOffset && off+n <= deviceOffset+uint64(p.be.ConfigSize()):
		p.be.WriteConfig(int(off-deviceOffset), data)
	case off >= notifyOffset && off+n <= notifyOffset+uint64(NotifyMultiplier*p.nq):
		p.kick(int(off-notifyOffset) / NotifyMultiplier)
	default:
		p.BadAccesses.Add(1)
	}
}

var eventfdOne = [8]byte{1}

// kick wakes queue q's goroutine, as the ioeventfd would.
func (p *PCI) kick(q int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if q < len(p.kickFDs) {
		unix.Write(p.kickFDs[q], eventfdOne[:])
	}
}

// fillOnes is what an access to nothing reads: all ones, as an absent PCI
// target would return.
func fillOnes(b []byte) {
	for i := range b {
		b[i] = 0xff
	}
}
