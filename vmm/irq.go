package vmm

import (
	"errors"
	"fmt"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// kvmIRQLevel mirrors struct kvm_irq_level.
type kvmIRQLevel struct {
	IRQ   uint32
	Level uint32
}

// SetIRQLevel drives GSI gsi to level (KVM_IRQ_LINE).
func (vm *VM) SetIRQLevel(gsi uint32, asserted bool) error {
	l := kvmIRQLevel{IRQ: gsi}
	if asserted {
		l.Level = 1
	}
	if _, err := ioctlPtr(vm.fd, ioctlIRQLine, &l); err != nil {
		return fmt.Errorf("setting irq line %d: %w", gsi, err)
	}
	return nil
}

// IRQLine is a level-triggered line into the in-kernel irqchip; it
// satisfies pci.IRQLine.
type IRQLine struct {
	vm  *VM
	gsi uint32
	// Errors counts failed KVM_IRQ_LINE calls (a device cannot fail the VM).
	Errors atomic.Uint64
}

// IRQLine returns the level-triggered line for gsi.
func (vm *VM) IRQLine(gsi uint32) *IRQLine { return &IRQLine{vm: vm, gsi: gsi} }

// GSI is the line's global system interrupt number.
func (l *IRQLine) GSI() uint32 { return l.gsi }

// SetLevel asserts or deasserts the line.
func (l *IRQLine) SetLevel(asserted bool) {
	if l.vm.SetIRQLevel(l.gsi, asserted) != nil {
		l.Errors.Add(1)
	}
}

// kvmMSI mirrors struct kvm_msi.
type kvmMSI struct {
	AddressLo uint32
	AddressHi uint32
	Data      uint32
	Flags     uint32
	DevID     uint32
	_         [12]uint8
}

// ErrMSIBlocked is returned by SignalMSI when the guest masked the interrupt.
var ErrMSIBlocked = errors.New("msi not delivered: blocked by the guest")

// ErrMSINoDest is returned by SignalMSI when no vCPU matches the MSI's
// destination (a bad address programmed by the guest).
var ErrMSINoDest = errors.New("msi destination matches no vcpu")

// SignalMSI injects one MSI (KVM_SIGNAL_MSI); it satisfies pci.MSISignaler.
// KVM answers > 0 when the interrupt was delivered, 0 when the guest
// blocked it, and an error otherwise (Documentation/virt/kvm/api.rst).
func (vm *VM) SignalMSI(addr uint64, data uint32) error {
	m := kvmMSI{AddressLo: uint32(addr), AddressHi: uint32(addr >> 32), Data: data}
	r, err := ioctlPtr(vm.fd, ioctlSignalMSI, &m)
	if err == unix.EPERM {
		// kvm_irq_delivery_to_apic returns -1: no vCPU matched the destination.
		return fmt.Errorf("signalling msi %#x/%#x: %w", addr, data, ErrMSINoDest)
	}
	if err != nil {
		return fmt.Errorf("signalling msi %#x/%#x: %w", addr, data, err)
	}
	if r == 0 {
		return ErrMSIBlocked
	}
	return nil
}

// kvmIrqfd mirrors struct kvm_irqfd.
type kvmIrqfd struct {
	FD         uint32
	GSI        uint32
	Flags      uint32
	ResampleFD uint32
	_          [16]uint8
}

// AddIrqfd makes a write to the eventfd fd inject gsi without a VMM exit.
func (vm *VM) AddIrqfd(fd int, gsi uint32) error {
	a := kvmIrqfd{FD: uint32(fd), GSI: gsi}
	if _, err := ioctlPtr(vm.fd, ioctlIrqfd, &a); err != nil {
		return fmt.Errorf("assigning irqfd %d to gsi %d: %w", fd, gsi, err)
	}
	return nil
}

// RemoveIrqfd detaches fd from gsi.
func (vm *VM) RemoveIrqfd(fd int, gsi uint32) error {
	a := kvmIrqfd{FD: uint32(fd), GSI: gsi, Flags: 1} // KVM_IRQFD_FLAG_DEASSIGN
	if _, err := ioctlPtr(vm.fd, ioctlIrqfd, &a); err != nil {
		return fmt.Errorf("deassigning irqfd %d from gsi %d: %w", fd, gsi, err)
	}
	return nil
}

// kvmIoeventfd mirrors struct kvm_ioeventfd.
type kvmIoeventfd struct {
	Datamatch uint64
	Addr      uint64
	Len       uint32
	FD        int32
	Flags     uint32
	_         [36]uint8
}

// KVM_IOEVENTFD_FLAG_* (linux/kvm.h).
const (
	ioeventfdDatamatch = 1 << 0
	ioeventfdPIO       = 1 << 1
	ioeventfdDeassign  = 1 << 2
)

// ioeventfdArg builds the kvm_ioeventfd both AddIoeventfd and
// RemoveIoeventfd pass: KVM finds the one to deassign by the same
// address, length, fd and datamatch, so both must build it alike. Len 0
// matches a write of any width, which KVM cannot combine with datamatch.
func ioeventfdArg(fd int, addr uint64, size uint32, pio bool, match *uint64) (kvmIoeventfd, error) {
	switch size {
	case 0, 1, 2, 4, 8:
	default:
		return kvmIoeventfd{}, fmt.Errorf("ioeventfd at %#x: bad size %d", addr, size)
	}
	a := kvmIoeventfd{Addr: addr, Len: size, FD: int32(fd)}
	if pio {
		a.Flags |= ioeventfdPIO
	}
	if match != nil {
		if size == 0 {
			return a, fmt.Errorf("ioeventfd at %#x: datamatch needs a size", addr)
		}
		a.Flags |= ioeventfdDatamatch
		a.Datamatch = *match
	}
	return a, nil
}

// AddIoeventfd makes KVM signal fd when the guest writes addr (see
// pci.EventRouter for the arguments).
func (vm *VM) AddIoeventfd(fd int, addr uint64, size uint32, pio bool, match *uint64) error {
	a, err := ioeventfdArg(fd, addr, size, pio, match)
	if err != nil {
		return err
	}
	if _, err := ioctlPtr(vm.fd, ioctlIoeventfd, &a); err != nil {
		return fmt.Errorf("assigning ioeventfd at %#x: %w", addr, err)
	}
	return nil
}

// RemoveIoeventfd undoes AddIoeventfd with the same arguments.
func (vm *VM) RemoveIoeventfd(fd int, addr uint64, size uint32, pio bool, match *uint64) error {
	a, err := ioeventfdArg(fd, addr, size, pio, match)
	if err != nil {
		return err
	}
	a.Flags |= ioeventfdDeassign
	if _, err := ioctlPtr(vm.fd, ioctlIoeventfd, &a); err != nil {
		return fmt.Errorf("deassigning ioeventfd at %#x: %w", addr, err)
	}
	return nil
}
