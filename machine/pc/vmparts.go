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
func (st *stateStream) captureKVM() (*kvmCapture, error) {
	c := &kvmCapture{}
	var err error
	if c.chips, err = st.vm.SaveIRQChips(); err != nil {
		return nil, err
	}
	for _, v := range st.vcpus {
		s, err := v.SaveFullState(st.msrs)
		if err != nil {
			return nil, err
		}
		c.cpus = append(c.cpus, s)
	}
	if c.clock, err = st.vm.SaveClock(); err != nil {
		return nil, err
	}
	return c, nil
}

// irqchipPart is the "irqchip" section: both PICs, the IOAPIC and the
// PIT. saved is nil unless the part was made for a save.
type irqchipPart struct {
	vm    *vmm.VM
	saved *vmm.IRQChipState
}

func (p irqchipPart) SaveState(e *vmstate.Enc) { p.saved.SaveState(e) }

func (p irqchipPart) LoadState(d *vmstate.Dec) error {
	var s vmm.IRQChipState
	if err := s.LoadState(d); err != nil {
		return err
	}
	return p.vm.RestoreIRQChips(&s)
}

// cpuPart is a "cpu.N" section: vCPU N's full state, TSC included.
type cpuPart struct {
	v     *vmm.VCPU
	saved *vmm.VCPUState
}

func (p cpuPart) SaveState(e *vmstate.Enc) { p.saved.SaveState(e) }

func (p cpuPart) LoadState(d *vmstate.Dec) error {
	var s vmm.VCPUState
	if err := s.LoadState(d); err != nil {
		return err
	}
	// A stop request that ended an earlier Run would end the next at
	// once; the loaded vCPU starts afresh.
	p.v.ClearStop()
	if err := p.v.RestoreState(&s); err != nil {
		return fmt.Errorf("vcpu %d: %w", p.v.ID, err)
	}
	return nil
}

// clockPart is the "kvmclock" section. It loads after every vCPU: KVM
// rewrites each vCPU's kvmclock page when the clock is set.
type clockPart struct {
	vm    *vmm.VM
	saved *vmm.ClockState
}

func (p clockPart) SaveState(e *vmstate.Enc) { p.saved.SaveState(e) }

func (p clockPart) LoadState(d *vmstate.Dec) error {
	var s vmm.ClockState
	if err := s.LoadState(d); err != nil {
		return err
	}
	return p.vm.RestoreClock(&s)
}
