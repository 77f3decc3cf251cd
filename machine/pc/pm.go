//go:build amd64

package pc

import (
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/petrel-vmm/petrel/devices/acpi"
	"github.com/petrel-vmm/petrel/vmstate"
)

// ACPI PM register block (ACPI 6.x §4.8.3): PM1a_EVT (status + enable),
// PM1a_CNT and PM_TMR at the ports in docs/ARCHITECTURE.md; the FADT built
// by firmware/acpi is made from the same devices/acpi constants.
const (
	PM1aEvtPort = acpi.PM1aEventBase   // 4 bytes: PM1_STS (2), PM1_EN (2)
	PM1aCntPort = acpi.PM1aControlBase // 2 bytes
	PMTmrPort   = acpi.PMTimerBase     // 4 bytes, 24-bit counter
	PMBlockSize = acpi.PMTimerBase + acpi.PMTimerLen - acpi.PM1aEventBase

	pm1TmrSts    = 1 << 0
	pm1PwrBtnSts = 1 << 8
	pm1WakSts    = 1 << 15
	pm1StsMask   = pm1TmrSts | 1<<5 | pm1PwrBtnSts | 1<<9 | 1<<10 | pm1WakSts

	pm1CntSCIEn = acpi.SCIEnable
	pm1CntSlpEn = acpi.SleepEnable
	slpTypShift = acpi.SleepTypeShift
	slpTypMask  = acpi.SleepTypeMask
	// SlpTypS5 is the \_S5 SLP_TYP value the DSDT declares.
	SlpTypS5 = acpi.S5SleepType

	pmTimerHz = 3579545
)

// PM is the ACPI PM1a event/control block and PM timer. It drives its SCI
// source through sci (the machine ORs it with the GPE block's).
type PM struct {
	mu       sync.Mutex
	sts, en  uint16
	cnt      uint16
	start    time.Time        // when the PM timer read 0
	now      func() time.Time // time.Now; tests fix it
	sci      func(asserted bool)
	powerOff func()
	sleep    func(slpTyp int)
}

// NewPM returns a PM block. powerOff runs when the guest writes SLP_EN with
// SLP_TYP = S5; sleep (may be nil) for any other SLP_TYP.
func NewPM(sci func(bool), powerOff func(), sleep func(int)) *PM {
	if sci == nil {
		sci = func(bool) {}
	}
	// SCI_EN reads 1 from reset: the FADT has no SMI_CMD handshake.
	return &PM{sci: sci, powerOff: powerOff, sleep: sleep, now: time.Now, start: time.Now(), cnt: pm1CntSCIEn}
}

// Reset puts the block back to its power-on state (machine reset): no
// status or enable bits, SCI_EN set, SCI deasserted.
func (p *PM) Reset() {
	p.mu.Lock()
	p.sts, p.en, p.cnt = 0, 0, pm1CntSCIEn
	p.updateLocked()
	p.mu.Unlock()
}

// timer is the 24-bit PM_TMR value.
func (p *PM) timer() uint32 {
	ns := uint64(p.now().Sub(p.start))
	return uint32(ns/1e9*pmTimerHz+ns%1e9*pmTimerHz/1e9) & 0xffffff
}

// PressPowerButton sets PWRBTN_STS (fixed-feature power button).
func (p *PM) PressPowerButton() {
	p.mu.Lock()
	p.sts |= pm1PwrBtnSts
	p.updateLocked()
	p.mu.Unlock()
}

func (p *PM) updateLocked() { p.sci(p.sts&p.en&pm1StsMask != 0) }

// Read implements vmm.BusDevice for the whole block at PM1aEvtPort.
func (p *PM) Read(base, offset uint64, data []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var regs [PMBlockSize]byte
	binary.LittleEndian.PutUint16(regs[0:], p.sts)
	binary.LittleEndian.PutUint16(regs[2:], p.en)
	binary.LittleEndian.PutUint16(regs[4:], p.cnt&^pm1CntSlpEn) // SLP_EN reads 0
	binary.LittleEndian.PutUint32(regs[8:], p.timer())
	if offset+uint64(len(data)) > PMBlockSize {
		for i := range data {
			data[i] = 0xff
		}
		return
	}
	copy(data, regs[offset:])
}

// Write implements vmm.BusDevice: PM1_STS is write-1-to-clear, PM1_EN and
// PM1_CNT are read/write, SLP_EN with SLP_TYP 5 powers off, PM_TMR is
// read-only.
func (p *PM) Write(base, offset uint64, data []byte) {
	var fire func()
	p.mu.Lock()
	for i, b := range data {
		o := offset + uint64(i)
		switch o {
		case 0:
			p.sts &^= uint16(b)
		case 1:
			p.sts &^= uint16(b) << 8
		case 2:
			p.en = p.en&0xff00 | uint16(b)
		case 3:
			p.en = p.en&0x00ff | uint16(b)<<8
		case 4:
			p.cnt = p.cnt&0xff00 | uint16(b)
		case 5:
			p.cnt = p.cnt&0x00ff | uint16(b)<<8
		}
	}
	if p.cnt&pm1CntSlpEn != 0 {
		typ := int(p.cnt&slpTypMask) >> slpTypShift
		p.cnt &^= pm1CntSlpEn
		if typ == SlpTypS5 {
			fire = p.powerOff
		} else if p.sleep != nil {
			s := p.sleep
			fire = func() { s(typ) }
		}
	}
	p.updateLocked()
	p.mu.Unlock()
	if fire != nil {
		fire()
	}
}

// pmStateVersion is the version of the PM block's saved state:
//
//	u32 version
//	u16 PM1_STS, u16 PM1_EN, u16 PM1_CNT
//	u64 nanoseconds the PM timer has counted (from 0 at NewPM)
//
// The timer continues on load from where it was saved, as QEMU's runs on
// the virtual clock that stops while the machine is saved: the guest never
// sees it jump over the time the machine spent saved.
const pmStateVersion = 1

// maxPMTimerAge bounds the saved timer age (146 years: far beyond any
// guest's uptime, far from time.Duration's overflow).
const maxPMTimerAge = 1 << 62

var _ vmstate.Stater = (*PM)(nil)

// SaveState implements vmstate.Stater.
func (p *PM) SaveState(e *vmstate.Enc) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e.U32(pmStateVersion)
	e.U16(p.sts)
	e.U16(p.en)
	e.U16(p.cnt)
	e.U64(uint64(p.now().Sub(p.start)))
}

// LoadState implements vmstate.Stater. A status bit the block never sets,
// SLP_EN stored in PM1_CNT (it never is: writing it acts at once) or a
// timer age beyond maxPMTimerAge is refused and nothing changes then.
// Loading never powers off or sleeps, and does not drive the SCI: SyncIRQ
// does, once the irqchip is loaded.
func (p *PM) LoadState(d *vmstate.Dec) error {
	d.Version(pmStateVersion)
	sts, en, cnt, age := d.U16(), d.U16(), d.U16(), d.U64()
	if err := d.Finish(); err != nil {
		return err
	}
	switch {
	case sts&^pm1StsMask != 0:
		return fmt.Errorf("%w: acpi pm: PM1_STS %#x has bits the block never sets", vmstate.ErrCorrupt, sts)
	case cnt&pm1CntSlpEn != 0:
		return fmt.Errorf("%w: acpi pm: PM1_CNT %#x holds SLP_EN", vmstate.ErrCorrupt, cnt)
	case age > maxPMTimerAge:
		return fmt.Errorf("%w: acpi pm: PM timer age %d ns", vmstate.ErrCorrupt, age)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sts, p.en, p.cnt = sts, en, cnt
	p.start = p.now().Add(-time.Duration(age))
	return nil
}

// SyncIRQ hands the SCI source the level the registers imply; the
// machine calls it after LoadState and then sciOr.sync, once the irqchip
// is loaded.
func (p *PM) SyncIRQ() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.updateLocked()
}

// sciOr is the SCI line shared by the PM block and the GPE block: the
// line is asserted while either source is.
type sciOr struct {
	mu    sync.Mutex
	line  interface{ SetLevel(bool) }
	srcs  [2]bool
	level bool
}

func (s *sciOr) set(i int, asserted bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.srcs[i] = asserted
	l := s.srcs[0] || s.srcs[1]
	if l != s.level {
		s.level = l
		s.line.SetLevel(l)
	}
}

// sync drives the line to the level of its sources whether or not it
// changed: after a load, once the PM and GPE blocks have given their
// levels (PM.SyncIRQ, GPE.SyncIRQ) and the irqchip is loaded.
func (s *sciOr) sync() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.level = s.srcs[0] || s.srcs[1]
	s.line.SetLevel(s.level)
}

// sciSource is one input of an sciOr; it satisfies pci.IRQLine.
type sciSource struct {
	or *sciOr
	i  int
}

func (s sciSource) SetLevel(asserted bool) { s.or.set(s.i, asserted) }
