//go:build amd64

package pc

import (
	"fmt"
	"io"

	"github.com/petrel-vmm/petrel/devices/acpi"
	"github.com/petrel-vmm/petrel/devices/i8042"
	"github.com/petrel-vmm/petrel/devices/pci"
	"github.com/petrel-vmm/petrel/devices/rtc"
	"github.com/petrel-vmm/petrel/devices/serial"
	"github.com/petrel-vmm/petrel/vmm"
)

// Ports and IRQs of the machine's own (docs/ARCHITECTURE.md). The legacy
// devices' ports and IRQs are their packages' constants (serial.COM1Port,
// rtc.Port, i8042.DataPort, pci.ConfigPort, devices/acpi), which their AML
// describes too; only what no device package owns is defined here.
const (
	// PostPort is the POST diagnostic port BIOSes and kernels write
	// progress codes to (and use as an I/O delay).
	PostPort = 0x80
	// SCIIRQ is the SCI's ISA IRQ (devices/acpi.SCIIRQ).
	SCIIRQ = acpi.SCIIRQ
)

// board holds the PC's own devices: the ones every PC has, built by
// newBoard and never unplugged.
type board struct {
	uart    *serial.UART
	rtc     *rtc.CMOS
	kbd     *i8042.Controller
	pm      *PM
	sci     *sciOr
	pci     *pci.Bus
	host    *pciHost
	gpe     *acpi.GPE
	hotplug *acpi.Hotplug
}

// sink ignores writes and reads as 0xff (port 0x80 POST codes).
type sink struct{}

func (sink) Read(_, _ uint64, data []byte) {
	for i := range data {
		data[i] = 0xff
	}
}
func (sink) Write(_, _ uint64, _ []byte) {}

// boardWiring is what the board's devices are connected to: the VM's
// interrupt lines and memory slots, the buses their registers go on, and
// what the guest can ask of the machine through them.
type boardWiring struct {
	vm        *vmm.VM
	pio, mmio *vmm.Bus
	// physBits is the guest's physical address width (CPUID 0x80000008),
	// which bounds the 64-bit PCI window.
	physBits  uint
	memoryMiB int
	serial    io.Writer // COM1's output (nil discards)
	// powerOff is ACPI S5 (PM1a_CNT SLP_EN with SLP_TYP 5); reset is a
	// reset through the i8042 (0xFE to port 0x64) or port 0xcf9; eject is
	// the guest's _EJ0 on a hot-pluggable slot. Each runs on the vCPU
	// thread that made the access and must not block on the vCPUs.
	powerOff, reset func()
	eject           func(slot int)
	logf            func(string, ...any)
}

// newBoard creates the legacy devices, the ACPI blocks and PCI bus 0 with
// its host bridge, and puts every one on the port bus at its fixed ports.
func newBoard(w boardWiring) (*board, error) {
	b := &board{}
	low, high := ramLayout(uint64(w.memoryMiB) << 20)
	b.uart = serial.New(w.serial, w.vm.IRQLine(serial.COM1IRQ))
	// The PM block and GPE0 share the SCI (one level-triggered line,
	// FADT SCI_INT): sciOr raises it while either source asserts.
	b.sci = &sciOr{line: w.vm.IRQLine(SCIIRQ)}
	b.pm = NewPM(sciSource{b.sci, 0}.SetLevel, w.powerOff, func(typ int) {
		w.logf("guest asked for sleep state S%d: not supported, ignored", typ)
	})
	b.gpe = acpi.NewGPE(sciSource{b.sci, 1})
	b.host = &pciHost{vm: w.vm, pio: w.pio, mmio: w.mmio, slots: map[pciKey]uint32{}}
	ramEnd := low
	if high > 0 {
		ramEnd = highRAMBase + high
	}
	windows, err := pciWindows(ramEnd, w.physBits)
	if err != nil {
		return nil, err
	}
	b.pci = pci.NewBus(b.host, windows)
	b.pci.SetResetHandler(w.reset)
	if err := b.pci.Add(0, newI440FX()); err != nil {
		return nil, fmt.Errorf("adding pci host bridge: %w", err)
	}
	if b.hotplug, err = acpi.NewHotplug(b.gpe, hotplugSlots, w.eject); err != nil {
		return nil, fmt.Errorf("creating pci hotplug controller: %w", err)
	}
	b.rtc = rtc.New(low, high)
	b.kbd = i8042.New(w.reset)
	for _, d := range []struct {
		name       string
		port, size uint64
		dev        vmm.BusDevice
	}{
		{"i8042", i8042.DataPort, i8042.Ports, b.kbd},
		{"rtc", rtc.Port, rtc.Ports, b.rtc},
		{"post", PostPort, 1, sink{}},
		{"com1", serial.COM1Port, serial.Ports, b.uart},
		{"pci config", pci.ConfigPort, pci.ConfigLen, b.pci},
		{"acpi pm", PM1aEvtPort, PMBlockSize, b.pm},
		{"acpi gpe0", acpi.GPE0Base, acpi.GPE0Len, b.gpe},
		{"pci hotplug", acpi.HotplugBase, acpi.HotplugLen, b.hotplug},
	} {
		// The bus refuses overlapping ranges, so a clash between two
		// of these fixed port ranges fails here, not in the guest.
		if err := w.pio.Insert(d.port, d.size, d.dev); err != nil {
			return nil, fmt.Errorf("inserting %s at port %#x: %w", d.name, d.port, err)
		}
	}
	return b, nil
}

// reset puts every board device back at its power-on state (a machine
// reset, reset.go): PCI devices through pci.Resetter with their BARs not
// decoding, pending hotplug requests, GPE0 and the PM block cleared, the
// UART's registers and FIFO, the RTC's and i8042's state.
func (b *board) reset() {
	b.pci.Reset()
	b.hotplug.Reset()
	b.gpe.Reset()
	b.pm.Reset()
	b.uart.Reset()
	b.rtc.Reset()
	b.kbd.Reset()
}

// hotplugSlots are the slots the guest may hot-(un)plug: all but the host
// bridge in slot 0.
const hotplugSlots = 0xfffffffe

// pciKey names one BAR mapping.
type pciKey struct{ slot, bar int }

// pciHost implements pci.Host: trapping BARs go on the PIO or MMIO bus,
// RAM BARs become KVM memory slots.
type pciHost struct {
	vm        *vmm.VM
	pio, mmio *vmm.Bus
	slots     map[pciKey]uint32 // RAM BAR -> memory slot (guarded by pci.Bus.mu)
}

// MapBAR is called by the PCI bus, under its lock, when the guest enables
// decoding of a BAR or moves it. A RAM BAR (ivshmem's shared memory)
// becomes a KVM memory slot, so the guest's accesses never exit; any
// other BAR is a handler on a bus, which refuses an overlap.
func (h *pciHost) MapBAR(mp pci.Mapping) error {
	if mp.RAM != nil {
		if uint64(len(mp.RAM)) != mp.Size {
			return fmt.Errorf("ram bar %d of slot %d: %d bytes for size %#x", mp.BAR, mp.Slot, len(mp.RAM), mp.Size)
		}
		id, err := h.vm.AddMemory(mp.Addr, mp.RAM, false)
		if err != nil {
			return err
		}
		h.slots[pciKey{mp.Slot, mp.BAR}] = id
		return nil
	}
	bus := h.mmio
	if mp.IO {
		bus = h.pio
	}
	return bus.Insert(mp.Addr, mp.Size, mp.Handler)
}

// UnmapBAR undoes MapBAR, also under the PCI bus's lock.
func (h *pciHost) UnmapBAR(mp pci.Mapping) error {
	if mp.RAM != nil {
		k := pciKey{mp.Slot, mp.BAR}
		id, ok := h.slots[k]
		if !ok {
			return fmt.Errorf("ram bar %d of slot %d is not mapped", mp.BAR, mp.Slot)
		}
		delete(h.slots, k)
		return h.vm.RemoveMemory(id)
	}
	bus := h.mmio
	if mp.IO {
		bus = h.pio
	}
	_, err := bus.Remove(mp.Addr)
	return err
}

// i440fx is the host bridge at slot 0 with the identity of QEMU's pc
// machine (Intel 440FX, 8086:1237, class 0x0600), which guests expect on
// a PC. It has no BARs.
type i440fx struct{ cfg *pci.ConfigSpace }

func newI440FX() *i440fx {
	return &i440fx{cfg: pci.NewConfigSpace(pci.Header{
		VendorID: 0x8086, DeviceID: 0x1237, Revision: 0x02, Class: 0x060000,
		SubsysVendor: 0x1af4, SubsysID: 0x1100,
	})}
}

// Config implements pci.Device.
func (h *i440fx) Config() *pci.ConfigSpace { return h.cfg }

// The VM is the kernel fast path the PCI devices are handed.
var (
	_ pci.EventRouter = (*vmm.VM)(nil)
	_ pci.MSISignaler = (*vmm.VM)(nil)
	_ pci.IRQLine     = (*vmm.IRQLine)(nil)
	_ pci.Host        = (*pciHost)(nil)
)
