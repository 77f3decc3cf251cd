package vmm

import "testing"

// immediate_exit is byte 1 of kvm_run on every architecture; setImmediateExit
// stores the whole first word, so the word's value must follow the host's
// byte order (a big-endian ppc64 host puts the low byte last).
func TestSetImmediateExitByte(t *testing.T) {
	r := runView{make([]byte, 64)}
	r.setImmediateExit(true)
	if h := r.header(); h.ImmediateExit != 1 || h.RequestInterruptWindow != 0 || r.mem[2] != 0 || r.mem[3] != 0 {
		t.Fatalf("immediate_exit set: first word % x, want 00 01 00 00", r.mem[:4])
	}
	r.setImmediateExit(false)
	if r.header().ImmediateExit != 0 {
		t.Fatalf("immediate_exit cleared: first word % x", r.mem[:4])
	}
}
