package vmm

import (
	"errors"
	"fmt"
)

// archVM is the x86 part of a VM: the GSI routing table, which KVM takes
// only whole (KVM_SET_GSI_ROUTING), so vmm keeps a copy to add MSI routes to.
type archVM struct {
	routes  map[uint32]route // GSI -> route (IOAPIC/PIC pins and MSIs)
	irqchip bool
	xsave   int // KVM_CAP_XSAVE2's answer, -1 without it, 0 not asked yet
}

func (vm *VM) initArch() { vm.routes = map[uint32]route{} }

// closeArch: the x86 part holds no host resources of its own.
func (vm *VM) closeArch() {}

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
		vm.routes[gsi] = defaultRoute(gsi)
	}
	return nil
}

// defaultRoute is KVM's routing of gsi after KVM_CREATE_IRQCHIP: GSIs 0-7
// to the master PIC, 8-15 to the slave, and every GSI to the IOAPIC pin
// of the same number.
func defaultRoute(gsi uint32) route {
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
	return r
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

// ErrNoIRQChip is returned by interrupt calls on a VM without an irqchip.
var ErrNoIRQChip = errors.New("vm has no in-kernel irqchip")

// kvmIRQChip mirrors struct kvm_irqchip: a chip id (0, 1 = the PICs,
// 2 = the IOAPIC) and its state as a 512-byte union.
type kvmIRQChip struct {
	ChipID uint32
	_      uint32
	Chip   [512]byte
}

// picIMROffset is the imr field of struct kvm_pic_state inside kvm_irqchip.chip.
const picIMROffset = 2

// MaskPIC masks every input of both in-kernel 8259s, as PC firmware leaves
// them for an OS that uses the IOAPIC. KVM resets them unmasked with vector
// base 0 and routes the BSP's LINT0 to them, so without this an ISA
// interrupt reaches a guest that has not programmed the PIC as vectors
// 0-15. An OS that wants the PIC initialises it anyway.
func (vm *VM) MaskPIC() error {
	for chip := uint32(0); chip < 2; chip++ {
		c := kvmIRQChip{ChipID: chip}
		if _, err := ioctlPtr(vm.fd, ioctlGetIRQChip, &c); err != nil {
			return fmt.Errorf("reading pic %d state: %w", chip, err)
		}
		c.Chip[picIMROffset] = 0xff
		if _, err := ioctlPtr(vm.fd, ioctlSetIRQChip, &c); err != nil {
			return fmt.Errorf("masking pic %d: %w", chip, err)
		}
	}
	return nil
}
