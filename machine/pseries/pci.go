package pseries

import "sync"

// DefaultBUID is the bus unit id of the one PCI host bridge (QEMU's
// SPAPR_PCI_BASE_BUID); ibm,read-pci-config names the bridge by it and the
// device tree's PHB node carries it in reg.
const DefaultBUID = 0x800000020000000

// PCIFunction is one PCI function's configuration space as the host bridge
// sees it. Register values are little-endian as on the PCI bus.
type PCIFunction interface {
	ConfigSize() uint32 // 256 (PCI) or 4096 (PCIe extended)
	ReadConfig(reg uint32, size int) uint32
	WriteConfig(reg uint32, size int, val uint32)
}

// HostBridge is the PHB the RTAS PCI configuration services reach: 256
// buses of 256 device/functions; an absent one reads as all ones and
// ignores writes, as a master abort does on real PCI.
type HostBridge struct {
	mu  sync.RWMutex
	fns map[uint16]PCIFunction // bus<<8 | devfn
}

// NewHostBridge returns a bridge with no functions.
func NewHostBridge() *HostBridge { return &HostBridge{fns: map[uint16]PCIFunction{}} }

// Add places f at bus/devfn, replacing what was there.
func (h *HostBridge) Add(bus, devfn uint8, f PCIFunction) {
	h.mu.Lock()
	h.fns[uint16(bus)<<8|uint16(devfn)] = f
	h.mu.Unlock()
}

func (h *HostBridge) lookup(bus, devfn uint8) PCIFunction {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.fns[uint16(bus)<<8|uint16(devfn)]
}

// rtasPCIAddr decodes a PAPR configuration address: bus in bits 23:16,
// devfn in 15:8, register in 7:0 with the extended register bits 11:8 in
// bits 31:28 (QEMU's rtas_pci_cfgaddr).
func rtasPCIAddr(a uint32) (bus, devfn uint8, reg uint32) {
	return uint8(a >> 16), uint8(a >> 8), (a>>20)&0xf00 | a&0xff
}

func sizeMask(size int) uint32 {
	return uint32(uint64(1)<<(8*size) - 1)
}

// pciRead performs a configuration read and sets status and value. Bad
// size, misalignment, or a register past the function's space: hardware
// error (as QEMU's finish_read_pci_config). No function: all ones.
func (m *Machine) pciRead(c *rtasCall, addr, size uint32) {
	bus, devfn, reg := rtasPCIAddr(addr)
	if size != 1 && size != 2 && size != 4 || reg%size != 0 {
		c.status(RTASHardwareError)
		return
	}
	f := m.pci.lookup(bus, devfn)
	if f == nil {
		c.status(RTASSuccess)
		c.ret(1, sizeMask(int(size)))
		return
	}
	if reg >= f.ConfigSize() {
		c.status(RTASHardwareError)
		return
	}
	c.status(RTASSuccess)
	c.ret(1, f.ReadConfig(reg, int(size))&sizeMask(int(size)))
}

func (m *Machine) pciWrite(c *rtasCall, addr, size, val uint32) {
	bus, devfn, reg := rtasPCIAddr(addr)
	if size != 1 && size != 2 && size != 4 || reg%size != 0 {
		c.status(RTASHardwareError)
		return
	}
	f := m.pci.lookup(bus, devfn)
	if f == nil {
		c.status(RTASSuccess) // master abort: the write goes nowhere
		return
	}
	if reg >= f.ConfigSize() {
		c.status(RTASHardwareError)
		return
	}
	f.WriteConfig(reg, int(size), val&sizeMask(int(size)))
	c.status(RTASSuccess)
}

func buidArg(c *rtasCall, i int) uint64 { return uint64(c.arg(i))<<32 | uint64(c.arg(i+1)) }

// read-pci-config: 2 in (config address, size) -> 2 out (status, value).
func rtasReadPCIConfig(m *Machine, cpu *CPU, c *rtasCall) {
	if c.counts(2, 2) {
		m.pciRead(c, c.arg(0), c.arg(1))
	}
}

// write-pci-config: 3 in (config address, size, value) -> 1 out.
func rtasWritePCIConfig(m *Machine, cpu *CPU, c *rtasCall) {
	if c.counts(3, 1) {
		m.pciWrite(c, c.arg(0), c.arg(1), c.arg(2))
	}
}

// ibm,read-pci-config: 4 in (config address, BUID high, BUID low, size)
// -> 2 out. An unknown BUID is a parameter error.
func rtasIBMReadPCIConfig(m *Machine, cpu *CPU, c *rtasCall) {
	if !c.counts(4, 2) {
		return
	}
	if buidArg(c, 1) != DefaultBUID {
		c.status(RTASParameterError)
		return
	}
	m.pciRead(c, c.arg(0), c.arg(3))
}

// ibm,write-pci-config: 5 in (config address, BUID high, BUID low, size,
// value) -> 1 out.
func rtasIBMWritePCIConfig(m *Machine, cpu *CPU, c *rtasCall) {
	if !c.counts(5, 1) {
		return
	}
	if buidArg(c, 1) != DefaultBUID {
		c.status(RTASParameterError)
		return
	}
	m.pciWrite(c, c.arg(0), c.arg(3), c.arg(4))
}
