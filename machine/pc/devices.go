//go:build amd64

package pc

import (
	"fmt"

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
// setupDevices and never unplugged.
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

// setupDevices creates the legacy devices, the ACPI blocks and PCI bus 0.
func (m *Machine) setupDevices() error {
	low, high := ramLayout(uint64(m.cfg.MemoryMiB) << 20)
	m.board.uart = serial.New(m.cfg.Serial, m.vm.IRQLine(serial.COM1IRQ))
	m.board.sci = &sciOr{line: m.vm.IRQLine(SCIIRQ)}
	m.board.pm = NewPM(sciSource{m.board.sci, 0}.SetLevel, m.PowerOff, func(typ int) {
		m.logf("guest asked for sleep state S%d: not supported, ignored", typ)
	})
	gpe := acpi.NewGPE(sciSource{m.board.sci, 1})
	m.board.gpe = gpe
	m.board.host = &pciHost{m: m, slots: map[pciKey]uint32{}}
	cpuid, err := m.kvm.SupportedCPUID()
	if err != nil {
		return err
	}
	ramEnd := low
	if high > 0 {
		ramEnd = highRAMBase + high
	}
	windows, err := pciWindows(ramEnd, physBits(cpuid))
	if err != nil {
		return err
	}
	m.board.pci = pci.NewBus(m.board.host, windows)
	m.board.pci.SetResetHandler(m.Reset)
	if err := m.board.pci.Add(0, newI440FX()); err != nil {
		return fmt.Errorf("adding pci host bridge: %w", err)
	}
	hp, err := acpi.NewHotplug(gpe, hotplugSlots, m.ejectSlot)
	if err != nil {
		return fmt.Errorf("creating pci hotplug controller: %w", err)
	}
	m.board.hotplug = hp
	m.newDeviceManager()
	m.board.rtc = rtc.New(low, high)
	m.board.kbd = i8042.New(m.Reset)
	for _, d := range []struct {
		name       string
		port, size uint64
		dev        vmm.BusDevice
	}{
		{"i8042", i8042.DataPort, i8042.Ports, m.board.kbd},
		{"rtc", rtc.Port, rtc.Ports, m.board.rtc},
		{"post", PostPort, 1, sink{}},
		{"com1", serial.COM1Port, serial.Ports, m.board.uart},
		{"pci config", pci.ConfigPort, pci.ConfigLen, m.board.pci},
		{"acpi pm", PM1aEvtPort, PMBlockSize, m.board.pm},
		{"acpi gpe0", acpi.GPE0Base, acpi.GPE0Len, gpe},
		{"pci hotplug", acpi.HotplugBase, acpi.HotplugLen, hp},
	} {
		if err := m.pio.Insert(d.port, d.size, d.dev); err != nil {
			return fmt.Errorf("inserting %s at port %#x: %w", d.name, d.port, err)
		}
	}
	return nil
}

// hotplugSlots are the slots the guest may hot-(un)plug: all but the host
// bridge in slot 0.
const hotplugSlots = 0xfffffffe

// ejectSlot is called on the vCPU thread when the guest ejects a slot
// (_EJ0); the device manager finishes the eject on a worker.
func (m *Machine) ejectSlot(slot int) { m.devices.Ejected(slot) }

// pciKey names one BAR mapping.
type pciKey struct{ slot, bar int }

// pciHost implements pci.Host: trapping BARs go on the PIO or MMIO bus,
// RAM BARs become KVM memory slots.
type pciHost struct {
	m     *Machine
	slots map[pciKey]uint32 // RAM BAR -> memory slot (guarded by pci.Bus.mu)
}

func (h *pciHost) MapBAR(mp pci.Mapping) error {
	if mp.RAM != nil {
		if uint64(len(mp.RAM)) != mp.Size {
			return fmt.Errorf("ram bar %d of slot %d: %d bytes for size %#x", mp.BAR, mp.Slot, len(mp.RAM), mp.Size)
		}
		id, err := h.m.vm.AddMemory(mp.Addr, mp.RAM, false)
		if err != nil {
			return err
		}
		h.slots[pciKey{mp.Slot, mp.BAR}] = id
		return nil
	}
	bus := h.m.mmio
	if mp.IO {
		bus = h.m.pio
	}
	return bus.Insert(mp.Addr, mp.Size, mp.Handler)
}

func (h *pciHost) UnmapBAR(mp pci.Mapping) error {
	if mp.RAM != nil {
		k := pciKey{mp.Slot, mp.BAR}
		id, ok := h.slots[k]
		if !ok {
			return fmt.Errorf("ram bar %d of slot %d is not mapped", mp.BAR, mp.Slot)
		}
		delete(h.slots, k)
		return h.m.vm.RemoveMemory(id)
	}
	bus := h.m.mmio
	if mp.IO {
		bus = h.m.pio
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
