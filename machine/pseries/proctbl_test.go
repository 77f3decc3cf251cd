package pseries

import (
	"errors"
	"testing"
)

func TestRegisterProcTbl(t *testing.T) {
	v := newTestVM(t, 1)
	var applied []MMUConfig
	fail := false
	v.SetMMUConfigurer(func(c MMUConfig) error {
		if fail {
			return errors.New("refused")
		}
		applied = append(applied, c)
		return nil
	})
	const (
		mod, reg, radix, gtse, ste = procTblModify, procTblRegister, procTblRadix, procTblGTSE, procTblHashSTE
	)
	cases := []struct {
		name                 string
		flags, tbl, ps, size uint64
		want                 int64
		cfg                  MMUConfig // after the call
	}{
		{"radix register", mod | reg | radix | gtse, 0x1230000, 0, 12, HSuccess, MMUConfig{true, true, pate1GR | 0x1230000 | 12}},
		{"radix keep", radix | gtse, 0, 0, 0, HSuccess, MMUConfig{true, true, pate1GR | 0x1230000 | 12}},
		{"keep with the wrong mode", 0, 0, 0, 0, HParameter, MMUConfig{true, true, pate1GR | 0x1230000 | 12}},
		{"radix misaligned table", mod | reg | radix, 0x1230800, 0, 12, HP2, MMUConfig{true, true, pate1GR | 0x1230000 | 12}},
		{"radix table too high", mod | reg | radix, 1 << 60, 0, 12, HP2, MMUConfig{true, true, pate1GR | 0x1230000 | 12}},
		{"radix page size", mod | reg | radix, 0x1000, 1, 12, HP3, MMUConfig{true, true, pate1GR | 0x1230000 | 12}},
		{"radix size", mod | reg | radix, 0x1000, 0, 25, HP4, MMUConfig{true, true, pate1GR | 0x1230000 | 12}},
		{"reserved flag", 0x20 | mod | reg | radix, 0x1000, 0, 12, HParameter, MMUConfig{true, true, pate1GR | 0x1230000 | 12}},
		{"deregister", mod, 0, 0, 0, HSuccess, MMUConfig{false, false, 0}},
		{"hash register (Linux on POWER9 hash)", mod | reg, 0, 0, 0, HSuccess, MMUConfig{false, false, 0}},
		{"hash with table", mod | reg | gtse, 0x40000, 5, 3, HSuccess, MMUConfig{false, true, 0x40000 | 5<<5 | 3}},
		{"hash segment tables", mod | reg | ste, 0, 0, 0, HParameter, MMUConfig{false, true, 0x40000 | 5<<5 | 3}},
		{"hash table too high", mod | reg, 1 << 38, 0, 0, HP2, MMUConfig{false, true, 0x40000 | 5<<5 | 3}},
		{"hash page size", mod | reg, 0, 8, 0, HP3, MMUConfig{false, true, 0x40000 | 5<<5 | 3}},
		{"hash size", mod | reg, 0, 0, 25, HP4, MMUConfig{false, true, 0x40000 | 5<<5 | 3}},
	}
	n := 0
	for _, c := range cases {
		args := [9]uint64{c.flags, c.tbl, c.ps, c.size}
		if got := v.Hypercall(v.cpus[0], HRegisterProcTbl, &args); got != c.want {
			t.Errorf("%s: ret %d, want %d", c.name, got, c.want)
		}
		if got := v.MMU(); got != c.cfg {
			t.Errorf("%s: MMU %+v, want %+v", c.name, got, c.cfg)
		}
		if c.want == HSuccess {
			n++
			if len(applied) != n || applied[n-1] != c.cfg {
				t.Errorf("%s: hypervisor got %+v", c.name, applied)
			}
		} else if len(applied) != n {
			t.Errorf("%s: a refused call reached the hypervisor", c.name)
		}
	}
	// The hypervisor refusing the mode: H_HARDWARE, nothing recorded.
	fail = true
	before := v.MMU()
	args := [9]uint64{mod | reg | radix, 0x2000, 0, 0}
	if got := v.Hypercall(v.cpus[0], HRegisterProcTbl, &args); got != HHardware || v.MMU() != before {
		t.Fatalf("refused by KVM: ret %d, MMU %+v", got, v.MMU())
	}
}
