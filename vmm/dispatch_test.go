package vmm

import (
	"encoding/binary"
	"testing"
)

// fakeVCPU returns a vCPU whose kvm_run is ordinary memory, so exits can
// be synthesised without KVM.
func fakeVCPU() *VCPU {
	return &VCPU{fd: -1, run: runView{make([]byte, 8192)}}
}

func setIOExit(v *VCPU, port uint16, size, count int, out bool, dataOff uint64) {
	h := v.run.header()
	h.ExitReason = ExitIO
	io := v.run.io()
	io.Port, io.Size, io.Count, io.DataOffset = port, uint8(size), uint32(count), dataOff
	io.Direction = 0
	if out {
		io.Direction = 1
	}
}

func setMMIOExit(v *VCPU, addr uint64, n uint32, write bool) {
	v.run.header().ExitReason = ExitMMIO
	m := v.run.mmio()
	m.PhysAddr, m.Len = addr, n
	m.IsWrite = 0
	if write {
		m.IsWrite = 1
	}
}

func TestDispatchStringIO(t *testing.T) {
	v := fakeVCPU()
	var bus Bus
	d := &seqDev{}
	bus.Insert(0x3f8, 8, d)
	v.PIO = &bus
	copy(v.run.mem[4096:], "hello")
	setIOExit(v, 0x3f8, 1, 5, true, 4096)
	if s := v.dispatch(); s != StopNone {
		t.Fatalf("dispatch = %v", s)
	}
	if string(d.out) != "hello" {
		t.Fatalf("rep outsb wrote %q", d.out)
	}
	// rep insw: 3 words read into the data page.
	setIOExit(v, 0x3f8, 2, 3, false, 4096)
	v.dispatch()
	got := v.run.mem[4096 : 4096+6]
	for i := 0; i < 3; i++ {
		if w := binary.LittleEndian.Uint16(got[2*i:]); w != uint16(i) {
			t.Fatalf("insw element %d = %#x", i, w)
		}
	}
	// A data offset outside kvm_run is not followed.
	setIOExit(v, 0x3f8, 4, 1000, true, 8000)
	before := len(d.out)
	v.dispatch()
	if len(d.out) != before || bus.Unhandled.Load() != 1 {
		t.Fatalf("out-of-range string IO dispatched (unhandled %d)", bus.Unhandled.Load())
	}
	// Without a PIO bus an IN reads all ones and no handler is asked.
	v.PIO = nil
	setIOExit(v, 0x60, 2, 1, false, 4096)
	if s := v.dispatch(); s != StopNone || v.run.mem[4096] != 0xff || v.run.mem[4097] != 0xff {
		t.Fatalf("IN without a bus: %v, % x", s, v.run.mem[4096:4098])
	}
}

// seqDev collects writes and answers reads with a counter.
type seqDev struct {
	out []byte
	n   uint16
}

func (d *seqDev) Read(_, _ uint64, data []byte) {
	binary.LittleEndian.PutUint16(data, d.n)
	d.n++
}
func (d *seqDev) Write(_, _ uint64, data []byte) { d.out = append(d.out, data...) }

// nopDev is an allocation-free device.
type nopDev struct{ n int }

func (d *nopDev) Read(_, _ uint64, data []byte) {
	for i := range data {
		data[i] = 0
	}
	d.n++
}
func (d *nopDev) Write(_, _ uint64, _ []byte) { d.n++ }

func TestDispatchMMIOAndEvents(t *testing.T) {
	v := fakeVCPU()
	var mmio Bus
	d := &recDev{}
	mmio.Insert(0xd0000000, 0x1000, d)
	v.MMIO = &mmio
	m := v.run.mmio()
	copy(m.Data[:], []byte{1, 2, 3, 4})
	setMMIOExit(v, 0xd0000010, 4, true)
	v.dispatch()
	if d.off != 0x10 || string(d.data) != "\x01\x02\x03\x04" {
		t.Fatalf("mmio write: off %#x data %x", d.off, d.data)
	}
	setMMIOExit(v, 0xd0000020, 2, false)
	v.dispatch()
	if m.Data[0] != 0x20 || m.Data[1] != 0x21 {
		t.Fatalf("mmio read data %x", m.Data[:2])
	}
	// Unbacked MMIO reads as all ones.
	setMMIOExit(v, 0xe0000000, 4, false)
	v.dispatch()
	if m.Data[0] != 0xff || m.Data[3] != 0xff {
		t.Fatalf("unbacked mmio read %x", m.Data[:4])
	}
	for _, c := range []struct {
		reason uint32
		ev     uint32
		want   Stop
	}{
		{ExitShutdown, 0, StopTripleFault},
		{ExitSystemEvent, systemEventShutdown, StopPowerOff},
		{ExitSystemEvent, systemEventReset, StopReset},
		{ExitSystemEvent, systemEventCrash, StopCrash},
		{ExitFailEntry, 0, StopError},
		{ExitInternalError, 0, StopError},
		{ExitHypercall, 0, StopError}, // no handler set
	} {
		v.run.header().ExitReason = c.reason
		v.run.systemEvent().Type = c.ev
		if s := v.dispatch(); s != c.want {
			t.Errorf("exit %d/%d -> %v, want %v", c.reason, c.ev, s, c.want)
		}
	}
	v.run.header().ExitReason = ExitInternalError
	v.run.internal().Ndata = 1000 // hostile count is clamped
	if v.dispatch() != StopError || v.Err() == nil {
		t.Fatal("internal error not reported")
	}
}

func TestDispatchAllocs(t *testing.T) {
	v := fakeVCPU()
	var pio, mmio Bus
	pd, md := &nopDev{}, &nopDev{}
	pio.Insert(0x80, 1, pd)
	mmio.Insert(0xd0000000, 0x1000, md)
	v.MMIO = &mmio
	v.PIO = &pio
	setIOExit(v, 0x80, 1, 1, true, 4096)
	if n := testing.AllocsPerRun(1000, func() { v.dispatch() }); n != 0 {
		t.Fatalf("PIO exit dispatch allocates %.1f times", n)
	}
	setIOExit(v, 0x80, 1, 16, false, 4096)
	if n := testing.AllocsPerRun(1000, func() { v.dispatch() }); n != 0 {
		t.Fatalf("string PIO dispatch allocates %.1f times", n)
	}
	setMMIOExit(v, 0xd0000008, 4, true)
	if n := testing.AllocsPerRun(1000, func() { v.dispatch() }); n != 0 {
		t.Fatalf("MMIO exit dispatch allocates %.1f times", n)
	}
	setMMIOExit(v, 0xf0000000, 8, false) // unbacked
	if n := testing.AllocsPerRun(1000, func() { v.dispatch() }); n != 0 {
		t.Fatalf("unbacked MMIO dispatch allocates %.1f times", n)
	}
	if pd.n == 0 || md.n == 0 {
		t.Fatal("devices never reached")
	}
}

func BenchmarkDispatchPIO(b *testing.B) {
	v := fakeVCPU()
	var pio Bus
	for i := uint64(0); i < 16; i++ {
		pio.Insert(0x100+i*16, 8, &nopDev{})
	}
	v.PIO = &pio
	setIOExit(v, 0x150, 1, 1, true, 4096)
	b.ReportAllocs()
	for b.Loop() {
		v.dispatch()
	}
}

func BenchmarkDispatchMMIO(b *testing.B) {
	v := fakeVCPU()
	var mmio Bus
	for i := uint64(0); i < 16; i++ {
		mmio.Insert(0xd0000000+i*0x1000, 0x1000, &nopDev{})
	}
	v.MMIO = &mmio
	setMMIOExit(v, 0xd0005010, 4, false)
	b.ReportAllocs()
	for b.Loop() {
		v.dispatch()
	}
}
