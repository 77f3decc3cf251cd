package rtc

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/internal/testutil/statetest"
	"github.com/petrel-vmm/petrel/vmstate"
)

func save(c *CMOS) []byte          { return statetest.Save(c) }
func load(c *CMOS, b []byte) error { return statetest.Load(c, b) }

var host = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

// busyCMOS is a CMOS a guest has used: its clock set to 1999-12-31
// 23:59:30, binary 12-hour mode with the periodic and update interrupts
// enabled, flags pending in register C, NVRAM written, and the index
// register left at 0x40. With frozen it is in the middle of setting the
// time (register B SET, the hour just written).
func busyCMOS(frozen bool) *CMOS {
	c := New(256<<20, 1<<30)
	c.SetClock(fixed(host))
	wr(c, RegB, regBSet|regB24h)
	wr(c, RegCentury, 0x19)
	wr(c, RegYear, 0x99)
	wr(c, RegMonth, 0x12)
	wr(c, RegDay, 0x31)
	wr(c, RegHours, 0x23)
	wr(c, RegMinutes, 0x59)
	wr(c, RegSeconds, 0x30)
	wr(c, RegB, regB24h)
	wr(c, RegA, 0x2a)
	for i := uint8(0x0e); i < nvramSize; i++ {
		if i != RegCentury {
			wr(c, i, i*7+1)
		}
	}
	wr(c, RegB, regBBinary|0x40|0x10) // 12 h binary, PIE, UIE
	c.nvram[RegC] = 0xd0              // IRQF PF UF: no guest write sets them
	if frozen {
		wr(c, RegB, regBSet|regBBinary)
		wr(c, RegHours, 5) // 5 AM
	}
	wr(c, 0x40, 0x42) // leaves the index at 0x40
	return c
}

// readAll reads the data port at the current index first (showing the
// index register), then every register through the index port.
func readAll(c *CMOS) string {
	var b bytes.Buffer
	one := []byte{0}
	c.Read(0, 1, one)
	fmt.Fprintf(&b, "[index]=%#x ", one[0])
	for i := uint8(0); i < nvramSize; i++ {
		fmt.Fprintf(&b, "%#x=%#x ", i, rd(c, i))
	}
	return b.String()
}

func TestStateRoundTrip(t *testing.T) {
	for _, frozen := range []bool{false, true} {
		t.Run(fmt.Sprint("frozen=", frozen), func(t *testing.T) {
			c := busyCMOS(frozen)
			st := save(c)
			// The new process runs an hour later: the guest's clock moved
			// on by the hour (unless it is frozen), everything else is the same.
			later := host.Add(time.Hour)
			v := New(256<<20, 1<<30)
			v.SetClock(fixed(later))
			if err := load(v, st); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(save(v), st) {
				t.Fatal("state saved again differs")
			}
			c.SetClock(fixed(later))
			if got, want := readAll(v), readAll(c); got != want {
				t.Fatalf("registers after load:\n%s\nwant\n%s", got, want)
			}
			// 1999-12-31 23:59:30 an hour later is 2000-01-01 00:59:30:
			// 12 AM, year 0; frozen it stays 1999-12-31 05:59:30.
			wantHour := uint8(12)
			if frozen {
				wantHour = 5
			}
			if h, y := rd(v, RegHours), rd(v, RegYear); h != wantHour || (y != 0) == !frozen {
				t.Fatalf("hour %#x year %d after an hour (frozen %v)", h, y, frozen)
			}
		})
	}
}

func TestReset(t *testing.T) {
	c := busyCMOS(false)
	c.Reset()
	after := readAll(c)
	want := busyCMOS(false)
	want.nvram[RegB] &^= regBResetBits
	want.nvram[RegC] = 0
	if w := readAll(want); after != w {
		t.Fatalf("after Reset:\n%s\nwant\n%s", after, w)
	}
	if rd(c, RegB) != regBBinary || rd(c, RegC) != 0 || rd(c, 0x40) != 0x42 || rd(c, RegYear) != 99 {
		t.Fatal("Reset cleared the wrong bits")
	}
}

func TestLoadStateBadInput(t *testing.T) {
	st := save(busyCMOS(true))
	statetest.CheckBadInput(t, st, stateVersion, fresh)
	// Offsets: index 4, CMOS RAM 5.., offset 133, frozen flag 141, seconds
	// 142, nanoseconds 150.
	statetest.CheckRefused(t, st, fresh, [][2]int{
		{4, 0x80}, {5 + RegA, 0xa6}, {5 + RegB, regBBinary}, {141, 0}, {141, 2}, {153, 0x40},
	})
}

// fresh is a new CMOS on a fixed clock whose registers a test reads all of
// after loading.
func fresh() vmstate.Stater {
	c := New(0, 0)
	c.SetClock(fixed(host))
	return readingCMOS{c}
}

// readingCMOS reads every register after a load (as its SyncIRQ: the CMOS
// has no line of its own), so a loaded state is also read.
type readingCMOS struct{ *CMOS }

func (c readingCMOS) SyncIRQ() { readAll(c.CMOS) }

// FuzzLoadState: any payload loads to an error marked corrupt or to a
// state that saves back to the same bytes and reads without a panic.
func FuzzLoadState(f *testing.F) {
	f.Add(save(New(0, 0)))
	f.Add(save(busyCMOS(false)))
	f.Add(save(busyCMOS(true)))
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := statetest.Canonical(t, fresh(), b); err != nil && !errors.Is(err, vmstate.ErrCorrupt) {
			t.Fatalf("error not marked corrupt: %v", err)
		}
	})
}
