package pseries

import "fmt"

// Hypercall return values (PAPR; Linux arch/powerpc/include/asm/hvcall.h).
const (
	HSuccess         int64 = 0
	HHardware        int64 = -1
	HFunction        int64 = -2
	HPrivilege       int64 = -3
	HParameter       int64 = -4
	HP2              int64 = -55
	HP3              int64 = -56
	HP4              int64 = -57
	HUnsupportedFlag int64 = -256
)

// Hypercall numbers Petrel serves (PAPR; hvcall.h; docs/specs/ppc-spapr-hcalls.txt
// for the 0xf000 range private to QEMU-style hypervisors).
const (
	HLogicalCILoad     = 0x3c
	HLogicalCIStore    = 0x40
	HLogicalCacheLoad  = 0x44
	HLogicalCacheStore = 0x48
	HLogicalICBI       = 0x4c
	HLogicalDCBF       = 0x50
	HGetTermChar       = 0x54
	HPutTermChar       = 0x58
	HCede              = 0xe0
	HProd              = 0xe8
	HSetMode           = 0x31c

	HRTAS         = 0xf000
	HLogicalMemop = 0xf001
)

// The table has one slot per PAPR hcall (numbers are multiples of 4 up to
// maxPAPRHcall) and one per private hcall from 0xf000 up to maxPrivateHcall,
// the same split QEMU's spapr_hcall.c makes.
const (
	maxPAPRHcall       = 0x450
	privateHcallBase   = 0xf000
	maxPrivateHcall    = 0xf00f
	numPAPRSlots       = maxPAPRHcall/4 + 1
	numPrivateHcallSet = maxPrivateHcall - privateHcallBase + 1
)

// hcallFunc serves one hypercall. args are r4..r12 on entry; the handler
// writes its output registers (r4...) back into args and returns r3.
type hcallFunc func(m *Machine, cpu *CPU, args *[9]uint64) int64

var (
	paprHcalls    [numPAPRSlots]hcallFunc
	privateHcalls [numPrivateHcallSet]hcallFunc
)

// registerHcall installs fn for nr. It runs from init, so a bad or duplicate
// number is a programming error and panics.
func registerHcall(nr uint64, fn hcallFunc) {
	var slot *hcallFunc
	switch {
	case nr <= maxPAPRHcall && nr%4 == 0:
		slot = &paprHcalls[nr/4]
	case nr >= privateHcallBase && nr <= maxPrivateHcall:
		slot = &privateHcalls[nr-privateHcallBase]
	default:
		panic(fmt.Sprintf("pseries: hcall %#x outside the table", nr))
	}
	if *slot != nil {
		panic(fmt.Sprintf("pseries: hcall %#x registered twice", nr))
	}
	*slot = fn
}

// lookupHcall is the dispatch on every KVM_EXIT_PAPR_HCALL: two array
// indexes, no map and no lock (the tables are written only by init). nil
// for a number outside the tables or without a handler.
func lookupHcall(nr uint64) hcallFunc {
	switch {
	case nr <= maxPAPRHcall && nr%4 == 0:
		return paprHcalls[nr/4]
	case nr >= privateHcallBase && nr <= maxPrivateHcall:
		return privateHcalls[nr-privateHcallBase]
	}
	return nil
}

func init() {
	registerHcall(HRTAS, hRTAS)
	registerHcall(HLogicalMemop, hLogicalMemop)
	registerHcall(HGetTermChar, hGetTermChar)
	registerHcall(HPutTermChar, hPutTermChar)
	registerHcall(HLogicalCILoad, hLogicalLoad)
	registerHcall(HLogicalCacheLoad, hLogicalLoad)
	registerHcall(HLogicalCIStore, hLogicalStore)
	registerHcall(HLogicalCacheStore, hLogicalStore)
	registerHcall(HLogicalICBI, hLogicalCacheOp)
	registerHcall(HLogicalDCBF, hLogicalCacheOp)
	registerHcall(HSetMode, hSetMode)
	registerHcall(HCede, hCede)
	registerHcall(HProd, hProd)
}

// Hypercall serves hypercall nr for cpu: the KVM_EXIT_PAPR_HCALL handler
// calls it with kvm_run.papr_hcall.args (r4..r12), which it updates in
// place, and stores the result in kvm_run.papr_hcall.ret (r3).
// An unknown number gives H_FUNCTION, as PAPR requires.
func (m *Machine) Hypercall(cpu *CPU, nr uint64, args *[9]uint64) int64 {
	fn := lookupHcall(nr)
	if fn == nil {
		m.stats.unknownHcalls.Add(1)
		m.logf("unknown hcall %#x", nr)
		return HFunction
	}
	return fn(m, cpu, args)
}
