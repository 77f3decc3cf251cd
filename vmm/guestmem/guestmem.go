// Package guestmem gives bounds-checked access to guest physical memory.
//
// Every device that follows guest-supplied addresses (virtio descriptors,
// RTAS argument blocks, hypercall buffers) goes through Memory, so a bad
// address is an error value, never an access outside the guest's RAM.
package guestmem

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
)

// ErrOutOfRange is returned for an access not wholly inside one region.
var ErrOutOfRange = errors.New("guest address range outside guest memory")

// Region is one contiguous piece of guest RAM backed by host memory.
type Region struct {
	GPA  uint64
	Host []byte
}

// Memory is the set of guest RAM regions. It is built before vCPUs start
// and not changed afterwards, so reads need no lock.
type Memory struct {
	regions []Region // sorted by GPA, non-overlapping
}

// New returns an empty Memory.
func New() *Memory { return &Memory{} }

// Add maps host at guest physical address gpa.
func (m *Memory) Add(gpa uint64, host []byte) error {
	end := gpa + uint64(len(host))
	if len(host) == 0 || end < gpa {
		return fmt.Errorf("guest memory region %#x+%#x: bad range", gpa, len(host))
	}
	for _, r := range m.regions {
		if gpa < r.GPA+uint64(len(r.Host)) && r.GPA < end {
			return fmt.Errorf("guest memory region %#x+%#x overlaps %#x", gpa, len(host), r.GPA)
		}
	}
	m.regions = append(m.regions, Region{gpa, host})
	sort.Slice(m.regions, func(i, j int) bool { return m.regions[i].GPA < m.regions[j].GPA })
	return nil
}

// Regions returns the regions in address order. Callers must not modify it.
func (m *Memory) Regions() []Region { return m.regions }

// Size is the total RAM in bytes.
func (m *Memory) Size() uint64 {
	var n uint64
	for _, r := range m.regions {
		n += uint64(len(r.Host))
	}
	return n
}

// Slice returns the host bytes backing [gpa, gpa+n). The range must lie in
// one region. The slice aliases guest memory: the guest may change it at any
// time, so callers copy what they validate before using it.
func (m *Memory) Slice(gpa, n uint64) ([]byte, error) {
	for i := range m.regions {
		r := &m.regions[i]
		if gpa < r.GPA {
			break
		}
		off := gpa - r.GPA
		size := uint64(len(r.Host))
		if off < size {
			if n > size-off {
				break
			}
			return r.Host[off : off+n : off+n], nil
		}
	}
	return nil, fmt.Errorf("%w: %#x+%#x", ErrOutOfRange, gpa, n)
}

// Read copies guest memory at gpa into p.
func (m *Memory) Read(gpa uint64, p []byte) error {
	s, err := m.Slice(gpa, uint64(len(p)))
	if err != nil {
		return err
	}
	copy(p, s)
	return nil
}

// Write copies p into guest memory at gpa.
func (m *Memory) Write(gpa uint64, p []byte) error {
	s, err := m.Slice(gpa, uint64(len(p)))
	if err != nil {
		return err
	}
	copy(s, p)
	return nil
}

// Uint16 reads a little-endian 16-bit value.
func (m *Memory) Uint16(gpa uint64) (uint16, error) {
	s, err := m.Slice(gpa, 2)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(s), nil
}

// Uint32 reads a little-endian 32-bit value.
func (m *Memory) Uint32(gpa uint64) (uint32, error) {
	s, err := m.Slice(gpa, 4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(s), nil
}

// Uint64 reads a little-endian 64-bit value.
func (m *Memory) Uint64(gpa uint64) (uint64, error) {
	s, err := m.Slice(gpa, 8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(s), nil
}

// PutUint16 writes a little-endian 16-bit value.
func (m *Memory) PutUint16(gpa uint64, v uint16) error {
	s, err := m.Slice(gpa, 2)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint16(s, v)
	return nil
}

// PutUint32 writes a little-endian 32-bit value.
func (m *Memory) PutUint32(gpa uint64, v uint32) error {
	s, err := m.Slice(gpa, 4)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint32(s, v)
	return nil
}

// PutUint64 writes a little-endian 64-bit value.
func (m *Memory) PutUint64(gpa uint64, v uint64) error {
	s, err := m.Slice(gpa, 8)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint64(s, v)
	return nil
}
