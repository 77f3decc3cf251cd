package vmm

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
)

// BusDevice handles guest accesses to an address range on a Bus.
//
// base is the start of the range the device was inserted at and offset the
// access address minus base, so one device can be mapped at several ranges
// (for example a PCI BAR that the guest moves). len(data) is the access width
// (1, 2, 4 or 8; a string PIO instruction is split into single accesses).
// Read fills data; a device with nothing to say fills it with 0xff.
// Devices never fail the VM: an odd access is ignored and counted.
type BusDevice interface {
	Read(base, offset uint64, data []byte)
	Write(base, offset uint64, data []byte)
}

// ErrOverlap is returned by Insert for a range that intersects another.
var ErrOverlap = errors.New("bus range overlaps an existing device")

// ErrNoRange is returned by Remove for a base with no device.
var ErrNoRange = errors.New("no device at that bus address")

type busRange struct {
	base, size uint64
	dev        BusDevice
}

// Bus maps address ranges (PIO ports or guest-physical MMIO addresses) to
// devices. Lookups are lock-free: the sorted range table is replaced whole
// (copy on write) under mu by Insert and Remove, and readers load it with one
// atomic pointer load, so the vCPU exit path neither locks nor allocates.
type Bus struct {
	mu     sync.Mutex // serialises writers only
	ranges atomic.Pointer[[]busRange]

	// Unhandled counts accesses that hit no device.
	Unhandled atomic.Uint64
	// OnUnhandled, when set before the bus is used, is told of each access
	// no device claimed (for a rate-limited log); it runs on the vCPU thread.
	OnUnhandled func(addr uint64, size int, write bool)
}

// Insert maps [base, base+size) to dev.
func (b *Bus) Insert(base, size uint64, dev BusDevice) error {
	if size == 0 || base+size < base {
		return fmt.Errorf("bus insert %#x+%#x: bad range", base, size)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var old []busRange
	if p := b.ranges.Load(); p != nil {
		old = *p
	}
	i := sort.Search(len(old), func(i int) bool { return old[i].base >= base })
	if i < len(old) && old[i].base < base+size {
		return fmt.Errorf("bus insert %#x+%#x: %w at %#x", base, size, ErrOverlap, old[i].base)
	}
	if i > 0 && old[i-1].base+old[i-1].size > base {
		return fmt.Errorf("bus insert %#x+%#x: %w at %#x", base, size, ErrOverlap, old[i-1].base)
	}
	nr := make([]busRange, 0, len(old)+1)
	nr = append(nr, old[:i]...)
	nr = append(nr, busRange{base, size, dev})
	nr = append(nr, old[i:]...)
	b.ranges.Store(&nr)
	return nil
}

// Remove unmaps the range starting at base and returns its device.
func (b *Bus) Remove(base uint64) (BusDevice, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.ranges.Load()
	if p == nil {
		return nil, fmt.Errorf("bus remove %#x: %w", base, ErrNoRange)
	}
	old := *p
	for i, r := range old {
		if r.base == base {
			nr := make([]busRange, 0, len(old)-1)
			nr = append(nr, old[:i]...)
			nr = append(nr, old[i+1:]...)
			b.ranges.Store(&nr)
			return r.dev, nil
		}
	}
	return nil, fmt.Errorf("bus remove %#x: %w", base, ErrNoRange)
}

// find returns the range wholly containing [addr, addr+n).
func (b *Bus) find(addr uint64, n int) (busRange, bool) {
	p := b.ranges.Load()
	if p == nil {
		return busRange{}, false
	}
	rs := *p
	// Binary search by hand: sort.Search's closure would escape.
	lo, hi := 0, len(rs)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if rs[m].base <= addr {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == 0 {
		return busRange{}, false
	}
	r := rs[lo-1]
	off := addr - r.base
	if off >= r.size || uint64(n) > r.size-off {
		return busRange{}, false
	}
	return r, true
}

// Read dispatches a read; it reports false (and fills data with 0xff) when
// no device covers the whole access.
func (b *Bus) Read(addr uint64, data []byte) bool {
	r, ok := b.find(addr, len(data))
	if !ok {
		for i := range data {
			data[i] = 0xff
		}
		b.Unhandled.Add(1)
		if b.OnUnhandled != nil {
			b.OnUnhandled(addr, len(data), false)
		}
		return false
	}
	r.dev.Read(r.base, addr-r.base, data)
	return true
}

// Write dispatches a write; it reports false when no device covers it.
func (b *Bus) Write(addr uint64, data []byte) bool {
	r, ok := b.find(addr, len(data))
	if !ok {
		b.Unhandled.Add(1)
		if b.OnUnhandled != nil {
			b.OnUnhandled(addr, len(data), true)
		}
		return false
	}
	r.dev.Write(r.base, addr-r.base, data)
	return true
}
