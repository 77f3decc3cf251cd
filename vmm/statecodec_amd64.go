package vmm

import (
	"encoding/binary"
	"slices"

	"github.com/petrel-vmm/petrel/vmstate"
)

// The saved-machine encoding of VCPUState, IRQChipState and ClockState
// (vmstate.Stater; the caller names the sections). Version 1 of each:
//
//	version u32 = 1
//	parts   count u32, then per part: name (string), present (bool),
//	        and when present its bytes (u32 length, the kernel structure)
//	msrs    (VCPUState only) count u32, then index u32 and value u64 each
//
// Every part the version knows is listed, in its order, a part the saving
// host lacked as absent, so a state says what it holds. A decoder refuses
// another list (a part name it does not know names the part), a size
// other than the structure's (the XSAVE area: 4096 bytes to 64 KiB) and
// more than 1024 MSRs, so nothing in a stream makes it allocate more than
// that. Whether this host
// can take every part is found out by the restore, which names the one it
// could not.
const stateVersion = 1

// partSpec is one named part of a state: its fixed size, or for the XSAVE
// area (size 0) the host-dependent bounds.
type partSpec struct {
	name string
	size int
}

const maxPartName = 64

func (p partSpec) sizeOK(n int) bool {
	if p.size == 0 {
		return n >= xsaveLegacySize && n <= maxXSAVE
	}
	return n == p.size
}

func encParts(e *vmstate.Enc, specs []partSpec, get func(string) []byte) {
	e.U32(uint32(len(specs)))
	for _, p := range specs {
		e.String(p.name)
		b := get(p.name)
		e.Bool(b != nil)
		if b != nil {
			e.Bytes(b)
		}
	}
}

// decParts reads a parts list into a map of copies (the decoder's bytes
// alias the section). Version 1 lists exactly specs, in order; required
// parts must be present.
func decParts(d *vmstate.Dec, specs []partSpec, required ...string) map[string][]byte {
	if n := d.U32(); d.Err() == nil && n != uint32(len(specs)) {
		d.Failf("%d parts listed, version %d has %d", n, stateVersion, len(specs))
	}
	out := map[string][]byte{}
	for i, p := range specs {
		name := d.String(maxPartName)
		if d.Err() == nil && name != p.name {
			d.Failf("part %d is %q, version %d has %q there", i, name, stateVersion, p.name)
		}
		if d.Err() != nil {
			return nil
		}
		if !d.Bool() {
			continue
		}
		b := d.Bytes(maxXSAVE)
		if d.Err() == nil && !p.sizeOK(len(b)) {
			d.Failf("part %q is %d bytes, not the kernel structure's size", name, len(b))
		}
		out[name] = append([]byte(nil), b...)
	}
	for _, r := range required {
		if d.Err() == nil && out[r] == nil {
			d.Failf("part %q is missing", r)
		}
	}
	return out
}

func vcpuSpecs() []partSpec {
	s := make([]partSpec, len(vcpuParts))
	for i, p := range vcpuParts {
		s[i] = partSpec{p.name, p.size}
	}
	return s
}

// SaveState writes a vCPU state (vmstate.Stater). A state saved for a
// reset (VCPU.SaveState) lacks the TSC; savevm uses VCPU.SaveFullState.
func (s *VCPUState) SaveState(e *vmstate.Enc) {
	e.U32(stateVersion)
	encParts(e, vcpuSpecs(), func(name string) []byte { return s.parts[name] })
	e.U32(uint32(len(s.msrs)))
	for _, m := range s.msrs {
		e.U32(m.Index)
		e.U64(m.Data)
	}
}

// LoadState reads a state written by SaveState (vmstate.Stater); s is
// replaced only when the whole state is good. The result is a full state:
// VCPU.RestoreState fails on any part or MSR the new vCPU cannot take.
func (s *VCPUState) LoadState(d *vmstate.Dec) error {
	d.Version(stateVersion)
	parts := decParts(d, vcpuSpecs(), "regs", "sregs")
	n := d.U32()
	if d.Err() == nil && n > maxMSRs {
		d.Failf("%d MSRs, at most %d allowed", n, maxMSRs)
	}
	var msrs []msrEntry
	if d.Err() == nil {
		msrs = make([]msrEntry, 0, n)
	}
	for i := uint32(0); i < n && d.Err() == nil; i++ {
		msrs = append(msrs, msrEntry{NMSRs: 1, Index: d.U32(), Data: d.U64()})
	}
	if err := d.Finish(); err != nil {
		return err
	}
	*s = VCPUState{parts: parts, msrs: msrs, full: true}
	return nil
}

var irqChipSpecs = []partSpec{{irqChipNames[0], 512}, {irqChipNames[1], 512}, {irqChipNames[2], 512}, {"pit", 112}}

// SaveState writes the interrupt controllers' and PIT's state.
func (s *IRQChipState) SaveState(e *vmstate.Enc) {
	e.U32(stateVersion)
	encParts(e, irqChipSpecs, func(name string) []byte {
		if i := slices.Index(irqChipNames[:], name); i >= 0 {
			return s.chips[i].Chip[:]
		}
		if s.hasPIT {
			return s.pit[:]
		}
		return nil
	})
}

// LoadState reads a state written by SaveState; s is replaced only when it
// is good.
func (s *IRQChipState) LoadState(d *vmstate.Dec) error {
	d.Version(stateVersion)
	parts := decParts(d, irqChipSpecs, irqChipNames[:]...)
	if err := d.Finish(); err != nil {
		return err
	}
	var n IRQChipState
	for i := range n.chips {
		n.chips[i].ChipID = uint32(i)
		copy(n.chips[i].Chip[:], parts[irqChipNames[i]])
	}
	if p := parts["pit"]; p != nil {
		n.hasPIT = true
		copy(n.pit[:], p)
	}
	*s = n
	return nil
}

var clockSpecs = []partSpec{{"kvmclock", 48}}

// SaveState writes the kvmclock.
func (s *ClockState) SaveState(e *vmstate.Enc) {
	e.U32(stateVersion)
	encParts(e, clockSpecs, func(string) []byte {
		if s.present {
			return s.data[:]
		}
		return nil
	})
}

// LoadState reads a state written by SaveState; s is replaced only when it
// is good.
func (s *ClockState) LoadState(d *vmstate.Dec) error {
	d.Version(stateVersion)
	parts := decParts(d, clockSpecs)
	if err := d.Finish(); err != nil {
		return err
	}
	n := ClockState{}
	if p := parts["kvmclock"]; p != nil {
		n.present = true
		copy(n.data[:], p)
	}
	*s = n
	return nil
}

var (
	_ vmstate.Stater = (*VCPUState)(nil)
	_ vmstate.Stater = (*IRQChipState)(nil)
	_ vmstate.Stater = (*ClockState)(nil)
)

// lapicIRR reports whether vector is pending in a saved LAPIC (the IRR
// registers at 0x200, one 32-bit register per 16 bytes).
func (s *VCPUState) lapicIRR(vector uint8) bool {
	l := s.parts["lapic"]
	if l == nil {
		return false
	}
	r := binary.LittleEndian.Uint32(l[0x200+int(vector/32)*0x10:])
	return r&(1<<(vector%32)) != 0
}
