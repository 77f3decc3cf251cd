package vmm

import (
	"errors"
	"fmt"
	"sort"
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

// maxGSI bounds the MSI routes (KVM_MAX_IRQ_ROUTES is 4096).
const maxGSI = 4096

// AddMSIRoute allocates a GSI routed to the MSI (addr, data).
func (vm *VM) AddMSIRoute(addr uint64, data uint32) (uint32, error) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if !vm.irqchip {
		return 0, ErrNoIRQChip
	}
	gsi := uint32(ioapicPins)
	for ; gsi < maxGSI; gsi++ {
		if _, used := vm.routes[gsi]; !used {
			break
		}
	}
	if gsi == maxGSI {
		return 0, fmt.Errorf("adding msi route: all %d gsis in use", maxGSI)
	}
	vm.routes[gsi] = route{msi: true, addr: addr, data: data}
	if err := vm.commitRoutesLocked(); err != nil {
		delete(vm.routes, gsi)
		return 0, err
	}
	return gsi, nil
}

// UpdateMSIRoute re-targets an MSI route.
func (vm *VM) UpdateMSIRoute(gsi uint32, addr uint64, data uint32) error {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	old, ok := vm.routes[gsi]
	if !ok || !old.msi {
		return fmt.Errorf("updating msi route: gsi %d is not an msi route", gsi)
	}
	if old.addr == addr && old.data == data {
		return nil
	}
	vm.routes[gsi] = route{msi: true, addr: addr, data: data}
	if err := vm.commitRoutesLocked(); err != nil {
		vm.routes[gsi] = old
		return err
	}
	return nil
}

// RemoveMSIRoute frees an MSI route's GSI.
func (vm *VM) RemoveMSIRoute(gsi uint32) error {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	old, ok := vm.routes[gsi]
	if !ok || !old.msi {
		return fmt.Errorf("removing msi route: gsi %d is not an msi route", gsi)
	}
	delete(vm.routes, gsi)
	if err := vm.commitRoutesLocked(); err != nil {
		vm.routes[gsi] = old
		return err
	}
	return nil
}

// routingEntrySize is sizeof(struct kvm_irq_routing_entry).
const routingEntrySize = 48

// encodeRoutes builds the KVM_SET_GSI_ROUTING argument: struct
// kvm_irq_routing {u32 nr; u32 flags; entries[]}, each entry
// {u32 gsi, type, flags, pad; union u{irqchip{u32 irqchip, pin}; msi{u32
// address_lo, address_hi, data, devid}; pad[8]u32}}.
func encodeRoutes(routes map[uint32]route) []byte {
	gsis := make([]uint32, 0, len(routes))
	for g := range routes {
		gsis = append(gsis, g)
	}
	sort.Slice(gsis, func(i, j int) bool { return gsis[i] < gsis[j] })
	var entries [][12]uint32
	for _, g := range gsis {
		r := routes[g]
		if r.msi {
			entries = append(entries, [12]uint32{g, routeMSI, 0, 0, uint32(r.addr), uint32(r.addr >> 32), r.data})
			continue
		}
		for i := 0; i < r.npins; i++ {
			entries = append(entries, [12]uint32{g, routeIRQChip, 0, 0, r.pins[i][0], r.pins[i][1]})
		}
	}
	b := make([]byte, 8+len(entries)*routingEntrySize)
	putU32(b[0:], uint32(len(entries)))
	for i, e := range entries {
		for j, v := range e {
			putU32(b[8+i*routingEntrySize+4*j:], v)
		}
	}
	return b
}

func putU32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

func (vm *VM) commitRoutesLocked() error {
	b := encodeRoutes(vm.routes)
	if _, err := ioctlBytes(vm.fd, ioctlSetGSIRouting, b); err != nil {
		return fmt.Errorf("setting gsi routing (%d routes): %w", len(vm.routes), err)
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

const (
	ioeventfdDatamatch = 1 << 0
	ioeventfdPIO       = 1 << 1
	ioeventfdDeassign  = 1 << 2
)

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

// RouteToIOAPICPin makes gsi drive IOAPIC pin instead of the pin of the
// same number, keeping its PIC route, and commits the routing table. A PC
// uses it for the ISA timer: the PIT raises GSI 0, and the MADT's
// interrupt source override says IRQ 0 is IOAPIC pin 2 (as on QEMU's pc).
func (vm *VM) RouteToIOAPICPin(gsi, pin uint32) error {
	if pin >= ioapicPins {
		return fmt.Errorf("routing gsi %d: ioapic pin %d out of range", gsi, pin)
	}
	vm.mu.Lock()
	defer vm.mu.Unlock()
	old, ok := vm.routes[gsi]
	if !ok || old.msi {
		return fmt.Errorf("routing gsi %d: not an irqchip route", gsi)
	}
	r := old
	for i := 0; i < r.npins; i++ {
		if r.pins[i][0] == irqchipIOAPIC {
			r.pins[i][1] = pin
		}
	}
	vm.routes[gsi] = r
	if err := vm.commitRoutesLocked(); err != nil {
		vm.routes[gsi] = old
		return err
	}
	return nil
}
