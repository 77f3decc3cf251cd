package pci

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// MSI-X capability layout (PCI 3.0, 6.8.2): message control at +2, table
// offset/BIR at +4, PBA offset/BIR at +8.
const (
	msixCtrlEnable   = 1 << 15
	msixCtrlFuncMask = 1 << 14
	msixEntrySize    = 16
	msixEntryMasked  = 1 // vector control bit 0
	// MaxMSIXVectors is the architectural limit (table size field + 1).
	MaxMSIXVectors = 2048
)

// MSIXConfig places an MSI-X table and PBA.
type MSIXConfig struct {
	// Vectors is the table size, 1..MaxMSIXVectors.
	Vectors int
	// TableBAR and PBABAR are the BARs (BIRs) holding the table and the
	// pending bit array; they may be the same BAR.
	TableBAR    int
	TableOffset uint64 // 8-byte aligned offset in TableBAR
	PBABAR      int
	PBAOffset   uint64 // 8-byte aligned offset in PBABAR
	// Signaler injects MSIs when no irqfd carries the vector (nil: none).
	Signaler MSISignaler
	// Router, when set, gives every unmasked vector a GSI route and an
	// irqfd, so Notify is one eventfd write and external eventfds (SetIrqfd)
	// reach the guest without the VMM.
	Router EventRouter
}

// msixVector is the kernel plumbing of one table entry: the eventfd that
// raises it and, with a Router, its GSI route (hasRoute, gsi) and whether
// the eventfd is attached to that GSI as an irqfd. A masked vector keeps
// its eventfd but is detached; a signal left in it becomes its pending bit
// (drainLocked) and is delivered when the vector is unmasked.
type msixVector struct {
	fd       int  // eventfd carrying the vector, -1 when none
	ownFD    bool // fd was created here (closed on Close)
	hasRoute bool
	gsi      uint32
	attached bool // fd is registered as an irqfd on gsi
}

// MSIX is one function's MSI-X capability, table and pending bit array.
// The table is guarded by mu; Notify may be called from any goroutine.
// Lock order: Bus.mu, MSIX.mu, ConfigSpace.mu.
type MSIX struct {
	cfg    *ConfigSpace
	capOff int // the capability's offset in cfg
	c      MSIXConfig

	mu sync.Mutex
	// table is the MSI-X table as the guest sees it, 16 bytes per entry:
	// message address low and high, data, vector control (PCI 3.0,
	// 6.8.2.6-9). pending is the PBA, one bit per vector.
	table   []byte
	pending []uint64
	vec     []msixVector
	// enabled and funcMask mirror Message Control's MSI-X Enable and
	// Function Mask bits.
	enabled  bool
	funcMask bool

	// Dropped counts interrupts that could not be delivered (no signaler,
	// a failing ioctl, a vector number out of range).
	Dropped atomic.Uint64
}

var eventfdOne = [8]byte{1}

// NewMSIX adds the MSI-X capability to cfg. The device maps the table and
// PBA by forwarding accesses in their BARs to Read and Write.
func NewMSIX(cfg *ConfigSpace, c MSIXConfig) (*MSIX, error) {
	n := c.Vectors
	switch {
	case n < 1 || n > MaxMSIXVectors:
		return nil, fmt.Errorf("MSI-X: %d vectors out of range 1..%d", n, MaxMSIXVectors)
	case c.TableOffset%8 != 0 || c.PBAOffset%8 != 0:
		return nil, fmt.Errorf("MSI-X: table %#x or PBA %#x offset not 8-byte aligned", c.TableOffset, c.PBAOffset)
	case c.TableBAR < 0 || c.TableBAR >= NumBARs || c.PBABAR < 0 || c.PBABAR >= NumBARs:
		return nil, fmt.Errorf("MSI-X: BIR out of range")
	case c.TableOffset > 0xffff_fff8 || c.PBAOffset > 0xffff_fff8:
		return nil, fmt.Errorf("MSI-X: offset beyond 32 bits")
	}
	m := &MSIX{cfg: cfg, c: c,
		table:   make([]byte, n*msixEntrySize),
		pending: make([]uint64, (n+63)/64),
		vec:     make([]msixVector, n),
	}
	for v := range n {
		m.table[v*msixEntrySize+12] = msixEntryMasked
		m.vec[v].fd = -1
	}
	if c.TableBAR == c.PBABAR {
		tEnd, pEnd := c.TableOffset+uint64(n)*msixEntrySize, c.PBAOffset+uint64(len(m.pending))*8
		if c.TableOffset < pEnd && c.PBAOffset < tEnd {
			return nil, fmt.Errorf("MSI-X: table and PBA overlap")
		}
	}
	body := make([]byte, 10)
	binary.LittleEndian.PutUint16(body[0:], uint16(n-1))
	binary.LittleEndian.PutUint32(body[2:], uint32(c.TableOffset)|uint32(c.TableBAR))
	binary.LittleEndian.PutUint32(body[6:], uint32(c.PBAOffset)|uint32(c.PBABAR))
	off, err := cfg.AddCapability(CapMSIX, body)
	if err != nil {
		return nil, fmt.Errorf("MSI-X: %w", err)
	}
	m.capOff = off
	if err := cfg.SetWriteMask(off+2, []byte{0, 0xc0}); err != nil {
		return nil, err
	}
	cfg.Hook(off+2, 2, m)
	return m, nil
}

// CapOffset is the capability's offset in config space.
func (m *MSIX) CapOffset() int { return m.capOff }

// Vectors is the table size.
func (m *MSIX) Vectors() int { return len(m.vec) }

// Enabled reports the MSI-X enable bit.
func (m *MSIX) Enabled() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.enabled
}

// Masked reports whether vector v is masked (by its entry or the function).
func (m *MSIX) Masked(v int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return v < 0 || v >= len(m.vec) || m.funcMask || m.entryMaskedLocked(v)
}

// Pending reports vector v's pending bit.
func (m *MSIX) Pending(v int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if v < 0 || v >= len(m.vec) {
		return false
	}
	m.drainLocked(v)
	return m.pending[v/64]&(1<<(v%64)) != 0
}

// ConfigRead implements ConfigHook (message control needs no rewriting).
func (m *MSIX) ConfigRead(int, []byte) {}

// ConfigWrite implements ConfigHook: the guest changed message control.
func (m *MSIX) ConfigWrite(int, []byte) {
	ctrl := m.cfg.Uint16(m.capOff + 2)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.enabled = ctrl&msixCtrlEnable != 0
	m.funcMask = ctrl&msixCtrlFuncMask != 0
	for v := range m.vec {
		m.syncLocked(v)
	}
}

// Notify raises vector v: delivered now if MSI-X is enabled and the vector
// unmasked, else left pending until it is unmasked. It does not allocate.
func (m *MSIX) Notify(v int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if v < 0 || v >= len(m.vec) {
		m.Dropped.Add(1)
		return
	}
	if !m.deliverableLocked(v) {
		m.pending[v/64] |= 1 << (v % 64)
		return
	}
	m.deliverLocked(v)
}

// SetIrqfd makes the eventfd fd raise vector v (ivshmem peers' doorbells):
// with a Router the kernel injects it directly while the vector is unmasked;
// while masked the bus polls it into the pending bit. The caller keeps
// owning fd. It needs a Router.
func (m *MSIX) SetIrqfd(v, fd int) error {
	if m.c.Router == nil {
		return errors.New("MSI-X irqfd: no event router")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if v < 0 || v >= len(m.vec) {
		return fmt.Errorf("MSI-X irqfd: vector %d out of range", v)
	}
	if err := m.detachLocked(v); err != nil {
		return err
	}
	if m.vec[v].ownFD {
		unix.Close(m.vec[v].fd)
	}
	m.vec[v].fd, m.vec[v].ownFD = fd, false
	m.syncLocked(v)
	return nil
}

// ClearIrqfd stops vector v's external eventfd from raising it.
func (m *MSIX) ClearIrqfd(v int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if v < 0 || v >= len(m.vec) || m.vec[v].ownFD {
		return nil
	}
	err := m.detachLocked(v)
	m.vec[v].fd = -1
	return err
}

// Reset returns MSI-X to its power-on state: disabled, function unmasked,
// every entry zero and masked, nothing pending. irqfds are detached (they
// re-attach when the guest unmasks again); external eventfds stay set.
func (m *MSIX) Reset() {
	m.cfg.PutUint16(m.capOff+2, uint16(len(m.vec)-1))
	m.mu.Lock()
	defer m.mu.Unlock()
	m.enabled, m.funcMask = false, false
	clear(m.table)
	clear(m.pending)
	for v := range m.vec {
		m.table[v*msixEntrySize+12] = msixEntryMasked
		if err := m.detachLocked(v); err != nil {
			m.Dropped.Add(1)
		}
		m.drainLocked(v)
		m.pending[v/64] &^= 1 << (v % 64) // a signal from before the reset is stale
	}
}

// Close removes every irqfd and route and closes the eventfds it created.
func (m *MSIX) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for v := range m.vec {
		if err := m.detachLocked(v); err != nil {
			errs = append(errs, err)
		}
		x := &m.vec[v]
		if x.hasRoute {
			if err := m.c.Router.RemoveMSIRoute(x.gsi); err != nil {
				errs = append(errs, fmt.Errorf("MSI-X vector %d: removing route: %w", v, err))
			}
			x.hasRoute = false
		}
		if x.ownFD {
			unix.Close(x.fd)
		}
		x.fd, x.ownFD = -1, false
	}
	return errors.Join(errs...)
}

// entryMaskedLocked reports vector v's own mask bit: bit 0 of the entry's
// Vector Control DWord, at offset 12 of the 16-byte table entry (PCI Local
// Bus 3.0 section 6.8.2.9).
func (m *MSIX) entryMaskedLocked(v int) bool {
	return m.table[v*msixEntrySize+12]&msixEntryMasked != 0
}

// deliverableLocked reports whether vector v may be sent now: MSI-X on,
// the function not masked, the entry not masked. Otherwise a notification
// sets the pending bit instead.
func (m *MSIX) deliverableLocked(v int) bool {
	return m.enabled && !m.funcMask && !m.entryMaskedLocked(v)
}

// entryLocked returns vector v's message address (entry bytes 0-7) and
// data (bytes 8-11).
func (m *MSIX) entryLocked(v int) (addr uint64, data uint32) {
	e := m.table[v*msixEntrySize:]
	return binary.LittleEndian.Uint64(e), binary.LittleEndian.Uint32(e[8:])
}

// deliverLocked sends vector v now: one eventfd write when an irqfd carries
// it, else KVM_SIGNAL_MSI.
func (m *MSIX) deliverLocked(v int) {
	x := &m.vec[v]
	if x.attached {
		if _, err := unix.Write(x.fd, eventfdOne[:]); err != nil {
			m.Dropped.Add(1)
		}
		return
	}
	if m.c.Signaler == nil {
		m.Dropped.Add(1)
		return
	}
	addr, data := m.entryLocked(v)
	if err := m.c.Signaler.SignalMSI(addr, data); err != nil {
		m.Dropped.Add(1)
	}
}

// drainLocked turns a signal left in a detached eventfd into the pending bit.
func (m *MSIX) drainLocked(v int) {
	x := &m.vec[v]
	if x.fd < 0 || x.attached {
		return
	}
	var buf [8]byte
	for {
		n, err := unix.Read(x.fd, buf[:])
		if err == unix.EINTR {
			continue
		}
		if err == nil && n == 8 && binary.LittleEndian.Uint64(buf[:]) != 0 {
			m.pending[v/64] |= 1 << (v % 64)
		}
		return
	}
}

// detachLocked removes vector v's irqfd from KVM, if attached, so that a
// write to its eventfd no longer injects the interrupt.
func (m *MSIX) detachLocked(v int) error {
	x := &m.vec[v]
	if !x.attached {
		return nil
	}
	x.attached = false
	if err := m.c.Router.RemoveIrqfd(x.fd, x.gsi); err != nil {
		return fmt.Errorf("MSI-X vector %d: removing irqfd: %w", v, err)
	}
	return nil
}

// syncLocked brings vector v's irqfd in line with its mask state and
// delivers a pending interrupt once it is deliverable (PCI 3.0, 6.8.3.5).
func (m *MSIX) syncLocked(v int) {
	x := &m.vec[v]
	if !m.deliverableLocked(v) {
		if err := m.detachLocked(v); err != nil {
			m.Dropped.Add(1)
		}
		return
	}
	if m.c.Router != nil && !x.attached {
		if x.fd < 0 {
			fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
			if err == nil {
				x.fd, x.ownFD = fd, true
			}
		}
		if x.fd >= 0 {
			m.drainLocked(v)
			addr, data := m.entryLocked(v)
			var err error
			if x.hasRoute {
				err = m.c.Router.UpdateMSIRoute(x.gsi, addr, data)
			} else if x.gsi, err = m.c.Router.AddMSIRoute(addr, data); err == nil {
				x.hasRoute = true
			}
			if err == nil {
				err = m.c.Router.AddIrqfd(x.fd, x.gsi)
			}
			x.attached = err == nil
			if err != nil {
				m.Dropped.Add(1)
			}
		}
	}
	if m.pending[v/64]&(1<<(v%64)) != 0 {
		m.pending[v/64] &^= 1 << (v % 64)
		m.deliverLocked(v)
	}
}

// Read serves a guest read at offset off of a BAR holding the table and/or
// the PBA (offsets relative to the BAR). Only aligned 4- and 8-byte accesses
// are answered; others read all ones.
func (m *MSIX) Read(_, off uint64, data []byte) {
	fillOnes(data)
	n := uint64(len(data))
	if (n != 4 && n != 8) || off%n != 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case off >= m.c.TableOffset && off+n <= m.c.TableOffset+uint64(len(m.table)):
		copy(data, m.table[off-m.c.TableOffset:])
	case off >= m.c.PBAOffset && off+n <= m.c.PBAOffset+uint64(len(m.pending))*8:
		for v := range m.vec {
			m.drainLocked(v)
		}
		var b [8]byte
		w := (off - m.c.PBAOffset) / 8
		binary.LittleEndian.PutUint64(b[:], m.pending[w])
		copy(data, b[(off-m.c.PBAOffset)%8:])
	}
}

// Write serves a guest write to the table (the PBA is read-only).
func (m *MSIX) Write(_, off uint64, data []byte) {
	n := uint64(len(data))
	if (n != 4 && n != 8) || off%n != 0 || off < m.c.TableOffset ||
		off+n > m.c.TableOffset+uint64(len(m.table)) {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	rel := off - m.c.TableOffset
	v := int(rel / msixEntrySize)
	e := m.table[v*msixEntrySize : (v+1)*msixEntrySize]
	oldAddr, oldData := m.entryLocked(v)
	for i, b := range data {
		p := int(rel%msixEntrySize) + i
		switch {
		case p == 12:
			e[p] = b & msixEntryMasked // only the mask bit is writable
		case p > 12:
			// reserved vector control bits read as zero
		default:
			e[p] = b
		}
	}
	x := &m.vec[v]
	if addr, d := m.entryLocked(v); x.hasRoute && x.attached && (addr != oldAddr || d != oldData) {
		if err := m.c.Router.UpdateMSIRoute(x.gsi, addr, d); err != nil {
			m.Dropped.Add(1)
		}
	}
	m.syncLocked(v)
}
