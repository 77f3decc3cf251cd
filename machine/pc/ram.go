//go:build amd64

package pc

import (
	"github.com/petrel-vmm/petrel/vmm"
	"github.com/petrel-vmm/petrel/vmm/guestmem"
)

// guestRAM is the guest's RAM: one private anonymous mapping below 3 GiB
// and, for more than 3 GiB, one from 4 GiB (ramLayout, layout.go), each a
// KVM memory slot and a guestmem region. The mappings live as long as the
// Machine; the same slices serve the reset (drop), the saved state's "ram"
// section (ramstate.go) and the resident-memory report (memstat.go).
type guestRAM struct {
	regions []ramRegion
}

// ramRegion is one RAM mapping and the guest-physical address it is at.
type ramRegion struct {
	gpa uint64
	mem []byte
}

// newGuestRAM maps size bytes of RAM into vm and mem, lazily allocated:
// a page costs host memory only once the guest touches it. On an error
// the mappings made so far are freed (KVM's slots go with the VM).
func newGuestRAM(vm *vmm.VM, mem *guestmem.Memory, size uint64) (*guestRAM, error) {
	ram := &guestRAM{}
	low, high := ramLayout(size)
	for _, r := range []struct{ gpa, size uint64 }{{0, low}, {highRAMBase, high}} {
		if r.size == 0 {
			continue
		}
		b, err := vmm.AllocGuestRAM(r.size)
		if err != nil {
			ram.free()
			return nil, err
		}
		ram.regions = append(ram.regions, ramRegion{gpa: r.gpa, mem: b})
		if _, err := vm.AddMemory(r.gpa, b, false); err != nil {
			ram.free()
			return nil, err
		}
		if err := mem.Add(r.gpa, b); err != nil {
			ram.free()
			return nil, err
		}
	}
	return ram, nil
}

// free unmaps the RAM; the VM must no longer run (Machine.Close).
func (r *guestRAM) free() error {
	var first error
	for _, reg := range r.regions {
		if err := vmm.FreeGuestRAM(reg.mem); err != nil && first == nil {
			first = err
		}
	}
	r.regions = nil
	return first
}
