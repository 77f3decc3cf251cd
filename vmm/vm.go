package vmm

import (
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// VM is one KVM virtual machine: its memory slots, interrupt routing and
// vCPUs. It implements pci.EventRouter, pci.MSISignaler and hands out
// IRQ lines (docs/ARCHITECTURE.md).
//
// Lock order: VM.mu guards the memory-slot table and the architecture's
// state (the GSI routing table on x86); it is never held while a vCPU runs
// an exit, and no exit path takes it.
type VM struct {
	kvm *KVM
	fd  int

	mu       sync.Mutex
	slots    map[uint32]memSlot // slot id -> region
	nextSlot uint32
	archVM   // vm_amd64.go, vm_ppc64x.go
}

// memSlot is one KVM memory slot: guest-physical base and the host memory
// behind it (not owned: the caller frees it after RemoveMemory).
type memSlot struct {
	gpa  uint64
	host []byte
}

// CreateVM creates an empty VM of the host's default type.
func (k *KVM) CreateVM() (*VM, error) { return k.CreateVMType(0) }

// CreateVMType creates an empty VM; typ is KVM_CREATE_VM's machine type
// argument (0 everywhere but on POWER, where 1 asks for HV KVM and 2 for
// PR KVM).
func (k *KVM) CreateVMType(typ int) (*VM, error) {
	fd, err := ioctlRetry(k.fd, ioctlCreateVM, uintptr(typ))
	if err != nil {
		return nil, fmt.Errorf("creating vm (type %d): %w", typ, err)
	}
	vm := &VM{kvm: k, fd: int(fd), slots: map[uint32]memSlot{}}
	vm.initArch()
	return vm, nil
}

// Close releases the VM fd and what the architecture keeps for the VM
// (closeArch). vCPUs must have stopped.
func (vm *VM) Close() error {
	err := unix.Close(vm.fd)
	vm.closeArch()
	return err
}

// kvmUserspaceMemoryRegion mirrors struct kvm_userspace_memory_region.
type kvmUserspaceMemoryRegion struct {
	Slot          uint32
	Flags         uint32
	GuestPhysAddr uint64
	MemorySize    uint64
	UserspaceAddr uint64
}

// AddMemory registers host (page-aligned, e.g. from AllocGuestRAM) as guest
// memory at gpa and returns its slot id.
func (vm *VM) AddMemory(gpa uint64, host []byte, readOnly bool) (uint32, error) {
	if len(host) == 0 || gpa&0xfff != 0 || len(host)&0xfff != 0 {
		return 0, fmt.Errorf("memory slot at %#x+%#x: not page aligned", gpa, len(host))
	}
	vm.mu.Lock()
	defer vm.mu.Unlock()
	for id, s := range vm.slots {
		if gpa < s.gpa+uint64(len(s.host)) && s.gpa < gpa+uint64(len(host)) {
			return 0, fmt.Errorf("memory slot at %#x+%#x overlaps slot %d at %#x", gpa, len(host), id, s.gpa)
		}
	}
	// nextSlot is at most the lowest free id (RemoveMemory lowers it),
	// so ids stay dense and below KVM's slot limit as BARs come and go.
	id := vm.nextSlot
	for {
		if _, used := vm.slots[id]; !used {
			break
		}
		id++
	}
	r := kvmUserspaceMemoryRegion{Slot: id, GuestPhysAddr: gpa, MemorySize: uint64(len(host)), UserspaceAddr: uint64(bytesAddr(host))}
	if readOnly {
		r.Flags |= 2 // KVM_MEM_READONLY
	}
	if _, err := ioctlPtr(vm.fd, ioctlSetUserMemoryRegion, &r); err != nil {
		return 0, fmt.Errorf("setting memory slot %d at %#x+%#x: %w", id, gpa, len(host), err)
	}
	vm.slots[id] = memSlot{gpa, host}
	vm.nextSlot = id + 1
	return id, nil
}

// RemoveMemory deletes a memory slot (the host memory stays the caller's).
func (vm *VM) RemoveMemory(slot uint32) error {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	s, ok := vm.slots[slot]
	if !ok {
		return fmt.Errorf("removing memory slot %d: no such slot", slot)
	}
	r := kvmUserspaceMemoryRegion{Slot: slot, GuestPhysAddr: s.gpa}
	if _, err := ioctlPtr(vm.fd, ioctlSetUserMemoryRegion, &r); err != nil {
		return fmt.Errorf("removing memory slot %d: %w", slot, err)
	}
	delete(vm.slots, slot)
	if slot < vm.nextSlot {
		vm.nextSlot = slot
	}
	return nil
}
