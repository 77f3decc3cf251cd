// Package vmm is Petrel's KVM layer, shared by every machine and both host
// architectures: the shared code is in plain files, what only x86 has in
// _amd64.go files (registers, CPUID, PIC/PIT, IOAPIC and MSI routing) and
// what only POWER has in _ppc64x.go files (registers, PAPR mode, ONE_REG,
// KVM_INTERRUPT, the hash page table and the v3 MMU). vmm owns the KVM ABI
// (kvm.go, kvm_*.go) and Open refuses a host that lacks a capability it
// relies on (requiredCaps), naming it.
//
// A VM (CreateVM) owns the memory slots (AddMemory/RemoveMemory over
// lazily allocated AllocGuestRAM). On x86 it also owns the in-kernel
// irqchip and PIT, and the interrupt fast paths: it implements
// pci.EventRouter (ioeventfds, irqfds, MSI GSI routes re-sent with
// KVM_SET_GSI_ROUTING together with the default IOAPIC/PIC pin routes),
// pci.MSISignaler (KVM_SIGNAL_MSI) and hands out level-triggered IRQLines
// (KVM_IRQ_LINE).
//
// A VCPU runs on one goroutine locked to its OS thread (Run, or RunVCPUs
// for all of them). Exit dispatch has two levels: vmm decodes the mmap'd
// kvm_run in place and handles what every architecture shares (IO and
// MMIO from the VCPU's PIO and MMIO buses, SHUTDOWN, SYSTEM_EVENT,
// FAIL_ENTRY, INTERNAL_ERROR, EINTR); only the exits that belong to a
// machine (PAPR_HCALL on pseries, HLT without an irqchip) go to its
// ExitHandler.
// The IO and MMIO paths neither allocate nor lock (TestDispatchAllocs).
//
// A vCPU is stopped or paused from another goroutine by Kick/Pause, which
// set immediate_exit and signal the vCPU thread (SIGURG, which the Go
// runtime tolerates); KVM_RUN then returns EINTR and the loop looks at the
// request instead of blindly re-entering the guest.
//
// On x86 a vCPU's state and the in-kernel irqchip, PIT and kvmclock are
// read and written whole (state_amd64.go): for a machine reset
// (VCPU.SaveState, without the TSC) and for savevm/loadvm
// (VCPU.SaveFullState, VM.SaveIRQChips, VM.SaveClock; their vmstate
// encoding in statecodec_amd64.go). Run completes an exit it served
// before it parks or stops, so a paused vCPU's state is whole.
//
// On x86, GuestCPUID derives each vCPU's CPUID from KVM_GET_SUPPORTED_CPUID: APIC
// ids and leaf 0xB topology, the hypervisor bit, and on kvm_pvm hosts
// (DetectPVM) no CX16 and no XSAVE/AVX, which its CPL0 emulator lacks.
// kvm_pvm takes only the bits in its supported mask from KVM_SET_CPUID2
// and forces the rest to the host's values (its guests run CPUID natively
// at CPL3), so XSAVE and AVX stay visible there: VCPU.CPUID and Overridden
// report exactly which features the host overrode.
package vmm
