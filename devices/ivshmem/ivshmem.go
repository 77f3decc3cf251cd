// Package ivshmem is the inter-VM shared memory PCI device
// (../shared/specs/ivshmem_device_spec.txt; QEMU's hw/misc/ivshmem.c is
// the reference where the spec is silent).
//
//   - BAR0: 256 bytes of registers (IntrMask 0, IntrStatus 4, IVPosition 8,
//     Doorbell 12).
//   - BAR1 (doorbell mode): MSI-X table at 0 and PBA at 2 KiB.
//   - BAR2: the shared memory, 64-bit prefetchable, mapped into the guest as
//     RAM (a KVM memory slot over the host's MAP_SHARED mapping).
//
// ivshmem-plain shares a memory backend and has no interrupts.
// ivshmem-doorbell gets its memory and everybody's eventfds from an ivshmem
// server (package proto). A doorbell write signals the target peer's
// eventfd: in the kernel through an ioeventfd per (peer, vector) while BAR0
// is mapped, else here. Our own eventfds raise MSI-X vectors through KVM
// irqfds while MSI-X is enabled; while it is not, a poller reads them and
// raises the pin interrupt through the status register.
package ivshmem

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/petrel-vmm/petrel/devices/ivshmem/hostmem"
	"github.com/petrel-vmm/petrel/devices/ivshmem/proto"
	"github.com/petrel-vmm/petrel/devices/pci"
)

// PCI identity (QEMU's ivshmem: Red Hat/Qumranet vendor, class "RAM memory").
const (
	VendorID     = 0x1af4
	DeviceID     = 0x1110
	ClassMemory  = 0x050000
	Revision     = 1
	SubsysVendor = 0x1af4
	SubsysID     = 0x1100
)

// BAR numbers and sizes.
const (
	RegsBAR   = 0
	MSIXBAR   = 1
	MemBAR    = 2
	RegsSize  = 256
	MSIXSize  = 4096
	pbaOffset = MSIXSize / 2
	// MaxVectors is the most MSI-X vectors a doorbell device offers (the
	// table must fit below the PBA; the server's limit is the same).
	MaxVectors = proto.MaxVectors
)

// Register offsets in BAR0.
const (
	RegIntrMask   = 0
	RegIntrStatus = 4
	RegIVPosition = 8
	RegDoorbell   = 12
)

// Interrupts connects the device to the machine. All fields may be nil in
// tests; the fast paths need Router.
type Interrupts struct {
	// Router provides KVM irqfds for MSI-X vectors and ioeventfds for
	// doorbell writes.
	Router pci.EventRouter
	// Signaler injects MSIs that no irqfd carries.
	Signaler pci.MSISignaler
	// IRQ is INTA#; it can also be set after the slot is known (SetIRQLine).
	IRQ pci.IRQLine
}

// Device is one ivshmem function. It implements pci.Device,
// pci.BARObserver, pci.Resetter and pci.Releaser; its register BAR handler
// (vmm.BusDevice) is itself.
type Device struct {
	cfg  *pci.ConfigSpace
	msix *pci.MSIX // nil in plain mode
	mem  []byte
	irqs Interrupts

	region     *hostmem.Region // plain mode
	ownsRegion bool            // NewPlainFile: Release closes region
	client     *proto.Client   // doorbell mode; owned
	poll       *poller         // doorbell mode
	events     sync.WaitGroup  // the server message loop

	// mu guards the fields below. Lock order: pci Bus.mu, mu, MSIX.mu,
	// ConfigSpace.mu; client.mu before mu (BeforeClose); never call the
	// client with mu held.
	mu         sync.Mutex
	intrMask   uint32
	intrStatus uint32
	irqLevel   bool
	irq        pci.IRQLine
	id         int32 // IVPosition: -1 until the server gave us an ID
	bar0       uint64
	bar0Mapped bool
	ioevents   map[uint32]ioevent // doorbell value (peer<<16 | vector) -> eventfd
	registered int                // ioevents registered with KVM
	own        []int              // our eventfds by vector
	msixMode   bool               // own vectors are handed to MSI-X as irqfds
	released   bool

	// Counters of what the guest or the server did wrong, never fatal.
	BadAccesses      atomic.Uint64 // register accesses at odd offsets or widths
	DroppedDoorbells atomic.Uint64 // doorbells to absent peers or vectors
	ServerErrors     atomic.Uint64 // bad messages from the server
	// Interrupts counts own-vector events taken by the poller (pin mode or
	// no irqfd).
	Interrupts atomic.Uint64
	// VMMDoorbells counts doorbell writes that exited to the VMM (no
	// ioeventfd matched them in the kernel).
	VMMDoorbells atomic.Uint64
}

var (
	_ pci.Device      = (*Device)(nil)
	_ pci.BARObserver = (*Device)(nil)
	_ pci.Resetter    = (*Device)(nil)
	_ pci.Releaser    = (*Device)(nil)
)

func newDevice(mem []byte, vectors int, irqs Interrupts) (*Device, error) {
	cfg := pci.NewConfigSpace(pci.Header{
		VendorID: VendorID, DeviceID: DeviceID, Class: ClassMemory, Revision: Revision,
		SubsysVendor: SubsysVendor, SubsysID: SubsysID, InterruptPin: 1,
	})
	d := &Device{cfg: cfg, mem: mem, irqs: irqs, irq: irqs.IRQ, id: -1, ioevents: map[uint32]ioevent{}}
	if err := cfg.SetBAR(RegsBAR, pci.BAR{Size: RegsSize, Handler: d}); err != nil {
		return nil, fmt.Errorf("ivshmem BAR0: %w", err)
	}
	if vectors > 0 {
		m, err := pci.NewMSIX(cfg, pci.MSIXConfig{
			Vectors: vectors, TableBAR: MSIXBAR, TableOffset: 0, PBABAR: MSIXBAR, PBAOffset: pbaOffset,
			Signaler: irqs.Signaler, Router: irqs.Router,
		})
		if err != nil {
			return nil, fmt.Errorf("ivshmem: %w", err)
		}
		d.msix = m
		if err := cfg.SetBAR(MSIXBAR, pci.BAR{Size: MSIXSize, Handler: m}); err != nil {
			return nil, fmt.Errorf("ivshmem BAR1: %w", err)
		}
		// Runs after the MSI-X hook (hooks run in registration order).
		cfg.Hook(m.CapOffset()+2, 2, msixEnableHook{d})
	}
	cfg.Hook(pci.RegCommand, 2, commandHook{d})
	if err := cfg.SetBAR(MemBAR, pci.BAR{Size: uint64(len(mem)), Is64: true, Prefetch: true, RAM: mem}); err != nil {
		return nil, fmt.Errorf("ivshmem BAR2: %w", err)
	}
	return d, nil
}

// NewPlain returns an ivshmem-plain device sharing region (which the caller
// keeps owning: close it after the device is released).
func NewPlain(region *hostmem.Region, irqs Interrupts) (*Device, error) {
	if region == nil {
		return nil, errors.New("ivshmem-plain: no memory backend")
	}
	if err := hostmem.CheckSize(region.Size()); err != nil {
		return nil, fmt.Errorf("ivshmem-plain: memory backend %s: %w", region.ID, err)
	}
	d, err := newDevice(region.Mem, 0, irqs)
	if err != nil {
		return nil, err
	}
	d.region = region
	return d, nil
}

// NewPlainFile opens (or creates) the object at path with size bytes and
// returns an ivshmem-plain device that owns it: Release unmaps it (QMP
// device_add with Petrel's shm= and size=, where no -object outlives the
// device).
func NewPlainFile(id, path string, size uint64, irqs Interrupts) (*Device, error) {
	r, err := hostmem.OpenRegion(id, path, size)
	if err != nil {
		return nil, fmt.Errorf("ivshmem-plain: %w", err)
	}
	d, err := NewPlain(r, irqs)
	if err != nil {
		r.Close()
		return nil, err
	}
	d.ownsRegion = true
	return d, nil
}

// NewDoorbell connects to the ivshmem server at socketPath, maps the memory
// it hands out and returns an ivshmem-doorbell device with vectors MSI-X
// vectors (1..MaxVectors). Like QEMU it fails if the server does not
// complete the setup.
func NewDoorbell(socketPath string, vectors int, irqs Interrupts) (*Device, error) {
	if vectors < 1 || vectors > MaxVectors {
		return nil, fmt.Errorf("ivshmem-doorbell: %d vectors, want 1..%d", vectors, MaxVectors)
	}
	c, err := proto.Dial(socketPath)
	if err != nil {
		return nil, fmt.Errorf("ivshmem-doorbell: %w", err)
	}
	size, err := hostmem.SizeOf(c.ShmFD())
	if err == nil {
		var mem []byte
		if mem, err = hostmem.Map(c.ShmFD(), size); err == nil {
			var d *Device
			if d, err = newDevice(mem, vectors, irqs); err == nil {
				if err = d.startDoorbell(c); err == nil {
					return d, nil
				}
			}
			hostmem.Unmap(mem)
		}
	}
	c.Close()
	return nil, fmt.Errorf("ivshmem-doorbell: %w", err)
}

// Config implements pci.Device.
func (d *Device) Config() *pci.ConfigSpace { return d.cfg }

// MSIX is the MSI-X capability (nil for ivshmem-plain).
func (d *Device) MSIX() *pci.MSIX { return d.msix }

// Memory is the shared memory as the host maps it.
func (d *Device) Memory() []byte { return d.mem }

// ID is the peer ID the server assigned (-1 for ivshmem-plain).
func (d *Device) ID() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return int(d.id)
}

// Peers lists the peers the server announced (doorbell mode).
func (d *Device) Peers() []int {
	if d.client == nil {
		return nil
	}
	return d.client.Peers()
}

// SetIRQLine wires INTA# once the machine knows the slot
// (pci.INTxGSI(slot)).
func (d *Device) SetIRQLine(l pci.IRQLine) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.irq != nil && d.irqLevel {
		d.irq.SetLevel(false)
	}
	d.irq = l
	d.irqLevel = false
	d.updateIRQLocked()
}

// Reset implements pci.Resetter (machine reset, as QEMU's ivshmem_reset):
// mask and status to 0, INTA# low, MSI-X to power-on, so own vectors go
// back to the poller. The server connection, ID and peers stay.
func (d *Device) Reset() {
	if d.msix != nil {
		d.msix.Reset()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.intrStatus, d.intrMask = 0, 0
	d.updateIRQLocked()
	if d.msixMode && !d.released {
		d.msixMode = false
		for v := range d.own {
			d.routeVectorLocked(v)
		}
	}
}

// Release implements pci.Releaser: called after hot-unplug (the BARs are
// unmapped by then), or by the owner at exit. It unregisters every irqfd and
// ioeventfd, disconnects from the server and unmaps the memory it mapped.
func (d *Device) Release() error {
	d.mu.Lock()
	if d.released {
		d.mu.Unlock()
		return nil
	}
	d.released = true
	var errs []error
	errs = append(errs, d.removeIoeventfdsLocked(func(uint32) bool { return true })...)
	if d.irq != nil && d.irqLevel {
		d.irq.SetLevel(false)
		d.irqLevel = false
	}
	d.mu.Unlock()
	if d.msix != nil {
		if err := d.msix.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if d.poll != nil {
		if err := d.poll.close(); err != nil {
			errs = append(errs, err)
		}
	}
	if d.client != nil {
		d.client.Close()
		d.events.Wait()
		if err := hostmem.Unmap(d.mem); err != nil {
			errs = append(errs, err)
		}
	}
	if d.ownsRegion {
		if err := d.region.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	d.mem = nil
	return errors.Join(errs...)
}
