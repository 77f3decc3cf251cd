//go:build amd64

package pc

import (
	"fmt"

	"github.com/petrel-vmm/petrel/vmm"
	"github.com/petrel-vmm/petrel/vmstate"
)

// The KVM side of a saved machine: the in-kernel irqchip and PIT, each
// vCPU and the kvmclock. Reading them can fail, which a section's
// SaveState cannot report, so captureKVM reads them all first and the
// parts only encode what it read.

// kvmCapture is the KVM state read at a save.
type kvmCapture struct {
	chips *vmm.IRQChipState
	cpus  []*vmm.VCPUState
	clock *vmm.ClockState
}

// captureKVM reads the KVM state of the paused machine.
func (m *Machine) captureKVM() (*kvmCapture, error) {
	c := &kvmCapture{}
	var err error
	if c.chips, err = m.vm.SaveIRQChips(); err != nil {
		return nil, err
	}
	for _, v := range m.vcpus {
		s, err := v.SaveFullState(m.msrs)
		if err != nil {
			return nil, err
		}
		c.cpus = append(c.cpus, s)
	}
	if c.clock, err = m.vm.SaveClock(); err != nil {
		return nil, err
	}
	return c, nil
}

type irqchipPart struct{ m *Machine }

func (p irqchipPart) SaveState(e *vmstate.Enc) { p.m.saving.chips.SaveState(e) }

func (p irqchipPart) LoadState(d *vmstate.Dec) error {
	var s vmm.IRQChipState
	if err := s.LoadState(d); err != nil {
		return err
	}
	return p.m.vm.RestoreIRQChips(&s)
}

type cpuPart struct {
	m *Machine
	i int
}

func (p cpuPart) SaveState(e *vmstate.Enc) { p.m.saving.cpus[p.i].SaveState(e) }

func (p cpuPart) LoadState(d *vmstate.Dec) error {
	var s vmm.VCPUState
	if err := s.LoadState(d); err != nil {
		return err
	}
	v := p.m.vcpus[p.i]
	v.ClearStop()
	if err := v.RestoreState(&s); err != nil {
		return fmt.Errorf("vcpu %d: %w", p.i, err)
	}
	return nil
}

type clockPart struct{ m *Machine }

func (p clockPart) SaveState(e *vmstate.Enc) { p.m.saving.clock.SaveState(e) }

func (p clockPart) LoadState(d *vmstate.Dec) error {
	var s vmm.ClockState
	if err := s.LoadState(d); err != nil {
		return err
	}
	return p.m.vm.RestoreClock(&s)
}
