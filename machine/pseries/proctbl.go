package pseries

import "sync"

// HRegisterProcTbl is H_REGISTER_PROC_TBL (PAPR, ISA v3.00 partitions):
// the guest names its process table and its MMU mode (hash or radix).
const HRegisterProcTbl = 0x37c

// H_REGISTER_PROC_TBL flags (r4), as Linux's hvcall.h defines them.
const (
	procTblGTSE     = 0x01 // guest may use tlbie itself
	procTblHashSTE  = 0x02 // hash with segment tables (not offered)
	procTblRadix    = 0x04
	procTblRegister = 0x08 // with procTblModify: register, else deregister
	procTblModify   = 0x10
	procTblFlags    = 0x1f

	// pate1GR marks a radix process table in the partition table's
	// second doubleword (ISA v3.00 Book III 5.7.6.2).
	pate1GR = 1 << 63
)

// MMUConfig is the guest's ISA v3.00 MMU mode: radix or hash, whether it
// may issue tlbie (GTSE), and the process table word (partition table
// entry doubleword 1: base | page size | size, plus pate1GR for radix).
type MMUConfig struct {
	Radix, GTSE  bool
	ProcessTable uint64
}

type mmuState struct {
	mu        sync.Mutex
	cfg       MMUConfig
	configure func(MMUConfig) error // KVM_PPC_CONFIGURE_V3_MMU; nil in tests
}

// SetMMUConfigurer installs the function that applies an MMU mode to the
// VM (KVM_PPC_CONFIGURE_V3_MMU on POWER9 hosts).
func (m *Machine) SetMMUConfigurer(f func(MMUConfig) error) {
	m.mmu.mu.Lock()
	m.mmu.configure = f
	m.mmu.mu.Unlock()
}

// initMMU records the mode the VM was created in (radix under nested
// KVM-HV), so a "keep the current table" call is checked against it.
func (m *Machine) initMMU(c MMUConfig) {
	m.mmu.mu.Lock()
	m.mmu.cfg = c
	m.mmu.mu.Unlock()
}

// MMU returns the MMU mode the guest last registered.
func (m *Machine) MMU() MMUConfig {
	m.mmu.mu.Lock()
	defer m.mmu.mu.Unlock()
	return m.mmu.cfg
}

// hRegisterProcTbl is H_REGISTER_PROC_TBL: r4 flags, r5 process table
// address (radix: 4 KiB aligned, below 2^60; hash: below 2^38), r6 page
// size (radix: 0; hash: 3 bits), r7 table size (log2 - 12, at most 24).
// MODIFY|REGISTER registers a table, MODIFY alone deregisters, no MODIFY
// keeps the current table (its mode must match RADIX). Hash with segment
// tables is not offered (H_PARAMETER). Bad arguments give H_PARAMETER or
// H_P2..H_P4 naming the argument and change nothing; a hypervisor that
// refuses the mode gives H_HARDWARE.
func hRegisterProcTbl(m *Machine, cpu *CPU, args *[9]uint64) int64 {
	flags, table, pageSize, size := args[0], args[1], args[2], args[3]
	if flags&^procTblFlags != 0 {
		return HParameter
	}
	m.mmu.mu.Lock()
	defer m.mmu.mu.Unlock()
	next := MMUConfig{Radix: flags&procTblRadix != 0, GTSE: flags&procTblGTSE != 0}
	switch {
	case flags&procTblModify == 0:
		if next.Radix != (m.mmu.cfg.ProcessTable&pate1GR != 0) {
			return HParameter // does not match the registered table
		}
		next.ProcessTable = m.mmu.cfg.ProcessTable
	case flags&procTblRegister == 0:
		next.ProcessTable = 0 // deregister
	case next.Radix:
		switch {
		case table&0xfff != 0 || table>>60 != 0:
			return HP2
		case pageSize != 0:
			return HP3
		case size > 24:
			return HP4
		}
		next.ProcessTable = pate1GR | table | size
	case flags&procTblHashSTE != 0:
		return HParameter
	default:
		switch {
		case table>>38 != 0:
			return HP2
		case pageSize&^7 != 0:
			return HP3
		case size > 24:
			return HP4
		}
		next.ProcessTable = table | pageSize<<5 | size
	}
	if m.mmu.configure != nil {
		if err := m.mmu.configure(next); err != nil {
			m.logf("H_REGISTER_PROC_TBL %+v: %v", next, err)
			return HHardware
		}
	}
	m.mmu.cfg = next
	return HSuccess
}

func init() { registerHcall(HRegisterProcTbl, hRegisterProcTbl) }
