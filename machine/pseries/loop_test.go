package pseries

import (
	"errors"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// step is one exit a scripted vCPU reports from Run.
type step struct {
	before func()          // runs first (e.g. to wait for another CPU)
	err    error           // Run's error (EINTR: a kick)
	reason uint32          // exit reason when err is nil
	nr     uint64          // hcall number for KVM_EXIT_PAPR_HCALL
	args   [9]uint64       // hcall arguments
	mmio   *kvmRunMMIO     // for KVM_EXIT_MMIO
	after  func(*scripted) // checks what the loop wrote back, at the next Run
}

// scripted is a vcpuDriver that replays steps, recording what the loop
// does to it. It stands in for KVM, which cannot run POWER guests here.
type scripted struct {
	t       *testing.T
	steps   []step
	i       int
	papr    kvmRunPAPRHcall
	mmio    kvmRunMMIO
	reason  uint32
	entered [][2]uint64
	le      []bool
	clears  int
}

func (s *scripted) Run() error {
	if s.i > 0 && s.steps[s.i-1].after != nil {
		s.steps[s.i-1].after(s)
	}
	if s.i >= len(s.steps) {
		s.t.Errorf("script ran out after %d steps", s.i)
		return syscall.EIO
	}
	st := s.steps[s.i]
	s.i++
	if st.before != nil {
		st.before()
	}
	if st.err != nil {
		return st.err
	}
	s.reason = st.reason
	switch st.reason {
	case kvmExitPAPRHcall:
		s.papr = kvmRunPAPRHcall{NR: st.nr, Ret: 0xbad, Args: st.args}
	case kvmExitMMIO:
		s.mmio = *st.mmio
	}
	return nil
}

func (s *scripted) ClearImmediateExit()           { s.clears++ }
func (s *scripted) ExitReason() uint32            { return s.reason }
func (s *scripted) PAPRHcall() *kvmRunPAPRHcall   { return &s.papr }
func (s *scripted) MMIO() *kvmRunMMIO             { return &s.mmio }
func (s *scripted) SetInterruptsLE(le bool) error { s.le = append(s.le, le); return nil }
func (s *scripted) EnterAt(pc, r3 uint64) error {
	s.entered = append(s.entered, [2]uint64{pc, r3})
	return nil
}

func hcallStep(nr uint64, args ...uint64) step {
	s := step{reason: kvmExitPAPRHcall, nr: nr}
	copy(s.args[:], args)
	return s
}

// rtasStep makes an H_RTAS exit on a block written at addr when the step
// runs (so steps of two CPUs can share nothing but memory).
func rtasStep(v *testVM, addr uint64, name string, nret uint32, args ...uint32) step {
	s := hcallStep(HRTAS, addr)
	s.before = func() { v.rtasBlock(addr, token(v.t, name), nret, args...) }
	return s
}

func TestRunLoopExits(t *testing.T) {
	v := newTestVM(t, 1)
	hi, _ := pack("hi")
	s := &scripted{t: t}
	s.steps = []step{
		hcallStep(HPutTermChar, VTYReg, 2, hi),
		{reason: kvmExitMMIO, mmio: &kvmRunMMIO{PhysAddr: PHBMem32Base, Len: 4}},
		{reason: kvmExitMMIO, mmio: &kvmRunMMIO{PhysAddr: PHBMem32Base, Len: 4, IsWrite: 1, Data: [8]byte{1, 2, 3, 4}}},
		{err: syscall.EINTR}, // a kick with the machine still running
		hcallStep(HSetMode, 1, setModeLE),
		hcallStep(0x1234), // unknown: H_FUNCTION
		rtasStep(v, 0x8000, "power-off", 1, 0, 0),
	}
	s.steps[0].after = func(s *scripted) {
		if int64(s.papr.Ret) != HSuccess || v.console.String() != "hi" {
			t.Errorf("H_PUT_TERM_CHAR: ret %d console %q", int64(s.papr.Ret), v.console.String())
		}
	}
	s.steps[1].after = func(s *scripted) {
		if s.mmio.Data != [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff} {
			t.Errorf("MMIO read of the empty window: % x", s.mmio.Data)
		}
	}
	s.steps[2].after = func(s *scripted) {
		if s.mmio.Data != [8]byte{1, 2, 3, 4} {
			t.Errorf("MMIO write data changed: % x", s.mmio.Data)
		}
	}
	s.steps[3].after = func(s *scripted) {
		if len(s.le) != 0 {
			t.Errorf("LPCR written before the guest asked")
		}
	}
	s.steps[4].after = func(s *scripted) {
		if len(s.le) != 1 || !s.le[0] {
			t.Errorf("H_SET_MODE(LE) not applied before re-entry: %v", s.le)
		}
	}
	s.steps[5].after = func(s *scripted) {
		if int64(s.papr.Ret) != HFunction {
			t.Errorf("unknown hcall: ret %d", int64(s.papr.Ret))
		}
	}
	var st loopStats
	if err := v.runVCPU(s, v.cpus[0], 0x10, 0xfe00000, &st); err != nil {
		t.Fatal(err)
	}
	if s.i != len(s.steps) || len(s.entered) != 1 || s.entered[0] != [2]uint64{0x10, 0xfe00000} {
		t.Fatalf("ran %d steps, entered %v", s.i, s.entered)
	}
	if s.clears != 1 || st.mmio.Load() != 2 || v.ExitReason() != ExitPowerOff {
		t.Fatalf("clears %d, mmio %d, exit %v", s.clears, st.mmio.Load(), v.ExitReason())
	}
}

// TestRunLoopSecondaryStartStop runs two scripted vCPUs: CPU 0 starts CPU
// 1, which stops itself, is started again at a new entry, and powers off.
func TestRunLoopSecondaryStartStop(t *testing.T) {
	v := newTestVM(t, 2)
	s0 := &scripted{t: t}
	s1 := &scripted{t: t}
	s0.steps = []step{
		rtasStep(v, 0x8000, "start-cpu", 1, 1, 0x100, 0x42),
		rtasStep(v, 0x8000, "query-cpu-stopped-state", 2, 1),
		rtasStep(v, 0x8000, "start-cpu", 1, 1, 0x200, 7),
		{err: syscall.EINTR}, // a kick once the machine stops
	}
	query := s0.steps[1].before
	s0.steps[1].before = func() {
		// Wait (bounded) until CPU 1 has called stop-self.
		deadline := time.Now().Add(5 * time.Second)
		for v.cpus[1].Running() && time.Now().Before(deadline) {
			runtime.Gosched()
		}
		query()
	}
	s0.steps[1].after = func(s *scripted) {
		if r := v.rets(0x8000, 1, 2); r[0] != 0 || r[1] != 0 {
			t.Errorf("CPU 1 after stop-self: %v, want stopped", r)
		}
	}
	s0.steps[3].before = func() { <-v.Done() }
	s1.steps = []step{
		hcallStep(HPutTermChar, VTYReg, 1, 'A'<<56),
		rtasStep(v, 0x9000, "stop-self", 1),
		rtasStep(v, 0x9000, "power-off", 1, 0, 0),
	}
	errs := make(chan error, 2)
	go func() { errs <- v.runVCPU(s1, v.cpus[1], 0, 0, &loopStats{}) }()
	go func() { errs <- v.runVCPU(s0, v.cpus[0], 0x10, 0x20, &loopStats{}) }()
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// Two entries: the first start and the restart after stop-self; a
	// stopped CPU that re-entered on its own would show neither order.
	if len(s1.entered) != 2 || s1.entered[0] != [2]uint64{0x100, 0x42} || s1.entered[1] != [2]uint64{0x200, 7} {
		t.Fatalf("CPU 1 entries %#x", s1.entered)
	}
	if s0.i != 4 || s1.i != 3 || v.console.String() != "A" || v.ExitReason() != ExitPowerOff {
		t.Fatalf("steps %d/%d console %q exit %v", s0.i, s1.i, v.console.String(), v.ExitReason())
	}
}

func TestRunLoopErrors(t *testing.T) {
	v := newTestVM(t, 1)
	s := &scripted{t: t, steps: []step{{reason: kvmExitShutdown}}}
	if err := v.runVCPU(s, v.cpus[0], 0, 0, &loopStats{}); err == nil || !strings.Contains(err.Error(), "unhandled KVM exit 8") {
		t.Fatalf("shutdown exit: %v", err)
	}
	s = &scripted{t: t, steps: []step{{err: syscall.EFAULT}}}
	if err := v.runVCPU(s, v.cpus[0], 0, 0, &loopStats{}); !errors.Is(err, syscall.EFAULT) {
		t.Fatalf("KVM_RUN failure: %v", err)
	}
	// A secondary that is never started returns when the machine stops.
	w := newTestVM(t, 2)
	w.RequestExit(ExitPowerOff)
	if err := w.runVCPU(&scripted{t: t}, w.cpus[1], 0, 0, &loopStats{}); err != nil {
		t.Fatal(err)
	}
}
