package acpi

import "encoding/binary"

// FADT (ACPI 6.x section 5.2.9), revision 6, 276 bytes.
const (
	fadtLen      = 276
	fadtRevision = 6
	fadtMinor    = 0
)

// FADT Flags (table 5-10).
const (
	fadtWBINVD      = 1 << 0
	fadtProcC1      = 1 << 2
	fadtPwrButton   = 1 << 4 // set: the power button is a control-method device (\_SB.PWRB)
	fadtSlpButton   = 1 << 5 // set: no fixed-feature sleep button
	fadtFixRTC      = 1 << 6 // set: the PM1 block has no RTC wake status
	fadtResetRegSup = 1 << 10
)

// IA-PC boot architecture flags (table 5-11).
const (
	bootArch8042       = 1 << 1
	bootArchVGAMissing = 1 << 2
)

// fadt returns the FADT pointing at the FACS and DSDT. SMI_CMD is 0: the
// machine is always in ACPI mode (the PM block's SCI_EN reads 1), so the OS
// performs no SMI handshake. The PM timer is 24-bit (TMR_VAL_EXT clear).
func fadt(c *PCConfig, facsAddr, dsdtAddr uint64) []byte {
	t := newTable("FACP", fadtLen, fadtRevision)
	le := binary.LittleEndian
	le.PutUint32(t[36:], uint32(facsAddr)) // FIRMWARE_CTRL (X_FIRMWARE_CTRL stays 0)
	le.PutUint32(t[40:], uint32(dsdtAddr)) // DSDT
	t[45] = 0                              // Preferred_PM_Profile: unspecified
	le.PutUint16(t[46:], uint16(c.SCI))    // SCI_INT
	// SMI_CMD (48), ACPI_ENABLE, ACPI_DISABLE, S4BIOS_REQ, PSTATE_CNT: 0.
	le.PutUint32(t[56:], uint32(c.PM1aEvent.Port))   // PM1a_EVT_BLK
	le.PutUint32(t[64:], uint32(c.PM1aControl.Port)) // PM1a_CNT_BLK
	le.PutUint32(t[76:], uint32(c.PMTimer.Port))     // PM_TMR_BLK
	le.PutUint32(t[80:], uint32(c.GPE0.Port))        // GPE0_BLK
	t[88] = c.PM1aEvent.Len                          // PM1_EVT_LEN
	t[89] = c.PM1aControl.Len                        // PM1_CNT_LEN
	t[91] = c.PMTimer.Len                            // PM_TMR_LEN
	t[92] = c.GPE0.Len                               // GPE0_BLK_LEN
	// P_LVL2_LAT > 100 and P_LVL3_LAT > 1000: C2 and C3 unsupported.
	le.PutUint16(t[96:], 0xfff)
	le.PutUint16(t[98:], 0xfff)
	// CENTURY (108) 0: no century byte in CMOS.
	le.PutUint16(t[109:], bootArch8042|bootArchVGAMissing) // IAPC_BOOT_ARCH
	le.PutUint32(t[112:], fadtWBINVD|fadtProcC1|fadtPwrButton|fadtSlpButton|fadtFixRTC|fadtResetRegSup)
	ioGAS(c.ResetPort, 1, 1).put(t[116:]) // RESET_REG
	t[128] = c.ResetValue                 // RESET_VALUE
	t[131] = fadtMinor                    // FADT Minor Version
	// X_FIRMWARE_CTRL (132) 0: FIRMWARE_CTRL is set.
	le.PutUint64(t[140:], dsdtAddr)                              // X_DSDT
	ioGAS(c.PM1aEvent.Port, c.PM1aEvent.Len, 2).put(t[148:])     // X_PM1a_EVT_BLK
	ioGAS(c.PM1aControl.Port, c.PM1aControl.Len, 2).put(t[172:]) // X_PM1a_CNT_BLK
	ioGAS(c.PMTimer.Port, c.PMTimer.Len, 3).put(t[208:])         // X_PM_TMR_BLK
	ioGAS(c.GPE0.Port, c.GPE0.Len, 1).put(t[220:])               // X_GPE0_BLK
	// SLEEP_CONTROL_REG / SLEEP_STATUS_REG: only for HW-reduced ACPI.
	copy(t[268:276], "PETREL  ") // Hypervisor Vendor Identity
	finishTable(t)
	return t
}
