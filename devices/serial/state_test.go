package serial

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/petrel-vmm/petrel/internal/testutil/statetest"
	"github.com/petrel-vmm/petrel/vmstate"
)

func save(u *UART) []byte          { return statetest.Save(u) }
func load(u *UART, b []byte) error { return statetest.Load(u, b) }

// busyUART is a UART as a guest leaves it mid-session: 115200 8N1 with the
// FIFO on, every interrupt enabled, an overrun latched in LSR, the THR-empty
// interrupt pending behind it, and bytes waiting in the receive FIFO.
func busyUART(irq *line) *UART {
	u := New(&bytes.Buffer{}, irq)
	wr(u, regLCR, lcrDLAB|0x03)
	wr(u, regData, 0x01) // DLL
	wr(u, regIER, 0x00)  // DLM
	wr(u, regLCR, 0x1b)  // 8E1
	wr(u, regIIR, 0x81)  // FCR: FIFO on, trigger level 8
	wr(u, regSCR, 0x5a)
	wr(u, regMCR, mcrLoop|0x0b)
	for i := 0; i < fifoSize+1; i++ { // one more than fits: overrun
		wr(u, regData, 'a'+byte(i))
	}
	wr(u, regMCR, 0x0b) // loopback off, OUT2 RTS DTR
	rd(u, regData)      // one byte consumed: 15 left
	wr(u, regIER, ierRDA|ierTHRE|ierRLS|ierMS)
	return u
}

// readAll reads every register as a guest would, in an order that shows
// each piece of state (IIR before and after each source is cleared, the
// divisor latch, every FIFO byte), and the line level after each read.
func readAll(u *UART, irq *line) string {
	var b bytes.Buffer
	r := func(reg uint64) { fmt.Fprintf(&b, "%d=%#x/%v ", reg, rd(u, reg), irq.up()) }
	for _, reg := range []uint64{regIIR, regLSR, regIIR, regIER, regLCR, regMCR, regMSR, regMSR, regSCR} {
		r(reg)
	}
	lcr := rd(u, regLCR)
	wr(u, regLCR, lcr|lcrDLAB)
	r(regData)
	r(regIER)
	wr(u, regLCR, lcr)
	for i := 0; i <= fifoSize; i++ {
		r(regIIR)
		r(regLSR)
		r(regData)
	}
	r(regIIR)
	return b.String()
}

func TestStateRoundTrip(t *testing.T) {
	irq := &line{}
	u := busyUART(irq)
	if !irq.up() {
		t.Fatal("busy UART has no interrupt pending")
	}
	st := save(u)
	irq2 := &line{}
	v := New(&bytes.Buffer{}, irq2)
	if err := load(v, st); err != nil {
		t.Fatal(err)
	}
	if len(irq2.level) != 0 {
		t.Fatalf("LoadState drove the line: %v", irq2.level)
	}
	v.SyncIRQ()
	if !irq2.up() {
		t.Fatal("SyncIRQ did not assert the line of a pending interrupt")
	}
	if !bytes.Equal(save(v), st) {
		t.Fatal("state saved again differs")
	}
	want, got := readAll(u, irq), readAll(v, irq2)
	if got != want {
		t.Fatalf("registers after load:\n%s\nwant\n%s", got, want)
	}
	// A quiet UART syncs its line low.
	w := New(nil, irq2)
	if err := load(w, save(New(nil, nil))); err != nil {
		t.Fatal(err)
	}
	w.SyncIRQ()
	if irq2.up() {
		t.Fatal("SyncIRQ of an idle UART left the line up")
	}
}

func TestReset(t *testing.T) {
	irq := &line{}
	u := busyUART(irq)
	u.Reset()
	if irq.up() {
		t.Fatal("line still up after Reset")
	}
	fresh := &line{}
	if got, want := readAll(u, irq), readAll(New(nil, fresh), fresh); got != want {
		t.Fatalf("registers after Reset:\n%s\nwant power-on\n%s", got, want)
	}
}

func TestLoadStateBadInput(t *testing.T) {
	st := save(busyUART(&line{}))
	fresh := func() vmstate.Stater { return New(nil, &line{}) }
	statetest.CheckBadInput(t, st, stateVersion, fresh)
	// Values the UART cannot hold: offsets are the register bytes after the
	// version (DLL 4, DLM 5, IER 6, LCR 7, MCR 8, LSR 9, MSR 10, SCR 11,
	// FCR 12), the bool 13, the FIFO length 14.
	statetest.CheckRefused(t, st, fresh, [][2]int{
		{6, 0x10}, {8, 0x20}, {12, 0x02}, {9, lsrTHRE | lsrTEMT}, {9, 0x80 | lsrBits}, {9, lsrDR}, {13, 2}, {14, 17},
	})
}

// FuzzLoadState: any payload loads to an error marked corrupt or to a
// state that saves back to the same bytes.
func FuzzLoadState(f *testing.F) {
	f.Add(save(New(nil, nil)))
	f.Add(save(busyUART(&line{})))
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := statetest.Canonical(t, New(nil, &line{}), b); err != nil && !errors.Is(err, vmstate.ErrCorrupt) {
			t.Fatalf("error not marked corrupt: %v", err)
		}
	})
}
