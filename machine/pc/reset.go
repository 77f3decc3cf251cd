//go:build amd64

package pc

import (
	"fmt"
	"time"

	"github.com/petrel-vmm/petrel/vmm"
)

// powerOnState is what a machine reset restores: each vCPU's state as KVM
// created it and the interrupt controllers' and PIT's state after
// setupPlatform. It is saved once, while the machine is built.
type powerOnState struct {
	vcpus []*vmm.VCPUState
	chips *vmm.IRQChipState
}

// saveVCPUState records v's power-on state (called before any boot setup
// touches it).
func (m *Machine) saveVCPUState(v *vmm.VCPU, msrs []uint32) error {
	s, err := v.SaveState(msrs)
	if err != nil {
		return err
	}
	m.powerOn.vcpus = append(m.powerOn.vcpus, s)
	return nil
}

// resetInPlace is a guest-requested reset (i8042 0xFE, port 0xcf9, a KVM
// reset event) done without rebuilding the machine, as QEMU does: the
// devices stay, hot-plugged ones included, and every part goes back to its
// power-on state. The vCPUs must have stopped.
//
//   - vCPUs: registers, FPU, LAPIC, MP state, MSRs (kvmclock off) as KVM
//     created them; the APs wait for INIT/SIPI again.
//   - PICs, IOAPIC and PIT as after setupPlatform (the PICs masked).
//   - PCI: BARs back at their assigned addresses and not decoding, devices
//     reset through pci.Resetter (virtio: status 0, queues stopped);
//     pending hotplug requests, GPE0 and the PM block cleared; the UART at
//     its power-on registers with an empty FIFO.
//   - RAM keeps what the guest left there (as QEMU's reset does); the
//     kernel, initrd, boot parameters and ACPI tables are loaded again as
//     at power-on: the boot vCPU enters the kernel as on a cold boot.
func (m *Machine) resetInPlace() error {
	t0 := time.Now()
	if err := m.vm.RestoreIRQChips(m.powerOn.chips); err != nil {
		return err
	}
	for i, v := range m.vcpus {
		v.ClearStop()
		if err := v.RestoreState(m.powerOn.vcpus[i]); err != nil {
			return err
		}
	}
	m.board.pci.Reset()
	m.board.hotplug.Reset()
	m.board.gpe.Reset()
	m.board.pm.Reset()
	m.board.uart.Reset()
	m.board.rtc.Reset()
	m.board.kbd.Reset()
	// RAM keeps its contents, as on QEMU's system_reset and on real
	// hardware: the loader below rewrites everything the boot reads.
	// Dropping it (MADV_DONTNEED) would make KVM unmap every huge page of
	// the guest at once; the one soft lockup of a nested vCPU thread seen
	// here came right after such a drop.
	if err := m.load(); err != nil {
		return fmt.Errorf("reloading the kernel: %w", err)
	}
	m.logf("machine reset in place in %v", time.Since(t0).Round(time.Microsecond))
	return nil
}
