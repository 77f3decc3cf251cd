package pseries

// htabShiftFor is the hash page table size QEMU picks for a RAM size:
// about 1/128 of RAM, at least 256 KiB (shift 18), at most 2^46.
func htabShiftFor(ram uint64) uint32 {
	shift := uint32(18)
	for shift < 46 && uint64(1)<<(shift+7) < ram {
		shift++
	}
	return shift
}
