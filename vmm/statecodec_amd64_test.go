package vmm

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/petrel-vmm/petrel/vmstate"
)

var updateSeeds = flag.Bool("update-state-seeds", false, "rewrite testdata/fuzz/FuzzStateDecode from the sample states")

// sampleVCPUState is a full state as a host without KVM_GET_XSAVE2 and
// without debug registers would save it: every byte patterned, so a
// misplaced byte shows.
func sampleVCPUState() *VCPUState {
	s := &VCPUState{parts: map[string][]byte{}, full: true}
	for i, p := range vcpuParts {
		if p.name == "debug registers" {
			continue
		}
		n := p.size
		if n == 0 {
			n = xsaveLegacySize
		}
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(i*31 + j)
		}
		s.parts[p.name] = b
	}
	s.msrs = []msrEntry{{NMSRs: 1, Index: msrTSC, Data: 0x123456789}, {NMSRs: 1, Index: 0x4b564d01, Data: 0x7001}, {NMSRs: 1, Index: msrTSCDeadline, Data: 42}}
	return s
}

func sampleIRQChipState(pit bool) *IRQChipState {
	s := &IRQChipState{hasPIT: pit}
	for i := range s.chips {
		s.chips[i].ChipID = uint32(i)
		for j := range s.chips[i].Chip {
			s.chips[i].Chip[j] = byte(i + 7*j)
		}
	}
	if pit {
		for j := range s.pit {
			s.pit[j] = byte(3 * j)
		}
	}
	return s
}

func sampleClockState() *ClockState {
	s := &ClockState{present: true}
	copy(s.data[:], "\x00\x10\x20\x30\x40\x50\x60\x00flagpad0realtimehost_tsc")
	return s
}

func encode(s vmstate.Stater) []byte {
	var e vmstate.Enc
	s.SaveState(&e)
	return e.Data()
}

func TestStateRoundTrip(t *testing.T) {
	for _, c := range []struct {
		name string
		in   vmstate.Stater
		out  vmstate.Stater
	}{
		{"vcpu", sampleVCPUState(), &VCPUState{}},
		{"vcpu with everything absent but regs and sregs", &VCPUState{parts: map[string][]byte{"regs": make([]byte, 144), "sregs": make([]byte, 312)}, full: true, msrs: []msrEntry{}}, &VCPUState{}},
		{"vcpu with a 11 KiB xsave", func() *VCPUState { s := sampleVCPUState(); s.parts["xsave"] = bytes.Repeat([]byte{9}, 11008); return s }(), &VCPUState{}},
		{"irqchip", sampleIRQChipState(true), &IRQChipState{}},
		{"irqchip without pit", sampleIRQChipState(false), &IRQChipState{}},
		{"clock", sampleClockState(), &ClockState{}},
		{"no clock", &ClockState{}, &ClockState{}},
	} {
		b := encode(c.in)
		if err := c.out.LoadState(vmstate.NewDec(c.name, b)); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if !reflect.DeepEqual(c.in, c.out) {
			t.Errorf("%s: decoded state differs:\n in %+v\nout %+v", c.name, c.in, c.out)
		}
		if again := encode(c.out); !bytes.Equal(again, b) {
			t.Errorf("%s: re-encoding differs", c.name)
		}
	}
}

// A reset state (no TSC) loads as a full one: loading marks it full, so
// its restore is strict.
func TestStateLoadIsFull(t *testing.T) {
	in := sampleVCPUState()
	in.full = false
	var out VCPUState
	if err := out.LoadState(vmstate.NewDec("cpu/0", encode(in))); err != nil || !out.full {
		t.Fatalf("full %v, %v", out.full, err)
	}
}

// The layout is the documented one: version, parts with names, MSRs.
func TestVCPUStateLayout(t *testing.T) {
	s := &VCPUState{parts: map[string][]byte{"mp state": {1, 2, 3, 4}}, msrs: []msrEntry{{Index: 0x10, Data: 5}}}
	var want vmstate.Enc
	want.U32(1)
	want.U32(uint32(len(vcpuParts)))
	for _, p := range vcpuParts {
		want.String(p.name)
		want.Bool(p.name == "mp state")
		if p.name == "mp state" {
			want.Bytes([]byte{1, 2, 3, 4})
		}
	}
	want.U32(1)
	want.U32(0x10)
	want.U64(5)
	if got := encode(s); !bytes.Equal(got, want.Data()) {
		t.Fatalf("encoding\n%x\nwant\n%x", got, want.Data())
	}
}

// Every prefix of a good state fails to load with ErrCorrupt, and leaves
// the target as it was.
func TestStateTruncated(t *testing.T) {
	for _, in := range []vmstate.Stater{sampleVCPUState(), sampleIRQChipState(true), sampleClockState()} {
		b := encode(in)
		for n := 0; n < len(b); n++ {
			out := reflect.New(reflect.TypeOf(in).Elem()).Interface().(vmstate.Stater)
			err := out.LoadState(vmstate.NewDec("s", b[:n]))
			if !errors.Is(err, vmstate.ErrCorrupt) {
				t.Fatalf("%T cut at %d of %d: %v", in, n, len(b), err)
			}
			if !reflect.ValueOf(out).Elem().IsZero() {
				t.Fatalf("%T cut at %d: target changed by a failed load", in, n)
			}
		}
		out := reflect.New(reflect.TypeOf(in).Elem()).Interface().(vmstate.Stater)
		if err := out.LoadState(vmstate.NewDec("s", append(b, 0))); !errors.Is(err, vmstate.ErrCorrupt) {
			t.Fatalf("%T with a byte too many: %v", in, err)
		}
	}
}

// Any single flipped bit is an error or a state that encodes back to the
// same bytes; never a panic. Flips in the structure (not in a blob's
// content) are errors.
func TestStateBitFlips(t *testing.T) {
	for _, in := range []vmstate.Stater{sampleVCPUState(), sampleIRQChipState(true), sampleClockState()} {
		b := encode(in)
		errs := 0
		// One bit of every byte, a different one from byte to byte.
		for i := range b {
			c := append([]byte(nil), b...)
			c[i] ^= 1 << (i % 8)
			out := reflect.New(reflect.TypeOf(in).Elem()).Interface().(vmstate.Stater)
			if err := out.LoadState(vmstate.NewDec("s", c)); err != nil {
				errs++
				continue
			}
			if !bytes.Equal(encode(out), c) {
				t.Fatalf("%T bit %d: accepted, but encodes differently", in, i)
			}
		}
		if errs == 0 {
			t.Fatalf("%T: no flipped bit was refused", in)
		}
	}
	// The first word is the version: every flip in it is refused.
	b := encode(sampleClockState())
	for i := 0; i < 32; i++ {
		c := append([]byte(nil), b...)
		c[i/8] ^= 1 << (i % 8)
		if err := new(ClockState).LoadState(vmstate.NewDec("s", c)); err == nil {
			t.Fatalf("version bit %d flipped: accepted", i)
		}
	}
}

func TestStateRefusals(t *testing.T) {
	part := func(e *vmstate.Enc, name string, b []byte) {
		e.String(name)
		e.Bool(b != nil)
		if b != nil {
			e.Bytes(b)
		}
	}
	regs := func(e *vmstate.Enc) {
		part(e, "regs", make([]byte, 144))
		part(e, "sregs", make([]byte, 312))
	}
	// all writes version 1 and every part: regs and sregs present, the
	// rest absent, with over's entries replacing them.
	all := func(e *vmstate.Enc, over map[string][]byte) {
		e.U32(1)
		e.U32(uint32(len(vcpuParts)))
		for _, p := range vcpuParts {
			b := map[string][]byte{"regs": make([]byte, 144), "sregs": make([]byte, 312)}[p.name]
			if o, ok := over[p.name]; ok {
				b = o
			}
			part(e, p.name, b)
		}
	}
	for _, c := range []struct {
		name, want string
		build      func(e *vmstate.Enc)
	}{
		{"version 2", "version 2", func(e *vmstate.Enc) { e.U32(2) }},
		{"unknown part", `part 4 is "vmcs", version 1 has "xsave" there`, func(e *vmstate.Enc) {
			e.U32(1)
			e.U32(uint32(len(vcpuParts)))
			for _, p := range vcpuParts[:4] {
				part(e, p.name, nil)
			}
			part(e, "vmcs", make([]byte, 8))
		}},
		{"parts out of order", `part 0 is "regs", version 1 has "vcpu events" there`, func(e *vmstate.Enc) {
			e.U32(1)
			e.U32(uint32(len(vcpuParts)))
			regs(e)
		}},
		{"short lapic", `part "lapic" is 1000 bytes`, func(e *vmstate.Enc) {
			all(e, map[string][]byte{"lapic": make([]byte, 1000)})
		}},
		{"huge xsave", "at most 65536 allowed", func(e *vmstate.Enc) {
			e.U32(1)
			e.U32(uint32(len(vcpuParts)))
			for _, p := range vcpuParts[:4] {
				part(e, p.name, nil)
			}
			e.String("xsave")
			e.Bool(true)
			e.U32(1 << 30)
		}},
		{"small xsave", `part "xsave" is 512 bytes`, func(e *vmstate.Enc) {
			all(e, map[string][]byte{"xsave": make([]byte, 512)})
		}},
		{"no sregs", `part "sregs" is missing`, func(e *vmstate.Enc) {
			all(e, map[string][]byte{"sregs": nil})
			e.U32(0)
		}},
		{"too many parts", "100 parts listed, version 1 has 9", func(e *vmstate.Enc) {
			e.U32(1)
			e.U32(100)
		}},
		{"too many msrs", "4294967295 MSRs, at most 1024", func(e *vmstate.Enc) {
			all(e, nil)
			e.U32(0xffffffff)
		}},
		{"bad presence flag", "boolean field holds 2", func(e *vmstate.Enc) {
			e.U32(1)
			e.U32(uint32(len(vcpuParts)))
			e.String(vcpuParts[0].name)
			e.U8(2)
		}},
	} {
		var e vmstate.Enc
		c.build(&e)
		err := new(VCPUState).LoadState(vmstate.NewDec("cpu/0", e.Data()))
		if !errors.Is(err, vmstate.ErrCorrupt) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), `"cpu/0"`) {
			t.Errorf("%s: %v, want an error with %q naming the section", c.name, err, c.want)
		}
	}
	// The irqchip's three controllers are required; the PIT is not.
	s := sampleIRQChipState(true)
	var e vmstate.Enc
	e.U32(1)
	encParts(&e, irqChipSpecs, func(name string) []byte {
		if name == "ioapic" {
			return nil
		}
		return s.pit[:]
	})
	if err := new(IRQChipState).LoadState(vmstate.NewDec("irqchip", e.Data())); err == nil || !strings.Contains(err.Error(), `part "pic master" is 112 bytes`) {
		t.Errorf("irqchip with wrong sizes: %v", err)
	}
	e = vmstate.Enc{}
	e.U32(1)
	encParts(&e, irqChipSpecs[1:], func(string) []byte { return s.chips[1].Chip[:] })
	if err := new(IRQChipState).LoadState(vmstate.NewDec("irqchip", e.Data())); err == nil || !strings.Contains(err.Error(), "3 parts listed, version 1 has 4") {
		t.Errorf("irqchip without the master PIC: %v", err)
	}
}

// seedDir is the fuzz target's corpus: the sample states, encoded.
const seedDir = "testdata/fuzz/FuzzStateDecode"

func seedStates() map[string][]byte {
	return map[string][]byte{
		"vcpu":    encode(sampleVCPUState()),
		"irqchip": encode(sampleIRQChipState(true)),
		"clock":   encode(sampleClockState()),
	}
}

// The checked-in seeds are the current encoding of the sample states
// (go test ./vmm -run TestStateSeeds -update-state-seeds rewrites them).
func TestStateSeeds(t *testing.T) {
	for name, b := range seedStates() {
		p := filepath.Join(seedDir, name)
		want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if *updateSeeds {
			if err := os.MkdirAll(seedDir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(p)
		if err != nil || string(got) != want {
			t.Errorf("seed %s is stale or missing (%v): rerun with -update-state-seeds", p, err)
		}
	}
}

// FuzzStateDecode: any bytes given to the three decoders give an error or
// a state that encodes back to the same bytes; no panic, and no
// allocation beyond the fixed bounds (at most 1024 MSRs, 64 KiB parts).
func FuzzStateDecode(f *testing.F) {
	for _, b := range seedStates() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, s := range []vmstate.Stater{&VCPUState{}, &IRQChipState{}, &ClockState{}} {
			if err := s.LoadState(vmstate.NewDec("fuzz", b)); err != nil {
				if !errors.Is(err, vmstate.ErrCorrupt) {
					t.Fatalf("%T: error %v does not wrap ErrCorrupt", s, err)
				}
				continue
			}
			if again := encode(s); !bytes.Equal(again, b) {
				t.Fatalf("%T: accepted %x, encodes as %x", s, b, again)
			}
		}
	})
}
