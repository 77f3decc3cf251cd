//go:build amd64

package pc

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/petrel-vmm/petrel/machine/devmgr"
	"github.com/petrel-vmm/petrel/vmm"
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

// stateStream writes and reads the saved machine: the sections above,
// from and into the parts it holds. Its caller (vmSnapshots) has paused
// the vCPUs and quiesced the devices, so no part changes meanwhile.
type stateStream struct {
	// memoryMiB, cpus and cpu are the Config values a saved machine must
	// have been built with (machineConfig).
	memoryMiB, cpus int
	cpu             string
	vm              *vmm.VM
	vcpus           []*vmm.VCPU
	msrs            []uint32 // the MSRs each vCPU's section lists
	ram             *guestRAM
	board           *board
	devices         *devmgr.Manager // each slot's qdev id and driver
	clock           *vmClock        // the lifecycle's: saved and set here
}

// machineConfig is what a saved state must match in the machine that
// loads it.
type machineConfig struct {
	MemoryMiB int
	CPUs      int
	CPU       string
	Slots     []slotConfig
}

// slotConfig is one occupied PCI slot as a saved state names it: a slot
// whose device differs in any field cannot take the saved device state.
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

// config is this machine's configuration, each PCI slot with the id and
// driver the device manager knows it by.
func (st *stateStream) config() machineConfig {
	c := machineConfig{MemoryMiB: st.memoryMiB, CPUs: st.cpus, CPU: st.cpu}
	ids := map[int][2]string{}
	for _, s := range st.devices.Slots() {
		ids[s.Slot] = [2]string{s.ID, s.Driver}
	}
	for _, d := range st.board.pci.Devices() {
		c.Slots = append(c.Slots, slotConfig{Slot: d.Slot, ID: ids[d.Slot][0], Driver: ids[d.Slot][1],
			Vendor: d.VendorID, DeviceID: d.DeviceID})
	}
	sort.Slice(c.Slots, func(i, j int) bool { return c.Slots[i].Slot < c.Slots[j].Slot })
	return c
}

// encode writes the "machine" section: its version, the VM clock (the
// value the snapshot's header records as vm_clock_nsec), then c.
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

// decodeMachine reads what encode wrote. The state file is untrusted
// input: every length is bounded before anything is allocated for it.
func decodeMachine(d *vmstate.Dec) (c machineConfig, clockNs uint64, err error) {
	d.Version(machineSectionVersion)
	clockNs = d.U64()
	c.MemoryMiB = int(d.U32())
	c.CPUs = int(d.U32())
	c.CPU = d.String(1024)
	n := d.U32()
	if n > 32 { // a PCI bus has 32 device numbers
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

// parts lists the sections after ram, in load order. For a save, kvm is
// the KVM state read beforehand; for a load or a check it is nil.
func (st *stateStream) parts(kvm *kvmCapture) []part {
	if kvm == nil {
		kvm = &kvmCapture{cpus: make([]*vmm.VCPUState, len(st.vcpus))}
	}
	ps := []part{{"irqchip", irqchipPart{st.vm, kvm.chips}}}
	for i, v := range st.vcpus {
		ps = append(ps, part{fmt.Sprintf("cpu.%d", i), cpuPart{v, kvm.cpus[i]}})
	}
	ps = append(ps,
		part{"kvmclock", clockPart{st.vm, kvm.clock}},
		part{"serial", st.board.uart},
		part{"rtc", st.board.rtc},
		part{"i8042", st.board.kbd},
		part{"pm", st.board.pm},
		part{"gpe", st.board.gpe},
		part{"hotplug", st.board.hotplug},
		part{"pci", st.board.pci},
	)
	for _, d := range st.board.pci.Devices() {
		dev := st.board.pci.Device(d.Slot)
		if s, ok := dev.(vmstate.Stater); ok {
			ps = append(ps, part{fmt.Sprintf("pci.%d", d.Slot), s})
		}
	}
	return ps
}

// write writes the whole machine to w; the vCPUs are paused and the
// devices quiet. It returns the stream's size.
func (st *stateStream) write(w io.Writer, clockNs uint64) (int64, error) {
	kvm, err := st.captureKVM()
	if err != nil {
		return 0, err
	}
	ps := st.parts(kvm)
	sw := vmstate.NewWriter(w)
	var e vmstate.Enc
	st.config().encode(&e, clockNs)
	sw.Section("machine", machineSectionVersion, e.Data())
	if _, err := vmstate.WriteRAM(sw, st.ram.saved()); err != nil {
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

// check reads a saved machine through without changing anything: its
// structure and checksum must be intact, it must come from a machine
// configured like this one, and it must have every section this machine
// loads and no other.
func (st *stateStream) check(r io.Reader, size int64) error {
	ps := st.parts(nil)
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
			if diff := st.config().differences(saved); diff != "" {
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

// read loads a saved machine that check accepted.
func (st *stateStream) read(r io.Reader, size int64) error {
	ps := st.parts(nil)
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
			st.syncIRQs()
			return nil
		case vmstate.RAMSection:
			if err := vmstate.ReadRAM(rd, ver, st.ram.saved()); err != nil {
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
			st.clock.set(clockNs)
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
func (st *stateStream) syncIRQs() {
	st.board.uart.SyncIRQ()
	st.board.gpe.SyncIRQ()
	st.board.pm.SyncIRQ()
	for _, d := range st.board.pci.Devices() {
		if s, ok := st.board.pci.Device(d.Slot).(irqSyncer); ok {
			s.SyncIRQ()
		}
	}
	st.board.sci.sync()
}
