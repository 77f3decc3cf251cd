package vmm

import (
	"fmt"
	"sort"
)

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
