// Package pci is Petrel's PCI bus 0: configuration mechanism 1, type 0
// configuration spaces with writable masks and capability lists, BAR
// assignment and mapping through a Host, and MSI-X.
//
// Everything here follows the PCI Local Bus Specification 3.0 (header layout,
// section 6.1; BARs, 6.2.5; capability list, 6.7) and the MSI-X chapter
// (6.8.2); where that is silent, QEMU's hw/pci/pci.c is the reference.
package pci

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/petrel-vmm/petrel/vmm"
)

// Sizes of the configuration space.
const (
	ConfigSize         = 256  // conventional space, reachable through mechanism 1
	ExtendedConfigSize = 4096 // PCIe extended space
)

// Type 0 header register offsets (PCI 3.0, 6.1).
const (
	RegVendorID      = 0x00
	RegDeviceID      = 0x02
	RegCommand       = 0x04
	RegStatus        = 0x06
	RegRevision      = 0x08
	RegClass         = 0x09 // prog-if, subclass, class: 3 bytes
	RegCacheLine     = 0x0c
	RegLatency       = 0x0d
	RegHeaderType    = 0x0e
	RegBAR0          = 0x10
	RegSubsysVendor  = 0x2c
	RegSubsysID      = 0x2e
	RegROM           = 0x30
	RegCapPtr        = 0x34
	RegInterruptLine = 0x3c
	RegInterruptPin  = 0x3d
)

// Command register bits.
const (
	CmdIOSpace      = 1 << 0
	CmdMemorySpace  = 1 << 1
	CmdBusMaster    = 1 << 2
	CmdParity       = 1 << 6
	CmdSERR         = 1 << 8
	CmdINTxDisable  = 1 << 10
	commandWritable = CmdIOSpace | CmdMemorySpace | CmdBusMaster | CmdParity | CmdSERR | CmdINTxDisable
)

// Status register bits.
const (
	StatusINTx    = 1 << 3
	StatusCapList = 1 << 4
	// statusW1C are the error bits software clears by writing 1.
	statusW1C = 1<<8 | 1<<11 | 1<<12 | 1<<13 | 1<<14 | 1<<15
)

// Capability IDs used in Petrel.
const (
	CapVendor = 0x09
	CapMSIX   = 0x11
)

// NumBARs is the number of BAR registers in a type 0 header.
const NumBARs = 6

// BAR describes one base address register's resource. Addresses are not part
// of it: the bus assigns them and the guest may move them.
type BAR struct {
	Size uint64 // power of two; at least 16 for memory, 4 for I/O
	IO   bool   // I/O space (else memory)
	Is64 bool   // 64-bit memory BAR: occupies this register and the next
	// Prefetch sets the BAR's prefetchable bit: reads have no side
	// effects, so the guest may map it write-combining. Memory BARs only.
	Prefetch bool
	// Handler serves guest accesses (offset relative to the BAR's base).
	Handler vmm.BusDevice
	// RAM, when set, is host memory mapped as guest RAM (a KVM memory slot)
	// instead of a trapping handler; len(RAM) must equal Size.
	RAM []byte
}

// Header holds the read-only identity fields of a type 0 header.
//
// The guest cannot write them; SubsysVendor and SubsysID go to offsets 0x2c
// and 0x2e (PCI Local Bus 3.0, 6.2.4).
type Header struct {
	VendorID, DeviceID     uint16
	Class                  uint32 // class<<16 | subclass<<8 | prog-if
	Revision               uint8
	SubsysVendor, SubsysID uint16
	InterruptPin           uint8 // 0 none, 1 INTA# .. 4 INTD#
}

// ConfigHook observes or overrides guest accesses to a range of config space
// (a capability that must react to writes, such as MSI-X message control).
// Hooks are called with the ConfigSpace lock released, so they may use the
// raw accessors; guest accesses are serialised by the Bus.
type ConfigHook interface {
	// ConfigRead may rewrite data, already filled from the stored bytes.
	ConfigRead(off int, data []byte)
	// ConfigWrite runs after the masked write has been stored; data is the
	// value the guest wrote.
	ConfigWrite(off int, data []byte)
}

// hookRange is one registered hook, for config bytes [off, off+n).
type hookRange struct {
	off, n int
	h      ConfigHook
}

// ErrNoCapSpace is returned when a capability does not fit in 0x40..0xff.
var ErrNoCapSpace = errors.New("no room left in PCI capability space")

// ConfigSpace is one function's configuration space: the stored bytes, a
// per-byte mask of what the guest may write, a per-byte write-1-to-clear mask,
// BAR definitions and the capability list. Its own mutex guards the bytes;
// lock order is Bus.mu, then ConfigSpace.mu.
type ConfigSpace struct {
	mu sync.Mutex
	// data is what reads return; wmask has a 1 for every bit a guest
	// write may change; w1c a 1 for every bit a guest write of 1 clears
	// (status register error bits). Both masks are set up by the device
	// before the function is plugged.
	data  [ExtendedConfigSize]byte
	wmask [ExtendedConfigSize]byte
	w1c   [ExtendedConfigSize]byte
	// bars are the BAR definitions by register; a 64-bit BAR's upper
	// register has none of its own.
	bars [NumBARs]BAR
	// capEnd is where the next capability goes; lastCap the offset whose
	// next pointer links it (RegCapPtr when the list is empty).
	capEnd, lastCap int
	// hooks are consulted for guest accesses in their range, in the
	// order they were added.
	hooks []hookRange
}

// NewConfigSpace returns a type 0 header with the given identity, the
// command, cache line, latency and interrupt line registers writable, and an
// empty capability list.
func NewConfigSpace(h Header) *ConfigSpace {
	c := &ConfigSpace{capEnd: 0x40, lastCap: RegCapPtr}
	binary.LittleEndian.PutUint16(c.data[RegVendorID:], h.VendorID)
	binary.LittleEndian.PutUint16(c.data[RegDeviceID:], h.DeviceID)
	c.data[RegRevision] = h.Revision
	c.data[RegClass] = byte(h.Class)
	c.data[RegClass+1] = byte(h.Class >> 8)
	c.data[RegClass+2] = byte(h.Class >> 16)
	binary.LittleEndian.PutUint16(c.data[RegSubsysVendor:], h.SubsysVendor)
	binary.LittleEndian.PutUint16(c.data[RegSubsysID:], h.SubsysID)
	c.data[RegInterruptPin] = h.InterruptPin
	binary.LittleEndian.PutUint16(c.wmask[RegCommand:], commandWritable)
	binary.LittleEndian.PutUint16(c.w1c[RegStatus:], statusW1C)
	c.wmask[RegCacheLine] = 0xff
	c.wmask[RegLatency] = 0xff
	c.wmask[RegInterruptLine] = 0xff
	return c
}

// SetBAR defines BAR i. It must be called before the device is added to a
// bus. A 64-bit BAR also claims register i+1.
func (c *ConfigSpace) SetBAR(i int, b BAR) error {
	if i < 0 || i >= NumBARs {
		return fmt.Errorf("BAR %d: index out of range", i)
	}
	min := uint64(16)
	if b.IO {
		min = 4
	}
	switch {
	case b.Size < min || b.Size&(b.Size-1) != 0:
		return fmt.Errorf("BAR %d: size %#x is not a power of two >= %d", i, b.Size, min)
	case b.IO && (b.Is64 || b.Prefetch || b.RAM != nil):
		return fmt.Errorf("BAR %d: an I/O BAR cannot be 64-bit, prefetchable or RAM", i)
	case b.IO && b.Size > 0x4000:
		return fmt.Errorf("BAR %d: I/O BAR size %#x too large", i, b.Size)
	case b.Is64 && i == NumBARs-1:
		return fmt.Errorf("BAR %d: a 64-bit BAR needs the next register", i)
	case !b.Is64 && b.Size > 1<<31:
		return fmt.Errorf("BAR %d: 32-bit BAR size %#x too large", i, b.Size)
	case b.RAM != nil && uint64(len(b.RAM)) != b.Size:
		return fmt.Errorf("BAR %d: RAM length %#x != size %#x", i, len(b.RAM), b.Size)
	case b.RAM == nil && b.Handler == nil:
		return fmt.Errorf("BAR %d: needs a Handler or RAM", i)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bars[i].Size != 0 || (i > 0 && c.bars[i-1].Is64) || (b.Is64 && c.bars[i+1].Size != 0) {
		return fmt.Errorf("BAR %d: register already in use", i)
	}
	c.bars[i] = b
	reg := RegBAR0 + 4*i
	var typ uint32
	switch {
	case b.IO:
		typ = 1
	default:
		if b.Is64 {
			typ |= 4
		}
		if b.Prefetch {
			typ |= 8
		}
	}
	low := ^uint32(b.Size-1) &^ 0xf
	if b.IO {
		low = ^uint32(b.Size-1) &^ 0x3
	}
	binary.LittleEndian.PutUint32(c.data[reg:], typ)
	binary.LittleEndian.PutUint32(c.wmask[reg:], low)
	if b.Is64 {
		binary.LittleEndian.PutUint32(c.wmask[reg+4:], uint32(^(b.Size-1)>>32))
	}
	return nil
}

// BARDef returns BAR i's definition (Size 0 when unused).
func (c *ConfigSpace) BARDef(i int) BAR {
	if i < 0 || i >= NumBARs {
		return BAR{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bars[i]
}

// BARAddress returns the address BAR i currently holds (type bits masked).
func (c *ConfigSpace) BARAddress(i int) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.barAddressLocked(i)
}

// barAddressLocked decodes BAR i's register(s) (PCI Local Bus 3.0 section
// 6.2.5.1): bits 1-0 of an I/O BAR and bits 3-0 of a memory BAR are flags,
// and a 64-bit BAR takes its high half from the next register.
func (c *ConfigSpace) barAddressLocked(i int) uint64 {
	if i < 0 || i >= NumBARs || c.bars[i].Size == 0 {
		return 0
	}
	reg := RegBAR0 + 4*i
	lo := binary.LittleEndian.Uint32(c.data[reg:])
	if c.bars[i].IO {
		return uint64(lo &^ 0x3)
	}
	a := uint64(lo &^ 0xf)
	if c.bars[i].Is64 {
		a |= uint64(binary.LittleEndian.Uint32(c.data[reg+4:])) << 32
	}
	return a
}

// SetBARAddress stores addr in BAR i (used by the bus when assigning).
func (c *ConfigSpace) SetBARAddress(i int, addr uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i < 0 || i >= NumBARs || c.bars[i].Size == 0 {
		return
	}
	reg := RegBAR0 + 4*i
	old := binary.LittleEndian.Uint32(c.data[reg:])
	typeBits := old & 0xf
	if c.bars[i].IO {
		typeBits = old & 0x3
	}
	if c.bars[i].IO {
		binary.LittleEndian.PutUint32(c.data[reg:], uint32(addr)&^0x3|typeBits)
	} else {
		binary.LittleEndian.PutUint32(c.data[reg:], uint32(addr)&^0xf|typeBits)
	}
	if c.bars[i].Is64 {
		binary.LittleEndian.PutUint32(c.data[reg+4:], uint32(addr>>32))
	}
}

// Command returns the command register.
func (c *ConfigSpace) Command() uint16 { return c.Uint16(RegCommand) }

// AddCapability appends a capability with the given ID to the list; body is
// the capability's bytes after the ID and next-pointer bytes. It returns the
// capability's offset. The body is read-only to the guest until SetWriteMask
// says otherwise.
func (c *ConfigSpace) AddCapability(id uint8, body []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 2 + len(body)
	off := c.capEnd
	if off+n > ConfigSize {
		return 0, fmt.Errorf("capability %#x of %d bytes at %#x: %w", id, n, off, ErrNoCapSpace)
	}
	c.data[off] = id
	c.data[off+1] = 0
	copy(c.data[off+2:], body)
	c.data[c.lastCap] = byte(off)
	c.lastCap = off + 1
	c.capEnd = (off + n + 3) &^ 3
	c.data[RegStatus] |= StatusCapList
	return off, nil
}

// Capabilities returns the offsets of the capabilities in list order.
func (c *ConfigSpace) Capabilities() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var offs []int
	for p := int(c.data[RegCapPtr]); p != 0 && len(offs) < 48; p = int(c.data[p+1]) {
		offs = append(offs, p)
	}
	return offs
}

// SetWriteMask makes the bits set in mask guest-writable at off.
func (c *ConfigSpace) SetWriteMask(off int, mask []byte) error {
	return c.setMask(c.wmask[:], off, mask)
}

// setMask copies mask into dst (one of the per-byte mask arrays) at off.
func (c *ConfigSpace) setMask(dst []byte, off int, mask []byte) error {
	if off < 0 || off+len(mask) > ExtendedConfigSize {
		return fmt.Errorf("config mask at %#x+%d: out of range", off, len(mask))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	copy(dst[off:], mask)
	return nil
}

// Hook routes guest accesses touching [off, off+n) to h as well.
func (c *ConfigSpace) Hook(off, n int, h ConfigHook) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hooks = append(c.hooks, hookRange{off, n, h})
}

// Read is a guest read of len(data) bytes at off; bytes beyond the space
// read as all ones.
func (c *ConfigSpace) Read(off int, data []byte) {
	c.mu.Lock()
	for i := range data {
		if p := off + i; p >= 0 && p < ExtendedConfigSize {
			data[i] = c.data[p]
		} else {
			data[i] = 0xff
		}
	}
	hooks := c.hooks
	c.mu.Unlock()
	for _, h := range hooks {
		if off < h.off+h.n && h.off < off+len(data) {
			h.h.ConfigRead(off, data)
		}
	}
}

// Write is a guest write: each byte changes only under the write mask, and
// write-1-to-clear bits clear where the guest wrote 1.
func (c *ConfigSpace) Write(off int, data []byte) {
	c.mu.Lock()
	for i, v := range data {
		p := off + i
		if p < 0 || p >= ExtendedConfigSize {
			continue
		}
		c.data[p] = (c.data[p] &^ c.wmask[p]) | (v & c.wmask[p])
		c.data[p] &^= v & c.w1c[p]
	}
	hooks := c.hooks
	c.mu.Unlock()
	for _, h := range hooks {
		if off < h.off+h.n && h.off < off+len(data) {
			h.h.ConfigWrite(off, data)
		}
	}
}

// Uint8 .. PutUint32 are raw accessors for the device model: no masks, no
// hooks. Out-of-range offsets read 0 and write nothing.
func (c *ConfigSpace) Uint8(off int) uint8 {
	var b [1]byte
	c.raw(off, b[:], false)
	return b[0]
}

// Uint16 reads a raw little-endian 16-bit value.
func (c *ConfigSpace) Uint16(off int) uint16 {
	var b [2]byte
	c.raw(off, b[:], false)
	return binary.LittleEndian.Uint16(b[:])
}

// Uint32 reads a raw little-endian 32-bit value.
func (c *ConfigSpace) Uint32(off int) uint32 {
	var b [4]byte
	c.raw(off, b[:], false)
	return binary.LittleEndian.Uint32(b[:])
}

// PutUint8 stores a raw byte.
func (c *ConfigSpace) PutUint8(off int, v uint8) { c.raw(off, []byte{v}, true) }

// PutUint16 stores a raw little-endian 16-bit value.
func (c *ConfigSpace) PutUint16(off int, v uint16) {
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], v)
	c.raw(off, b[:], true)
}

// PutUint32 stores a raw little-endian 32-bit value.
func (c *ConfigSpace) PutUint32(off int, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	c.raw(off, b[:], true)
}

// raw copies between b and the space at off ignoring masks and hooks: the
// device's own view, not the guest's. Out-of-range accesses do nothing.
func (c *ConfigSpace) raw(off int, b []byte, write bool) {
	if off < 0 || off+len(b) > ExtendedConfigSize {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if write {
		copy(c.data[off:], b)
	} else {
		copy(b, c.data[off:])
	}
}

// SetINTxStatus sets or clears the status register's interrupt status bit,
// which a device with a pending INTx reports (PCI 3.0, 6.2.3).
func (c *ConfigSpace) SetINTxStatus(pending bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if pending {
		c.data[RegStatus] |= StatusINTx
	} else {
		c.data[RegStatus] &^= StatusINTx
	}
}
