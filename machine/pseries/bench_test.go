package pseries

import (
	"io"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/vmm/guestmem"
)

func benchMachine(tb testing.TB) *Machine {
	mem := guestmem.New()
	if err := mem.Add(0, make([]byte, 4<<20)); err != nil {
		tb.Fatal(err)
	}
	m, err := New(mem, Options{CPUs: 2, Console: io.Discard, Now: func() time.Time { return pinnedNow }})
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

// putBlock writes an RTAS block for token with the given counts at addr.
func putBlock(m *Machine, addr uint64, token, nargs, nret uint32, args ...uint32) {
	b, _ := m.mem.Slice(addr, 12+4*uint64(nargs+nret))
	be := func(off int, v uint32) {
		b[off], b[off+1], b[off+2], b[off+3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
	}
	be(0, token)
	be(4, nargs)
	be(8, nret)
	for i, a := range args {
		be(12+4*i, a)
	}
}

// TestHypercallsDoNotAllocate holds the exit path to the STYLE rule: no
// allocation per exit for the calls a running guest makes often.
func TestHypercallsDoNotAllocate(t *testing.T) {
	m := benchMachine(t)
	tod, _ := RTASToken("get-time-of-day")
	xive, _ := RTASToken("ibm,get-xive")
	pci, _ := RTASToken("read-pci-config")
	putBlock(m, 0x1000, tod, 0, 8)
	putBlock(m, 0x2000, xive, 1, 3, ICSFirstIRQ)
	putBlock(m, 0x3000, pci, 2, 2, 0, 4)
	cpu := m.cpus[0]
	// One register block, reused: in the vCPU loop the registers are
	// kvm_run.papr_hcall.args in the mmap'd kvm_run, never a new array.
	var r [9]uint64
	call := func(nr uint64, args ...uint64) {
		r = [9]uint64{}
		copy(r[:], args)
		m.Hypercall(cpu, nr, &r)
	}
	cases := map[string]func(){
		"H_PUT_TERM_CHAR":        func() { call(HPutTermChar, VTYReg, 16, 0x4142434445464748, 0x494a4b4c4d4e4f50) },
		"H_GET_TERM_CHAR":        func() { call(HGetTermChar, VTYReg) },
		"H_LOGICAL_MEMOP":        func() { call(HLogicalMemop, 0x10000, 0x20000, 3, 512, memopCopy) },
		"H_LOGICAL_CI_LOAD":      func() { call(HLogicalCILoad, 8, 0x100) },
		"H_RTAS get-time-of-day": func() { call(HRTAS, 0x1000) },
		"H_RTAS ibm,get-xive":    func() { call(HRTAS, 0x2000) },
		"H_RTAS read-pci-config": func() { call(HRTAS, 0x3000) },
		"H_IPI/H_XIRR/H_EOI": func() {
			call(HCPPR, 0xff)
			call(HIPI, 0, 5)
			call(HXIRR)
			call(HIPI, 0, 0xff)
			call(HEOI, 0xff000002)
		},
		"H_SET_MODE": func() { call(HSetMode, 1, setModeLE) },
		"H_PROD/H_CEDE": func() {
			call(HProd, 0)
			call(HCede)
		},
		"H_CEDE to its bound": func() { call(HCede) },
	}
	for name, f := range cases {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %.1f allocations per call", name, n)
		}
	}
}

func BenchmarkHypercallPutTermChar(b *testing.B) {
	m := benchMachine(b)
	args := [9]uint64{VTYReg, 16, 0x4142434445464748, 0x494a4b4c4d4e4f50}
	for i := 0; i < b.N; i++ {
		m.Hypercall(m.cpus[0], HPutTermChar, &args)
	}
}

func BenchmarkRTASGetTimeOfDay(b *testing.B) {
	m := benchMachine(b)
	tod, _ := RTASToken("get-time-of-day")
	putBlock(m, 0x1000, tod, 0, 8)
	args := [9]uint64{0x1000}
	for i := 0; i < b.N; i++ {
		m.Hypercall(m.cpus[0], HRTAS, &args)
	}
}

func BenchmarkLogicalMemopCopy64K(b *testing.B) {
	m := benchMachine(b)
	b.SetBytes(64 << 10)
	args := [9]uint64{0x100000, 0x200000, 3, 8192, memopCopy}
	for i := 0; i < b.N; i++ {
		a := args
		m.Hypercall(m.cpus[0], HLogicalMemop, &a)
	}
}

func BenchmarkLogicalMemopXor64K(b *testing.B) {
	m := benchMachine(b)
	b.SetBytes(64 << 10)
	args := [9]uint64{0x100000, 0x200000, 3, 8192, memopXor}
	for i := 0; i < b.N; i++ {
		a := args
		m.Hypercall(m.cpus[0], HLogicalMemop, &a)
	}
}

func BenchmarkDeviceTree(b *testing.B) {
	m := benchMachine(b)
	for i := 0; i < b.N; i++ {
		if _, err := m.DeviceTree(testBoot); err != nil {
			b.Fatal(err)
		}
	}
}
