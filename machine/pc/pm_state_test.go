//go:build amd64

package pc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/devices/acpi"
	"github.com/petrel-vmm/petrel/internal/testutil/statetest"
	"github.com/petrel-vmm/petrel/vmstate"
)

func savePM(p *PM) []byte          { return statetest.Save(p) }
func loadPM(p *PM, b []byte) error { return statetest.Load(p, b) }

// clockedPM is a PM block whose clock is *now, with its timer started then.
func clockedPM(sci func(bool), now *time.Time, powerOff func()) *PM {
	p := NewPM(sci, powerOff, nil)
	p.now = func() time.Time { return *now }
	p.start = *now
	return p
}

// busyPM is a PM block a guest has used for 5 s: power button and timer
// enables on, the power button pressed (the SCI up), SLP_TYP 3 written
// without SLP_EN.
func busyPM(sci func(bool), now *time.Time) *PM {
	p := clockedPM(sci, now, nil)
	*now = now.Add(5*time.Second + 1234)
	p.Write(0, 2, []byte{pm1TmrSts, pm1PwrBtnSts >> 8})
	p.PressPowerButton()
	p.Write(0, 4, []byte{pm1CntSCIEn, 3 << slpTypShift >> 8})
	return p
}

// readPM reads every register of the block as a guest does, 2 bytes at a
// time and the timer as 4.
func readPM(p *PM) string {
	b := make([]byte, 4)
	var s bytes.Buffer
	for _, off := range []uint64{0, 2, 4} {
		p.Read(0, off, b[:2])
		fmt.Fprintf(&s, "%d=%#x ", off, binary.LittleEndian.Uint16(b))
	}
	p.Read(0, 8, b)
	fmt.Fprintf(&s, "tmr=%d", binary.LittleEndian.Uint32(b))
	return s.String()
}

func TestPMStateRoundTrip(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var sci []bool
	p := busyPM(func(b bool) { sci = append(sci, b) }, &now)
	if len(sci) == 0 || !sci[len(sci)-1] {
		t.Fatal("busy PM block has the SCI down")
	}
	st := savePM(p)
	want := readPM(p)

	// The new process: another clock, the SCI shared with a GPE block
	// that has an event pending too, as the machine wires them.
	line := &levelRec{}
	or := &sciOr{line: line}
	now2 := time.Date(2030, 6, 1, 0, 0, 0, 0, time.UTC)
	offs := 0
	q := clockedPM(sciSource{or, 0}.SetLevel, &now2, func() { offs++ })
	gpe := acpi.NewGPE(sciSource{or, 1})
	if err := loadPM(q, st); err != nil {
		t.Fatal(err)
	}
	if len(line.levels) != 0 {
		t.Fatalf("LoadState drove the SCI: %v", line.levels)
	}
	if got := readPM(q); got != want {
		t.Fatalf("registers after load: %s, want %s", got, want)
	}
	if !bytes.Equal(savePM(q), st) {
		t.Fatal("state saved again differs")
	}
	// The order the machine follows once the irqchip is loaded.
	gpe.SyncIRQ()
	q.SyncIRQ()
	or.sync()
	if n := len(line.levels); n == 0 || !line.levels[n-1] {
		t.Fatalf("SCI after sync: %v", line.levels)
	}
	// The timer continues from the saved count: 1 ms later it is 3579
	// ticks on (3.579545 MHz).
	var b [4]byte
	q.Read(0, 8, b[:])
	t0 := binary.LittleEndian.Uint32(b[:])
	now2 = now2.Add(time.Millisecond)
	q.Read(0, 8, b[:])
	if d := (binary.LittleEndian.Uint32(b[:]) - t0) & 0xffffff; d < 3579 || d > 3580 {
		t.Fatalf("PM timer moved %d ticks in 1 ms after load", d)
	}
	// The guest goes on: acknowledging the button drops the SCI; the
	// stored SLP_TYP did not power off.
	q.Write(0, 0, []byte{0, pm1PwrBtnSts >> 8})
	or.sync()
	if line.levels[len(line.levels)-1] || offs != 0 {
		t.Fatalf("SCI %v after acknowledging, power-offs %d", line.levels, offs)
	}
	// An idle sciOr syncs the line low even if it was up.
	idle := &sciOr{line: line}
	line.SetLevel(true)
	idle.sync()
	if line.levels[len(line.levels)-1] {
		t.Fatal("sync of an idle SCI left the line up")
	}
}

func TestPMLoadStateBadInput(t *testing.T) {
	now := time.Now()
	st := savePM(busyPM(nil, &now))
	fresh := func() vmstate.Stater {
		return readingPM{clockedPM(nil, &now, func() { t.Fatal("loading powered off") })}
	}
	statetest.CheckBadInput(t, st, pmStateVersion, fresh)
	// Offsets: PM1_STS 4, PM1_EN 6, PM1_CNT 8, timer age 10: a status bit
	// the block never sets, SLP_EN, an age of 2^62 + 1 ns.
	statetest.CheckRefused(t, st, fresh, [][2]int{{4, int(st[4]) | 2}, {9, int(st[9]) | pm1CntSlpEn>>8}, {17, 0x40}})
}

// readingPM reads every register after a load, in SyncIRQ.
type readingPM struct{ *PM }

func (p readingPM) SyncIRQ() {
	p.PM.SyncIRQ()
	readPM(p.PM)
}

// FuzzPMLoadState: any payload loads to an error marked corrupt or to a
// state that saves back to the same bytes, never powering off.
func FuzzPMLoadState(f *testing.F) {
	now := time.Now()
	f.Add(savePM(clockedPM(nil, &now, nil)))
	f.Add(savePM(busyPM(nil, &now)))
	f.Fuzz(func(t *testing.T, b []byte) {
		p := readingPM{clockedPM(nil, &now, func() { t.Fatal("loading powered off") })}
		if err := statetest.Canonical(t, p, b); err != nil && !errors.Is(err, vmstate.ErrCorrupt) {
			t.Fatalf("error not marked corrupt: %v", err)
		}
	})
}
