package pseries

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/petrel-vmm/petrel/vmm"
)

// step is one exit a scripted vCPU reports from KVM_RUN.
type step struct {
	before func()          // runs first (e.g. to wait for another CPU)
	kick   bool            // KVM_RUN returned EINTR: a kick, no exit
	reason uint32          // exit reason
	nr     uint64          // hcall number for KVM_EXIT_PAPR_HCALL
	args   [9]uint64       // hcall arguments
	after  func(*scripted) // checks what the handler wrote back, at the next KVM_RUN
}

// scripted stands in for KVM, which cannot run POWER guests here: it
// replays steps as exits and records what the machine does to the vCPU's
// registers (it is the handler's cpuControl).
type scripted struct {
	t       *testing.T
	steps   []step
	i       int
	papr    vmm.PaprHcall // kvm_run.papr_hcall
	entered [][2]uint64
	le      []bool
	kicks   int
}

func (s *scripted) SetInterruptsLE(le bool) error { s.le = append(s.le, le); return nil }
func (s *scripted) EnterAt(pc, r3 uint64) error {
	s.entered = append(s.entered, [2]uint64{pc, r3})
	return nil
}

// drive runs cpu as vmm.VCPU.Run runs it: start, then one exit per step
// handed to the machine, until the handler stops the vCPU. A kick ends the
// run once the machine has stopped (pseries.Run kicks every vCPU then).
func drive(m *Machine, s *scripted, cpu *CPU, entry, fdt uint64) (vmm.Stop, error) {
	h := newCPUExits(m, cpu, s)
	if ok, err := h.start(entry, fdt); !ok || err != nil {
		return vmm.StopRequested, err
	}
	for {
		if s.i > 0 && s.steps[s.i-1].after != nil {
			s.steps[s.i-1].after(s)
		}
		if s.i >= len(s.steps) {
			s.t.Errorf("script ran out after %d steps", s.i)
			return vmm.StopError, nil
		}
		st := s.steps[s.i]
		s.i++
		if st.before != nil {
			st.before()
		}
		if st.kick {
			s.kicks++
			select {
			case <-m.Done():
				return vmm.StopRequested, nil
			default:
				continue
			}
		}
		s.papr = vmm.PaprHcall{Nr: st.nr, Ret: 0xbad, Args: st.args}
		stop, err := h.exit(st.reason, &s.papr)
		if err != nil || stop != vmm.StopNone {
			if st.after != nil {
				st.after(s)
			}
			return stop, err
		}
	}
}

func hcallStep(nr uint64, args ...uint64) step {
	s := step{reason: vmm.ExitPaprHcall, nr: nr}
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
		{kick: true}, // a kick with the machine still running
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
		if len(s.le) != 0 {
			t.Errorf("LPCR written before the guest asked")
		}
	}
	s.steps[2].after = func(s *scripted) {
		if len(s.le) != 1 || !s.le[0] {
			t.Errorf("H_SET_MODE(LE) not applied before re-entry: %v", s.le)
		}
	}
	s.steps[3].after = func(s *scripted) {
		if int64(s.papr.Ret) != HFunction {
			t.Errorf("unknown hcall: ret %d", int64(s.papr.Ret))
		}
	}
	s.steps[4].after = func(s *scripted) {
		if int64(s.papr.Ret) != HSuccess {
			t.Errorf("H_RTAS power-off: ret %d", int64(s.papr.Ret))
		}
	}
	stop, err := drive(v.Machine, s, v.cpus[0], 0x10, 0xfe00000)
	if err != nil || stop != vmm.StopPowerOff {
		t.Fatalf("vCPU stopped with %v, %v; want power-off", stop, err)
	}
	if s.i != len(s.steps) || len(s.entered) != 1 || s.entered[0] != [2]uint64{0x10, 0xfe00000} {
		t.Fatalf("ran %d steps, entered %v", s.i, s.entered)
	}
	if s.kicks != 1 || v.ExitReason() != ExitPowerOff {
		t.Fatalf("kicks %d, exit %v", s.kicks, v.ExitReason())
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
		{kick: true}, // a kick once the machine stops
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
	type result struct {
		cpu  int
		stop vmm.Stop
		err  error
	}
	res := make(chan result, 2)
	go func() { s, err := drive(v.Machine, s1, v.cpus[1], 0, 0); res <- result{1, s, err} }()
	go func() { s, err := drive(v.Machine, s0, v.cpus[0], 0x10, 0x20); res <- result{0, s, err} }()
	for i := 0; i < 2; i++ {
		r := <-res
		// CPU 1 powers off; CPU 0 is kicked once the machine stopped.
		want := []vmm.Stop{vmm.StopRequested, vmm.StopPowerOff}[r.cpu]
		if r.err != nil || r.stop != want {
			t.Fatalf("CPU %d stopped with %v, %v; want %v", r.cpu, r.stop, r.err, want)
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
	s := &scripted{t: t, steps: []step{{reason: vmm.ExitShutdown}}}
	if stop, err := drive(v.Machine, s, v.cpus[0], 0, 0); stop != vmm.StopError || err == nil ||
		!strings.Contains(err.Error(), "unhandled KVM exit 8") {
		t.Fatalf("shutdown exit: %v, %v", stop, err)
	}
	// A secondary that is never started returns when the machine stops.
	w := newTestVM(t, 2)
	w.RequestExit(ExitPowerOff)
	s = &scripted{t: t}
	if stop, err := drive(w.Machine, s, w.cpus[1], 0, 0); err != nil || stop != vmm.StopRequested || len(s.entered) != 0 {
		t.Fatalf("unstarted secondary: %v, %v, entered %v", stop, err, s.entered)
	}
}
