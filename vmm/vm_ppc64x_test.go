//go:build ppc64 || ppc64le

package vmm

import "testing"

// PR KVM's hash table is only ever set up on a PR host, which the
// e2e-pseries run (nested HV) does not have: check its SDR1 here.
func TestSDR1For(t *testing.T) {
	for _, c := range []struct {
		base  uint64
		shift uint32
		want  uint64
	}{
		{0x7fff_0000_0000, 18, 0x7fff_0000_0000},     // aligned already, HTABSIZE 0
		{0x7fff_0001_0000, 18, 0x7fff_0004_0000},     // rounded up to 256 KiB
		{0x7ffe_1234_0000, 24, 0x7ffe_1300_0000 | 6}, // 16 MiB table
		{0x7ffe_0000_1000, 26, 0x7ffe_0400_0000 | 8}, // 64 MiB table
	} {
		got := sdr1For(c.base, c.shift)
		if got != c.want {
			t.Errorf("sdr1For(%#x, %d) = %#x, want %#x", c.base, c.shift, got, c.want)
		}
		size := uint64(1) << c.shift
		if org := got &^ 0x1f; org%size != 0 || org < c.base || org+size > c.base+2*size {
			t.Errorf("sdr1For(%#x, %d): HTABORG %#x not an aligned table inside the mapping", c.base, c.shift, org)
		}
	}
}
