package pseries

import (
	"encoding/binary"
)

// H_LOGICAL_MEMOP operations (docs: ppc-spapr-hcalls.txt).
const (
	memopCopy = 0
	memopXor  = 1
)

// hLogicalMemop is H_LOGICAL_MEMOP (0xf001): r4 destination, r5 source,
// r6 element size as log2 bytes (0..3), r7 element count, r8 operation
// (0 copy, 1 xor). Both ranges must be aligned to the element size and lie
// wholly in guest memory; every check happens before memory is touched,
// so a failed call (H_PARAMETER) changes nothing. Overlapping ranges
// behave like memmove: each source element is read before it is
// overwritten.
func hLogicalMemop(m *Machine, cpu *CPU, args *[9]uint64) int64 {
	dst, src, esize, count, op := args[0], args[1], args[2], args[3], args[4]
	if esize > 3 || op > memopXor {
		return HParameter
	}
	if (dst|src)&(1<<esize-1) != 0 {
		return HParameter
	}
	if count > (^uint64(0))>>esize { // count<<esize would overflow
		return HParameter
	}
	n := count << esize
	if n == 0 {
		return HSuccess
	}
	d, err := m.mem.Slice(dst, n)
	if err != nil {
		return HParameter
	}
	s, err := m.mem.Slice(src, n)
	if err != nil {
		return HParameter
	}
	if op == memopCopy {
		copy(d, s) // copy is memmove-safe for overlapping slices
		return HSuccess
	}
	xorMemmove(d, s, dst > src && dst < src+n)
	return HSuccess
}

// xorMemmove does d ^= s where d and s may overlap, with memmove
// semantics: every byte of s is read before the walk overwrites it. XOR
// is bytewise, so the element size does not matter, and walking backwards
// when d starts inside s (forwards otherwise) gives the element-by-element
// result. Words of 8 bytes are loaded (both) before being stored, which
// keeps that guarantee: a word's reads precede its writes, and the bytes
// it reads lie in the part of s the walk has not yet written.
func xorMemmove(d, s []byte, backwards bool) {
	n := len(d)
	le := binary.LittleEndian // any byte order: XOR does not care
	if backwards {
		i := n
		for ; i >= 8; i -= 8 {
			le.PutUint64(d[i-8:], le.Uint64(d[i-8:])^le.Uint64(s[i-8:]))
		}
		for ; i > 0; i-- {
			d[i-1] ^= s[i-1]
		}
		return
	}
	i := 0
	for ; i+8 <= n; i += 8 {
		le.PutUint64(d[i:], le.Uint64(d[i:])^le.Uint64(s[i:]))
	}
	for ; i < n; i++ {
		d[i] ^= s[i]
	}
}

// loadSize checks an H_LOGICAL_*_LOAD/STORE size (1, 2, 4 or 8 bytes) and
// returns the guest bytes at addr, which must be naturally aligned and in
// guest RAM (Petrel's pseries has no MMIO for these calls to reach).
func logicalSlice(m *Machine, size, addr uint64) ([]byte, bool) {
	if size != 1 && size != 2 && size != 4 && size != 8 || addr%size != 0 {
		return nil, false
	}
	b, err := m.mem.Slice(addr, size)
	return b, err == nil
}

// hLogicalLoad is H_LOGICAL_CI_LOAD / H_LOGICAL_CACHE_LOAD: r4 size,
// r5 address -> r4 value, read big-endian as the guest's load would.
func hLogicalLoad(m *Machine, cpu *CPU, args *[9]uint64) int64 {
	b, ok := logicalSlice(m, args[0], args[1])
	if !ok {
		return HParameter
	}
	switch len(b) {
	case 1:
		args[0] = uint64(b[0])
	case 2:
		args[0] = uint64(binary.BigEndian.Uint16(b))
	case 4:
		args[0] = uint64(binary.BigEndian.Uint32(b))
	default:
		args[0] = binary.BigEndian.Uint64(b)
	}
	return HSuccess
}

// hLogicalStore is H_LOGICAL_CI_STORE / H_LOGICAL_CACHE_STORE: r4 size,
// r5 address, r6 value (its low size bytes, stored big-endian).
func hLogicalStore(m *Machine, cpu *CPU, args *[9]uint64) int64 {
	b, ok := logicalSlice(m, args[0], args[1])
	if !ok {
		return HParameter
	}
	v := args[2]
	switch len(b) {
	case 1:
		b[0] = byte(v)
	case 2:
		binary.BigEndian.PutUint16(b, uint16(v))
	case 4:
		binary.BigEndian.PutUint32(b, uint32(v))
	default:
		binary.BigEndian.PutUint64(b, v)
	}
	return HSuccess
}

// hLogicalCacheOp is H_LOGICAL_ICBI / H_LOGICAL_DCBF: r4 address. Guest
// RAM is ordinary cacheable host memory the VMM never writes code into, so
// there is nothing to flush; the address must still be guest RAM.
func hLogicalCacheOp(m *Machine, cpu *CPU, args *[9]uint64) int64 {
	if _, err := m.mem.Slice(args[0], 1); err != nil {
		return HParameter
	}
	return HSuccess
}
