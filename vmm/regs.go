package vmm

import "fmt"

// The register ioctls are the same on every architecture; Regs and Sregs
// (and the ioctl numbers, which carry their sizes) are defined per
// architecture in regs_amd64.go and vcpu_ppc64x.go.

// Regs reads the general-purpose registers.
func (v *VCPU) Regs() (*Regs, error) {
	r := new(Regs)
	if _, err := ioctlPtr(v.fd, ioctlGetRegs, r); err != nil {
		return nil, fmt.Errorf("vcpu %d: reading registers: %w", v.ID, err)
	}
	return r, nil
}

// SetRegs writes the general-purpose registers.
func (v *VCPU) SetRegs(r *Regs) error {
	if _, err := ioctlPtr(v.fd, ioctlSetRegs, r); err != nil {
		return fmt.Errorf("vcpu %d: writing registers: %w", v.ID, err)
	}
	return nil
}

// Sregs reads the special registers (segments and control registers on
// x86; PVR, SDR1 and the SLB on POWER).
func (v *VCPU) Sregs() (*Sregs, error) {
	s := new(Sregs)
	if _, err := ioctlPtr(v.fd, ioctlGetSregs, s); err != nil {
		return nil, fmt.Errorf("vcpu %d: reading special registers: %w", v.ID, err)
	}
	return s, nil
}

// SetSregs writes the special registers.
func (v *VCPU) SetSregs(s *Sregs) error {
	if _, err := ioctlPtr(v.fd, ioctlSetSregs, s); err != nil {
		return fmt.Errorf("vcpu %d: writing special registers: %w", v.ID, err)
	}
	return nil
}
