package pseries

import (
	"bytes"
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/vmm/guestmem"
)

// testRAM is the simulated guest RAM size: two regions with a hole, so
// calls straddling the hole are tested too.
const (
	testLowSize  = 1 << 20
	testHighBase = 2 << 20
	testHighSize = 1 << 20
)

// pinnedNow is the host clock the tests see.
var pinnedNow = time.Date(2026, 11, 25, 7, 30, 15, 123_000_000, time.UTC)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type testVM struct {
	*Machine
	t       *testing.T
	low     []byte
	high    []byte
	console *syncBuffer
}

func newTestVM(t *testing.T, cpus int) *testVM {
	t.Helper()
	mem := guestmem.New()
	low, high := make([]byte, testLowSize), make([]byte, testHighSize)
	if err := mem.Add(0, low); err != nil {
		t.Fatal(err)
	}
	if err := mem.Add(testHighBase, high); err != nil {
		t.Fatal(err)
	}
	con := &syncBuffer{}
	m, err := New(mem, Options{CPUs: cpus, Console: con, Now: func() time.Time { return pinnedNow }})
	if err != nil {
		t.Fatal(err)
	}
	return &testVM{Machine: m, t: t, low: low, high: high, console: con}
}

func (v *testVM) be32(addr uint64) uint32 {
	v.t.Helper()
	b, err := v.mem.Slice(addr, 4)
	if err != nil {
		v.t.Fatal(err)
	}
	return binary.BigEndian.Uint32(b)
}

func (v *testVM) putBE32(addr uint64, x uint32) {
	v.t.Helper()
	b, err := v.mem.Slice(addr, 4)
	if err != nil {
		v.t.Fatal(err)
	}
	binary.BigEndian.PutUint32(b, x)
}

// rtasBlock lays out a Linux struct rtas_args at addr: be32 token, nargs,
// nret, args[16], then the kernel's rets pointer (a kernel virtual address
// RTAS ignores: the rets live in args[nargs...]).
func (v *testVM) rtasBlock(addr uint64, token uint32, nret uint32, args ...uint32) {
	v.t.Helper()
	v.putBE32(addr, token)
	v.putBE32(addr+4, uint32(len(args)))
	v.putBE32(addr+8, nret)
	for i := 0; i < 16; i++ {
		v.putBE32(addr+12+4*uint64(i), 0xdeadbeef) // poison: must be overwritten or left alone
	}
	for i, a := range args {
		v.putBE32(addr+12+4*uint64(i), a)
	}
	b, _ := v.mem.Slice(addr+12+64, 8)
	binary.BigEndian.PutUint64(b, 0xc000000000000000|(addr+12+4*uint64(len(args))))
}

// rets reads n return cells of the block at addr with nargs arguments.
func (v *testVM) rets(addr uint64, nargs, n int) []int32 {
	v.t.Helper()
	out := make([]int32, n)
	for i := range out {
		out[i] = int32(v.be32(addr + 12 + 4*uint64(nargs+i)))
	}
	return out
}

// rtas runs the call through H_RTAS exactly as the KVM exit handler does.
func (v *testVM) rtas(cpu int, addr uint64, name string, nret uint32, args ...uint32) (int64, []int32) {
	v.t.Helper()
	tok, ok := RTASToken(name)
	if !ok {
		v.t.Fatalf("no RTAS service %q", name)
	}
	v.rtasBlock(addr, tok, nret, args...)
	regs := [9]uint64{addr}
	ret := v.Hypercall(v.cpus[cpu], HRTAS, &regs)
	return ret, v.rets(addr, len(args), int(nret))
}

func token(t *testing.T, name string) uint32 {
	t.Helper()
	tok, ok := RTASToken(name)
	if !ok {
		t.Fatalf("no RTAS service %q", name)
	}
	return tok
}
