package pseries

import (
	"sync"
	"testing"
)

// lines records the interrupt output as KVM_INTERRUPT would see it.
type lines struct {
	mu    sync.Mutex
	level map[uint32]bool
	edges int
}

func watchLines(v *testVM) *lines {
	l := &lines{level: map[uint32]bool{}}
	v.SetInterruptOutput(func(server uint32, raise bool) {
		l.mu.Lock()
		l.level[server] = raise
		l.edges++
		l.mu.Unlock()
	})
	return l
}

func (l *lines) up(server uint32) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.level[server]
}

func (v *testVM) h(cpu int, nr uint64, args ...uint64) [9]uint64 {
	v.t.Helper()
	var regs [9]uint64
	copy(regs[:], args)
	if ret := v.Hypercall(v.cpus[cpu], nr, &regs); ret != HSuccess {
		v.t.Fatalf("hcall %#x%v: %d", nr, args, ret)
	}
	return regs
}

func TestXICSIPI(t *testing.T) {
	v := newTestVM(t, 2)
	l := watchLines(v)
	// CPPR is 0 after reset: nothing gets through until the guest opens it.
	v.h(0, HIPI, 1, 5)
	if l.up(1) {
		t.Fatal("IPI presented through CPPR 0")
	}
	v.h(1, HCPPR, 0xff) // opening CPPR resends the waiting IPI
	if !l.up(1) || !v.ICS().Pending(1) || l.up(0) {
		t.Fatal("IPI not presented to CPU 1 after CPPR 0xff")
	}
	if x := v.h(1, HIPOLL, 1); x[0] != 0xff000002 || x[1] != 5 {
		t.Fatalf("H_IPOLL %#x %#x", x[0], x[1])
	}
	if !l.up(1) {
		t.Fatal("H_IPOLL accepted the interrupt")
	}
	if x := v.h(1, HXIRR); x[0] != 0xff000002 {
		t.Fatalf("H_XIRR %#x", x[0])
	}
	if l.up(1) {
		t.Fatal("line still up after accept")
	}
	if x := v.h(1, HIPOLL, 1); x[0] != 0x05000000 {
		t.Fatalf("CPPR after accept: %#x", x[0])
	}
	// Linux's IPI handler clears MFRR, then EOIs.
	v.h(1, HIPI, 1, 0xff)
	v.h(1, HEOI, 0xff000002)
	if x := v.h(1, HIPOLL, 1); x[0] != 0xff000000 || l.up(1) {
		t.Fatalf("after EOI %#x up %v", x[0], l.up(1))
	}
	if ret := v.Hypercall(v.cpus[0], HIPI, &[9]uint64{2, 5}); ret != HParameter {
		t.Fatalf("H_IPI to server 2: %d", ret)
	}
	if ret := v.Hypercall(v.cpus[0], HIPOLL, &[9]uint64{9}); ret != HParameter {
		t.Fatalf("H_IPOLL of server 9: %d", ret)
	}
}

func TestXICSMSIDelivery(t *testing.T) {
	v := newTestVM(t, 2)
	l := watchLines(v)
	const irq = ICSFirstIRQ + 3
	v.h(0, HCPPR, 0xff)
	// Fired while masked: held, delivered when unmasked by set-xive.
	if !v.ICS().Trigger(irq) || l.up(0) {
		t.Fatal("masked source presented")
	}
	if _, r := v.rtas(0, blk, "ibm,set-xive", 1, irq, 0, 5); r[0] != 0 {
		t.Fatal(r)
	}
	if !l.up(0) {
		t.Fatal("masked-pending source not delivered on unmask")
	}
	if x := v.h(0, HXIRR); x[0] != 0xff000000|irq {
		t.Fatalf("XIRR %#x", x[0])
	}
	v.h(0, HEOI, 0xff000000|irq)
	// A more favoured CPPR rejects it; lowering CPPR resends it.
	v.h(0, HCPPR, 4)
	v.ICS().Trigger(irq)
	if l.up(0) {
		t.Fatal("priority 5 presented through CPPR 4")
	}
	v.h(0, HCPPR, 0xff)
	if x := v.h(0, HXIRR); x[0] != 0xff000000|irq {
		t.Fatalf("resent XIRR %#x", x[0])
	}
	v.h(0, HEOI, 0xff000000|irq)
	// Preemption: a pending priority-5 source is displaced by a
	// priority-3 one, and comes back after the EOI of the latter.
	const hot = ICSFirstIRQ + 9
	v.rtas(0, blk, "ibm,set-xive", 1, hot, 0, 3)
	v.ICS().Trigger(irq)
	v.ICS().Trigger(hot)
	if x := v.h(0, HXIRR); x[0] != 0xff000000|hot {
		t.Fatalf("favoured source not first: %#x", x[0])
	}
	v.h(0, HEOI, 0xff000000|hot)
	if x := v.h(0, HXIRR); x[0] != 0xff000000|irq {
		t.Fatalf("displaced source not resent: %#x", x[0])
	}
	v.h(0, HEOI, 0xff000000|irq)
	if l.up(0) {
		t.Fatal("line up with nothing pending")
	}
	// Routed to server 1: only CPU 1 sees it (once its CPPR is open).
	v.rtas(0, blk, "ibm,set-xive", 1, irq, 1, 5)
	v.h(1, HCPPR, 0xff)
	v.ICS().Trigger(irq)
	if l.up(0) || !l.up(1) {
		t.Fatal("routing to server 1 ignored")
	}
	// Unknown or level sources cannot be triggered as edges.
	if v.ICS().Trigger(ICSFirstIRQ-1) || v.ICS().SetLevel(irq, true) {
		t.Fatal("bad trigger accepted")
	}
}

func TestXICSLevelSource(t *testing.T) {
	v := newTestVM(t, 1)
	l := watchLines(v)
	const irq = ICSFirstIRQ + 20
	v.ICS().SetLSI(irq, true)
	v.rtas(0, blk, "ibm,set-xive", 1, irq, 0, 5)
	v.h(0, HCPPR, 0xff)
	v.ICS().SetLevel(irq, true)
	if x := v.h(0, HXIRR); x[0] != 0xff000000|irq {
		t.Fatalf("XIRR %#x", x[0])
	}
	// EOI while still asserted: presented again.
	v.h(0, HEOI, 0xff000000|irq)
	if !l.up(0) {
		t.Fatal("asserted level source not re-presented after EOI")
	}
	v.h(0, HXIRR)
	v.ICS().SetLevel(irq, false)
	v.h(0, HEOI, 0xff000000|irq)
	if l.up(0) {
		t.Fatal("deasserted source re-presented")
	}
	// int-off masks it; int-on brings an asserted line back.
	v.rtas(0, blk, "ibm,int-off", 1, irq)
	v.ICS().SetLevel(irq, true)
	if l.up(0) {
		t.Fatal("masked level source presented")
	}
	v.rtas(0, blk, "ibm,int-on", 1, irq)
	if !l.up(0) {
		t.Fatal("int-on did not present the asserted source")
	}
}

func TestXICSWakesCede(t *testing.T) {
	v := newTestVM(t, 2)
	v.h(1, HCPPR, 0xff)
	done := make(chan struct{})
	go func() {
		v.cpus[1].cede(v.Done())
		close(done)
	}()
	v.h(0, HIPI, 1, 5)
	<-done // returns at the IPI (or after cedeMax; either way no hang)
	if !v.ICS().Pending(1) {
		t.Fatal("IPI not pending on CPU 1")
	}
}
