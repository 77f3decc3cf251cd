//go:build amd64

package pc

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/petrel-vmm/petrel/vmstate"
)

// The saved machine (docs/ARCHITECTURE.md, "Saved machine state") is a
// vmstate stream whose sections are written in the order they are loaded:
//
//	machine    the configuration it was saved from and the VM clock
//	ram        guest RAM (zero pages as bitmap bits only)
//	irqchip    the in-kernel PICs, IOAPIC and PIT (before the vCPUs: the
//	           LAPICs' state refers to them)
//	cpu.N      each vCPU: registers, FPU/XSAVE, XCRs, MSRs with the TSC,
//	           LAPIC, pending events, MP state
//	kvmclock   the VM's kvmclock
//	serial, rtc, i8042, pm, gpe, hotplug   the board's devices
//	pci        bus 0: every slot's configuration space; loading it maps
//	           the BARs where the guest had placed them
//	pci.N      the internal state of the device in slot N, after the bus
//
// Devices raise the interrupt lines their loaded state implies while they
// load, after the irqchip: a level the irqchip already latched is raised
// again, which it ignores.

const machineSectionVersion = 1

// machineConfig is what a saved state must match in the machine that
// loads it.
type machineConfig struct {
	MemoryMiB int
	CPUs      int
	CPU       string
	Slots     []slotConfig
}

type slotConfig struct {
	Slot             int
	ID, Driver       string
	Vendor, DeviceID uint16
}

func (s slotConfig) String() string {
	id := s.ID
	if id == "" {
		id = "(no id)"
	}
	return fmt.Sprintf("'%s' (%s, %04x:%04x) in slot %d", id, s.Driver, s.Vendor, s.DeviceID, s.Slot)
}

func (m *Machine) config() machineConfig {
	c := machineConfig{MemoryMiB: m.cfg.MemoryMiB, CPUs: m.cfg.CPUs, CPU: m.cfg.CPU}
	ids := map[int][2]string{}
	for _, s := range m.devices.Slots() {
		ids[s.Slot] = [2]string{s.ID, s.Driver}
	}
	for _, d := range m.board.pci.Devices() {
		c.Slots = append(c.Slots, slotConfig{Slot: d.Slot, ID: ids[d.Slot][0], Driver: ids[d.Slot][1],
			Vendor: d.VendorID, DeviceID: d.DeviceID})
	}
	sort.Slice(c.Slots, func(i, j int) bool { return c.Slots[i].Slot < c.Slots[j].Slot })
	return c
}

func (c machineConfig) encode(e *vmstate.Enc, clockNs uint64) {
	e.U32(machineSectionVersion)
	e.U64(clockNs)
	e.U32(uint32(c.MemoryMiB))
	e.U32(uint32(c.CPUs))
	e.String(c.CPU)
	e.U32(uint32(len(c.Slots)))
	for _, s := range c.Slots {
		e.U8(uint8(s.Slot))
		e.String(s.ID)
		e.String(s.Driver)
		e.U16(s.Vendor)
		e.U16(s.DeviceID)
	}
}

func decodeMachine(d *vmstate.Dec) (c machineConfig, clockNs uint64, err error) {
	d.Version(machineSectionVersion)
	clockNs = d.U64()
	c.MemoryMiB = int(d.U32())
	c.CPUs = int(d.U32())
	c.CPU = d.String(1024)
	n := d.U32()
	if n > 32 {
		d.Failf("%d PCI slots", n)
	}
	for i := 0; i < int(n) && d.Err() == nil; i++ {
		c.Slots = append(c.Slots, slotConfig{Slot: int(d.U8()), ID: d.String(256), Driver: d.String(256),
			Vendor: d.U16(), DeviceID: d.U16()})
	}
	return c, clockNs, d.Finish()
}

// differences names how saved differs from c ("" when it does not).
func (c machineConfig) differences(saved machineConfig) string {
	var diff []string
	if saved.MemoryMiB != c.MemoryMiB {
		diff = append(diff, fmt.Sprintf("memory: saved %d MiB, this machine %d MiB", saved.MemoryMiB, c.MemoryMiB))
	}
	if saved.CPUs != c.CPUs {
		diff = append(diff, fmt.Sprintf("vCPUs: saved %d, this machine %d", saved.CPUs, c.CPUs))
	}
	if saved.CPU != c.CPU {
		diff = append(diff, fmt.Sprintf("-cpu: saved %q, this machine %q", saved.CPU, c.CPU))
	}
	have := map[int]slotConfig{}
	for _, s := range c.Slots {
		have[s.Slot] = s
	}
	for _, s := range saved.Slots {
		h, ok := have[s.Slot]
		switch {
		case !ok:
			diff = append(diff, fmt.Sprintf("saved machine has device %s; this machine has none there", s))
		case h != s:
			diff = append(diff, fmt.Sprintf("saved machine has device %s; this machine has %s", s, h))
		}
		delete(have, s.Slot)
	}
	for _, h := range c.Slots {
		if _, extra := have[h.Slot]; extra {
			diff = append(diff, fmt.Sprintf("this machine has device %s, which the saved machine has not", h))
		}
	}
	return strings.Join(diff, "; ")
}

// part is one section of a saved machine other than machine and ram.
type part struct {
	name string
	s    vmstate.Stater
}

// parts lists the sections after ram, in load order.
func (m *Machine) parts() ([]part, error) {
	ps := []part{{"irqchip", irqchipPart{m}}}
	for i := range m.vcpus {
		ps = append(ps, part{fmt.Sprintf("cpu.%d", i), cpuPart{m, i}})
	}
	ps = append(ps,
		part{"kvmclock", clockPart{m}},
		part{"serial", m.board.uart},
		part{"rtc", m.board.rtc},
		part{"i8042", m.board.kbd},
		part{"pm", m.board.pm},
		part{"gpe", m.board.gpe},
		part{"hotplug", m.board.hotplug},
		part{"pci", m.board.pci},
	)
	for _, d := range m.board.pci.Devices() {
		dev := m.board.pci.Device(d.Slot)
		if s, ok := dev.(vmstate.Stater); ok {
			ps = append(ps, part{fmt.Sprintf("pci.%d", d.Slot), s})
		}
	}
	return ps, nil
}

// writeState writes the whole machine to w; the vCPUs are paused and the
// devices quiet. It returns the stream's size.
func (m *Machine) writeState(w io.Writer, clockNs uint64) (int64, error) {
	ps, err := m.parts()
	if err != nil {
		return 0, err
	}
	if m.saving, err = m.captureKVM(); err != nil {
		return 0, err
	}
	defer func() { m.saving = nil }()
	sw := vmstate.NewWriter(w)
	var e vmstate.Enc
	m.config().encode(&e, clockNs)
	sw.Section("machine", machineSectionVersion, e.Data())
	if _, err := vmstate.WriteRAM(sw, m.ramRegions()); err != nil {
		return 0, err
	}
	for _, p := range ps {
		var e vmstate.Enc
		p.s.SaveState(&e)
		sw.Section(p.name, 1, e.Data())
	}
	if err := sw.Close(); err != nil {
		return 0, err
	}
	return sw.Len(), nil
}

// checkState reads a saved machine through without changing anything: its
// structure and checksum must be intact, it must come from a machine
// configured like this one, and it must have every section this machine
// loads and no other.
func (m *Machine) checkState(r io.Reader, size int64) error {
	ps, err := m.parts()
	if err != nil {
		return err
	}
	want := map[string]bool{"machine": true, vmstate.RAMSection: true}
	for _, p := range ps {
		want[p.name] = true
	}
	rd, err := vmstate.NewReader(r, size)
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for {
		name, _, _, err := rd.Next()
		if err != nil {
			return err
		}
		if name == "" {
			break
		}
		if !want[name] {
			return fmt.Errorf("the saved machine has a part this machine lacks: %q", name)
		}
		seen[name] = true
		if name == "machine" {
			b, err := rd.Section()
			if err != nil {
				return err
			}
			saved, _, err := decodeMachine(vmstate.NewDec(name, b))
			if err != nil {
				return err
			}
			if diff := m.config().differences(saved); diff != "" {
				return fmt.Errorf("the saved machine is configured differently: %s", diff)
			}
		}
	}
	for name := range want {
		if !seen[name] {
			return fmt.Errorf("%w: the saved machine has no %q section", vmstate.ErrCorrupt, name)
		}
	}
	return nil
}

// readState loads a saved machine that checkState accepted.
func (m *Machine) readState(r io.Reader, size int64) error {
	ps, err := m.parts()
	if err != nil {
		return err
	}
	byName := map[string]vmstate.Stater{}
	for _, p := range ps {
		byName[p.name] = p.s
	}
	rd, err := vmstate.NewReader(r, size)
	if err != nil {
		return err
	}
	for {
		name, ver, _, err := rd.Next()
		if err != nil {
			return err
		}
		switch name {
		case "":
			m.syncIRQs()
			return nil
		case vmstate.RAMSection:
			if err := vmstate.ReadRAM(rd, ver, m.ramRegions()); err != nil {
				return err
			}
			continue
		}
		b, err := rd.Section()
		if err != nil {
			return err
		}
		if name == "machine" {
			_, clockNs, err := decodeMachine(vmstate.NewDec(name, b))
			if err != nil {
				return err
			}
			m.clock.set(clockNs)
			continue
		}
		if err := byName[name].LoadState(vmstate.NewDec(name, b)); err != nil {
			return fmt.Errorf("loading %s: %w", name, err)
		}
	}
}

// irqSyncer is a device whose LoadState leaves its interrupt line alone:
// SyncIRQ drives the line to the loaded level once the irqchip is loaded.
type irqSyncer interface{ SyncIRQ() }

// syncIRQs drives every device's interrupt line to its loaded level, the
// shared SCI last (the PM and GPE blocks only record their part of it).
func (m *Machine) syncIRQs() {
	m.board.uart.SyncIRQ()
	m.board.gpe.SyncIRQ()
	m.board.pm.SyncIRQ()
	for _, d := range m.board.pci.Devices() {
		if s, ok := m.board.pci.Device(d.Slot).(irqSyncer); ok {
			s.SyncIRQ()
		}
	}
	m.board.sci.sync()
}
