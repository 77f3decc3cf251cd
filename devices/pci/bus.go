package pci

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/petrel-vmm/petrel/vmm"
)

// NumSlots is the number of device slots on bus 0 (function 0 only).
const NumSlots = 32

// Device is a PCI function on the bus.
type Device interface {
	Config() *ConfigSpace
}

// Releaser is implemented by devices that hold resources (fds, open disk
// images) to give back after hot-unplug; Bus.Remove calls it.
type Releaser interface {
	Release() error
}

// BARObserver is implemented by devices that must know where a BAR is
// decoded (to register ioeventfds on a notify region). The bus calls it,
// with its lock held, after mapping and before unmapping through the Host.
type BARObserver interface {
	BARMapped(bar int, addr uint64)
	BARUnmapped(bar int, addr uint64)
}

// Mapping is one BAR decoded at an address: the Host inserts Handler on the
// PIO (IO) or MMIO bus at [Addr, Addr+Size), or maps RAM as a memory slot.
type Mapping struct {
	Slot, BAR int // which device and which of its BARs
	// Addr is the guest address the BAR decodes at (port number for I/O),
	// Size its length in bytes.
	Addr uint64
	Size uint64
	IO   bool // I/O space, else memory
	// Prefetch is the BAR's prefetchable bit, for the Host's information.
	Prefetch bool
	// Handler serves trapped accesses (offsets from Addr); RAM, when set,
	// is to be mapped as a memory slot instead, with no handler involved.
	Handler vmm.BusDevice
	RAM     []byte
}

// Host maps BARs into the machine's address spaces (machine/pc implements it
// with vmm.Bus.Insert/Remove and KVM memory slots).
type Host interface {
	MapBAR(m Mapping) error
	UnmapBAR(m Mapping) error
}

// Large64 is the size from which a prefetchable 64-bit BAR is placed in the
// 64-bit window; smaller BARs go below 4 GiB where every guest reaches them.
const Large64 = 64 << 20

// Errors returned by Add and Remove.
var (
	ErrSlotBusy  = errors.New("PCI slot already occupied")
	ErrSlotEmpty = errors.New("PCI slot is empty")
	ErrBadSlot   = errors.New("PCI slot out of range")
	ErrNoSpace   = errors.New("no room in the PCI BAR window")
)

// slot is one occupied slot. Invariant: mapped[i] is true exactly while
// BAR i is mapped through the Host at at[i] (and its BARObserver was told).
type slot struct {
	dev Device
	cfg *ConfigSpace // dev.Config(), kept to avoid the interface call
	// mapped[i]: BAR i is mapped at at[i] (the invariant above), which
	// updateMappingsLocked keeps equal to decodable(): decoding enabled in
	// the command register and an address the BAR can decode at.
	mapped   [NumBARs]bool
	at       [NumBARs]uint64 // address mapped at, valid when mapped
	assigned [NumBARs]uint64 // address given at Add, restored by Reset
}

// Resetter is implemented by devices with state beyond the standard header
// to return to power-on values on a machine reset (virtio status and
// queues, MSI-X enable and table masks).
type Resetter interface {
	Reset()
}

// Configuration mechanism 1 (PCI Local Bus 3.0 section 3.2.2.3.2):
// CONFIG_ADDRESS at 0xcf8, CONFIG_DATA at 0xcfc; the PIIX/ICH reset control
// register 0xcf9 lies inside the range.
const (
	ConfigPort = 0xcf8
	ConfigLen  = 8
)

// Bus is PCI bus 0. It serves configuration mechanism 1 as a vmm.BusDevice
// at PIO ConfigPort size ConfigLen. All configuration accesses, Add and Remove are
// serialised by mu (lock order: Bus.mu, then ConfigSpace.mu).
type Bus struct {
	// mu guards slots, address and onReset, and is held across Host and
	// BARObserver calls (which must not call back into the bus).
	mu sync.Mutex
	// host maps and unmaps BARs in the machine's address spaces.
	host Host
	// windows never change after NewBus, so AML reads them without mu.
	windows Windows
	// slots are the occupied slots by number, nil for empty ones; slot 0
	// holds the host bridge.
	slots   [NumSlots]*slot
	address uint32 // CONFIG_ADDRESS latch
	// onReset is the machine's hook for the reset control register at
	// 0xcf9 (inside ConfigPort's range), nil if none.
	onReset func()

	// MapErrors counts BAR mappings the Host refused (overlaps, bad
	// addresses written by the guest); the BAR then stays undecoded.
	MapErrors atomic.Uint64
}

// NewBus returns an empty bus mapping BARs through host and assigning them
// from the windows w, which the machine defines (machine/pc's memory map)
// and which the host bridge's _CRS declares (Bus.AML).
func NewBus(host Host, w Windows) *Bus { return &Bus{host: host, windows: w} }

// SetResetHandler makes a byte write to port 0xcf9 with RST_CPU (bit 2) set
// call fn: the PIIX/ICH reset control register shares the mechanism 1 range.
func (b *Bus) SetResetHandler(fn func()) {
	b.mu.Lock()
	b.onReset = fn
	b.mu.Unlock()
}

// Add plugs dev into slot, assigning addresses to its BARs. The BARs are
// decoded once the guest enables I/O or memory space in the command register.
func (b *Bus) Add(slotNum int, dev Device) error {
	if slotNum < 0 || slotNum >= NumSlots {
		return fmt.Errorf("adding device at slot %d: %w", slotNum, ErrBadSlot)
	}
	cfg := dev.Config()
	if cfg == nil {
		return fmt.Errorf("adding device at slot %d: no config space", slotNum)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.slots[slotNum] != nil {
		return fmt.Errorf("adding device at slot %d: %w", slotNum, ErrSlotBusy)
	}
	if err := b.assignLocked(cfg); err != nil {
		return fmt.Errorf("adding device at slot %d: %w", slotNum, err)
	}
	s := &slot{dev: dev, cfg: cfg}
	for i := range NumBARs {
		s.assigned[i] = cfg.BARAddress(i)
	}
	b.slots[slotNum] = s
	return nil
}

// Reset is a PCI bus reset (machine reset): every BAR stops decoding and
// returns to its assigned address, the command register, error status bits,
// cache line, latency and interrupt line registers clear, and devices that
// implement Resetter reset their own state.
func (b *Bus) Reset() {
	b.mu.Lock()
	var resetters []Resetter
	for n, s := range b.slots {
		if s == nil {
			continue
		}
		b.unmapSlotLocked(n, s)
		for i := range NumBARs {
			s.cfg.SetBARAddress(i, s.assigned[i])
		}
		s.cfg.PutUint16(RegCommand, 0)
		s.cfg.PutUint16(RegStatus, s.cfg.Uint16(RegStatus)&^(statusW1C|StatusINTx))
		s.cfg.PutUint16(RegCacheLine, 0)
		s.cfg.PutUint8(RegInterruptLine, 0)
		if r, ok := s.dev.(Resetter); ok {
			resetters = append(resetters, r)
		}
	}
	b.mu.Unlock()
	for _, r := range resetters {
		r.Reset()
	}
}

// Remove unplugs the device in slot: its BARs are unmapped, then Release is
// called if the device implements Releaser.
func (b *Bus) Remove(slotNum int) error {
	dev, err := b.Detach(slotNum)
	if dev == nil {
		return err
	}
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	if r, ok := dev.(Releaser); ok {
		if err := r.Release(); err != nil {
			errs = append(errs, fmt.Errorf("releasing device in slot %d: %w", slotNum, err))
		}
	}
	return errors.Join(errs...)
}

// Detach takes the device in slot off the bus (its BARs unmapped, the slot
// reading all ones) without releasing it, and returns it: the caller
// releases it, for example on a worker so that a guest's eject does not
// wait for its queues to drain. The device is returned even when an
// unmapping failed (the error says which).
func (b *Bus) Detach(slotNum int) (Device, error) {
	if slotNum < 0 || slotNum >= NumSlots {
		return nil, fmt.Errorf("removing slot %d: %w", slotNum, ErrBadSlot)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.slots[slotNum]
	if s == nil {
		return nil, fmt.Errorf("removing slot %d: %w", slotNum, ErrSlotEmpty)
	}
	var errs []error
	for i := range NumBARs {
		if s.mapped[i] {
			if err := b.unmapLocked(slotNum, s, i); err != nil {
				errs = append(errs, err)
			}
		}
	}
	b.slots[slotNum] = nil
	return s.dev, errors.Join(errs...)
}

// Device returns the device in slot, or nil.
func (b *Bus) Device(slotNum int) Device {
	if slotNum < 0 || slotNum >= NumSlots {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if s := b.slots[slotNum]; s != nil {
		return s.dev
	}
	return nil
}

// FreeSlot returns the lowest empty slot above 0 (the host bridge's), or -1.
func (b *Bus) FreeSlot() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := 1; i < NumSlots; i++ {
		if b.slots[i] == nil {
			return i
		}
	}
	return -1
}

// BARInfo describes one BAR for query-pci.
type BARInfo struct {
	Index int    // BAR register number, 0-5
	Addr  uint64 // address currently programmed (0 if none)
	Size  uint64 // bytes
	IO    bool   // I/O space BAR
	// Is64 and Prefetch are a memory BAR's type bits.
	Is64     bool
	Prefetch bool
	Mapped   bool // decoded now
}

// DeviceInfo describes one device for query-pci.
//
// The identity fields are the configuration header's (PCI Local Bus 3.0,
// 6.2.1); BARs lists only the BARs the device has, in register order.
type DeviceInfo struct {
	Slot               int
	VendorID, DeviceID uint16
	Class              uint32 // class<<16 | subclass<<8 | prog-if
	Revision           uint8
	SubsysVendor       uint16
	SubsysID           uint16
	IRQ                uint8 // interrupt line register
	BARs               []BARInfo
}

// Devices lists the plugged devices in slot order.
func (b *Bus) Devices() []DeviceInfo {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []DeviceInfo
	for n, s := range b.slots {
		if s == nil {
			continue
		}
		c := s.cfg
		d := DeviceInfo{
			Slot:         n,
			VendorID:     c.Uint16(RegVendorID),
			DeviceID:     c.Uint16(RegDeviceID),
			Class:        c.Uint32(RegRevision) >> 8,
			Revision:     c.Uint8(RegRevision),
			SubsysVendor: c.Uint16(RegSubsysVendor),
			SubsysID:     c.Uint16(RegSubsysID),
			IRQ:          c.Uint8(RegInterruptLine),
		}
		for i := range NumBARs {
			def := c.BARDef(i)
			if def.Size == 0 {
				continue
			}
			d.BARs = append(d.BARs, BARInfo{Index: i, Addr: c.BARAddress(i), Size: def.Size,
				IO: def.IO, Is64: def.Is64, Prefetch: def.Prefetch, Mapped: s.mapped[i]})
		}
		out = append(out, d)
	}
	return out
}

// ConfigRead reads config space of the device in slot (all ones if empty).
func (b *Bus) ConfigRead(slotNum, off int, data []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.configReadLocked(slotNum, off, data)
}

// ConfigWrite writes config space of the device in slot, remapping BARs when
// the write changed the command register or a BAR.
func (b *Bus) ConfigWrite(slotNum, off int, data []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.configWriteLocked(slotNum, off, data)
}

// configReadLocked reads the configuration space of slotNum, function 0;
// an empty slot reads as all-ones, which is how software finds it empty
// (vendor ID 0xffff, PCI Local Bus 3.0 section 6.2.1).
func (b *Bus) configReadLocked(slotNum, off int, data []byte) {
	if slotNum < 0 || slotNum >= NumSlots || b.slots[slotNum] == nil {
		fillOnes(data)
		return
	}
	b.slots[slotNum].cfg.Read(off, data)
}

// configWriteLocked writes the configuration space of slotNum (ignored for
// an empty slot) and, when the write touches the command register or a
// BAR, re-derives which BARs are decoded where.
func (b *Bus) configWriteLocked(slotNum, off int, data []byte) {
	if slotNum < 0 || slotNum >= NumSlots || b.slots[slotNum] == nil {
		return
	}
	s := b.slots[slotNum]
	s.cfg.Write(off, data)
	end := off + len(data)
	if off < RegCommand+2 && end > RegCommand || off < RegBAR0+4*NumBARs && end > RegBAR0 {
		b.updateMappingsLocked(slotNum, s)
	}
}

// Read serves mechanism 1: CONFIG_ADDRESS (0xcf8, 4-byte accesses only) and
// CONFIG_DATA (0xcfc-0xcff, 1/2/4-byte accesses at any offset that keeps
// the access inside the data register).
func (b *Bus) Read(_, offset uint64, data []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case offset == 0 && len(data) == 4:
		binary.LittleEndian.PutUint32(data, b.address)
	case offset >= 4 && offset+uint64(len(data)) <= 8:
		slotNum, reg, ok := b.decodeLocked(offset)
		if !ok {
			fillOnes(data)
			return
		}
		b.configReadLocked(slotNum, reg, data)
	default:
		fillOnes(data)
	}
}

// Write serves mechanism 1 writes; see Read.
func (b *Bus) Write(_, offset uint64, data []byte) {
	b.mu.Lock()
	if offset == 1 && len(data) == 1 {
		// The reset handler runs unlocked: resetting the machine may
		// well touch this bus.
		fn := b.onReset
		b.mu.Unlock()
		if data[0]&4 != 0 && fn != nil {
			fn()
		}
		return
	}
	defer b.mu.Unlock()
	switch {
	case offset == 0 && len(data) == 4:
		// Bits 30:24 and 1:0 are reserved and read as zero.
		b.address = binary.LittleEndian.Uint32(data) & 0x80ff_fffc
	case offset >= 4 && offset+uint64(len(data)) <= 8:
		slotNum, reg, ok := b.decodeLocked(offset)
		if ok {
			b.configWriteLocked(slotNum, reg, data)
		}
	}
}

// decodeLocked turns the latched CONFIG_ADDRESS into a slot and register;
// ok is false when disabled or addressed at another bus or function.
func (b *Bus) decodeLocked(dataOffset uint64) (slotNum, reg int, ok bool) {
	a := b.address
	if a&0x8000_0000 == 0 || (a>>16)&0xff != 0 || (a>>8)&7 != 0 {
		return 0, 0, false
	}
	return int(a>>11) & 0x1f, int(a&0xfc) + int(dataOffset-4), true
}

// fillOnes makes data read as all-ones (master abort, unclaimed access).
func fillOnes(data []byte) {
	for i := range data {
		data[i] = 0xff
	}
}

// decodable reports whether BAR def at addr should be decoded given cmd, as
// QEMU's pci_bar_address: decoding enabled, a non-zero address, and the
// whole range inside the BAR type's address space.
func decodable(def BAR, addr uint64, cmd uint16) bool {
	end := addr + def.Size
	switch {
	case addr == 0 || end < addr:
		return false
	case def.IO:
		return cmd&CmdIOSpace != 0 && end <= 0x1_0000
	case def.Is64:
		return cmd&CmdMemorySpace != 0 && end <= 1<<52
	default:
		return cmd&CmdMemorySpace != 0 && end <= 1<<32
	}
}

// updateMappingsLocked makes the host's mappings of slot's BARs match its
// command register and BAR registers: a BAR that stopped being decodable or
// moved is unmapped (observer told first), one that became decodable is
// mapped (observer told after). A mapping the host refuses is counted in
// MapErrors and leaves that BAR undecoded; the guest sees no error, as on
// hardware where a bad BAR address simply decodes nothing.
func (b *Bus) updateMappingsLocked(slotNum int, s *slot) {
	cmd := s.cfg.Command()
	for i := range NumBARs {
		def := s.cfg.BARDef(i)
		if def.Size == 0 {
			continue
		}
		addr := s.cfg.BARAddress(i)
		want := decodable(def, addr, cmd)
		if s.mapped[i] && (!want || s.at[i] != addr) {
			if err := b.unmapLocked(slotNum, s, i); err != nil {
				b.MapErrors.Add(1)
			}
		}
		if want && !s.mapped[i] {
			m := mappingOf(slotNum, i, def, addr)
			if err := b.host.MapBAR(m); err != nil {
				b.MapErrors.Add(1)
				continue
			}
			s.mapped[i], s.at[i] = true, addr
			if o, ok := s.dev.(BARObserver); ok {
				o.BARMapped(i, addr)
			}
		}
	}
}

// unmapLocked removes BAR i of slot from the host, telling the device's
// BARObserver first so that it drops ioeventfds while the address is
// still the one it registered them at.
func (b *Bus) unmapLocked(slotNum int, s *slot, i int) error {
	def := s.cfg.BARDef(i)
	if o, ok := s.dev.(BARObserver); ok {
		o.BARUnmapped(i, s.at[i])
	}
	s.mapped[i] = false
	if err := b.host.UnmapBAR(mappingOf(slotNum, i, def, s.at[i])); err != nil {
		return fmt.Errorf("unmapping slot %d BAR %d at %#x: %w", slotNum, i, s.at[i], err)
	}
	return nil
}

// unmapSlotLocked unmaps every decoded BAR of slot n; a failure is
// counted in MapErrors (the BAR is forgotten all the same).
func (b *Bus) unmapSlotLocked(n int, s *slot) {
	for i := range NumBARs {
		if s.mapped[i] {
			if err := b.unmapLocked(n, s, i); err != nil {
				b.MapErrors.Add(1)
			}
		}
	}
}

// mappingOf is BAR i of slotNum, defined by def, decoded at addr.
func mappingOf(slotNum, i int, def BAR, addr uint64) Mapping {
	return Mapping{Slot: slotNum, BAR: i, Addr: addr, Size: def.Size, IO: def.IO,
		Prefetch: def.Prefetch, Handler: def.Handler, RAM: def.RAM}
}

// assignLocked gives every BAR of cfg an address: naturally aligned, first
// fit, largest first, avoiding every BAR already on the bus.
func (b *Bus) assignLocked(cfg *ConfigSpace) error {
	type used struct{ base, end uint64 }
	var taken []used
	for _, s := range b.slots {
		if s == nil {
			continue
		}
		for i := range NumBARs {
			if def := s.cfg.BARDef(i); def.Size != 0 {
				a := s.cfg.BARAddress(i)
				taken = append(taken, used{a, a + def.Size})
			}
		}
	}
	order := make([]int, 0, NumBARs)
	for i := range NumBARs {
		if cfg.BARDef(i).Size != 0 {
			order = append(order, i)
		}
	}
	sort.SliceStable(order, func(x, y int) bool { return cfg.BARDef(order[x]).Size > cfg.BARDef(order[y]).Size })
	fit := func(w Window, size uint64) (uint64, bool) {
		a := (w.Base + size - 1) &^ (size - 1)
		for a+size <= w.Base+w.Size && a+size > a {
			clash := false
			for _, t := range taken {
				if a < t.end && t.base < a+size {
					a = (t.end + size - 1) &^ (size - 1)
					clash = true
					break
				}
			}
			if !clash {
				return a, true
			}
		}
		return 0, false
	}
	for _, i := range order {
		def := cfg.BARDef(i)
		var addr uint64
		var ok bool
		switch {
		case def.IO:
			addr, ok = fit(b.windows.IO, def.Size)
		case def.Is64 && def.Prefetch && def.Size >= Large64:
			addr, ok = fit(b.windows.Mem64, def.Size)
		default:
			addr, ok = fit(b.windows.Mem32, def.Size)
			if !ok && def.Is64 {
				addr, ok = fit(b.windows.Mem64, def.Size)
			}
		}
		if !ok {
			return fmt.Errorf("BAR %d of %#x bytes: %w", i, def.Size, ErrNoSpace)
		}
		cfg.SetBARAddress(i, addr)
		taken = append(taken, used{addr, addr + def.Size})
	}
	return nil
}
