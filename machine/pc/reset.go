//go:build amd64

package pc

import (
	"fmt"
	"time"

	"github.com/petrel-vmm/petrel/vmm"
)

// powerOn is a guest-requested reset (i8042 0xFE, port 0xcf9, a KVM reset
// event) done without rebuilding the machine, as QEMU does: the devices
// stay, hot-plugged ones included, and every part goes back to its
// power-on state. It holds that state, saved once while the machine is
// built, and the parts it is written back to.
type powerOn struct {
	vm    *vmm.VM
	chips *vmm.IRQChipState // PICs, IOAPIC and PIT after setupIRQChips
	vcpus []*vmm.VCPU
	cpus  []*vmm.VCPUState // vcpuSet.powerOn, one per vCPU
	board *board
	boot  *loader
	logf  func(string, ...any)
}

// reset puts the machine back at power-on; every vCPU must have stopped
// (vmm.RunVCPUs returned), so nothing else touches the vCPUs, the
// irqchip or RAM meanwhile. No lock is held on entry: the PCI bus's
// reset takes the bus lock to unmap the BARs, then resets each device
// after releasing it.
//
//   - vCPUs: registers, FPU, LAPIC, MP state, MSRs (kvmclock off) as KVM
//     created them; the APs wait for INIT/SIPI again.
//   - PICs, IOAPIC and PIT as after setupIRQChips (the PICs masked).
//   - PCI: BARs back at their assigned addresses and not decoding, devices
//     reset through pci.Resetter (virtio: status 0, queues stopped);
//     pending hotplug requests, GPE0 and the PM block cleared; the UART at
//     its power-on registers with an empty FIFO.
//   - RAM keeps what the guest left there (as QEMU's reset does); the
//     kernel, initrd, boot parameters and ACPI tables are loaded again as
//     at power-on: the boot vCPU enters the kernel as on a cold boot.
func (p *powerOn) reset() error {
	t0 := time.Now()
	// Devices first, the irqchip and the vCPUs (their LAPICs) after, as
	// QEMU's pc_machine_reset does: a device's reset may still move its
	// interrupt lines (the UART lowers IRQ4) or complete an in-flight
	// request with an MSI (virtio's workers finish the chain they serve);
	// restoring the chips last wipes whatever that left in the IOAPIC or a
	// LAPIC, so the next boot starts from the power-on state.
	p.board.reset()
	// The irqchip before the vCPUs, the order a saved state loads in
	// (vmsections.go).
	if err := p.vm.RestoreIRQChips(p.chips); err != nil {
		return err
	}
	for i, v := range p.vcpus {
		// Forget the reset's own stop request, which would end the
		// next run at once.
		v.ClearStop()
		if err := v.RestoreState(p.cpus[i]); err != nil {
			return err
		}
	}
	// RAM keeps its contents, as on QEMU's system_reset and on real
	// hardware: the loader below rewrites everything the boot reads.
	// Dropping it (MADV_DONTNEED) would make KVM unmap every huge page of
	// the guest at once; the one soft lockup of a nested vCPU thread seen
	// here came right after such a drop.
	if err := p.boot.load(); err != nil {
		return fmt.Errorf("reloading the kernel: %w", err)
	}
	p.logf("machine reset in place in %v", time.Since(t0).Round(time.Microsecond))
	return nil
}
