package pseries

import "testing"

func TestHTABShift(t *testing.T) {
	for _, c := range []struct {
		ram  uint64
		want uint32
	}{{16 << 20, 18}, {32 << 20, 18}, {64 << 20, 19}, {1 << 30, 23}, {(1 << 30) + 1, 24}, {1 << 60, 46}} {
		if got := htabShiftFor(c.ram); got != c.want {
			t.Errorf("htabShiftFor(%#x) = %d, want %d", c.ram, got, c.want)
		}
	}
}
