package pci

// IRQLine is a level-triggered interrupt line (PCI INTx, UART IRQ4, SCI).
type IRQLine interface{ SetLevel(asserted bool) }

// MSISignaler injects one MSI (KVM_SIGNAL_MSI).
type MSISignaler interface {
	SignalMSI(addr uint64, data uint32) error
}

// EventRouter is the kernel fast path: implemented by *vmm.VM.
type EventRouter interface {
	// AddIoeventfd: KVM signals fd when the guest writes to addr (size 1,2,4,8;
	// size 0 = any width). matchValue nil = any value (KVM_IOEVENTFD_FLAG_DATAMATCH off).
	AddIoeventfd(fd int, addr uint64, size uint32, pio bool, matchValue *uint64) error
	RemoveIoeventfd(fd int, addr uint64, size uint32, pio bool, matchValue *uint64) error
	// AddMSIRoute allocates a GSI routed to the MSI; AddIrqfd then makes a write
	// to fd inject it without a VMM exit. UpdateMSIRoute re-targets it (guest
	// reprogrammed the MSI-X entry), RemoveMSIRoute frees it.
	AddMSIRoute(addr uint64, data uint32) (gsi uint32, err error)
	UpdateMSIRoute(gsi uint32, addr uint64, data uint32) error
	RemoveMSIRoute(gsi uint32) error
	AddIrqfd(fd int, gsi uint32) error
	RemoveIrqfd(fd int, gsi uint32) error
}

// INTxGSI is the IOAPIC GSI that slot's INTA# is wired to (ARCHITECTURE.md:
// 16 + slot%8, level, active high), the one statement of the rule: the
// machine wires each slot's line with it and the host bridge's _PRT
// (Bus.AML) is built from it. GSIs 16-23 are the IOAPIC pins above the ISA
// IRQs, so PCI interrupts never share a line with a legacy device.
func INTxGSI(slot int) uint32 { return 16 + uint32(slot%8) }
