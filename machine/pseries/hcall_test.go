package pseries

import (
	"encoding/binary"
	"testing"
)

func TestUnknownHcall(t *testing.T) {
	v := newTestVM(t, 1)
	for _, nr := range []uint64{0x8 /* H_ENTER: KVM's */, 0x2, 0x1000, 0xf00e, 0xffff, 1 << 40} {
		args := [9]uint64{1, 2, 3}
		if got := v.Hypercall(v.cpus[0], nr, &args); got != HFunction {
			t.Errorf("hcall %#x: got %d, want H_FUNCTION", nr, got)
		}
		if args != [9]uint64{1, 2, 3} {
			t.Errorf("hcall %#x changed registers: %v", nr, args)
		}
	}
	if v.UnknownHcalls() != 6 {
		t.Errorf("unknown hcall counter %d, want 6", v.UnknownHcalls())
	}
}

func TestRegisterHcallPanics(t *testing.T) {
	for _, nr := range []uint64{HRTAS /* duplicate */, HPutTermChar /* duplicate */, 0x3 /* unaligned */, 0x454 /* past the table */, 0xf010} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("registerHcall(%#x) did not panic", nr)
				}
			}()
			registerHcall(nr, hCede)
		}()
	}
	if lookupHcall(HRTAS) == nil || lookupHcall(0x454) != nil {
		t.Fatal("table changed by a failed registration")
	}
}

// pack packs s into two registers as PAPR's term-char calls do.
func pack(s string) (uint64, uint64) {
	var b [16]byte
	copy(b[:], s)
	return binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
}

func TestPutTermChar(t *testing.T) {
	v := newTestVM(t, 1)
	hi, lo := pack("Hello, pseries!!")
	cases := []struct {
		termno, n uint64
		want      int64
		out       string
	}{
		{VTYReg, 16, HSuccess, "Hello, pseries!!"},
		{VTYReg, 5, HSuccess, "Hello"},
		{0, 1, HSuccess, "H"}, // termno 0: the default console
		{VTYReg, 0, HSuccess, ""},
		{VTYReg, 17, HParameter, ""},
		{VTYReg, 1 << 63, HParameter, ""},
		{0x71000001, 1, HParameter, ""}, // the nvram, not a terminal
	}
	for _, c := range cases {
		before := v.console.String()
		args := [9]uint64{c.termno, c.n, hi, lo}
		if got := v.Hypercall(v.cpus[0], HPutTermChar, &args); got != c.want {
			t.Errorf("termno %#x len %d: got %d want %d", c.termno, c.n, got, c.want)
		}
		if out := v.console.String()[len(before):]; out != c.out {
			t.Errorf("termno %#x len %d: output %q want %q", c.termno, c.n, out, c.out)
		}
	}
}

func TestGetTermChar(t *testing.T) {
	v := newTestVM(t, 1)
	args := [9]uint64{VTYReg}
	if got := v.Hypercall(v.cpus[0], HGetTermChar, &args); got != HSuccess || args[0] != 0 {
		t.Fatalf("empty input: ret %d count %d", got, args[0])
	}
	v.VTY().Feed([]byte("abcdefghijklmnopqrstu"))
	args = [9]uint64{VTYReg}
	if got := v.Hypercall(v.cpus[0], HGetTermChar, &args); got != HSuccess || args[0] != 16 {
		t.Fatalf("ret %d count %d", got, args[0])
	}
	if hi, lo := pack("abcdefghijklmnop"); args[1] != hi || args[2] != lo {
		t.Fatalf("bytes %#x %#x", args[1], args[2])
	}
	args = [9]uint64{VTYReg}
	v.Hypercall(v.cpus[0], HGetTermChar, &args)
	if hi, _ := pack("qrstu"); args[0] != 5 || args[1] != hi || args[2] != 0 {
		t.Fatalf("second read: count %d %#x %#x", args[0], args[1], args[2])
	}
	args = [9]uint64{0x1234}
	if got := v.Hypercall(v.cpus[0], HGetTermChar, &args); got != HParameter {
		t.Fatalf("bad termno: %d", got)
	}
}

func TestVTYFeedBlocksWhenFull(t *testing.T) {
	v := newTestVM(t, 1)
	done := make(chan bool)
	go func() { done <- v.VTY().Feed(make([]byte, vtyInputMax+10)) }()
	// Drain until the feeder finishes: it can only finish once the guest
	// has taken enough bytes.
	total := 0
	for finished := false; !finished || total < vtyInputMax+10; {
		select {
		case ok := <-done:
			if !ok {
				t.Fatal("Feed failed")
			}
			finished = true
		default:
		}
		args := [9]uint64{VTYReg}
		v.Hypercall(v.cpus[0], HGetTermChar, &args)
		total += int(args[0])
	}
	if total != vtyInputMax+10 {
		t.Fatalf("guest read %d bytes", total)
	}
}

func TestSetMode(t *testing.T) {
	v := newTestVM(t, 1)
	cases := []struct {
		mflags, resource, v1, v2 uint64
		want                     int64
	}{
		{1, setModeLE, 0, 0, HSuccess},
		{0, setModeLE, 0, 0, HSuccess},
		{2, setModeLE, 0, 0, HUnsupportedFlag},
		{1, setModeLE, 1, 0, HP3},
		{1, setModeLE, 0, 1, HP4},
		{0, setModeAddrTransMode, 0, 0, HSuccess},
		{1, setModeAddrTransMode, 0, 0, HUnsupportedFlag},
		{3, setModeAddrTransMode, 0, 0, HUnsupportedFlag},
		{0, setModeCIABR, 0, 0, HP2},
		{0, setModeDAWR0, 0, 0, HP2},
		{0, 99, 0, 0, HP2},
	}
	for _, c := range cases {
		args := [9]uint64{c.mflags, c.resource, c.v1, c.v2}
		if got := v.Hypercall(v.cpus[0], HSetMode, &args); got != c.want {
			t.Errorf("H_SET_MODE(%d, %d, %d, %d) = %d, want %d", c.mflags, c.resource, c.v1, c.v2, got, c.want)
		}
	}
	args := [9]uint64{1, setModeLE}
	v.Hypercall(v.cpus[0], HSetMode, &args)
	le, gen := v.InterruptsLittleEndian()
	if !le || gen != 3 {
		t.Fatalf("after LE: le=%v gen=%d, want true 3", le, gen)
	}
}

func TestCedeProd(t *testing.T) {
	v := newTestVM(t, 2)
	// A prod before the cede makes the cede return at once; an unknown
	// target is a parameter error.
	args := [9]uint64{1}
	if got := v.Hypercall(v.cpus[0], HProd, &args); got != HSuccess {
		t.Fatalf("H_PROD: %d", got)
	}
	args = [9]uint64{7}
	if got := v.Hypercall(v.cpus[0], HProd, &args); got != HParameter {
		t.Fatalf("H_PROD unknown target: %d", got)
	}
	v.cpus[1].mu.Lock()
	pending := v.cpus[1].prodPending
	v.cpus[1].mu.Unlock()
	if !pending {
		t.Fatal("prod not recorded")
	}
	args = [9]uint64{}
	if got := v.Hypercall(v.cpus[1], HCede, &args); got != HSuccess {
		t.Fatalf("H_CEDE: %d", got)
	}
	v.cpus[1].mu.Lock()
	pending = v.cpus[1].prodPending
	v.cpus[1].mu.Unlock()
	if pending {
		t.Fatal("cede did not consume the prod")
	}
	// Without a prod the cede returns after its bound.
	if got := v.Hypercall(v.cpus[1], HCede, &args); got != HSuccess {
		t.Fatalf("H_CEDE: %d", got)
	}
}
