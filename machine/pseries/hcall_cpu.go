package pseries

// H_SET_MODE resources (PAPR; hvcall.h H_SET_MODE_RESOURCE_*).
const (
	setModeCIABR         = 1
	setModeDAWR0         = 2
	setModeAddrTransMode = 3
	setModeLE            = 4
)

// hSetMode is H_SET_MODE: r4 mflags, r5 resource, r6 value1, r7 value2.
//
//   - LE (4): mflags 0 big-endian / 1 little-endian interrupts; recorded
//     and applied to every vCPU's LPCR[ILE] by the vCPU loop. Other mflags:
//     H_UNSUPPORTED_FLAG.
//   - address translation mode (3): mflags 0 (AIL off, the state Petrel
//     keeps) succeeds; 1 is reserved and 2/3 (relocation-on interrupts)
//     are not offered: H_UNSUPPORTED_FLAG, which Linux accepts and carries
//     on with relocation-off interrupts.
//   - CIABR (1), DAWR0 (2): KVM serves these in the kernel when it can;
//     one reaching user space gets H_P2, as does any other resource.
//
// value1 and value2 must be 0 for LE and address translation mode (H_P3,
// H_P4), as QEMU checks.
func hSetMode(m *Machine, cpu *CPU, args *[9]uint64) int64 {
	mflags, resource, v1, v2 := args[0], args[1], args[2], args[3]
	switch resource {
	case setModeLE, setModeAddrTransMode:
	default:
		return HP2
	}
	if v1 != 0 {
		return HP3
	}
	if v2 != 0 {
		return HP4
	}
	if resource == setModeAddrTransMode {
		if mflags == 0 {
			return HSuccess
		}
		return HUnsupportedFlag
	}
	if mflags > 1 {
		return HUnsupportedFlag
	}
	m.mode.littleEndianInterrupts.Store(mflags == 1)
	m.mode.gen.Add(1)
	return HSuccess
}

// hCede is H_CEDE: the CPU gives up its time until prodded or interrupted
// (bounded by cedeMax, see there). Usually KVM serves H_CEDE in the kernel.
func hCede(m *Machine, cpu *CPU, args *[9]uint64) int64 {
	cpu.cede(m.done)
	return HSuccess
}

// hProd is H_PROD: r4 the target's server number; wakes it from H_CEDE
// (or makes its next H_CEDE return at once). Unknown target: H_PARAMETER.
func hProd(m *Machine, cpu *CPU, args *[9]uint64) int64 {
	t := m.cpuByServer(args[0])
	if t == nil {
		return HParameter
	}
	t.prod()
	return HSuccess
}
