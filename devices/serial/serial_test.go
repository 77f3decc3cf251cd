package serial

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

type line struct{ level []bool }

func (l *line) SetLevel(b bool) { l.level = append(l.level, b) }
func (l *line) up() bool        { return len(l.level) > 0 && l.level[len(l.level)-1] }

func rd(u *UART, reg uint64) byte    { b := []byte{0}; u.Read(0x3f8, reg, b); return b[0] }
func wr(u *UART, reg uint64, v byte) { u.Write(0x3f8, reg, []byte{v}) }

func TestTransmitAndTHREInterrupt(t *testing.T) {
	var out bytes.Buffer
	irq := &line{}
	u := New(&out, irq)
	if rd(u, regLSR)&(lsrTHRE|lsrTEMT) != lsrTHRE|lsrTEMT {
		t.Fatal("transmitter not empty at reset")
	}
	if rd(u, regIIR) != iirNone {
		t.Fatalf("IIR %#x at reset", rd(u, regIIR))
	}
	wr(u, regData, 'h')
	wr(u, regData, 'i')
	if out.String() != "hi" {
		t.Fatalf("output %q", out.String())
	}
	if irq.up() {
		t.Fatal("interrupt without IER")
	}
	// Enabling THRE interrupts with an empty THR raises one at once
	// (MCR OUT2 gates the line, as on a PC: the reset value has it set).
	wr(u, regIER, ierTHRE)
	if !irq.up() {
		t.Fatal("THRE interrupt not raised on enable")
	}
	if v := rd(u, regIIR); v != iirTHRE {
		t.Fatalf("IIR %#x, want THRE", v)
	}
	if irq.up() {
		t.Fatal("reading IIR did not clear the THRE interrupt")
	}
	wr(u, regData, '!')
	if !irq.up() {
		t.Fatal("THRE interrupt not raised after a write")
	}
	wr(u, regMCR, 0) // OUT2 off masks the line
	if irq.up() {
		t.Fatal("OUT2 low did not mask the interrupt")
	}
}

func TestReceiveFIFOAndInterrupt(t *testing.T) {
	irq := &line{}
	u := New(nil, irq)
	wr(u, regIER, ierRDA)
	wr(u, regIIR, fcrEnable) // FCR: FIFO on
	if n := u.Input([]byte("abc")); n != 3 {
		t.Fatalf("Input took %d", n)
	}
	if !irq.up() || rd(u, regIIR) != iirRDA|iirFIFOBits {
		t.Fatalf("RDA interrupt: line %v IIR %#x", irq.up(), rd(u, regIIR))
	}
	if rd(u, regLSR)&lsrDR == 0 {
		t.Fatal("LSR.DR clear with data")
	}
	got := []byte{rd(u, regData), rd(u, regData), rd(u, regData)}
	if string(got) != "abc" {
		t.Fatalf("read %q", got)
	}
	if rd(u, regLSR)&lsrDR != 0 || irq.up() {
		t.Fatal("data ready / interrupt after draining")
	}
	// The FIFO holds 16 bytes; Input reports what fitted.
	if n := u.Input([]byte(strings.Repeat("x", 20))); n != fifoSize {
		t.Fatalf("Input took %d of 20", n)
	}
	wr(u, regIIR, fcrEnable|fcrClearRx)
	if rd(u, regLSR)&lsrDR != 0 {
		t.Fatal("FCR clear did not empty the FIFO")
	}
}

func TestDivisorScratchLoopback(t *testing.T) {
	var out bytes.Buffer
	u := New(&out, nil)
	wr(u, regLCR, lcrDLAB|0x03)
	wr(u, regData, 0x01) // DLL: 115200 baud
	wr(u, regIER, 0x00)  // DLM
	if rd(u, regData) != 1 || rd(u, regIER) != 0 {
		t.Fatal("divisor latch not readable")
	}
	wr(u, regLCR, 0x03)
	if rd(u, regLCR) != 0x03 {
		t.Fatal("LCR")
	}
	wr(u, regSCR, 0x5a)
	if rd(u, regSCR) != 0x5a {
		t.Fatal("scratch register")
	}
	wr(u, regMCR, mcrLoop|0x0b)
	wr(u, regData, 'L')
	if out.Len() != 0 || rd(u, regData) != 'L' {
		t.Fatal("loopback byte not received")
	}
	if m := rd(u, regMSR); m&0xb0 != 0xb0 {
		t.Fatalf("loopback MSR %#x", m)
	}
	// Wide accesses are ignored / read as ones.
	b := []byte{0, 0}
	u.Read(0, regLSR, b)
	if b[0] != 0xff {
		t.Fatal("2-byte read not all ones")
	}
	wr(u, regLSR, 0) // read-only
}

func TestFeedWaitsForRoom(t *testing.T) {
	u := New(nil, nil)
	done := make(chan struct{})
	errc := make(chan error, 1)
	go func() { errc <- u.Feed(strings.NewReader(strings.Repeat("y", 40)), done) }()
	var got []byte
	deadline := time.Now().Add(5 * time.Second)
	for len(got) < 40 && time.Now().Before(deadline) {
		if rd(u, regLSR)&lsrDR != 0 {
			got = append(got, rd(u, regData))
		} else {
			time.Sleep(time.Millisecond)
		}
	}
	close(done)
	if len(got) != 40 || u.Dropped.Load() != 0 {
		t.Fatalf("got %d bytes, dropped %d", len(got), u.Dropped.Load())
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// FuzzRegisters drives random register accesses: no panic, and the IRQ
// line always matches IIR.
func FuzzRegisters(f *testing.F) {
	f.Add([]byte{1, 2, 0, 'a', 4, 0x0b, 2, 1})
	f.Fuzz(func(t *testing.T, ops []byte) {
		irq := &line{}
		u := New(&bytes.Buffer{}, irq)
		for i := 0; i+1 < len(ops); i += 2 {
			reg, v := uint64(ops[i]&7), ops[i+1]
			switch ops[i] >> 6 {
			case 0:
				wr(u, reg, v)
			case 1:
				rd(u, reg)
			case 2:
				u.Input([]byte{v})
			default:
				b := make([]byte, 1+int(v&3))
				u.Read(0, reg, b)
			}
			wantUp := u.iir()&iirNone == 0 && u.mcr&0x08 != 0
			if irq.up() != wantUp {
				t.Fatalf("line %v but IIR %#x MCR %#x", irq.up(), u.iir(), u.mcr)
			}
		}
	})
}
