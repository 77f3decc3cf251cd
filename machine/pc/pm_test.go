//go:build amd64

package pc

import (
	"encoding/binary"
	"testing"
	"time"
)

type levelRec struct{ levels []bool }

func (l *levelRec) SetLevel(b bool) { l.levels = append(l.levels, b) }

func TestPMPowerOffAndRegisters(t *testing.T) {
	var off, slept int
	var sci []bool
	p := NewPM(func(b bool) { sci = append(sci, b) }, func() { off++ }, func(int) { slept++ })
	rd16 := func(o uint64) uint16 { b := make([]byte, 2); p.Read(0, o, b); return binary.LittleEndian.Uint16(b) }
	wr16 := func(o uint64, v uint16) { b := make([]byte, 2); binary.LittleEndian.PutUint16(b, v); p.Write(0, o, b) }
	if rd16(4)&1 != 1 {
		t.Fatal("SCI_EN not set at reset")
	}
	// S3 is not power-off.
	wr16(4, 3<<10|1<<13|1)
	if off != 0 || slept != 1 {
		t.Fatalf("S3: off %d slept %d", off, slept)
	}
	if rd16(4)&(1<<13) != 0 {
		t.Fatal("SLP_EN reads back as 1")
	}
	// SLP_TYP 5 alone does nothing; with SLP_EN it powers off.
	wr16(4, 5<<10|1)
	if off != 0 {
		t.Fatal("SLP_TYP without SLP_EN powered off")
	}
	wr16(4, 5<<10|1<<13|1)
	if off != 1 {
		t.Fatal("S5 did not power off")
	}
	// Power button status raises SCI only when enabled; write-1-to-clear.
	p.PressPowerButton()
	if rd16(0)&(1<<8) == 0 || sci[len(sci)-1] {
		t.Fatalf("PWRBTN_STS %#x sci %v", rd16(0), sci)
	}
	wr16(2, 1<<8)
	if sci[len(sci)-1] != true || rd16(2) != 1<<8 {
		t.Fatalf("enabling PWRBTN_EN: sci %v", sci)
	}
	wr16(0, 0x0001) // clearing another bit leaves it
	if rd16(0)&(1<<8) == 0 {
		t.Fatal("write-1-to-clear cleared the wrong bit")
	}
	wr16(0, 1<<8)
	if rd16(0)&(1<<8) != 0 || sci[len(sci)-1] != false {
		t.Fatal("PWRBTN_STS not cleared or SCI still asserted")
	}
	// PM timer counts at 3.58 MHz and is 24 bits wide.
	tm := func() uint32 { b := make([]byte, 4); p.Read(0, 8, b); return binary.LittleEndian.Uint32(b) }
	a := tm()
	time.Sleep(2 * time.Millisecond)
	b := tm()
	if a > 0xffffff || b > 0xffffff || (b-a)&0xffffff < 7000 {
		t.Fatalf("PM timer %d -> %d after 2ms", a, b)
	}
	p.Write(0, 8, []byte{0, 0, 0, 0}) // read-only
	buf := make([]byte, 4)
	p.Read(0, 10, buf) // straddles the end
	if buf[0] != 0xff {
		t.Fatal("out-of-block read not all ones")
	}
}

func TestSCISharedLine(t *testing.T) {
	l := &levelRec{}
	s := &sciOr{line: l}
	pm, gpe := sciSource{s, 0}, sciSource{s, 1}
	pm.SetLevel(true)
	gpe.SetLevel(true)
	pm.SetLevel(false) // GPE still asserts
	gpe.SetLevel(false)
	want := []bool{true, false}
	if len(l.levels) != 2 || l.levels[0] != want[0] || l.levels[1] != want[1] {
		t.Fatalf("line transitions %v, want %v", l.levels, want)
	}
}

// FuzzPMBlock drives random accesses to the PM block: no panic, the timer
// stays 24-bit, and power-off happens only for SLP_TYP 5 with SLP_EN.
func FuzzPMBlock(f *testing.F) {
	f.Add([]byte{0x04, 0x02, 0x00, 0x34, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, ops []byte) {
		offs := 0
		p := NewPM(nil, func() { offs++ }, nil)
		for i := 0; i+2 < len(ops); i += 3 {
			off := uint64(ops[i] % 14)
			n := 1 << (ops[i] >> 6 & 3)
			if n > 4 {
				n = 4
			}
			data := []byte{ops[i+1], ops[i+2], 0, 0}[:n]
			before := p.cnt
			if ops[i]&0x20 != 0 {
				p.Read(0, off, data)
				if off == 8 && n == 4 && binary.LittleEndian.Uint32(data) > 0xffffff {
					t.Fatal("PM timer wider than 24 bits")
				}
				continue
			}
			o := offs
			p.Write(0, off, data)
			if offs != o {
				// Which bytes of PM1_CNT did this write set?
				cnt := before
				for j, b := range data {
					switch off + uint64(j) {
					case 4:
						cnt = cnt&0xff00 | uint16(b)
					case 5:
						cnt = cnt&0x00ff | uint16(b)<<8
					}
				}
				if cnt&(1<<13) == 0 || (cnt>>10)&7 != SlpTypS5 {
					t.Fatalf("powered off by PM1_CNT %#x", cnt)
				}
			}
		}
	})
}

func TestExitReasonString(t *testing.T) {
	if ExitPowerOff.String() != "power-off" || ExitTripleFault.String() != "triple fault" || ExitReason(42).String() != "exit(42)" {
		t.Fatal("ExitReason names")
	}
}

func TestOddLogIsRateLimited(t *testing.T) {
	var lines []string
	o := &oddLog{what: "port", logf: func(f string, a ...any) { lines = append(lines, f) }}
	for i := 0; i < 100; i++ {
		o.note(0x99, 1, i%2 == 0)
	}
	if len(lines) != oddBurst {
		t.Fatalf("%d lines for 100 accesses in a burst, want %d", len(lines), oddBurst)
	}
	o.window = o.window.Add(-2 * time.Second) // a second later
	o.note(0x99, 1, false)
	if len(lines) != oddBurst+2 {
		t.Fatalf("after the window: %d lines, want the suppressed count and the new access", len(lines))
	}
}
