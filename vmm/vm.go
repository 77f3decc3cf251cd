package vmm

import (
	"errors"
	"fmt"
	"sync"

	"github.com/bobuhiro11/gokvm/kvm"
	"golang.org/x/sys/unix"
)

// VM is one KVM virtual machine: its memory slots, interrupt routing and
// vCPUs. It implements pci.EventRouter, pci.MSISignaler and hands out
// IRQ lines (docs/ARCHITECTURE.md).
//
// Lock order: VM.mu guards the memory-slot and routing tables; it is never
// held while a vCPU runs an exit, and no exit path takes it.
type VM struct {
	kvm *KVM
	fd  int

	mu       sync.Mutex
	slots    map[uint32]memSlot // slot id -> region
	nextSlot uint32
	routes   map[uint32]route // GSI -> route (IOAPIC/PIC pins and MSIs)
	nextGSI  uint32
	irqchip  bool
}

type memSlot struct {
	gpa  uint64
	host []byte
}

// Interrupt-routing entry kinds (KVM_IRQ_ROUTING_*).
const (
	routeIRQChip = 1
	routeMSI     = 2
)

// Irqchip ids for KVM_IRQ_ROUTING_IRQCHIP entries.
const (
	irqchipPICMaster = 0
	irqchipPICSlave  = 1
	irqchipIOAPIC    = 2
)

// route is one GSI's routing: up to two irqchip pins (KVM's default routing
// sends GSIs 0-15 to both the PIC and the IOAPIC) or one MSI.
type route struct {
	msi   bool
	addr  uint64
	data  uint32
	pins  [2][2]uint32 // {irqchip, pin}
	npins int
}

// ioapicPins is the IOAPIC's pin count; GSIs above it are free for MSIs.
const ioapicPins = 24

// CreateVM creates an empty VM.
func (k *KVM) CreateVM() (*VM, error) {
	fd, err := ioctlRetry(k.fd, ioctlCreateVM, 0)
	if err != nil {
		return nil, fmt.Errorf("creating vm: %w", err)
	}
	return &VM{
		kvm:     k,
		fd:      int(fd),
		slots:   map[uint32]memSlot{},
		routes:  map[uint32]route{},
		nextGSI: ioapicPins,
	}, nil
}

// FD is the VM file descriptor (for architecture code in other packages).
func (vm *VM) FD() int { return vm.fd }

// KVM returns the /dev/kvm handle the VM was created from.
func (vm *VM) KVM() *KVM { return vm.kvm }

// Close releases the VM fd. vCPUs must have stopped.
func (vm *VM) Close() error { return unix.Close(vm.fd) }

// kvmUserspaceMemoryRegion mirrors struct kvm_userspace_memory_region.
type kvmUserspaceMemoryRegion struct {
	Slot          uint32
	Flags         uint32
	GuestPhysAddr uint64
	MemorySize    uint64
	UserspaceAddr uint64
}

// AddMemory registers host (page-aligned, e.g. from AllocGuestRAM) as guest
// memory at gpa and returns its slot id.
func (vm *VM) AddMemory(gpa uint64, host []byte, readOnly bool) (uint32, error) {
	if len(host) == 0 || gpa&0xfff != 0 || len(host)&0xfff != 0 {
		return 0, fmt.Errorf("memory slot at %#x+%#x: not page aligned", gpa, len(host))
	}
	vm.mu.Lock()
	defer vm.mu.Unlock()
	for id, s := range vm.slots {
		if gpa < s.gpa+uint64(len(s.host)) && s.gpa < gpa+uint64(len(host)) {
			return 0, fmt.Errorf("memory slot at %#x+%#x overlaps slot %d at %#x", gpa, len(host), id, s.gpa)
		}
	}
	id := vm.nextSlot
	for {
		if _, used := vm.slots[id]; !used {
			break
		}
		id++
	}
	r := kvmUserspaceMemoryRegion{Slot: id, GuestPhysAddr: gpa, MemorySize: uint64(len(host)), UserspaceAddr: uint64(bytesAddr(host))}
	if readOnly {
		r.Flags |= 2 // KVM_MEM_READONLY
	}
	if _, err := ioctlPtr(vm.fd, ioctlSetUserMemoryRegion, &r); err != nil {
		return 0, fmt.Errorf("setting memory slot %d at %#x+%#x: %w", id, gpa, len(host), err)
	}
	vm.slots[id] = memSlot{gpa, host}
	vm.nextSlot = id + 1
	return id, nil
}

// RemoveMemory deletes a memory slot (the host memory stays the caller's).
func (vm *VM) RemoveMemory(slot uint32) error {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	s, ok := vm.slots[slot]
	if !ok {
		return fmt.Errorf("removing memory slot %d: no such slot", slot)
	}
	r := kvmUserspaceMemoryRegion{Slot: slot, GuestPhysAddr: s.gpa}
	if _, err := ioctlPtr(vm.fd, ioctlSetUserMemoryRegion, &r); err != nil {
		return fmt.Errorf("removing memory slot %d: %w", slot, err)
	}
	delete(vm.slots, slot)
	if slot < vm.nextSlot {
		vm.nextSlot = slot
	}
	return nil
}

// AllocGuestRAM maps size bytes of anonymous, lazily allocated memory
// (MAP_NORESERVE: pages cost nothing until the guest touches them).
func AllocGuestRAM(size uint64) ([]byte, error) {
	if size == 0 || size&0xfff != 0 || size > 1<<46 {
		return nil, fmt.Errorf("guest ram size %#x: not a page multiple in range", size)
	}
	b, err := unix.Mmap(-1, 0, int(size), unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("mapping %d MiB of guest ram: %w", size>>20, err)
	}
	return b, nil
}

// FreeGuestRAM unmaps memory from AllocGuestRAM.
func FreeGuestRAM(b []byte) error { return unix.Munmap(b) }

// SetTSSAddr and SetIdentityMapAddr place the pages KVM needs on Intel
// hosts for real-mode emulation; they must lie outside RAM and MMIO.
func (vm *VM) SetTSSAddr(addr uint32) error {
	if _, err := ioctlRetry(vm.fd, ioctlSetTSSAddr, uintptr(addr)); err != nil {
		return fmt.Errorf("setting tss address %#x: %w", addr, err)
	}
	return nil
}

// SetIdentityMapAddr sets the EPT identity-map page address.
func (vm *VM) SetIdentityMapAddr(addr uint64) error {
	if _, err := ioctlPtr(vm.fd, ioctlSetIdentityMapAddr, &addr); err != nil {
		return fmt.Errorf("setting identity map address %#x: %w", addr, err)
	}
	return nil
}

// CreateIRQChip creates the in-kernel PIC+IOAPIC+LAPIC and records KVM's
// default GSI routing so that later MSI routes keep it.
func (vm *VM) CreateIRQChip() error {
	if _, err := ioctlRetry(vm.fd, ioctlCreateIRQChip, 0); err != nil {
		return fmt.Errorf("creating in-kernel irqchip: %w", err)
	}
	vm.mu.Lock()
	defer vm.mu.Unlock()
	vm.irqchip = true
	for gsi := uint32(0); gsi < ioapicPins; gsi++ {
		r := route{}
		if gsi < 8 {
			r.pins[r.npins] = [2]uint32{irqchipPICMaster, gsi}
			r.npins++
		} else if gsi < 16 {
			r.pins[r.npins] = [2]uint32{irqchipPICSlave, gsi - 8}
			r.npins++
		}
		r.pins[r.npins] = [2]uint32{irqchipIOAPIC, gsi}
		r.npins++
		vm.routes[gsi] = r
	}
	return nil
}

// kvmPitConfig mirrors struct kvm_pit_config.
type kvmPitConfig struct {
	Flags uint32
	_     [15]uint32
}

// CreatePIT2 creates the in-kernel i8254 PIT (with a dummy speaker port).
func (vm *VM) CreatePIT2() error {
	c := kvmPitConfig{Flags: 1} // KVM_PIT_SPEAKER_DUMMY
	if _, err := ioctlPtr(vm.fd, ioctlCreatePIT2, &c); err != nil {
		return fmt.Errorf("creating in-kernel pit: %w", err)
	}
	return nil
}

// kvmEnableCap mirrors struct kvm_enable_cap.
type kvmEnableCap struct {
	Cap   uint32
	Flags uint32
	Args  [4]uint64
	_     [64]uint8
}

// EnableCap issues KVM_ENABLE_CAP on the VM.
func (vm *VM) EnableCap(cap uint32, args ...uint64) error {
	c := kvmEnableCap{Cap: cap}
	copy(c.Args[:], args)
	if _, err := ioctlPtr(vm.fd, ioctlEnableCap, &c); err != nil {
		return fmt.Errorf("enabling kvm capability %d: %w", cap, err)
	}
	return nil
}

// ErrNoIRQChip is returned by interrupt calls on a VM without an irqchip.
var ErrNoIRQChip = errors.New("vm has no in-kernel irqchip")

// picIMROffset is the imr field of struct kvm_pic_state inside kvm_irqchip.chip.
const picIMROffset = 2

// MaskPIC masks every input of both in-kernel 8259s, as PC firmware leaves
// them for an OS that uses the IOAPIC. KVM resets them unmasked with vector
// base 0 and routes the BSP's LINT0 to them, so without this an ISA
// interrupt reaches a guest that has not programmed the PIC as vectors
// 0-15. An OS that wants the PIC initialises it anyway.
func (vm *VM) MaskPIC() error {
	for chip := uint32(0); chip < 2; chip++ {
		c := kvm.IRQChip{ChipID: chip}
		if err := kvm.GetIRQChip(uintptr(vm.fd), &c); err != nil {
			return fmt.Errorf("reading pic %d state: %w", chip, err)
		}
		c.Chip[picIMROffset] = 0xff
		if err := kvm.SetIRQChip(uintptr(vm.fd), &c); err != nil {
			return fmt.Errorf("masking pic %d: %w", chip, err)
		}
	}
	return nil
}
